"""`warmline call`: one emulated call into a running Warmline server, and what the caller and the reps heard.

Out of the box it works with `make run`: it finds the server from the note `warmline serve` leaves in the instance
folder (any port), signs with the same development token, and, while the call lasts, answers the REST requests a
development server sends to its loopback REST URL (pulling the caller out of line, callbacks, hand-offs) with the
emulator's fake REST API, so a queued caller really is connected when a rep frees up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import click
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from crm_sync.phones import mask_phone
from voice.bootstrap import LOCAL_BASE_URL, Warmline
from voice.cli.serve import ServingRecord
from voice.emulator import CallerScript, Digits, RepScript, Silence, Speech, TranscriptEntry, TwilioEmulator
from voice.emulator.runner import DEFAULT_HOLD_MUSIC as CONFERENCE_HOLD_MUSIC

#: Seconds to wait for the server to answer its health check before saying nobody is there.
HEALTH_TIMEOUT = 5.0
CALL_TIMEOUT = 60.0
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Server:
    """The Warmline server a call goes to, as far as the emulator needs to know it."""

    #: Where the webhooks are sent.
    url: str
    #: The URL Twilio would have called, which the server checks signatures against.
    signing_url: str
    #: Where the server sends its Twilio REST requests.
    rest_url: str


def find_server(warmline: Warmline, base_url: str | None) -> Server:
    """``--url`` when given; else the running `warmline serve` of this instance folder; else the public URL or the
    default local address."""
    settings = warmline.settings
    if base_url:
        base_url = base_url.rstrip("/")
        return Server(url=base_url, signing_url=settings.public_url or base_url, rest_url=settings.twilio_api_url)
    record = ServingRecord.read(settings.instance_path)
    if record is not None:
        return Server(url=record.url, signing_url=record.public_url or record.url, rest_url=record.twilio_api_url)
    url = settings.public_url or LOCAL_BASE_URL
    return Server(url=url, signing_url=url, rest_url=settings.twilio_api_url)


def check_answers(url: str) -> None:
    """Refuse at once, in one line, when nothing answers at ``url`` (rather than emulate a call into the void)."""
    try:
        requests.get(f"{url}/healthz", timeout=HEALTH_TIMEOUT)
    except requests.RequestException:
        raise click.ClickException(f"no Warmline server answers at {url}: start one with `make run`") from None


def _loopback_port(url: str) -> int | None:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        return None
    return parts.port or 80


class _UnloggedRequests(WSGIRequestHandler):
    """The relay's requests are the server's business, not lines in the call's printout."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


@contextmanager
def rest_relay(rest_url: str, emulator: TwilioEmulator) -> Iterator[bool]:
    """While the call lasts, answer on ``rest_url`` (the server's loopback REST base) with the emulator's REST API.

    The emulator's REST server picks its own port; the server's was fixed when it started, so requests are passed
    on as they come. Yields False, doing nothing, when ``rest_url`` is not a loopback address (real Twilio or
    another carrier): the emulator cannot stand in there.
    """
    port = _loopback_port(rest_url)
    if port is None:
        yield False
        return
    target = emulator.rest_url

    @Request.application
    def relay(request: Request) -> Response:
        passed = {key: value for key, value in request.headers.items() if key.lower() not in ("host", "content-length")}
        answer = requests.request(
            request.method, target + request.full_path.rstrip("?"), data=request.get_data(), headers=passed, timeout=30
        )
        return Response(answer.content, status=answer.status_code, content_type=answer.headers.get("Content-Type"))

    try:
        server = make_server(
            urlsplit(rest_url).hostname or "127.0.0.1", port, relay, threaded=True, request_handler=_UnloggedRequests
        )
    except OSError as exc:
        raise click.ClickException(
            f"cannot answer the server's REST requests at {rest_url} ({exc.strerror}): is another `warmline call` "
            "running? If something else holds that port, delete instance/dev-twilio-api-url and restart the server"
        ) from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield True
    finally:
        server.shutdown()
        server.server_close()


def caller_inputs(inputs: Iterable[str]) -> list[Speech | Digits | Silence]:
    """Command-line INPUTs as the caller's answers: ``press:N`` keys, ``silence``, anything else spoken words."""
    answers: list[Speech | Digits | Silence] = []
    for item in inputs:
        if item.startswith("press:"):
            answers.append(Digits(item.removeprefix("press:")))
        elif item == "silence":
            answers.append(Silence())
        else:
            answers.append(Speech(item))
    return answers


def heard_lines(transcript: Sequence[TranscriptEntry], *, hold_music: Iterable[str]) -> list[str]:
    """What each party heard, one line per prompt; hold music is named as such, and a run of the same line (a long
    hold) is one line with a count: ``hears: hold music (\N{MULTIPLICATION SIGN}57)``."""
    music = {f"[play {url}]" for url in hold_music if url}
    lines: list[tuple[str, int]] = []
    for entry in transcript:
        if entry.verb not in ("Say", "Play"):
            continue
        who = "caller" if entry.party == "caller" else f"rep {mask_phone(entry.party.removeprefix('rep:'))}"
        line = f"{who:>20} hears: {'hold music' if entry.text in music else entry.text}"
        if lines and lines[-1][0] == line:
            lines[-1] = (line, lines[-1][1] + 1)
        else:
            lines.append((line, 1))
    return [line if count == 1 else f"{line} (\N{MULTIPLICATION SIGN}{count})" for line, count in lines]


def place_call(
    warmline: Warmline,
    *,
    caller: str,
    called: str,
    base_url: str | None,
    rep_behaviour: str,
    inputs: Sequence[str],
) -> None:
    settings = warmline.settings
    server = find_server(warmline, base_url)
    check_answers(server.url)
    script = {"accepts": RepScript.accepts(talk_seconds=20), "declines": RepScript.declines()}.get(
        rep_behaviour, RepScript.no_answer()
    )
    with (
        TwilioEmulator(
            public_url=server.signing_url,
            connect_url=server.url if server.url != server.signing_url else None,
            account_sid=settings.account_sid,
            auth_token=settings.auth_token,
        ) as twilio,
        rest_relay(server.rest_url, twilio) as relayed,
    ):
        if not relayed:
            click.echo(
                f"note: the server sends its REST requests to {server.rest_url}, not to this emulator: a caller put "
                "in line will not be connected",
                err=True,
            )
        for rep in warmline.presence.roster():
            twilio.register_rep(rep.phone, script)
        placed = twilio.place_call(
            from_=caller, to=called, script=CallerScript(caller_inputs(inputs)), status_callback="/voice/status"
        )
        if not placed.wait_finished(timeout=CALL_TIMEOUT):
            raise click.ClickException(f"the call did not finish within {CALL_TIMEOUT:.0f} s")
    for line in heard_lines(placed.transcript, hold_music=(settings.queue.hold_music_url, CONFERENCE_HOLD_MUSIC)):
        click.echo(line)
    for error in placed.errors:
        click.echo(f"twilio error: {error}", err=True)
    click.echo(f"call {placed.sid} ended: {placed.status}, {placed.duration} s")
    if placed.errors:
        raise click.ClickException("the call went wrong (the errors above)")
