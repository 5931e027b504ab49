"""Scripted people on the phone: the caller (or callee) and the reps a ``<Dial>`` rings.

The emulator never guesses what a human would do: every keypress, utterance, recording and
hang-up comes from one of these scripts, so a test states its scenario up front and the
webhook app is exercised exactly as Twilio would exercise it for that scenario.

Scripts are immutable descriptions.  The per-call progress through a script lives in small
cursor objects (:class:`ScriptCursor`, :class:`RepCursor`), so one script object can be
registered once and used by many calls without them stepping on each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "CallerInput",
    "CallerScript",
    "Digits",
    "InputSource",
    "Recording",
    "RepBehavior",
    "RepCursor",
    "RepScript",
    "ScriptCursor",
    "Silence",
    "Speech",
]


@dataclass(frozen=True)
class Speech:
    """The party says ``text``; a speech-enabled ``<Gather>`` reports it as ``SpeechResult``."""

    text: str
    confidence: float = 0.92


@dataclass(frozen=True)
class Digits:
    """The party presses keys, e.g. ``Digits("1")`` or ``Digits("1234#")``."""

    digits: str


@dataclass(frozen=True)
class Silence:
    """The party does nothing until the verb times out."""


@dataclass(frozen=True)
class Recording:
    """The party speaks for ``duration`` seconds into a ``<Record>``.

    ``wav`` is what the fake REST API serves for the recording; ``None`` serves generated
    silence of the right length, which is enough for apps that only store or forward it.
    """

    duration: float = 7
    wav: bytes | None = field(default=None, repr=False)


CallerInput = Speech | Digits | Silence | Recording


class InputSource(Protocol):
    """What the TwiML interpreter needs from whoever is on a leg."""

    @property
    def talk_seconds(self) -> float | None:
        """Virtual seconds this party stays once bridged; ``None`` = until someone else ends it."""
        ...

    @property
    def queue_patience(self) -> float | None:
        """Virtual seconds this party waits in an ``<Enqueue>`` before hanging up; ``None`` = forever."""
        ...

    def next_input(self) -> CallerInput:
        """The party's reaction to the next ``<Gather>`` / ``<Record>``."""
        ...


class Party(Protocol):
    """Anything that can take part in calls: gives each call its own :class:`InputSource`."""

    def cursor(self) -> InputSource: ...


AnswerMode = Literal["answer", "busy", "no-answer"]
#: Who or what picks up, as answering machine detection reports it (``AnsweredBy``, with MachineDetection=Enable).
AnsweredBy = Literal["human", "machine_start", "fax", "unknown"]


@dataclass(frozen=True)
class CallerScript:
    """The person who calls in (or who answers an outbound REST-created call).

    Each ``<Gather>`` and each ``<Record>`` consumes the next item of ``inputs``; when the list
    runs out the party is silent.  ``talk_seconds`` is how long the party talks to a rep once
    bridged (``None``: until the test calls ``call.hang_up()`` or the rep hangs up).
    ``hang_up_in_queue_after`` is the party's patience inside ``<Enqueue>``.  ``answer`` only
    matters for outbound calls: a callee can also be ``"busy"`` or never answer.  ``answered_by``
    is what answering machine detection reports when the call asked for it (a voicemail box is
    ``"machine_start"``).
    """

    inputs: Sequence[CallerInput] = ()
    talk_seconds: float | None = 30
    hang_up_in_queue_after: float | None = None
    answer: AnswerMode = "answer"
    answered_by: AnsweredBy = "human"

    def __post_init__(self) -> None:
        # Freeze the inputs so a list the test keeps mutating cannot change a running call.
        object.__setattr__(self, "inputs", tuple(self.inputs))

    def cursor(self) -> ScriptCursor:
        """A fresh, independent walk through this script (one per call)."""
        return ScriptCursor(self)


class ScriptCursor:
    """One call's position in a :class:`CallerScript`."""

    def __init__(self, script: CallerScript) -> None:
        self.script = script
        self._next = 0

    @property
    def talk_seconds(self) -> float | None:
        return self.script.talk_seconds

    @property
    def queue_patience(self) -> float | None:
        return self.script.hang_up_in_queue_after

    def next_input(self) -> CallerInput:
        if self._next >= len(self.script.inputs):
            return Silence()
        item = self.script.inputs[self._next]
        self._next += 1
        return item


RepKind = Literal["accept", "decline", "ignore", "no-answer", "busy"]


@dataclass(frozen=True)
class RepBehavior:
    """What a rep does with one offered call.

    ``answer_after`` is the ring time (virtual seconds) before the rep picks up; a rep whose
    ``answer_after`` is not shorter than the ``<Dial timeout>`` never picks up that call.
    """

    kind: RepKind
    key: str | None = None
    talk_seconds: float | None = 30
    answer_after: float = 2.0

    @property
    def answers(self) -> bool:
        return self.kind in ("accept", "decline", "ignore")


@dataclass(frozen=True)
class RepScript:
    """How the rep at one number treats successive offered calls (the last behaviour repeats)."""

    behaviors: tuple[RepBehavior, ...]

    def __post_init__(self) -> None:
        if not self.behaviors:
            raise ValueError("a RepScript needs at least one behaviour")

    @classmethod
    def accepts(cls, talk_seconds: float | None = 30, key: str = "1", answer_after: float = 2.0) -> RepScript:
        """Answers, presses ``key`` at every whisper ``<Gather>``, then talks ``talk_seconds``."""
        return cls((RepBehavior("accept", key, talk_seconds, answer_after),))

    @classmethod
    def declines(cls, key: str = "2", answer_after: float = 2.0) -> RepScript:
        """Answers and presses ``key`` (the app's "decline" key) at the whisper ``<Gather>``."""
        return cls((RepBehavior("decline", key, 0, answer_after),))

    @classmethod
    def ignores_whisper(cls, talk_seconds: float | None = 30, answer_after: float = 2.0) -> RepScript:
        """Answers but presses nothing, so every whisper ``<Gather>`` times out."""
        return cls((RepBehavior("ignore", None, talk_seconds, answer_after),))

    @classmethod
    def no_answer(cls) -> RepScript:
        """Lets it ring until the ``<Dial timeout>`` expires."""
        return cls((RepBehavior("no-answer", None, None, 0.0),))

    @classmethod
    def busy(cls) -> RepScript:
        """The line is busy: the ``<Dial>`` ends at once with ``DialCallStatus=busy``."""
        return cls((RepBehavior("busy", None, None, 0.0),))

    @classmethod
    def sequence(cls, scripts: Sequence[RepScript]) -> RepScript:
        """One script per successive offer; the last one repeats for all later offers."""
        behaviors: list[RepBehavior] = []
        for script in scripts:
            behaviors.extend(script.behaviors)
        return cls(tuple(behaviors))

    def for_offer(self, index: int) -> RepBehavior:
        """Behaviour for the ``index``-th (0-based) call offered to this rep."""
        return self.behaviors[min(index, len(self.behaviors) - 1)]


class RepCursor:
    """The rep's side of one answered call: feeds the whisper ``<Gather>`` and bounds the talk."""

    def __init__(self, behavior: RepBehavior) -> None:
        self.behavior = behavior

    @property
    def talk_seconds(self) -> float | None:
        return self.behavior.talk_seconds

    @property
    def queue_patience(self) -> float | None:
        return None

    def next_input(self) -> CallerInput:
        # A rep answers every prompt the same way: the same key, or nothing at all.
        if self.behavior.key is None or self.behavior.kind == "ignore":
            return Silence()
        return Digits(self.behavior.key)
