"""Call and leg state, plus the records a test inspects afterwards.

A Twilio *call* as a test sees it (:class:`EmulatedCall`) is one top-level call leg plus the
child legs its ``<Dial>`` verbs create.  All legs of one call are driven by the call's own
thread and share one virtual clock and one lock/condition; other threads (the test, the fake
REST API) only *signal* a leg (:meth:`Leg.signal`) and the call's thread acts on the signal at
its next verb boundary or wait.  That single-writer rule is what keeps the emulator free of
races without a lock around every field.

A child leg redirected through the REST API leaves its parent's ``<Dial>`` and runs TwiML of
its own, concurrently with the parent; it then becomes the root of a new :class:`EmulatedCall`
with its own thread (``leg.call`` changes owner), which keeps the single-writer rule intact.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

from voice.emulator.http import HttpResult
from voice.emulator.parties import InputSource

__all__ = [
    "APPLICATION_ERROR_MESSAGE",
    "CallbackSpec",
    "EmulatedCall",
    "HangupSignal",
    "Hearing",
    "LeaveSignal",
    "Leg",
    "LegInfo",
    "RedirectSignal",
    "Signal",
    "TranscriptEntry",
    "TwilioError",
    "WebhookExchange",
    "WebhookRequest",
    "new_sid",
]

APPLICATION_ERROR_MESSAGE = "We are sorry, an application error has occurred. Goodbye."

#: Verbs whose transcript text is something the party *heard*.
HEARD_VERBS = frozenset({"Say", "Play"})

#: Transcript verb of the entries that describe a party's time in a conference.
CONFERENCE_VERB = "Conference"
#: What a conference participant can be hearing (the ``hears`` attribute of ``event="hears"`` entries).
HEARING_STATES = frozenset({"wait-audio", "hold-audio", "announcement", "people", "silence"})


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix + 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True)
class TranscriptEntry:
    """One thing that happened on a call, stamped with virtual seconds since the call began.

    ``party`` is ``"caller"``, ``"rep:<number>"`` or ``"app"`` (emulator notes such as
    "enqueued" or "bridged").  Say/Play entries are what the party heard; Gather/Record entries
    record what the party did; ``Conference`` entries what the party went through in a
    conference (``attrs["event"]``: join, start, hears, hold, unhold, mute, unmute, beep,
    announcement, leave, end — see :meth:`EmulatedCall.hearing`).
    """

    at: float
    party: str
    verb: str
    text: str
    attrs: dict[str, str] = field(default_factory=dict)


class WebhookRequest(NamedTuple):
    """``(url, params, status_code, body)`` of one webhook; status 0 means no HTTP response."""

    url: str
    params: dict[str, str]
    status_code: int
    body: str


@dataclass(frozen=True)
class WebhookExchange:
    """A webhook with the detail :class:`WebhookRequest` leaves out (method, leg, purpose)."""

    method: str
    url: str
    params: dict[str, str]
    status_code: int
    body: str
    content_type: str
    call_sid: str
    purpose: str
    at: float

    @classmethod
    def of(cls, result: HttpResult, *, call_sid: str, purpose: str, at: float) -> WebhookExchange:
        """The record of one request the emulator sent, from what came back."""
        return cls(
            method=result.method,
            url=result.url,
            params=dict(result.params),
            status_code=result.status_code,
            body=result.body,
            content_type=result.content_type,
            call_sid=call_sid,
            purpose=purpose,
            at=at,
        )

    def as_request(self) -> WebhookRequest:
        return WebhookRequest(self.url, dict(self.params), self.status_code, self.body)


@dataclass(frozen=True)
class TwilioError:
    """A Twilio debugger event.  ``fatal`` errors played the application-error message and ended the leg."""

    code: int
    message: str
    url: str | None
    call_sid: str
    at: float
    fatal: bool = True

    @property
    def level(self) -> str:
        return "ERROR" if self.fatal else "WARNING"


@dataclass(frozen=True)
class HangupSignal:
    """Ask a leg to end.  ``by``: ``party`` (the human hung up), ``rest``, ``limit`` or ``emulator``."""

    by: Literal["party", "rest", "limit", "emulator"]
    status: str = "completed"


@dataclass(frozen=True)
class RedirectSignal:
    """Make a live leg drop its current TwiML and continue with ``url`` (or inline ``twiml``).

    ``source`` is ``"rest"`` for a Call-resource update and ``"dequeue"`` for a Queue Member
    update; ``<Enqueue>`` reports the two differently to its action URL.
    """

    url: str | None
    method: str = "POST"
    twiml: str | None = None
    source: Literal["rest", "dequeue"] = "rest"


@dataclass(frozen=True)
class LeaveSignal:
    """Take a leg out of the conference it is in and continue at its ``<Dial>`` action.

    Only ever delivered by a scripted deadline (``<Dial timeLimit>`` around a conference), never
    through :meth:`Leg.signal`.
    """

    reason: str = "time-limit"


Signal = HangupSignal | RedirectSignal | LeaveSignal


@dataclass(frozen=True)
class CallbackSpec:
    """A status callback URL, its method and the call-progress events it wants."""

    url: str
    method: str = "POST"
    events: frozenset[str] = frozenset({"completed"})


@dataclass(frozen=True)
class LegInfo:
    """A read-only snapshot of one leg for tests."""

    sid: str
    parent_sid: str | None
    from_: str
    to: str
    direction: str
    status: str
    duration: int
    party: str


#: Location parameters Twilio adds for both ends of a PSTN call.
GEO_FIELDS = ("City", "State", "Zip", "Country")


class Leg:
    """One call leg: the parameters Twilio reports for it and its lifecycle.

    Fields are written only by the owning call's thread, except ``pending`` which other threads
    set through :meth:`signal` under the call's lock.
    """

    def __init__(
        self,
        call: EmulatedCall,
        *,
        sid: str,
        account_sid: str,
        from_: str,
        to: str,
        direction: str,
        party: str,
        parent_sid: str | None = None,
        from_geo: Mapping[str, str] | None = None,
        to_geo: Mapping[str, str] | None = None,
        extra_params: Mapping[str, str] | None = None,
        status: str = "ringing",
        status_callback: CallbackSpec | None = None,
    ) -> None:
        self.call = call
        self.sid = sid
        self.account_sid = account_sid
        self.from_ = from_
        self.to = to
        self.direction = direction
        self.party = party
        self.parent_sid = parent_sid
        self.from_geo = dict(from_geo or {})
        self.to_geo = dict(to_geo or {})
        self.extra_params = dict(extra_params or {})
        self.status = status
        self.status_callback = status_callback
        self.created_at = call.clock
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.pending: Signal | None = None
        self.callback_sequence = 0
        self.date_updated = call.wall(call.clock)

    # -- cross-thread -------------------------------------------------------------------------
    def signal(self, sig: Signal) -> bool:
        """Deliver ``sig`` to the call's thread; ``False`` if the leg has already ended.

        A pending hang-up is never replaced by a redirect: once somebody hung up, the leg ends.
        """
        while True:
            call = self.call
            with call.cond:
                if self.call is not call:
                    continue  # the leg was detached into a call of its own meanwhile: use that one's lock
                if self.ended_at is not None:
                    return False
                if isinstance(self.pending, HangupSignal) and isinstance(sig, RedirectSignal):
                    return True
                self.pending = sig
                self.date_updated = datetime.now(UTC)
                call.cond.notify_all()
                return True

    # -- state ---------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.ended_at is None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def answer(self, at: float) -> None:
        with self.call.cond:
            if self.answered_at is None:
                self.answered_at = at
            self.status = "in-progress"
            self.date_updated = self.call.wall(at)
            self.call.cond.notify_all()

    def finish(self, status: str, at: float) -> None:
        with self.call.cond:
            if self.ended_at is not None:
                return
            self.status = status
            self.ended_at = at
            self.pending = None
            self.date_updated = self.call.wall(at)
            self.call.cond.notify_all()

    @property
    def duration(self) -> int:
        """Whole seconds from answer to hang-up (Twilio rounds partial seconds up); 0 if never answered."""
        if self.answered_at is None:
            return 0
        end = self.ended_at if self.ended_at is not None else self.call.clock
        return max(0, math.ceil(end - self.answered_at - 1e-9))

    def params(self) -> dict[str, str]:
        """The standard request parameters Twilio sends with every webhook about this leg."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.sid,
            "CallStatus": self.status,
            "Direction": self.direction,
            "From": self.from_,
            "To": self.to,
            "Caller": self.from_,
            "Called": self.to,
        }
        for name in GEO_FIELDS:
            params["From" + name] = self.from_geo.get(name, "")
            params["Caller" + name] = self.from_geo.get(name, "")
            params["To" + name] = self.to_geo.get(name, "")
            params["Called" + name] = self.to_geo.get(name, "")
        if self.parent_sid:
            params["ParentCallSid"] = self.parent_sid
        params.update(self.extra_params)
        return params

    def info(self) -> LegInfo:
        return LegInfo(
            sid=self.sid,
            parent_sid=self.parent_sid,
            from_=self.from_,
            to=self.to,
            direction=self.direction,
            status=self.status,
            duration=self.duration,
            party=self.party,
        )

    def __repr__(self) -> str:
        return f"<Leg {self.sid} {self.direction} {self.from_}->{self.to} {self.status}>"


@dataclass
class Deadline:
    """At virtual time ``at``, deliver ``signal`` to ``leg`` (scripted hang-ups, time limits)."""

    at: float
    leg: Leg
    signal: Signal


class EmulatedCall:
    """A call the emulator is running: its legs, what each party heard, and every webhook.

    Tests read it from their own thread; every accessor takes the call's lock and returns
    copies, and :meth:`wait_until` wakes whenever anything about the call changes.
    """

    def __init__(
        self,
        *,
        sid: str,
        from_: str,
        to: str,
        direction: str,
        inputs: InputSource | None,
        caller_party: str = "caller",
    ) -> None:
        self.sid = sid
        self.from_ = from_
        self.to = to
        self.direction = direction
        self.inputs = inputs
        self.caller_party = caller_party
        self.cond = threading.Condition(threading.RLock())
        #: Virtual seconds since the call began; advanced only by the call's thread.
        self.clock = 0.0
        self.wall_start = datetime.now(UTC)
        self.deadlines: list[Deadline] = []
        self.root: Leg | None = None
        self._children: list[Leg] = []
        self._state = "ringing"
        self._transcript: list[TranscriptEntry] = []
        self._exchanges: list[WebhookExchange] = []
        self._errors: list[TwilioError] = []
        self._finished = False
        self.thread: threading.Thread | None = None

    # -- wiring (call thread / emulator) -----------------------------------------------------
    def attach_root(self, leg: Leg) -> None:
        self.root = leg

    def add_child(self, leg: Leg) -> None:
        with self.cond:
            self._children.append(leg)
            self.cond.notify_all()

    def wall(self, at: float) -> datetime:
        """The wall-clock time that virtual second ``at`` of this call corresponds to."""
        return self.wall_start + timedelta(seconds=at)

    def set_state(self, state: str) -> None:
        with self.cond:
            if not self._finished:
                self._state = state
            self.cond.notify_all()

    def note(self, party: str, verb: str, text: str, **attrs: str) -> None:
        with self.cond:
            self._transcript.append(TranscriptEntry(self.clock, party, verb, text, dict(attrs)))
            self.cond.notify_all()

    def record_exchange(self, exchange: WebhookExchange) -> None:
        with self.cond:
            self._exchanges.append(exchange)
            self.cond.notify_all()

    def record_error(self, error: TwilioError) -> None:
        with self.cond:
            self._errors.append(error)
            self.cond.notify_all()

    def mark_finished(self) -> None:
        with self.cond:
            self._state = "completed"
            self._finished = True
            self.cond.notify_all()

    # -- public, thread-safe views ------------------------------------------------------------
    @property
    def root_leg(self) -> Leg:
        if self.root is None:  # pragma: no cover - attach_root runs before the call is visible
            raise RuntimeError("call has no root leg yet")
        return self.root

    @property
    def state(self) -> str:
        """``ringing``, ``in-progress``, ``queued``, ``dialing``, ``bridged``, ``conference`` or ``completed``."""
        with self.cond:
            return self._state

    @property
    def status(self) -> str:
        """Twilio's CallStatus of the top-level leg (final once the call has finished)."""
        with self.cond:
            return self.root_leg.status

    @property
    def duration(self) -> int:
        """Virtual seconds from answer to hang-up, rounded up like Twilio's CallDuration."""
        with self.cond:
            return self.root_leg.duration

    @property
    def finished(self) -> bool:
        with self.cond:
            return self._finished

    @property
    def transcript(self) -> list[TranscriptEntry]:
        with self.cond:
            return list(self._transcript)

    @property
    def requests(self) -> list[WebhookRequest]:
        """Every webhook this call made, child legs included, as ``(url, params, status, body)``."""
        with self.cond:
            return [e.as_request() for e in self._exchanges]

    @property
    def webhooks(self) -> list[WebhookExchange]:
        """Like :attr:`requests` with method, leg SID, purpose and virtual time."""
        with self.cond:
            return list(self._exchanges)

    @property
    def errors(self) -> list[TwilioError]:
        with self.cond:
            return list(self._errors)

    @property
    def legs(self) -> list[LegInfo]:
        """The top-level leg followed by every child leg, in creation order."""
        with self.cond:
            return [leg.info() for leg in [self.root_leg, *self._children]]

    def child_legs(self) -> list[Leg]:
        with self.cond:
            return list(self._children)

    def heard(self, party: str | None = None) -> list[str]:
        """What ``party`` heard, in order.

        The default is the call's top-level party (``"caller"`` on an inbound call, the rep on a
        REST-created call to a rep or on a child leg that left its ``<Dial>``); ``"rep"`` matches
        every rep leg; ``"rep:+1555..."`` one rep.
        """
        with self.cond:
            wanted = self._own(party)
            return [e.text for e in self._transcript if e.verb in HEARD_VERBS and _party_matches(e.party, wanted)]

    # -- conferences ----------------------------------------------------------------------------
    # A participant's time in a conference is recorded as ``Conference`` entries (see
    # :mod:`voice.emulator.conferences`): ``event`` is join / start / hears / hold / unhold / mute /
    # unmute / beep / announcement / leave / end, and ``event="hears"`` entries carry ``hears`` (one
    # of HEARING_STATES) and ``parties`` ("|"-separated labels, or party names for unlabelled ones).
    def _own(self, party: str | None) -> str:
        return party if party is not None else self.root_leg.party

    def conference_log(self, party: str | None = None) -> list[TranscriptEntry]:
        """The ``Conference`` entries of ``party`` (default: this call's own party), in order."""
        with self.cond:
            wanted = self._own(party)
            return [e for e in self._transcript if e.verb == CONFERENCE_VERB and _party_matches(e.party, wanted)]

    def hearing(self, party: str | None = None) -> list[Hearing]:
        """What ``party`` heard in conferences over time: each change, and ``"left"`` on leaving."""
        timeline: list[Hearing] = []
        for entry in self.conference_log(party):
            event = entry.attrs.get("event")
            if event == "hears":
                what = entry.attrs.get("hears", "")
                timeline.append(Hearing(entry.at, entry.party, what, _split_parties(entry.attrs.get("parties", ""))))
            elif event == "leave":
                timeline.append(Hearing(entry.at, entry.party, "left", ()))
        return timeline

    def connected_with(self, party: str | None = None) -> tuple[str, ...]:
        """Who ``party`` last heard talking in a conference (labels, or party names); ``()`` if nobody."""
        people = [h.parties for h in self.hearing(party) if h.what == "people"]
        return people[-1] if people else ()

    def silence_periods(self, party: str | None = None) -> list[tuple[float, float]]:
        """``(start, end)`` virtual seconds during which ``party`` sat in a conference hearing nothing.

        That is: alone (or with only muted/held people) in a started conference, or after a
        waitUrl/holdUrl document ran out of verbs (Twilio then plays silence).  A period still going
        on ends at the call's current clock.
        """
        timeline = self.hearing(party)
        periods: list[tuple[float, float]] = []
        for index, item in enumerate(timeline):
            if item.what != "silence":
                continue
            end = timeline[index + 1].at if index + 1 < len(timeline) else self.clock
            periods.append((item.at, max(item.at, end)))
        return periods

    def silence_seconds(self, party: str | None = None) -> float:
        """Total virtual seconds of :meth:`silence_periods`."""
        return sum(end - start for start, end in self.silence_periods(party))

    def wait_until(self, predicate: Callable[[EmulatedCall], bool], timeout: float = 10) -> bool:
        """Block until ``predicate(call)`` holds (re-checked on every change); ``False`` on timeout."""
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout=timeout)

    def wait_finished(self, timeout: float = 10) -> bool:
        return self.wait_until(lambda c: c._finished, timeout)

    def hang_up(self) -> bool:
        """The top-level party hangs up now.  ``False`` if the call had already ended."""
        return self.root_leg.signal(HangupSignal("party"))

    def __repr__(self) -> str:
        return f"<EmulatedCall {self.sid} {self.from_}->{self.to} {self.state}>"


class Hearing(NamedTuple):
    """From virtual second ``at`` on, ``party`` heard ``what`` (a :data:`HEARING_STATES` value, or
    ``"left"`` once out of the conference); ``parties`` are who was audible when ``what`` is ``"people"``."""

    at: float
    party: str
    what: str
    parties: tuple[str, ...]


def _split_parties(value: str) -> tuple[str, ...]:
    return tuple(p for p in value.split("|") if p)


def _party_matches(entry_party: str, wanted: str) -> bool:
    if wanted == "rep":
        return entry_party.startswith("rep:")
    return entry_party == wanted
