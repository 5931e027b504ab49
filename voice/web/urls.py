"""Every URL Twilio calls back, by name (``Endpoint``), and building it absolute: Twilio calls it from outside.

The paths are a contract with Twilio and with calls in progress (numbers are configured with them, TwiML already
handed out names them, the emulator and its tests call them): never change one. ``voice.web.webhooks`` registers
each route from this enum, so a route and the URLs built for it cannot drift apart, and naming an endpoint that
does not exist is a type error (mypy), not a ``BuildError`` on a live call.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import request

from voice.web.parts import app_parts


class Endpoint(enum.Enum):
    """A webhook Twilio calls; the value is its path."""

    INCOMING = "/voice/incoming"
    GATHER = "/voice/gather"
    WHISPER = "/voice/whisper"
    WHISPER_ANSWER = "/voice/whisper/answer"
    DIAL_ENDED = "/voice/dial-ended"
    HOLD = "/voice/hold"
    HOLD_CHOICE = "/voice/hold/choice"
    QUEUE_EXIT = "/voice/queue-exit"
    CALLBACK_ANSWER = "/voice/callback/answer"
    CALLBACK_STATUS = "/voice/callback/status"
    CONNECT = "/voice/connect"
    VOICEMAIL = "/voice/voicemail"
    STATUS = "/voice/status"
    HANDOFF_REP_JOINS = "/voice/handoff/rep-joins"
    HANDOFF_EVENTS = "/voice/handoff/events"
    HANDOFF_HOLD_MUSIC = "/voice/handoff/hold-music"
    HANDOFF_WHISPER = "/voice/handoff/whisper"
    HANDOFF_WHISPER_ANSWER = "/voice/handoff/whisper/answer"
    HANDOFF_TARGET_STATUS = "/voice/handoff/target-status"
    HANDOFF_REP_LEFT = "/voice/handoff/rep-left"
    HANDOFF_CALLER_LEFT = "/voice/handoff/caller-left"
    HANDOFF_AFTER = "/voice/handoff/after"
    HANDOFF_FALLBACK = "/voice/handoff/fallback"
    HANDOFF_ANNOUNCE = "/voice/handoff/announce"

    @property
    def path(self) -> str:
        path: str = self.value
        return path

    @property
    def view_name(self) -> str:
        """The Flask endpoint name of its view, inside the ``voice`` blueprint (``voice.whisper_answer``)."""
        return self.name.lower()


@dataclass(frozen=True)
class CallbackUrls:
    """Absolute URLs of our endpoints under one base URL, as Twilio must call them: ``urls(Endpoint.WHISPER,
    offer=7)`` is ``https://host/voice/whisper?offer=7``. Parameters become the query string, in the order given."""

    base: str

    def __call__(self, endpoint: Endpoint, /, **params: object) -> str:
        if not params:
            return self.base + endpoint.path
        return f"{self.base}{endpoint.path}?{urlencode({key: str(value) for key, value in params.items()})}"


@functools.lru_cache(maxsize=64)
def callback_urls(base_url: str) -> CallbackUrls:
    """One builder per base URL, reused by every request (and by background work: REST redirects, the CLI)."""
    return CallbackUrls(base_url.rstrip("/"))


def request_urls() -> CallbackUrls:
    """The public base URL when configured (what Twilio calls), else the host this request came in on."""
    return callback_urls(app_parts().settings.public_url or request.host_url)
