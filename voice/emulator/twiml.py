"""The TwiML interpreter: runs a leg's documents verb by verb, the way Twilio does.

One :class:`LegRunner` drives one leg.  The top-level leg of every call gets a runner in the
call's own thread; a ``<Dial><Number url>`` whisper gets a second runner for the rep's leg in
the same thread (see :mod:`voice.emulator.dial`).

Control flow uses two exceptions because TwiML control transfers can come from deep inside a
verb (a hang-up in the middle of a queue wait, a REST redirect during a ``<Pause>``):

* :class:`Interrupted` carries a signal delivered to a leg from outside (REST API, the test,
  a scripted deadline).  Verbs with clean-up duties (``<Enqueue>``, ``<Dial>``) catch it, do what
  Twilio does (leave the queue, post the action, hang up the other leg) and re-raise.
* :class:`LegEnded` means the leg's own TwiML ended it (``<Hangup>``, ``<Reject>``, an
  application error).
* :class:`Woken` means a condition installed with :meth:`LegRunner.waking` became true (a
  conference participant's situation changed: the conference started, they were put on hold,
  kicked ...).  Only conference code installs such conditions, and it catches :class:`Woken`.

Virtual time: every verb advances the call's virtual clock (Say ~ words/2.5 s, Pause, Gather
timeouts ...).  Real sleeping is ``virtual * time_scale``; with ``time_scale=0`` scripted waits
are instantaneous.  Waits that can only end through an outside event (a bridge where neither
party has a talk time) run on real time instead, so the test has a chance to act.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from email.utils import format_datetime
from typing import Final, Literal, NoReturn

import requests

from voice.emulator.http import (
    Document,
    DocumentProblem,
    HttpResult,
    new_session,
    parse_document,
    parse_twiml,
)
from voice.emulator.legs import (
    APPLICATION_ERROR_MESSAGE,
    Deadline,
    EmulatedCall,
    HangupSignal,
    Leg,
    RedirectSignal,
    Signal,
    TwilioError,
    WebhookExchange,
    new_sid,
)
from voice.emulator.parties import Digits, InputSource, Recording, Silence, Speech
from voice.emulator.queues import QueueMember
from voice.emulator.runtime import Runtime, StoredRecording

__all__ = [
    "LEAVE",
    "WAIT_VERBS",
    "WHISPER_VERBS",
    "Interrupted",
    "LegEnded",
    "LegRunner",
    "Woken",
    "new_session",
    "run_detached_leg",
    "run_inbound_call",
    "run_outbound_call",
]

logger = logging.getLogger(__name__)

#: Twilio's default ``<Enqueue waitUrl>``: its classical hold-music playlist.
DEFAULT_HOLD_MUSIC: Final = "https://twimlets.com/holdmusic?Bucket=com.twilio.music.classical"

#: Verbs Twilio runs from an ``<Enqueue waitUrl>`` document.
WAIT_VERBS: Final = frozenset({"Say", "Play", "Pause", "Gather", "Redirect", "Leave", "Hangup"})
#: Verbs the emulator runs on a rep's leg from ``<Number url>`` (the whisper).
WHISPER_VERBS: Final = frozenset({"Say", "Play", "Pause", "Gather", "Redirect", "Hangup", "Reject"})
#: Verbs that may be nested in ``<Gather>``.
GATHER_CHILDREN: Final = frozenset({"Say", "Play", "Pause"})

#: Virtual seconds per spoken word (text-to-speech speed of ~2.5 words per second).
WORDS_PER_SECOND: Final = 2.5
#: Virtual seconds per DTMF key pressed or played.
SECONDS_PER_DIGIT: Final = 0.3
#: How many times ``loop="0"`` repeats before the emulator gives up (Twilio: "until hang-up").
ENDLESS_LOOP: Final = 1000


class Interrupted(Exception):
    """A signal (hang-up, redirect) reached ``leg`` while its TwiML was running."""

    def __init__(self, leg: Leg, signal: Signal) -> None:
        super().__init__(f"{leg.sid}: {signal}")
        self.leg = leg
        self.signal = signal


class LegEnded(Exception):
    """The leg's own TwiML ended it; ``status`` is its final CallStatus."""

    def __init__(self, status: str = "completed", reason: Literal["hangup", "reject", "error"] = "hangup"):
        super().__init__(f"{status} ({reason})")
        self.status = status
        self.reason = reason


class Woken(Exception):
    """A :meth:`LegRunner.waking` condition became true while the leg was waiting or between verbs."""


class _Leave:
    """Marker returned when ``<Leave>`` runs inside a waitUrl document."""

    def __repr__(self) -> str:
        return "LEAVE"


LEAVE: Final = _Leave()

#: What executing a document yields: another document to continue with, a Leave, or nothing.
Step = Document | _Leave | None


def spoken_seconds(text: str) -> float:
    return max(0.5, len(text.split()) / WORDS_PER_SECOND)


def attr_float(value: str | None, default: float) -> float:
    if value is None or not value.strip():
        return default
    try:
        return float(value)
    except ValueError:
        return default


def attr_bool(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.strip().lower() == "true"


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


def rfc2822(call: EmulatedCall) -> str:
    return format_datetime(call.wall(call.clock))


def _given(doc: Document) -> Callable[[], Document]:
    return lambda: doc


class LegRunner:
    """Interprets TwiML for one leg.

    ``mode`` is ``"call"`` for a top-level leg and ``"whisper"`` for a rep leg running its
    ``<Number url>`` document.  ``watch`` lists every leg whose signals interrupt this runner:
    its own leg and, for a whisper, the caller's leg too (the caller hanging up mid-whisper
    must stop the whisper).
    """

    def __init__(
        self,
        rt: Runtime,
        call: EmulatedCall,
        leg: Leg,
        inputs: InputSource | None,
        *,
        session: requests.Session,
        mode: Literal["call", "whisper"] = "call",
        also_watch: tuple[Leg, ...] = (),
    ) -> None:
        self.rt = rt
        self.call = call
        self.leg = leg
        self.inputs = inputs
        self.session = session
        self.mode = mode
        self.watch: list[Leg] = [leg, *also_watch]
        #: Extra parameters for every request of this leg (queue stats while in a waitUrl).
        self.context_params: dict[str, str] = {}
        self._handlers: dict[str, Callable[[ET.Element, Document], Step]] = {
            "Say": self._say,
            "Play": self._play,
            "Pause": self._pause,
            "Gather": self._gather,
            "Redirect": self._redirect,
            "Hangup": self._hangup,
            "Reject": self._reject,
            "Record": self._record,
            "Enqueue": self._enqueue,
            "Leave": self._leave,
            "Dial": self._dial,
        }
        self._in_wait = False
        #: Conditions that interrupt this runner with :class:`Woken` (see :meth:`waking`).
        self._wake_conditions: list[Callable[[], bool]] = []
        #: Twilio error code for a verb a restricted document may not use (12200; 13238 in conferences).
        self._disallowed_code = 12200
        #: Real seconds every Say/Play/Pause takes at least (conference audio loops must not spin).
        self._min_verb_real = 0.0

    @property
    def party(self) -> str:
        return self.leg.party

    # ------------------------------------------------------------------ signals and time
    def _woken(self) -> bool:
        return any(condition() for condition in self._wake_conditions)

    def _pending(self) -> bool:
        return any(leg.pending is not None and leg.live for leg in self.watch) or self._woken()

    def checkpoint(self) -> None:
        """Raise :class:`Interrupted` for the first watched leg with a pending signal.

        Signals win over :meth:`waking` conditions, which raise :class:`Woken`.
        """
        with self.call.cond:
            for leg in self.watch:
                signal = leg.pending
                if signal is not None and leg.live:
                    leg.pending = None
                    raise Interrupted(leg, signal)
        if self._woken():
            raise Woken()

    @contextlib.contextmanager
    def waking(self, condition: Callable[[], bool]) -> Iterator[None]:
        """While inside, waits and verb boundaries raise :class:`Woken` once ``condition()`` holds.

        ``condition`` is evaluated under the call's lock by this thread, so it must not take other
        locks (read a counter another thread bumps, then notifies this call's condition).
        """
        self._wake_conditions.append(condition)
        try:
            yield
        finally:
            self._wake_conditions.remove(condition)

    @contextlib.contextmanager
    def audio_mode(self, disallowed_code: int, min_real: float) -> Iterator[None]:
        """Run documents as conference audio (waitUrl, holdUrl, announceUrl).

        Disallowed verbs are reported with ``disallowed_code``, and every Say/Play/Pause takes at
        least ``min_real`` real seconds so a ``<Redirect>`` loop never spins at ``time_scale=0``.
        """
        saved = self._disallowed_code, self._min_verb_real
        self._disallowed_code, self._min_verb_real = disallowed_code, min_real
        try:
            yield
        finally:
            self._disallowed_code, self._min_verb_real = saved

    def _next_deadline(self) -> Deadline | None:
        deadlines = self.call.deadlines
        return min(deadlines, key=lambda d: d.at) if deadlines else None

    def advance(self, seconds: float | None, *, min_real: float = 0.0) -> None:
        """Let ``seconds`` of virtual time pass (``None``: until something happens).

        Wakes early for any watched signal, and stops at the earliest scripted deadline (which is
        then delivered as an :class:`Interrupted`).  With ``time_scale=0`` a finite wait takes no
        real time but still sleeps ``min_real``, which is how polling loops avoid spinning.
        """
        self.checkpoint()
        call = self.call
        now = call.clock
        stop = None if seconds is None else now + max(0.0, seconds)
        fire: Deadline | None = None
        deadline = self._next_deadline()
        if deadline is not None and (stop is None or deadline.at <= stop + 1e-9):
            stop, fire = max(deadline.at, now), deadline
        scale = self.rt.config.time_scale
        if seconds is None and scale <= 0:
            scale = 1.0  # open-ended waits run on real time so the test can intervene
        real = None if stop is None else max(min_real, (stop - now) * scale)
        started = time.monotonic()
        with call.cond:
            woke = call.cond.wait_for(self._pending, timeout=real) if real is None or real > 0 else self._pending()
        elapsed = time.monotonic() - started
        if woke:
            if scale > 0:
                call.clock = min(now + elapsed / scale, stop) if stop is not None else now + elapsed / scale
            self.checkpoint()
        call.clock = stop if stop is not None else now + (elapsed / scale if scale > 0 else 0.0)
        if fire is not None:
            raise Interrupted(fire.leg, fire.signal)

    @contextlib.contextmanager
    def deadline(self, at: float, leg: Leg, signal: Signal) -> Iterator[None]:
        """While inside, deliver ``signal`` to ``leg`` when virtual time reaches ``at``."""
        entry = Deadline(at, leg, signal)
        self.call.deadlines.append(entry)
        try:
            yield
        finally:
            self.call.deadlines.remove(entry)

    @contextlib.contextmanager
    def watching(self, *legs: Leg) -> Iterator[None]:
        """While inside, signals to ``legs`` also interrupt this runner."""
        added = [leg for leg in legs if leg not in self.watch]
        self.watch.extend(added)
        try:
            yield
        finally:
            for leg in added:
                self.watch.remove(leg)

    # ------------------------------------------------------------------ state helpers
    def set_state(self, state: str) -> None:
        if self.leg is self.call.root and self.leg.live:
            self.call.set_state(state)

    def answer(self) -> None:
        if not self.leg.answered:
            self.leg.answer(self.call.clock)
            self.set_state("in-progress")

    def leg_params(self) -> dict[str, str]:
        params = self.leg.params()
        params.update(self.context_params)
        return params

    def warn(self, code: int, message: str, url: str | None = None, leg: Leg | None = None) -> None:
        self.call.record_error(TwilioError(code, message, url, (leg or self.leg).sid, self.call.clock, fatal=False))

    def app_error(self, code: int, message: str, url: str | None) -> NoReturn:
        """Twilio's reaction to a broken document: log it, apologise to the party, hang up."""
        self.call.record_error(TwilioError(code, message, url, self.leg.sid, self.call.clock, fatal=True))
        if self.mode == "call":
            self.answer()
        self.call.note(self.party, "Say", APPLICATION_ERROR_MESSAGE, error=str(code))
        self.advance(spoken_seconds(APPLICATION_ERROR_MESSAGE))
        raise LegEnded("completed", "error")

    # ------------------------------------------------------------------ HTTP
    def request(
        self, url: str, method: str, params: Mapping[str, str], purpose: str, leg: Leg | None = None
    ) -> HttpResult:
        result = self.rt.webhooks.send(self.session, url, method, params)
        self.call.record_exchange(
            WebhookExchange.of(result, call_sid=(leg or self.leg).sid, purpose=purpose, at=self.call.clock)
        )
        return result

    def fetch(self, url: str, method: str | None, params: Mapping[str, str], purpose: str) -> Document:
        """Request a TwiML document; anything Twilio could not run ends the leg like Twilio does."""
        result = self.request(url, method or "POST", params, purpose)
        self.checkpoint()
        parsed = parse_document(result)
        if isinstance(parsed, Document):
            return parsed
        if isinstance(parsed, DocumentProblem):
            self.app_error(parsed.code, parsed.message, result.url)
        # text/plain is read out and audio is played, then Twilio hangs up.
        if self.mode == "call":
            self.answer()
        if parsed.startswith("[play "):
            self.call.note(self.party, "Play", parsed)
            self.advance(self.rt.config.play_seconds)
        else:
            self.warn(12300, "text/plain response: Twilio reads it aloud and hangs up", result.url)
            self.call.note(self.party, "Say", parsed.strip())
            self.advance(spoken_seconds(parsed))
        raise LegEnded("completed", "hangup")

    def notify(
        self, url: str, method: str | None, params: Mapping[str, str], purpose: str, leg: Leg | None = None
    ) -> None:
        """A request whose response Twilio ignores (status callbacks, actions after hang-up)."""
        result = self.request(url, method or "POST", params, purpose, leg)
        problem = result.delivery_problem()
        if problem is not None:
            self.warn(problem.code, problem.message, result.url, leg)

    def leg_event(self, leg: Leg, event: str) -> None:
        """Post ``leg``'s status callback for ``event`` if it subscribed to it."""
        spec = leg.status_callback
        if spec is None or event not in spec.events:
            return
        params = leg.params()
        if event != "completed":
            params["CallStatus"] = {"answered": "in-progress"}.get(event, event)
        else:
            params["CallDuration"] = str(leg.duration)
        params["CallbackSource"] = "call-progress-events"
        params["Timestamp"] = rfc2822(self.call)
        params["SequenceNumber"] = str(leg.callback_sequence)
        leg.callback_sequence += 1
        self.notify(spec.url, spec.method, params, f"status callback ({event})", leg)

    def absolute(self, ref: str, doc: Document) -> str:
        return self.rt.webhooks.absolute(ref, doc.url)

    # ------------------------------------------------------------------ documents
    def drive(
        self,
        start: Document | Callable[[], Document],
        allowed: frozenset[str] | None = None,
        *,
        follow_redirects: bool = True,
    ) -> Step:
        """Run a document and every document it hands control to; returns at the end (or on Leave).

        ``start`` is the document or a function fetching it, so that a REST redirect arriving
        while the very first document is being fetched is followed too.  REST redirects of this
        leg are followed here unless ``follow_redirects`` is False (inside a queue wait the
        redirect must first unwind through ``<Enqueue>`` to leave the queue).
        """
        allowed = allowed if allowed is not None else self._default_allowed()
        load: Callable[[], Document] = start if callable(start) else _given(start)
        while True:
            try:
                step = self.execute(load(), allowed)
            except Interrupted as intr:
                signal = intr.signal
                if follow_redirects and intr.leg is self.leg and isinstance(signal, RedirectSignal):
                    load = functools.partial(self.redirect_document, signal)
                    continue
                raise
            if isinstance(step, Document):
                load = _given(step)
                continue
            return step

    def _default_allowed(self) -> frozenset[str]:
        return WHISPER_VERBS if self.mode == "whisper" else frozenset(self._handlers)

    def redirect_document(self, signal: RedirectSignal) -> Document:
        """The document a REST redirect (or queue dequeue) points the leg at."""
        self.call.note("app", "Redirect", signal.url or "(inline TwiML)", source=signal.source)
        if signal.twiml is not None:
            parsed = parse_twiml(signal.twiml.encode("utf-8"), self.rt.webhooks.public_url + "/")
            if isinstance(parsed, DocumentProblem):
                self.app_error(parsed.code, parsed.message, None)
            return parsed
        assert signal.url is not None
        return self.fetch(signal.url, signal.method, self.leg_params(), f"redirect ({signal.source})")

    def execute(self, doc: Document, allowed: frozenset[str]) -> Step:
        for element in doc.verbs:
            self.checkpoint()
            verb = element.tag
            handler = self._handlers.get(verb)
            if handler is None:
                self.warn(12200, f"<{verb}> is not a TwiML verb the emulator runs; skipped", doc.url)
                continue
            if verb not in allowed:
                where = "a waitUrl document" if self._in_wait else f"this {self.mode} document"
                if self._disallowed_code != 12200:
                    where = "conference audio (waitUrl/holdUrl/announceUrl)"
                self.warn(self._disallowed_code, f"<{verb}> is not allowed in {where}; skipped", doc.url)
                continue
            if verb != "Reject" and self.mode == "call":
                self.answer()
            step = handler(element, doc)
            if step is not None:
                return step
        return None

    # ------------------------------------------------------------------ simple verbs
    def _loops(self, element: ET.Element) -> tuple[int, bool]:
        count = int(attr_float(element.get("loop"), 1))
        return (ENDLESS_LOOP, True) if count <= 0 else (count, False)

    def _say(self, element: ET.Element, doc: Document) -> Step:
        text = " ".join("".join(element.itertext()).split())
        count, endless = self._loops(element)
        attrs = {k: v for k, v in element.attrib.items() if k in ("voice", "language")}
        for index in range(count):
            if index:
                self.checkpoint()
            self.call.note(self.party, "Say", text, **attrs)
            self.advance(spoken_seconds(text), min_real=self._verb_min_real(endless))
        return None

    def _play(self, element: ET.Element, doc: Document) -> Step:
        digits = element.get("digits")
        count, endless = self._loops(element)
        if digits:
            text, seconds = f"[play digits {digits}]", SECONDS_PER_DIGIT * len(digits)
        else:
            text = f"[play {self.absolute((element.text or '').strip(), doc)}]"
            seconds = self.rt.config.play_seconds
        for index in range(count):
            if index:
                self.checkpoint()
            self.call.note(self.party, "Play", text)
            self.advance(seconds, min_real=self._verb_min_real(endless))
        return None

    def _verb_min_real(self, endless: bool) -> float:
        return max(self._min_verb_real, self.rt.config.queue_poll_interval if endless else 0.0)

    def _pause(self, element: ET.Element, doc: Document) -> Step:
        length = attr_float(element.get("length"), 1.0)
        self.call.note(self.party, "Pause", "", length=f"{length:g}")
        self.advance(length, min_real=self._min_verb_real)
        return None

    def _redirect(self, element: ET.Element, doc: Document) -> Step:
        url = self.absolute((element.text or "").strip(), doc)
        return self.fetch(url, element.get("method"), self.leg_params(), "redirect")

    def _hangup(self, element: ET.Element, doc: Document) -> Step:
        self.call.note("app", "Hangup", f"{self.party} leg hung up by TwiML")
        raise LegEnded("completed", "hangup")

    def _reject(self, element: ET.Element, doc: Document) -> Step:
        reason = element.get("reason", "rejected")
        if self.mode == "call" and not self.leg.answered:
            status = "busy" if reason == "busy" else "no-answer"
            self.call.note("app", "Reject", f"call rejected ({reason})")
            raise LegEnded(status, "reject")
        self.call.note("app", "Reject", "Reject after answer: call hung up")
        raise LegEnded("completed", "hangup")

    # ------------------------------------------------------------------ Gather
    def _next_input(self) -> Speech | Digits | Silence | Recording:
        return self.inputs.next_input() if self.inputs is not None else Silence()

    def _gather(self, element: ET.Element, doc: Document) -> Step:
        for child in element:
            if child.tag in GATHER_CHILDREN:
                self._handlers[child.tag](child, doc)
            else:
                self.warn(12200, f"<{child.tag}> is not allowed inside <Gather>; skipped", doc.url)
        self.checkpoint()
        kinds = set((element.get("input") or "dtmf").lower().split())
        timeout = attr_float(element.get("timeout"), 5.0)
        got = self._next_input()
        params: dict[str, str] | None = None
        if isinstance(got, Speech) and "speech" in kinds:
            speech_timeout = element.get("speechTimeout", "auto")
            pause = 1.0 if speech_timeout == "auto" else attr_float(speech_timeout, timeout)
            self.call.note(self.party, "Gather", got.text, input="speech")
            self.advance(spoken_seconds(got.text) + pause)
            params = {"SpeechResult": got.text, "Confidence": f"{got.confidence:g}"}
        elif isinstance(got, Digits) and "dtmf" in kinds:
            num_digits = int(attr_float(element.get("numDigits"), 0)) or None
            digits, finished_on, complete = collect_digits(got.digits, num_digits, element.get("finishOnKey", "#"))
            self.call.note(self.party, "Gather", got.digits, input="dtmf")
            self.advance(SECONDS_PER_DIGIT * len(got.digits) + (0 if complete else timeout))
            if digits:
                params = {"Digits": digits, "FinishedOnKey": finished_on}
        else:
            what = "silence" if isinstance(got, Silence) else f"{type(got).__name__} not accepted"
            self.call.note(self.party, "Gather", f"({what})", input="none")
            self.advance(timeout)
        if params is None:
            if not attr_bool(element.get("actionOnEmptyResult")):
                return None  # Twilio falls through to the next verb
            params = {}
        action = self.absolute(element.get("action") or doc.url, doc)
        return self.fetch(action, element.get("method"), {**self.leg_params(), **params}, "gather action")

    # ------------------------------------------------------------------ Record
    def _record(self, element: ET.Element, doc: Document) -> Step:
        max_length = attr_float(element.get("maxLength"), 3600.0) or 3600.0
        timeout = attr_float(element.get("timeout"), 5.0)
        if attr_bool(element.get("playBeep"), True):
            self.call.note(self.party, "Record", "beep")
        got = self._next_input()
        wav: bytes | None = None
        if isinstance(got, Recording):
            seconds, wav = min(got.duration, max_length), got.wav
        elif isinstance(got, Speech):
            seconds = min(spoken_seconds(got.text), max_length)
        else:
            # Silence (or only a key press): an empty recording, so Twilio skips the action.
            self.call.note(self.party, "Record", "(nothing recorded)")
            self.advance(timeout if isinstance(got, Silence) else SECONDS_PER_DIGIT)
            return None
        self.call.note(self.party, "Record", f"recorded {seconds:g}s")
        self.advance(seconds + (0 if seconds >= max_length else timeout))
        recording = self.store_recording(seconds, wav, "RecordVerb")
        params = {
            "RecordingUrl": self.rt.recording_url(recording.sid),
            "RecordingDuration": str(recording.duration),
            "RecordingSid": recording.sid,
        }
        status_callback = element.get("recordingStatusCallback")
        if status_callback:
            self.notify(
                self.absolute(status_callback, doc),
                element.get("recordingStatusCallbackMethod"),
                {
                    "AccountSid": self.leg.account_sid,
                    "CallSid": self.leg.sid,
                    "RecordingStatus": "completed",
                    "RecordingChannels": "1",
                    "RecordingSource": "RecordVerb",
                    "RecordingStartTime": rfc2822(self.call),
                    **params,
                },
                "recording status callback",
            )
        action = self.absolute(element.get("action") or doc.url, doc)
        return self.fetch(action, element.get("method"), {**self.leg_params(), **params}, "record action")

    def store_recording(self, seconds: float, wav: bytes | None, source: str) -> StoredRecording:
        recording = StoredRecording(
            sid=new_sid("RE"),
            account_sid=self.leg.account_sid,
            call_sid=self.leg.sid,
            duration=max(0, math.ceil(seconds - 1e-9)),
            source=source,
            wav=wav,
        )
        self.rt.recordings.add(recording)
        return recording

    # ------------------------------------------------------------------ Enqueue / Leave
    def _leave(self, element: ET.Element, doc: Document) -> Step:
        if not self._in_wait:
            self.warn(12200, "<Leave> outside a queue wait; skipped", doc.url)
            return None
        return LEAVE

    def _queue_params(self, result: str, queue_sid: str | None, queue_time: int | None) -> dict[str, str]:
        params = {"QueueResult": result}
        if queue_sid is not None:
            params["QueueSid"] = queue_sid
        if queue_time is not None:
            params["QueueTime"] = str(queue_time)
        return params

    def _enqueue(self, element: ET.Element, doc: Document) -> Step:
        name = (element.text or "").strip()
        action = element.get("action")
        method = element.get("method")
        wait_url = element.get("waitUrl")
        wait_method = element.get("waitUrlMethod")
        if element.get("workflowSid"):
            self.warn(12200, "TaskRouter workflowSid is not emulated; using a plain queue", doc.url)
        max_size = int(attr_float(element.get("maxQueueSize"), 0)) or None
        queue, member = self.rt.queues.join(name, self.leg, max_size)

        def action_url() -> str | None:
            return self.absolute(action, doc) if action else None

        if member is None:
            self.call.note("app", "Enqueue", f"queue {name!r} is full")
            url = action_url()
            if url is None:
                return None
            return self.fetch(url, method, {**self.leg_params(), "QueueResult": "queue-full"}, "enqueue action")

        self.call.note("app", "Enqueue", f"joined queue {name!r}", queue_sid=queue.sid)
        self.set_state("queued")
        patience = self.inputs.queue_patience if self.inputs is not None else None

        def finish_params(result: str) -> dict[str, str]:
            return {**self.leg.params(), **self._queue_params(result, queue.sid, round(member.wait_time))}

        try:
            with contextlib.ExitStack() as stack:
                if patience is not None:
                    stack.enter_context(self.deadline(member.enqueued_at + patience, self.leg, HangupSignal("party")))
                while True:
                    started = self.call.clock
                    if self._wait_iteration(member, wait_url, wait_method, doc) is LEAVE:
                        break
                    spent = self.call.clock - started
                    # Never spin: at least one virtual second and one poll interval per loop.
                    self.advance(max(0.0, 1.0 - spent), min_real=self.rt.config.queue_poll_interval)
        except Interrupted as intr:
            if intr.leg is self.leg:
                params = None
                if isinstance(intr.signal, HangupSignal):
                    self.call.note("app", "Enqueue", f"{self.party} hung up while queued")
                    self.leg.status = "completed"
                    params = finish_params("hangup")
                elif isinstance(intr.signal, RedirectSignal) and intr.signal.source == "dequeue":
                    params = finish_params("redirected")
                self.rt.queues.leave(member)
                url = action_url()
                if params is not None and url is not None:
                    self.notify(url, method, params, "enqueue action")
            raise
        except LegEnded as ended:
            self.rt.queues.leave(member)
            self.leg.status = "completed"
            url = action_url()
            if url is not None:
                result = "error" if ended.reason == "error" else "hangup"
                self.notify(url, method, finish_params(result), "enqueue action")
            raise
        finally:
            self.rt.queues.leave(member)
            self.set_state("in-progress")
        self.call.note("app", "Leave", f"left queue {name!r}")
        url = action_url()
        if url is None:
            return None
        return self.fetch(url, method, finish_params("leave"), "enqueue action")

    def _wait_iteration(
        self, member: QueueMember, wait_url: str | None, wait_method: str | None, doc: Document
    ) -> Step:
        """One pass of the hold loop: fetch waitUrl and run it with the queue's statistics."""
        if not wait_url:
            self.call.note(self.party, "Play", f"[play {DEFAULT_HOLD_MUSIC}]")
            self.advance(self.rt.config.play_seconds)
            return None
        stats = self.rt.queues.stats(member)
        self.context_params = {
            "QueuePosition": str(stats.position),
            "QueueSid": member.queue.sid,
            "QueueTime": str(stats.queue_time),
            "AvgQueueTime": str(stats.average_time),
            "CurrentQueueSize": str(stats.size),
            "MaxQueueSize": str(stats.max_size),
        }
        self._in_wait = True
        try:
            wait_doc = self.fetch(self.absolute(wait_url, doc), wait_method, self.leg_params(), "waitUrl")
            return self.drive(wait_doc, WAIT_VERBS, follow_redirects=False)
        finally:
            self._in_wait = False
            self.context_params = {}

    # ------------------------------------------------------------------ Dial
    def _dial(self, element: ET.Element, doc: Document) -> Step:
        from voice.emulator.dial import run_dial

        return run_dial(self, element, doc)


# ====================================================================== call threads
def _final_status(leg: Leg, signal: HangupSignal) -> str:
    if leg.answered:
        return "completed"
    return "canceled" if signal.status in ("completed", "canceled") else signal.status


def _run_call(rt: Runtime, call: EmulatedCall, body: Callable[[LegRunner], None]) -> None:
    """Thread body shared by inbound and outbound calls: run, then end every leg and report."""
    leg = call.root_leg
    session = new_session()
    runner = LegRunner(rt, call, leg, call.inputs, session=session)
    status = "completed"
    try:
        with runner.deadline(rt.config.time_limit, leg, HangupSignal("limit")):
            body(runner)
    except LegEnded as ended:
        status = ended.status
    except Interrupted as intr:
        if intr.leg is leg and isinstance(intr.signal, HangupSignal):
            status = _final_status(leg, intr.signal)
            call.note("app", "Hangup", f"hung up ({intr.signal.by})")
        else:  # pragma: no cover - a signal escaped the verb that should have handled it
            logger.error("unhandled signal %r on %s", intr.signal, intr.leg)
            call.record_error(TwilioError(0, f"emulator: unhandled {intr.signal!r}", None, leg.sid, call.clock))
    except Exception as exc:  # pragma: no cover - emulator bug; report it on the call instead of dying
        logger.exception("emulator failure on %s", call.sid)
        call.record_error(TwilioError(0, f"emulator internal error: {exc!r}", None, leg.sid, call.clock))
        status = "failed"
    finally:
        try:
            for child in call.child_legs():
                # A child redirected out of its <Dial> lives on in a call of its own (child.call).
                if child.live and child.call is call:
                    child.finish("completed" if child.answered else "canceled", call.clock)
            leg.finish(status, call.clock)
            runner.leg_event(leg, "completed")
            rt.conferences.call_ended(leg)
        finally:
            call.note("app", "Hangup", f"call ended: {status}")
            call.mark_finished()
            session.close()


def run_inbound_call(rt: Runtime, call: EmulatedCall, voice_url: str, method: str) -> None:
    """An inbound call: Twilio requests the number's voice URL with ``CallStatus=ringing``."""

    def body(runner: LegRunner) -> None:
        runner.drive(lambda: runner.fetch(voice_url, method, runner.leg_params(), "voice"))

    _run_call(rt, call, body)


def run_detached_leg(rt: Runtime, call: EmulatedCall, signal: RedirectSignal) -> None:
    """A child leg redirected out of its ``<Dial>``: it runs the new TwiML on its own from now on."""

    def body(runner: LegRunner) -> None:
        runner.drive(functools.partial(runner.redirect_document, signal))

    _run_call(rt, call, body)


#: How long synchronous answering machine detection listens after pick-up before the answer URL is fetched.
AMD_SECONDS = 2.5


def run_outbound_call(
    rt: Runtime,
    call: EmulatedCall,
    *,
    url: str | None,
    method: str,
    twiml: str | None,
    ring_timeout: float,
    answer: Literal["answer", "busy", "no-answer"],
    answer_after: float = 0.0,
    answered_by: str | None = None,
) -> None:
    """A REST-created call: ring the callee, then run ``url`` (or ``twiml``) once answered.

    ``answered_by``: the call asked for answering machine detection; as with Twilio's synchronous detection, the
    answer URL is fetched only once it has listened (:data:`AMD_SECONDS`), with ``AnsweredBy`` and
    ``MachineDetectionDuration``."""
    target: dict[str, str | None] = {"url": url, "method": method, "twiml": twiml}

    def ring(runner: LegRunner, seconds: float) -> None:
        until = runner.call.clock + seconds
        while True:
            try:
                runner.advance(until - runner.call.clock)
                return
            except Interrupted as intr:
                signal = intr.signal
                if intr.leg is runner.leg and isinstance(signal, RedirectSignal):
                    # Updating a call before it is answered changes what runs when it is.
                    target.update(url=signal.url, method=signal.method, twiml=signal.twiml)
                    continue
                raise

    def body(runner: LegRunner) -> None:
        leg = runner.leg
        runner.leg_event(leg, "initiated")
        leg.status = "ringing"
        runner.leg_event(leg, "ringing")
        if answer == "busy":
            call.note("app", "Dial", f"{leg.to} is busy")
            raise LegEnded("busy", "reject")
        if answer == "no-answer" or answer_after >= ring_timeout:
            # A rep who would pick up only after the ring timeout never gets the chance.
            ring(runner, ring_timeout)
            call.note("app", "Dial", f"{leg.to} did not answer")
            raise LegEnded("no-answer", "reject")
        ring(runner, answer_after)
        runner.answer()
        runner.leg_event(leg, "answered")

        def first_document() -> Document:
            inline, url = target["twiml"], target["url"]
            if inline is not None:
                parsed = parse_twiml(inline.encode("utf-8"), rt.webhooks.public_url + "/")
                if isinstance(parsed, DocumentProblem):
                    runner.app_error(parsed.code, parsed.message, None)
                return parsed
            assert url is not None
            params = runner.leg_params()
            if answered_by is not None:
                runner.advance(AMD_SECONDS)
                params.update(AnsweredBy=answered_by, MachineDetectionDuration=str(int(AMD_SECONDS * 1000)))
            return runner.fetch(url, target["method"], params, "voice (outbound)")

        runner.drive(first_document)

    _run_call(rt, call, body)
