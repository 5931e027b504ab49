"""What the app must do to live calls through Twilio's REST API once a webhook's transaction has committed.

Services decide inside one database transaction and return these; after the commit they are handed to an
``ActionSink`` (``voice.bootstrap`` runs them on the background pool through ``voice.adapters.twilio_rest``; the
queue simulation and tests collect them). Never on a webhook's response path: a REST round trip there would cap a
worker at a few calls per second.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PullCaller:
    """A rep was reserved for a caller on hold: redirect their call to ``/voice/connect`` (out of the queue)."""

    call_sid: str
    offer_id: int


@dataclass(frozen=True)
class PlaceCallback:
    """A callback's turn came and a rep is reserved: ring the customer, who then hears who is calling back."""

    callback_id: int
    offer_id: int
    to: str
    from_: str
    timeout: int
    # Which attempt this is (1, 2, ...): in its webhook URLs, so a late status of an earlier one is told apart.
    attempt: int = 1
    detect_machines: bool = False


class HandoffStep(enum.StrEnum):
    """Where a redirected leg of a hand-off goes next."""

    JOIN_CONFERENCE = "join_conference"  # the first rep's leg, into the conference
    AFTER_CONVERSATION = "after_conversation"  # the caller, whose rep hung up: the flow's goodbye or survey
    FIND_SOMEONE_ELSE = "find_someone_else"  # the caller, left alone by a failed hand-off: the next rep or the line


@dataclass(frozen=True)
class RedirectHandoffLeg:
    """Make a live leg of a hand-off fetch its next TwiML (``to`` says which step)."""

    call_sid: str
    handoff_id: int
    to: HandoffStep


@dataclass(frozen=True)
class EndCall:
    """Hang up a live call, or cancel one still ringing."""

    call_sid: str


@dataclass(frozen=True)
class HoldParticipant:
    """Put a conference participant on hold (hold music from ``/voice/handoff/hold-music``) or take them off."""

    conference: str
    call_sid: str
    hold: bool


@dataclass(frozen=True)
class AnnounceToParticipant:
    """Say something to one conference participant (the others do not hear it)."""

    conference: str
    call_sid: str
    handoff_id: int
    message: str


@dataclass(frozen=True)
class DialHandoffTarget:
    """Ring the rep a call is being handed to; their leg hears the whisper at ``/voice/handoff/whisper``."""

    handoff_id: int
    offer_id: int
    to: str
    from_: str
    timeout: int


@dataclass(frozen=True)
class CheckCall:
    """Ask Twilio how a call stands (a callback about it may have been lost); ``/voice/status`` logic follows."""

    call_sid: str


@dataclass(frozen=True)
class FindUnrecordedCalls:
    """Ask Twilio for the inbound calls that began after ``started_after`` and are over: one the store never heard
    of (its every webhook failed, its final status callback too: a database outage) is recorded from Twilio's
    account of it, as its final status callback would have recorded it."""

    started_after: datetime


@dataclass(frozen=True)
class EndedCall:
    """An inbound call Twilio says is over, as its list of calls tells it."""

    call_sid: str
    status: str
    duration: int | None
    caller: str
    called: str


@dataclass(frozen=True)
class TranscribeVoicemail:
    """A voicemail was filed: download and transcribe it (the flow version's words tune the recogniser), then add
    the words to the interaction and its task."""

    call_sid: str
    recording_url: str
    flow_name: str
    flow_version: str


Action = (
    PullCaller
    | PlaceCallback
    | RedirectHandoffLeg
    | EndCall
    | HoldParticipant
    | AnnounceToParticipant
    | DialHandoffTarget
    | CheckCall
    | FindUnrecordedCalls
    | TranscribeVoicemail
)

ActionSink = Callable[[Action], None]


class ActionRelay:
    """The one sink every service of an app hands its actions to. Where they go is connected once the app is
    assembled (``voice.bootstrap``: the background runner, which needs the services to report failures to, so it
    comes after them); tests and the queue simulation connect a list, to look at what would be done."""

    def __init__(self, target: ActionSink | None = None) -> None:
        self._target = target

    def connect(self, target: ActionSink) -> None:
        self._target = target

    def __call__(self, action: Action) -> None:
        if self._target is None:
            raise RuntimeError("ActionRelay used before it was connected")
        self._target(action)
