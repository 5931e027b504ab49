"""The core of the TwiML interpreter: one leg's documents, run verb by verb the way Twilio does.

One :class:`LegRunner` drives one leg.  The top-level leg of every call gets a runner in the
call's own thread (:mod:`voice.emulator.call_threads`); a ``<Dial><Number url>`` whisper gets a
second runner for the rep's leg in the same thread (see :mod:`voice.emulator.dial`).

The runner knows no verb.  It looks each one up in the :class:`VerbTable` it was given
(:data:`voice.emulator.interpreter.VERBS`, the one place every verb is registered), so the verb
modules depend on this one and never the other way round.  A verb is a function
``(runner, element, doc) -> Step``.  Which verbs a document may use depends on its kind
(:data:`DocumentKind`): a call's own TwiML, a whisper, a queue's waitUrl, conference audio.

Control flow uses exceptions because TwiML control transfers can come from deep inside a verb
(a hang-up in the middle of a queue wait, a REST redirect during a ``<Pause>``):

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
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Final, Literal, NoReturn, get_args

import requests

from voice.emulator.http import Document, DocumentProblem, HttpResult, parse_document, parse_twiml
from voice.emulator.legs import (
    APPLICATION_ERROR_MESSAGE,
    Deadline,
    EmulatedCall,
    Leg,
    RedirectSignal,
    Signal,
    TwilioError,
    WebhookExchange,
    new_sid,
)
from voice.emulator.parties import CallerInput, InputSource, Silence
from voice.emulator.runtime import Runtime, StoredRecording

__all__ = [
    "DEFAULT_HOLD_MUSIC",
    "LEAVE",
    "DocumentKind",
    "DocumentRules",
    "Interrupted",
    "LegEnded",
    "LegRunner",
    "Step",
    "VerbHandler",
    "VerbTable",
    "Woken",
    "attr_bool",
    "attr_float",
    "rfc2822",
    "spoken_seconds",
]

#: Twilio's default ``<Enqueue waitUrl>`` (and conference wait/hold audio): its classical hold-music playlist.
DEFAULT_HOLD_MUSIC: Final = "https://twimlets.com/holdmusic?Bucket=com.twilio.music.classical"

#: Virtual seconds per spoken word (text-to-speech speed of ~2.5 words per second).
WORDS_PER_SECOND: Final = 2.5


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


def rfc2822(call: EmulatedCall) -> str:
    return format_datetime(call.wall(call.clock))


def _given(doc: Document) -> Callable[[], Document]:
    return lambda: doc


# ====================================================================== the verb table
#: The kinds of TwiML document a leg runs; each allows its own verbs (:attr:`VerbTable.documents`).
#: ``call``: a call's own TwiML; ``whisper``: a rep leg's ``<Number url>`` document; ``queue wait``: an
#: ``<Enqueue waitUrl>`` document; ``conference audio``: a conference's waitUrl, holdUrl or announceUrl.
DocumentKind = Literal["call", "whisper", "queue wait", "conference audio"]

#: What a verb does: run ``element`` (from ``doc``) on the runner's leg and return what comes next.
VerbHandler = Callable[["LegRunner", ET.Element, Document], Step]


@dataclass(frozen=True)
class DocumentRules:
    """Which verbs one kind of document may use, and how Twilio reports one it may not (skipped, with a warning)."""

    verbs: frozenset[str]
    #: Ends the warning "<X> is not allowed in ...".
    where: str
    disallowed_code: int = 12200
    #: Every Say/Play/Pause takes at least one poll interval of real time, so that audio a ``<Redirect>``
    #: loops (conference wait and hold music) never spins at ``time_scale=0``.
    paced: bool = False


@dataclass(frozen=True)
class VerbTable:
    """Every TwiML verb the interpreter runs (name -> handler), and which of them each kind of document may use.

    Built once, in :mod:`voice.emulator.interpreter`; a document rule or ``<Gather>`` child naming a verb the
    table does not register is refused here, when the table is built.
    """

    handlers: Mapping[str, VerbHandler]
    documents: Mapping[DocumentKind, DocumentRules]
    #: Verbs that may be nested in ``<Gather>``.
    gather_children: frozenset[str]

    def __post_init__(self) -> None:
        missing = set(get_args(DocumentKind)) - set(self.documents)
        if missing:
            raise ValueError(f"no rules for {sorted(missing)} documents")
        allowed = {f"{kind} documents": rules.verbs for kind, rules in self.documents.items()}
        allowed["<Gather>"] = self.gather_children
        for where, verbs in allowed.items():
            unknown = verbs - set(self.handlers)
            if unknown:
                raise ValueError(f"{where} allow verbs the table does not register: {sorted(unknown)}")


class LegRunner:
    """Interprets TwiML for one leg.

    ``mode`` is ``"call"`` for a top-level leg and ``"whisper"`` for a rep leg running its
    ``<Number url>`` document.  ``verbs`` is the table every verb is looked up in.  ``watch`` lists
    every leg whose signals interrupt this runner: its own leg and, for a whisper, the caller's leg
    too (the caller hanging up mid-whisper must stop the whisper).
    """

    def __init__(
        self,
        rt: Runtime,
        call: EmulatedCall,
        leg: Leg,
        inputs: InputSource | None,
        *,
        verbs: VerbTable,
        session: requests.Session,
        mode: Literal["call", "whisper"] = "call",
        also_watch: tuple[Leg, ...] = (),
    ) -> None:
        self.rt = rt
        self.call = call
        self.leg = leg
        self.inputs = inputs
        self.verbs = verbs
        self.session = session
        self.mode = mode
        self.watch: list[Leg] = [leg, *also_watch]
        #: Extra parameters for every request of this leg (queue stats while in a waitUrl).
        self.context_params: dict[str, str] = {}
        #: The kind of document running now (see :meth:`drive`).
        self.document: DocumentKind = mode
        #: Conditions that interrupt this runner with :class:`Woken` (see :meth:`waking`).
        self._wake_conditions: list[Callable[[], bool]] = []

    @property
    def party(self) -> str:
        return self.leg.party

    @property
    def min_verb_real(self) -> float:
        """Real seconds every Say/Play/Pause takes at least in the document running now."""
        paced = self.verbs.documents[self.document].paced
        return self.rt.config.queue_poll_interval if paced else 0.0

    def next_input(self) -> CallerInput:
        """The party's reaction to the next ``<Gather>`` / ``<Record>`` (silence when nobody scripted one)."""
        return self.inputs.next_input() if self.inputs is not None else Silence()

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
        kind: DocumentKind | None = None,
        *,
        follow_redirects: bool = True,
    ) -> Step:
        """Run a document and every document it hands control to; returns at the end (or on Leave).

        ``start`` is the document or a function fetching it, so that a REST redirect arriving
        while the very first document is being fetched is followed too.  ``kind`` says which verbs
        these documents may use (default: the runner's own, ``call`` or ``whisper``).  REST
        redirects of this leg are followed here unless ``follow_redirects`` is False (inside a
        queue wait the redirect must first unwind through ``<Enqueue>`` to leave the queue).
        """
        outer, self.document = self.document, kind if kind is not None else self.mode
        load: Callable[[], Document] = start if callable(start) else _given(start)
        try:
            while True:
                try:
                    step = self.execute(load())
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
        finally:
            self.document = outer

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

    def execute(self, doc: Document) -> Step:
        """Run ``doc``'s verbs in order (as a document of the current kind) until one hands control on."""
        rules = self.verbs.documents[self.document]
        for element in doc.verbs:
            self.checkpoint()
            verb = element.tag
            handler = self.verbs.handlers.get(verb)
            if handler is None:
                self.warn(12200, f"<{verb}> is not a TwiML verb the emulator runs; skipped", doc.url)
                continue
            if verb not in rules.verbs:
                self.warn(rules.disallowed_code, f"<{verb}> is not allowed in {rules.where}; skipped", doc.url)
                continue
            # Twilio answers an inbound call at its first verb, unless that verb rejects it.
            if verb != "Reject" and self.mode == "call":
                self.answer()
            step = handler(self, element, doc)
            if step is not None:
                return step
        return None

    def store_recording(self, seconds: float, wav: bytes | None, source: str) -> StoredRecording:
        """Keep a recording of this leg for the fake REST API (``<Record>``, ``<Dial record>``)."""
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
