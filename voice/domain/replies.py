"""What the call service decides, before it is TwiML.

The service returns one of these; ``voice.web.twiml.render`` is the only code that turns them into XML. Keeping the
decision and the wire format apart lets tests check decisions directly and lets the TwiML stay in one module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ivr_flows import Step
from ivr_flows.schema import BUILTIN_PHRASES


@dataclass(frozen=True)
class FlowReply:
    """Say the flow's prompts and ask the caller (or hang up) as the engine decided."""

    step: Step


@dataclass(frozen=True)
class DialRep:
    """Ring a rep — or a group at once, first to answer takes it; each rep hears the whisper at ``/voice/whisper``
    before the caller is bridged. ``targets``: (offer id, rep phone); the Dial action names the first offer."""

    targets: tuple[tuple[int, str], ...]
    say: tuple[str, ...]
    ring_timeout: int
    caller_id: str | None
    language: str
    voice: str | None


@dataclass(frozen=True)
class EnqueueCaller:
    """Nobody free: the caller waits in the department's Twilio queue (the hold loop is ``/voice/hold``)."""

    queue_name: str
    say: tuple[str, ...]
    language: str
    voice: str | None


@dataclass(frozen=True)
class HoldLoop:
    """One pass of the waitUrl loop: maybe an announcement (position, estimated wait) and a choice to press a key
    for (callback, voicemail), then hold music or a pause; then Twilio fetches the loop again."""

    announcement: str | None
    choice_prompt: str | None
    music_url: str
    pause_seconds: int
    language: str
    voice: str | None


@dataclass(frozen=True)
class LeaveQueue:
    """Take the caller out of the queue (after saying ``say``); Twilio continues at the Enqueue action
    (``/voice/queue-exit``)."""

    say: tuple[str, ...] = ()
    language: str = "en-US"
    voice: str | None = None


@dataclass(frozen=True)
class Whisper:
    """The rep's leg: the summary, then "press 1"; no key means the call goes to the next rep."""

    offer_id: int
    summary: str
    timeout: int
    language: str
    voice: str | None


@dataclass(frozen=True)
class Bridge:
    """The rep accepted: an empty document ends the whisper and Twilio bridges the two legs."""


@dataclass(frozen=True)
class Goodbye:
    """Say something (or nothing) and hang up."""

    say: tuple[str, ...]
    language: str = "en-US"
    voice: str | None = None


@dataclass(frozen=True)
class Voicemail:
    """Ask for a message and record it; the recording lands at ``/voice/voicemail``."""

    say: tuple[str, ...]
    max_length: int
    language: str = "en-US"
    voice: str | None = None
    no_message: str = BUILTIN_PHRASES["no_message"]["en"]  # when the caller leaves none


@dataclass(frozen=True)
class Fallback:
    """Something broke: apologise, then dial the fallback number, or take a voicemail when there is none."""

    apology: str
    number: str | None
    voicemail_prompt: str
    voicemail_max_length: int
    language: str | None = None
    voice: str | None = None
    no_message: str = BUILTIN_PHRASES["no_message"]["en"]


#: Whose leg joins a hand-off's conference: the caller, the first rep ("from") or the rep it goes to ("to").
ConferenceLeg = Literal["caller", "from", "to"]


@dataclass(frozen=True)
class JoinConference:
    """Put this leg into a hand-off's conference (after saying ``say``).

    ``starts``: the conference starts when this leg joins (reps); the caller does not start it, so until a rep is
    there they hear hold music rather than silence. ``ends``: the conference ends when this leg leaves (the
    caller: a hang-up ends the hand-off for everyone). ``label`` says whose leg it is, which is also what decides
    where its Dial goes when the conference is over (``voice.web.twiml``).
    """

    handoff_id: int
    room: str
    label: ConferenceLeg
    starts: bool
    ends: bool
    say: tuple[str, ...] = ()
    language: str = "en-US"
    voice: str | None = None

    @classmethod
    def leg(
        cls, label: ConferenceLeg, *, handoff_id: int, room: str, say: str, language: str, voice: str | None
    ) -> JoinConference:
        """The caller, the first rep ("from") or the target rep ("to") joining a hand-off's conference."""
        starts, ends = _CONFERENCE_LEGS[label]
        return cls(handoff_id, room, label, starts, ends, (say,), language, voice)


# Who starts the conference, and who ends it by leaving.
_CONFERENCE_LEGS: dict[ConferenceLeg, tuple[bool, bool]] = {
    "caller": (False, True),
    "from": (True, False),
    "to": (True, False),
}


@dataclass(frozen=True)
class HoldMusic:
    """Hold audio for a conference's waitUrl / holdUrl: only Say, Play, Pause and Redirect are allowed there."""

    music_url: str
    pause_seconds: int


@dataclass(frozen=True)
class HandoffWhisper:
    """The rep a call is handed to hears the summary and the first rep's note, then presses 1 to join."""

    handoff_id: int
    summary: str
    timeout: int
    language: str
    voice: str | None


@dataclass(frozen=True)
class Announcement:
    """Words for one conference participant (an announceUrl document: Say and Play only, nothing that ends it)."""

    text: str
    language: str = "en-US"
    voice: str | None = None


@dataclass(frozen=True)
class Acknowledge:
    """Status callbacks: Twilio ignores the body, but it must still be valid TwiML."""


@dataclass(frozen=True)
class HoldThrough:
    """Serving the hold loop failed (``failures`` times in a row): the caller keeps holding a moment and the loop is
    fetched again, counting (the count rides in the loop's URL: the store may be what failed)."""

    failures: int
    pause_seconds: int = 3


@dataclass(frozen=True)
class AfterHandoff:
    """Send the caller on to what follows a hand-off's conversation (the flow's goodbye or survey) without deciding
    it here. What the caller's conference ``<Dial>`` action answers: Twilio requests that action also when we
    redirect the leg by REST, and ignores its TwiML then, so deciding there would run the flow's ending twice."""

    handoff_id: int


Reply = (
    FlowReply
    | DialRep
    | EnqueueCaller
    | HoldLoop
    | LeaveQueue
    | Whisper
    | Bridge
    | Goodbye
    | Voicemail
    | Fallback
    | JoinConference
    | HoldMusic
    | HandoffWhisper
    | Announcement
    | Acknowledge
    | AfterHandoff
    | HoldThrough
)
