"""Services shared by every call of one emulator: configuration, registries and stores.

One :class:`Runtime` belongs to one :class:`~voice.emulator.TwilioEmulator`; nothing here is
module-global, so several emulators (say, one per test) never share state.
"""

from __future__ import annotations

import io
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from voice.emulator.conferences import ConferenceRegistry
from voice.emulator.http import WebhookClient
from voice.emulator.legs import EmulatedCall, Leg
from voice.emulator.parties import CallerScript, RepBehavior, RepScript
from voice.emulator.queues import QueueRegistry

__all__ = ["Config", "Directory", "RecordingStore", "Runtime", "StoredRecording", "silent_wav"]


@dataclass(frozen=True)
class Config:
    public_url: str
    account_sid: str
    auth_token: str
    time_scale: float
    queue_poll_interval: float
    #: Virtual seconds one ``<Play>`` of an audio URL lasts (the emulator never downloads audio).
    play_seconds: float = 10.0
    #: Twilio's default maximum call length (``TimeLimit``), 4 hours.
    time_limit: float = 14400.0


def silent_wav(seconds: float, rate: int = 8000) -> bytes:
    """A valid mono 8-bit WAV of ``seconds`` of silence (what a recording with no ``wav`` serves)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(rate)
        out.writeframes(b"\x80" * int(max(0.0, seconds) * rate))
    return buffer.getvalue()


@dataclass(frozen=True)
class StoredRecording:
    sid: str
    account_sid: str
    call_sid: str
    duration: int
    source: str
    wav: bytes | None = None
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def audio(self) -> bytes:
        return self.wav if self.wav is not None else silent_wav(self.duration)


class RecordingStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, StoredRecording] = {}

    def add(self, recording: StoredRecording) -> None:
        with self._lock:
            self._items[recording.sid] = recording

    def get(self, sid: str) -> StoredRecording | None:
        with self._lock:
            return self._items.get(sid)


class Directory:
    """Who answers which number: reps for ``<Dial>``, callees for REST-created calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reps: dict[str, RepScript] = {}
        self._offers: dict[str, int] = {}
        self._callees: dict[str, CallerScript] = {}

    def register_rep(self, number: str, script: RepScript) -> None:
        with self._lock:
            self._reps[number] = script
            # A new registration is a new scenario: its sequence starts from the first entry.
            self._offers[number] = 0

    def offer(self, number: str) -> RepBehavior | None:
        """Ring the rep at ``number``: the behaviour for this offer, or ``None`` if nobody is there."""
        with self._lock:
            script = self._reps.get(number)
            if script is None:
                return None
            index = self._offers.get(number, 0)
            self._offers[number] = index + 1
            return script.for_offer(index)

    def is_rep(self, number: str) -> bool:
        with self._lock:
            return number in self._reps

    def register_callee(self, number: str, script: CallerScript) -> None:
        with self._lock:
            self._callees[number] = script

    def callee(self, number: str) -> CallerScript | None:
        with self._lock:
            return self._callees.get(number)


class Runtime:
    """Everything a call thread or the fake REST API needs to reach."""

    def __init__(self, config: Config, webhooks: WebhookClient) -> None:
        self.config = config
        self.webhooks = webhooks
        self.queues = QueueRegistry()
        self.conferences = ConferenceRegistry(webhooks, config.account_sid)
        self.recordings = RecordingStore()
        self.directory = Directory()
        self.rest_url = ""
        self.cond = threading.Condition()
        self._calls: list[EmulatedCall] = []
        self._legs: dict[str, Leg] = {}
        self.closing = False

    def register_call(self, call: EmulatedCall) -> None:
        with self.cond:
            self._calls.append(call)
            self._legs[call.root_leg.sid] = call.root_leg
            self.cond.notify_all()

    def launch(self, call: EmulatedCall, target: Callable[[], None]) -> None:
        """Register ``call`` and run ``target`` (its whole life) in a thread of its own."""
        if self.closing:
            raise RuntimeError("the emulator is closed")
        self.register_call(call)
        call.thread = threading.Thread(target=target, name=f"call-{call.sid[:12]}", daemon=True)
        call.thread.start()

    def register_leg(self, leg: Leg) -> None:
        with self.cond:
            self._legs[leg.sid] = leg
            self.cond.notify_all()

    def leg(self, sid: str) -> Leg | None:
        with self.cond:
            return self._legs.get(sid)

    def legs(self) -> list[Leg]:
        with self.cond:
            return list(self._legs.values())

    def calls(self) -> list[EmulatedCall]:
        with self.cond:
            return list(self._calls)

    def recording_url(self, sid: str) -> str:
        """Where Twilio says a recording lives (no extension; append ``.wav``/``.json``)."""
        return f"{self.rest_url}/2010-04-01/Accounts/{self.config.account_sid}/Recordings/{sid}"
