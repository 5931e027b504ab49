"""The verbs that only touch their own leg: ``<Say>``, ``<Play>``, ``<Pause>``, ``<Gather>``,
``<Redirect>``, ``<Hangup>``, ``<Reject>`` and ``<Record>``.

Each verb is a function ``(runner, element, doc) -> Step`` registered in
:data:`voice.emulator.interpreter.VERBS`; see :mod:`voice.emulator.runner` for what a step is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Final

from voice.emulator.http import Document
from voice.emulator.parties import Digits, Recording, Silence, Speech
from voice.emulator.runner import LegEnded, LegRunner, Step, attr_bool, attr_float, rfc2822, spoken_seconds

__all__ = ["collect_digits", "gather", "hangup", "pause", "play", "record", "redirect", "reject", "say"]

#: Virtual seconds per DTMF key pressed or played.
SECONDS_PER_DIGIT: Final = 0.3
#: How many times ``loop="0"`` repeats before the emulator gives up (Twilio: "until hang-up").
ENDLESS_LOOP: Final = 1000


def collect_digits(pressed: str, num_digits: int | None, finish_on_key: str) -> tuple[str, str, bool]:
    """Apply Gather's ``numDigits``/``finishOnKey`` to keys pressed.

    Returns ``(digits, finished_on_key, complete)``; ``complete`` is False when the caller
    stopped typing and Twilio has to wait for the timeout before submitting.
    """
    collected = ""
    for key in pressed:
        if finish_on_key and key in finish_on_key:
            return collected, key, True
        collected += key
        if num_digits and len(collected) >= num_digits:
            return collected, "", True
    return collected, "", False


def _loops(element: ET.Element) -> tuple[int, bool]:
    """``loop``: how many times to play, and whether that stands for Twilio's "until hang-up"."""
    count = int(attr_float(element.get("loop"), 1))
    return (ENDLESS_LOOP, True) if count <= 0 else (count, False)


def say(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    text = " ".join("".join(element.itertext()).split())
    count, endless = _loops(element)
    attrs = {k: v for k, v in element.attrib.items() if k in ("voice", "language")}
    for index in range(count):
        if index:
            runner.checkpoint()
        runner.call.note(runner.party, "Say", text, **attrs)
        runner.advance(spoken_seconds(text), min_real=_min_real(runner, endless))
    return None


def play(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    digits = element.get("digits")
    count, endless = _loops(element)
    if digits:
        text, seconds = f"[play digits {digits}]", SECONDS_PER_DIGIT * len(digits)
    else:
        text = f"[play {runner.absolute((element.text or '').strip(), doc)}]"
        seconds = runner.rt.config.play_seconds
    for index in range(count):
        if index:
            runner.checkpoint()
        runner.call.note(runner.party, "Play", text)
        runner.advance(seconds, min_real=_min_real(runner, endless))
    return None


def _min_real(runner: LegRunner, endless: bool) -> float:
    # An endless loop must not spin at time_scale=0: each round takes at least one poll interval.
    return max(runner.min_verb_real, runner.rt.config.queue_poll_interval if endless else 0.0)


def pause(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    length = attr_float(element.get("length"), 1.0)
    runner.call.note(runner.party, "Pause", "", length=f"{length:g}")
    runner.advance(length, min_real=runner.min_verb_real)
    return None


def redirect(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    url = runner.absolute((element.text or "").strip(), doc)
    return runner.fetch(url, element.get("method"), runner.leg_params(), "redirect")


def hangup(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    runner.call.note("app", "Hangup", f"{runner.party} leg hung up by TwiML")
    raise LegEnded("completed", "hangup")


def reject(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    reason = element.get("reason", "rejected")
    if runner.mode == "call" and not runner.leg.answered:
        status = "busy" if reason == "busy" else "no-answer"
        runner.call.note("app", "Reject", f"call rejected ({reason})")
        raise LegEnded(status, "reject")
    runner.call.note("app", "Reject", "Reject after answer: call hung up")
    raise LegEnded("completed", "hangup")


def gather(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    for child in element:
        if child.tag in runner.verbs.gather_children:
            runner.verbs.handlers[child.tag](runner, child, doc)
        else:
            runner.warn(12200, f"<{child.tag}> is not allowed inside <Gather>; skipped", doc.url)
    runner.checkpoint()
    kinds = set((element.get("input") or "dtmf").lower().split())
    timeout = attr_float(element.get("timeout"), 5.0)
    got = runner.next_input()
    params: dict[str, str] | None = None
    if isinstance(got, Speech) and "speech" in kinds:
        speech_timeout = element.get("speechTimeout", "auto")
        settle = 1.0 if speech_timeout == "auto" else attr_float(speech_timeout, timeout)
        runner.call.note(runner.party, "Gather", got.text, input="speech")
        runner.advance(spoken_seconds(got.text) + settle)
        params = {"SpeechResult": got.text, "Confidence": f"{got.confidence:g}"}
    elif isinstance(got, Digits) and "dtmf" in kinds:
        num_digits = int(attr_float(element.get("numDigits"), 0)) or None
        digits, finished_on, complete = collect_digits(got.digits, num_digits, element.get("finishOnKey", "#"))
        runner.call.note(runner.party, "Gather", got.digits, input="dtmf")
        runner.advance(SECONDS_PER_DIGIT * len(got.digits) + (0 if complete else timeout))
        if digits:
            params = {"Digits": digits, "FinishedOnKey": finished_on}
    else:
        what = "silence" if isinstance(got, Silence) else f"{type(got).__name__} not accepted"
        runner.call.note(runner.party, "Gather", f"({what})", input="none")
        runner.advance(timeout)
    if params is None:
        if not attr_bool(element.get("actionOnEmptyResult")):
            return None  # Twilio falls through to the next verb
        params = {}
    action = runner.absolute(element.get("action") or doc.url, doc)
    return runner.fetch(action, element.get("method"), {**runner.leg_params(), **params}, "gather action")


def record(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    max_length = attr_float(element.get("maxLength"), 3600.0) or 3600.0
    timeout = attr_float(element.get("timeout"), 5.0)
    if attr_bool(element.get("playBeep"), True):
        runner.call.note(runner.party, "Record", "beep")
    got = runner.next_input()
    wav: bytes | None = None
    if isinstance(got, Recording):
        seconds, wav = min(got.duration, max_length), got.wav
    elif isinstance(got, Speech):
        seconds = min(spoken_seconds(got.text), max_length)
    else:
        # Silence (or only a key press): an empty recording, so Twilio skips the action.
        runner.call.note(runner.party, "Record", "(nothing recorded)")
        runner.advance(timeout if isinstance(got, Silence) else SECONDS_PER_DIGIT)
        return None
    runner.call.note(runner.party, "Record", f"recorded {seconds:g}s")
    runner.advance(seconds + (0 if seconds >= max_length else timeout))
    recording = runner.store_recording(seconds, wav, "RecordVerb")
    params = {
        "RecordingUrl": runner.rt.recording_url(recording.sid),
        "RecordingDuration": str(recording.duration),
        "RecordingSid": recording.sid,
    }
    status_callback = element.get("recordingStatusCallback")
    if status_callback:
        runner.notify(
            runner.absolute(status_callback, doc),
            element.get("recordingStatusCallbackMethod"),
            {
                "AccountSid": runner.leg.account_sid,
                "CallSid": runner.leg.sid,
                "RecordingStatus": "completed",
                "RecordingChannels": "1",
                "RecordingSource": "RecordVerb",
                "RecordingStartTime": rfc2822(runner.call),
                **params,
            },
            "recording status callback",
        )
    action = runner.absolute(element.get("action") or doc.url, doc)
    return runner.fetch(action, element.get("method"), {**runner.leg_params(), **params}, "record action")
