"""`warmline simulate`: a terminal phone for admins — try a flow without Twilio.

The app runs in this process on a loopback port; the project's Twilio emulator places the call into it over real
HTTP, exactly as Twilio would. The admin is the caller: each prompt is printed (and spoken with pyttsx3 unless
--mute), and at every question they type words, keypad digits, or the path of a WAV file to be transcribed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask
from werkzeug.serving import make_server

from voice import create_app
from voice.bootstrap import Warmline
from voice.emulator import CallerInput, Digits, EmulatedCall, Recording, RepScript, Silence, Speech, TwilioEmulator

PROMPT = "you> "


class TerminalCaller:
    """The admin at the keyboard, as an emulator party: one call at a time."""

    def __init__(self, *, ask: Callable[[str], str], say: Callable[[str], None], transcribe: Callable[[bytes], str]):
        self._ask = ask
        self._say = say
        self._transcribe = transcribe
        self._shown = 0
        self.call: EmulatedCall | None = None

    # --- the emulator's InputSource -------------------------------------------------------------------------------
    def cursor(self) -> TerminalCaller:
        return self

    @property
    def talk_seconds(self) -> float | None:
        return None  # stay on the line until the rep hangs up: then the flow's `after` (a survey) can be tried

    @property
    def queue_patience(self) -> float | None:
        return None

    def next_input(self) -> CallerInput:
        self.show_new()
        answer = self._ask(PROMPT).strip()
        if not answer:
            return Silence()
        if answer.isdigit() or set(answer) <= set("0123456789*#"):
            return Digits(answer)
        if answer.lower().endswith(".wav") and Path(answer).is_file():
            audio = Path(answer).read_bytes()
            words = self._transcribe(audio)
            self._say(f"(heard from {answer}: {words!r})")
            return Speech(words) if words else Recording(duration=5, wav=audio)
        return Speech(answer)

    def show_new(self) -> None:
        """Print (and speak) what was said since the last look, caller's and rep's side alike."""
        if self.call is None:
            return
        entries = self.call.transcript
        for entry in entries[self._shown :]:
            if entry.verb in ("Say", "Play"):
                who = "caller hears" if entry.party == "caller" else "rep hears"
                self._say(f"[{who}] {entry.text}")
        self._shown = len(entries)


def speaker(*, mute: bool) -> Callable[[str], None]:
    """Print every line; unless muted, also speak caller-side lines with pyttsx3 (needs `aplay` to be heard)."""
    if mute:
        return click.echo
    if not shutil.which("aplay"):
        # Said once, before the first prompt: otherwise a silent simulator looks like a broken speaker.
        click.echo(
            "(cannot play audio: `aplay` is not installed (Debian: alsa-utils), so the prompts are only printed, "
            "as with --mute)"
        )
        return click.echo
    from voice.adapters.speech import Pyttsx3Synthesizer

    synthesizer = Pyttsx3Synthesizer()

    def say(line: str) -> None:
        click.echo(line)
        if line.startswith("[caller hears]"):
            with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
                wav.write(synthesizer.synthesize(line.removeprefix("[caller hears] ")))
                wav.flush()
                subprocess.run(["aplay", "-q", wav.name], check=False)

    return say


def run_simulation(
    app_factory: Callable[[str, str], object],
    *,
    caller: TerminalCaller,
    from_: str,
    to: str,
    account_sid: str,
    auth_token: str,
    rep_script: RepScript,
    rep_phones: list[str],
) -> EmulatedCall:
    """Serve a fresh app on loopback, ring it once from the terminal caller, and return the finished call."""

    class Late:
        app: object = None

        def __call__(self, environ: object, start_response: object) -> object:
            return self.app(environ, start_response)  # type: ignore[operator]

    shim = Late()
    server = make_server("127.0.0.1", 0, shim, threaded=True)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with TwilioEmulator(public_url=url, account_sid=account_sid, auth_token=auth_token) as twilio:
            shim.app = app_factory(url, twilio.rest_url)
            for phone in rep_phones:
                twilio.register_rep(phone, rep_script)
            call = twilio.place_call(from_=from_, to=to, script=caller, status_callback="/voice/status")
            caller.call = call
            call.wait_finished(timeout=3600)
            caller.show_new()
            return call
    finally:
        server.shutdown()


def simulate_call(
    warmline: Warmline,
    *,
    caller_number: str,
    called: str,
    flow_file: Path | None,
    rep_behaviour: str,
    mute: bool,
) -> None:
    """`warmline simulate`: the admin at the keyboard calls the flow, then sees the interaction as recorded."""
    settings = warmline.settings
    say = speaker(mute=mute)
    warmline.store.upgrade()
    # The configured flows (folder, numbers, classifier), without reloading; or the one file asked for.
    flows: dict[str, Any] = {
        **settings.flows.model_dump(mode="json"),
        "directory": str(settings.flows_directory),
        "reload_interval": 0,
    }
    if flow_file is not None:
        flows.update(directory=str(flow_file.parent), default=flow_file.stem)
    overrides: dict[str, Any] = {"flows": flows}

    def make_app(public_url: str, rest_url: str) -> Flask:
        return create_app({**overrides, "public_url": public_url, "twilio_api_url": rest_url, "log_level": "WARNING"})

    def transcribe(audio: bytes) -> str:
        from voice.adapters.speech import TranscriptionFailed, make_transcriber

        flow = warmline.flows.current()
        try:
            return make_transcriber("sphinx", flow, workdir=settings.instance_path / "speech").transcribe(audio).text
        except TranscriptionFailed as exc:
            click.echo(f"(could not transcribe: {exc})")
            return ""

    script = {"accepts": RepScript.accepts(talk_seconds=10), "declines": RepScript.declines()}.get(
        rep_behaviour, RepScript.no_answer()
    )
    caller = TerminalCaller(
        ask=lambda prompt: click.prompt(prompt.strip(), default="", show_default=False),
        say=say,
        transcribe=transcribe,
    )
    call = run_simulation(
        make_app,
        caller=caller,
        from_=caller_number,
        to=called,
        account_sid=settings.account_sid,
        auth_token=settings.auth_token,
        rep_script=script,
        rep_phones=[rep.phone for rep in warmline.presence.roster()],
    )
    click.echo(f"-- call ended: {call.status}, {call.duration} s")
    record = warmline.calls.interaction_summary(call.sid)
    for key, value in record.items():
        click.echo(f"   {key}: {value}")
