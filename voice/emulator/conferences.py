"""Conference rooms shared by every call of one emulator: state, lifecycle and status callbacks.

This module is the conference *mixer*: who is in which room, who can hear whom, when a room
starts and ends, and the conference ``statusCallback`` events.  What a participant's leg does
while it is in a room (wait music, hold music, announcements, leaving at its ``<Dial>`` action)
lives in :mod:`voice.emulator.dial_conference`; the REST resources in :mod:`voice.emulator.rest`.

Twilio's documented behaviour this follows (TwiML ``<Conference>``, the Voice Conference
overview, the Conference and Participant resources, and Twilio's error reference):

* A room is created when its first participant arrives (status ``init``), and the first
  participant's ``statusCallback``/``statusCallbackEvent``/``maxParticipants`` are the room's;
  later values are ignored.  A name can be reused once its room has completed (new SID).
* It *starts* (``in-progress``, ``conference-start``) once at least two participants are in it
  and at least one of them has ``startConferenceOnEnter=true``.  Until then everybody hears
  the wait music.  After the start nobody hears wait music again, even alone: that is silence.
* It *ends* (``completed``, ``conference-end``) when a participant with
  ``endConferenceOnExit=true`` leaves or is kicked, when its last participant leaves or is
  kicked, or through the REST API (``Status=completed``).  Everybody still in it drops out and
  continues at their ``<Dial>`` action.
* ``participantLabel`` must be unique in a room (16025 in TwiML, 16026 through the API) and
  may not exceed 128 characters, look like a Call SID or contain ``/`` (16023 / 16024).
* A full room refuses new participants (16020).

Where the documentation is silent, the emulator chooses, and says so where it does it: the
order of the ``participant-leave`` events and ``conference-end`` when a room ends (leaves
first), ``statusCallbackEvent`` defaulting to ``start end`` in TwiML as it does in the REST API,
and ``SequenceNumber`` counting only the callbacks actually sent (starting at 1).

Threads: call threads join, leave and read their own view; REST handler threads change
participants.  All state sits behind one lock.  A change never touches another call's lock
while holding it: the registry bumps each affected participant's :attr:`Participant.changes`
counter under its own lock, then wakes the participants' call threads after releasing it, and
each call thread re-reads its view (see :meth:`ConferenceRegistry.view`).  Status callbacks
are POSTed by one dispatcher thread in the order they were fired, so a REST request that
triggers a callback is answered first, as on Twilio.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final, Literal

from voice.emulator.http import HttpResult, WebhookClient, new_session
from voice.emulator.legs import CallbackSpec, HangupSignal, Leg, TwilioError, WebhookExchange, new_sid

__all__ = [
    "CONFERENCE_EVENTS",
    "Announcement",
    "Conference",
    "ConferenceEvent",
    "ConferenceRegistry",
    "JoinOptions",
    "JoinRefused",
    "Participant",
    "ParticipantInfo",
    "ParticipantUpdate",
    "ParticipantView",
    "Removal",
    "RestRefusal",
    "label_problem",
]

#: Twilio's limit (and the default) for ``maxParticipants``.
MAX_PARTICIPANTS: Final = 250

#: ``statusCallbackEvent`` values and the ``StatusCallbackEvent`` names each one subscribes to.
CONFERENCE_EVENTS: Final[dict[str, tuple[str, ...]]] = {
    "start": ("conference-start",),
    "end": ("conference-end",),
    "join": ("participant-join",),
    "leave": ("participant-leave",),
    "mute": ("participant-mute", "participant-unmute"),
    "hold": ("participant-hold", "participant-unhold"),
    "modify": ("participant-modify",),
    # Nobody speaks in the emulator, so participant-speech-start/-stop never fire.
    "speaker": ("participant-speech-start", "participant-speech-stop"),
    "announcement": ("announcement-end", "announcement-fail"),
}
#: The REST API documents ``ConferenceStatusCallbackEvent`` as defaulting to ``start end``; the TwiML
#: page gives no default, and the emulator uses the same one there.
DEFAULT_CONFERENCE_EVENTS: Final = frozenset({"start", "end"})

BEEP_VALUES: Final = {"true": "true", "false": "false", "onenter": "onEnter", "onexit": "onExit"}

_CALL_SID = re.compile(r"CA[0-9a-f]{32}")
_CONFERENCE_SID = re.compile(r"CF[0-9a-fA-F]{32}")


def label_problem(label: str) -> str | None:
    """Why Twilio would refuse ``label`` as a participant label (16023/16024), or ``None``."""
    if len(label) > 128:
        return "participant label longer than 128 characters"
    if _CALL_SID.fullmatch(label):
        return "participant label must not be a CallSid"
    if "/" in label or "%2f" in label.lower():
        return "participant label must not contain '/'"
    return None


def _bool(value: bool) -> str:
    return "true" if value else "false"


# ====================================================================== records
@dataclass(frozen=True)
class JoinOptions:
    """How one participant joins a room (``<Conference>`` attributes or Participant-create params).

    ``wait_url`` ``None`` means Twilio's default hold music; ``""`` means nothing at all.
    ``status_callback``'s ``events`` are ``statusCallbackEvent`` values (start, end, join ...).
    """

    label: str | None = None
    muted: bool = False
    beep: str = "true"
    start_on_enter: bool = True
    end_on_exit: bool = False
    wait_url: str | None = None
    wait_method: str = "POST"
    max_participants: int = MAX_PARTICIPANTS
    coach: str | None = None
    status_callback: CallbackSpec | None = None


@dataclass(frozen=True)
class ParticipantUpdate:
    """A Participant-resource update; ``None`` fields are left as they are."""

    muted: bool | None = None
    hold: bool | None = None
    hold_url: str | None = None
    hold_method: str | None = None
    announce_url: str | None = None
    announce_method: str = "POST"
    wait_url: str | None = None
    wait_method: str | None = None
    beep_on_exit: bool | None = None
    end_on_exit: bool | None = None
    coaching: bool | None = None
    call_sid_to_coach: str | None = None


@dataclass(frozen=True)
class Removal:
    """Why the room let go of a participant: ``reason`` is Twilio's ``ReasonParticipantLeft``;
    ``ended`` is True when the whole room ended."""

    reason: str
    ended: bool = False


@dataclass(frozen=True)
class JoinRefused:
    """A ``<Dial><Conference>`` that Twilio does not carry out: the call goes on with the next verb."""

    code: int
    message: str


@dataclass(frozen=True)
class RestRefusal:
    """A REST request refused with HTTP ``status`` and Twilio error ``code``."""

    status: int
    code: int
    message: str


@dataclass(frozen=True)
class ConferenceEvent:
    """One conference event in the order it fired (``number`` from 1), whether a callback was
    subscribed or not; ``params`` are exactly what Twilio posts (or would post)."""

    number: int
    event: str
    call_sid: str | None
    label: str | None
    params: dict[str, str]
    sent: bool


@dataclass(frozen=True)
class ParticipantInfo:
    """A read-only snapshot of one participant for tests."""

    call_sid: str
    label: str | None
    party: str
    status: str
    muted: bool
    hold: bool
    coaching: bool
    start_conference_on_enter: bool
    end_conference_on_exit: bool


@dataclass(eq=False)
class Announcement:
    """An ``AnnounceUrl`` for a whole room (``participant is None``) or for one participant.

    The URL is fetched once, by the first participant thread that plays it (``lock`` guards the
    fetch), and reported once with ``announcement-end`` / ``announcement-fail``.
    """

    url: str
    method: str
    conference: Conference
    participant: Participant | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    result: HttpResult | None = None
    reported: bool = False


@dataclass(eq=False)
class Participant:
    """One participant: connecting (added through the API, not yet in the room) or connected."""

    conference: Conference
    call_sid: str
    party: str
    label: str | None
    muted: bool
    start_on_enter: bool
    end_on_exit: bool
    beep: str
    coaching: bool
    call_sid_to_coach: str | None
    wait_url: str | None
    wait_method: str
    hold: bool = False
    hold_url: str | None = None
    hold_method: str = "GET"
    beep_on_exit: bool | None = None
    #: The participant's call leg: set when an API-created participant's call is placed, or on joining.
    leg: Leg | None = None
    connected: bool = False
    #: Whether the room had already started when this participant joined.
    joined_started: bool = False
    removed: Removal | None = None
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Bumped under the registry lock whenever what this participant hears may have changed.
    changes: int = 0
    signature: object = None
    announced: int = 0
    beeped: int = 0
    inbox: list[Announcement] = field(default_factory=list)
    beeps: list[str] = field(default_factory=list)

    @property
    def display(self) -> str:
        """How other parties' transcripts name this participant: its label, else its party."""
        return self.label or self.party

    @property
    def status(self) -> str:
        """The Participant resource's ``status``."""
        if self.removed is not None:
            return "failed" if self.removed.reason == "participant_add_failed" else "complete"
        if self.connected:
            return "connected"
        leg_status = self.leg.status if self.leg is not None else "queued"
        return {"queued": "queued", "ringing": "ringing", "in-progress": "connecting"}.get(leg_status, "failed")


@dataclass(frozen=True)
class ParticipantView:
    """What one connected participant should be experiencing right now (see ``mode``)."""

    conference_sid: str
    conference_name: str
    removed: Removal | None
    started: bool
    hold: bool
    hold_url: str | None
    hold_method: str
    wait_url: str | None
    wait_method: str
    muted: bool
    audible: tuple[str, ...]
    announcements: tuple[Announcement, ...]
    beeps: tuple[str, ...]

    @property
    def mode(self) -> Literal["removed", "hold", "wait", "people"]:
        if self.removed is not None:
            return "removed"
        if self.hold:
            return "hold"
        return "people" if self.started else "wait"


# ====================================================================== conference
class Conference:
    """One conference room.  Read it from tests through the properties (they take the lock)."""

    def __init__(self, registry: ConferenceRegistry, friendly_name: str, options: JoinOptions, when: datetime) -> None:
        self._registry = registry
        self.sid = new_sid("CF")
        self.friendly_name = friendly_name
        self.account_sid = registry.account_sid
        self.callback = options.status_callback
        self.max_participants = options.max_participants
        self.date_created = when
        self.date_updated = when
        self.created_monotonic = time.monotonic()
        self._status: Literal["init", "in-progress", "completed"] = "init"
        self.started = False
        self.members: list[Participant] = []
        self.reason_ended: str | None = None
        self.call_sid_ending: str | None = None
        self.label_ending: str | None = None
        self.sequence = 0
        self.last_timestamp = when
        self._events: list[ConferenceEvent] = []
        self._webhooks: list[WebhookExchange] = []
        self._errors: list[TwilioError] = []

    # -- thread-safe views for tests ----------------------------------------------------------
    @property
    def status(self) -> str:
        """``init``, ``in-progress`` or ``completed``."""
        with self._registry.cond:
            return self._status

    @property
    def reason_conference_ended(self) -> str | None:
        with self._registry.cond:
            return self.reason_ended

    @property
    def call_sid_ending_conference(self) -> str | None:
        with self._registry.cond:
            return self.call_sid_ending

    @property
    def participants(self) -> list[ParticipantInfo]:
        """Current participants (connecting and connected), in the order they were added."""
        with self._registry.cond:
            return [
                ParticipantInfo(
                    call_sid=p.call_sid,
                    label=p.label,
                    party=p.party,
                    status=p.status,
                    muted=p.muted,
                    hold=p.hold,
                    coaching=p.coaching,
                    start_conference_on_enter=p.start_on_enter,
                    end_conference_on_exit=p.end_on_exit,
                )
                for p in self.members
            ]

    @property
    def events(self) -> list[ConferenceEvent]:
        """Every event so far, in firing order (subscribed or not)."""
        with self._registry.cond:
            return list(self._events)

    def event_names(self, *, sent_only: bool = False) -> list[str]:
        """``StatusCallbackEvent`` names in firing order, e.g. ``["participant-join", "conference-start"]``."""
        return [e.event for e in self.events if e.sent or not sent_only]

    @property
    def webhooks(self) -> list[WebhookExchange]:
        """The status callbacks delivered so far (``at``: real seconds since the room was created)."""
        with self._registry.cond:
            return list(self._webhooks)

    @property
    def errors(self) -> list[TwilioError]:
        """Status callbacks that failed (11200/11205), as Twilio's debugger would log them."""
        with self._registry.cond:
            return list(self._errors)

    def wait_until(self, predicate: Callable[[Conference], bool], timeout: float = 10) -> bool:
        """Block until ``predicate(conference)`` holds (re-checked on every change, callbacks included)."""
        with self._registry.cond:
            return self._registry.cond.wait_for(lambda: predicate(self), timeout=timeout)

    def __repr__(self) -> str:
        return f"<Conference {self.sid} {self.friendly_name!r} {self._status}>"

    # -- registry side (lock held) --------------------------------------------------------------
    def set_status(self, status: Literal["init", "in-progress", "completed"], when: datetime) -> None:
        self._status = status
        self.date_updated = when

    def add_event(self, name: str, p: Participant | None, params: dict[str, str], sent: bool) -> None:
        self._events.append(
            ConferenceEvent(
                number=len(self._events) + 1,
                event=name,
                call_sid=p.call_sid if p is not None else None,
                label=p.label if p is not None else None,
                params=params,
                sent=sent,
            )
        )

    def add_webhook(self, exchange: WebhookExchange, error: TwilioError | None) -> None:
        self._webhooks.append(exchange)
        if error is not None:
            self._errors.append(error)


# ====================================================================== callbacks
@dataclass(frozen=True)
class _Delivery:
    conference: Conference
    spec: CallbackSpec
    params: dict[str, str]


class _Dispatcher:
    """Posts conference status callbacks from one thread, in firing order."""

    def __init__(self, webhooks: WebhookClient, cond: threading.Condition) -> None:
        self._webhooks = webhooks
        self._cond = cond
        self._queue: queue.Queue[_Delivery | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._busy = 0
        self._stopped = False

    def post(self, delivery: _Delivery) -> None:
        # Called with the registry lock held, which also guards _busy and the lazy start.
        if self._stopped:
            return
        self._busy += 1
        self._queue.put(delivery)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="conference-callbacks", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        session = new_session()
        try:
            while True:
                delivery = self._queue.get()
                if delivery is None:
                    return
                result = self._webhooks.send(session, delivery.spec.url, delivery.spec.method, delivery.params)
                conference = delivery.conference
                exchange = WebhookExchange.of(
                    result,
                    call_sid=delivery.params.get("CallSid", ""),
                    purpose=f"conference status callback ({delivery.params.get('StatusCallbackEvent', '')})",
                    at=time.monotonic() - conference.created_monotonic,
                )
                error = None
                if (problem := result.delivery_problem()) is not None:
                    error = TwilioError(problem.code, problem.message, result.url, "", 0.0, False)
                with self._cond:
                    conference.add_webhook(exchange, error)
                    self._busy -= 1
                    self._cond.notify_all()
        finally:
            session.close()

    def drain(self, timeout: float) -> bool:
        """Wait (bounded) until every queued callback was delivered."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout=timeout)

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=timeout)


# ====================================================================== registry
@dataclass
class _Batch:
    """What one change has to do once the registry lock is released."""

    conferences: list[Conference] = field(default_factory=list)
    released: list[Participant] = field(default_factory=list)
    wake: list[Leg] = field(default_factory=list)
    hang_up: list[Leg] = field(default_factory=list)

    def touch(self, conference: Conference) -> None:
        if conference not in self.conferences:
            self.conferences.append(conference)


def _poke(leg: Leg) -> None:
    """Wake whatever thread runs ``leg`` (it re-reads its view)."""
    while True:
        call = leg.call
        with call.cond:
            if leg.call is call:
                call.cond.notify_all()
                return


class ConferenceRegistry:
    """Every conference of one emulator, by SID and by (active) friendly name."""

    def __init__(self, webhooks: WebhookClient, account_sid: str) -> None:
        self.account_sid = account_sid
        self.cond = threading.Condition(threading.RLock())
        self._by_sid: dict[str, Conference] = {}
        self._active: dict[str, Conference] = {}
        #: Participants added through the API whose call has not joined yet, by call SID.
        self._connecting: dict[str, Participant] = {}
        self._dispatcher = _Dispatcher(webhooks, self.cond)

    # ------------------------------------------------------------------ lookups
    def get(self, sid: str) -> Conference | None:
        with self.cond:
            return self._by_sid.get(sid)

    def find(self, name_or_sid: str) -> Conference | None:
        """By SID, else the newest room with that friendly name."""
        with self.cond:
            if name_or_sid in self._by_sid:
                return self._by_sid[name_or_sid]
            named = [c for c in self._by_sid.values() if c.friendly_name == name_or_sid]
            return named[-1] if named else None

    def all(self) -> list[Conference]:
        with self.cond:
            return list(self._by_sid.values())

    def participant(self, conference: Conference, call_sid_or_label: str) -> Participant | None:
        """A current participant by Call SID or label (the Participant resource accepts both)."""
        with self.cond:
            for p in conference.members:
                if call_sid_or_label in (p.call_sid, p.label):
                    return p
            return None

    def members(self, conference: Conference) -> list[Participant]:
        with self.cond:
            return list(conference.members)

    # ------------------------------------------------------------------ change machinery
    @contextlib.contextmanager
    def _changing(self) -> Iterator[_Batch]:
        batch = _Batch()
        with self.cond:
            yield batch
            for conference in batch.conferences:
                for p in [*conference.members, *batch.released]:
                    self._refresh(p, batch)
            self.cond.notify_all()
        # Outside the registry lock: other calls' locks are only ever taken here.
        for leg in batch.wake:
            _poke(leg)
        for leg in batch.hang_up:
            leg.signal(HangupSignal("rest", "canceled"))

    def _refresh(self, p: Participant, batch: _Batch) -> None:
        signature = self._signature(p)
        if signature != p.signature:
            p.signature = signature
            p.changes += 1
            if p.leg is not None and p.connected and p.leg not in batch.wake:
                batch.wake.append(p.leg)

    def _signature(self, p: Participant) -> object:
        """Everything that changes what ``p`` hears; the participant's thread is woken when it changes.

        Only what matters in the current mode counts, so e.g. somebody joining a room that has not
        started does not restart the wait music of those already waiting.
        """
        if p.removed is not None:
            return ("removed", p.removed)
        if p.hold:
            return ("hold", p.hold_url, p.hold_method, p.announced)
        if not p.conference.started:
            return ("wait", p.wait_url, p.wait_method, p.announced)
        return ("people", self._audible(p), p.muted, p.announced, p.beeped)

    def _audible(self, listener: Participant) -> tuple[str, ...]:
        """Who ``listener`` hears: connected, not held, not muted; a coach only by the coached."""
        if not listener.conference.started:
            return ()
        return tuple(
            p.display
            for p in listener.conference.members
            if p is not listener
            and p.connected
            and p.removed is None
            and not p.hold
            and not p.muted
            and (not p.coaching or p.call_sid_to_coach == listener.call_sid)
        )

    def _stamp(self, conference: Conference, when: datetime) -> datetime:
        # Events come from different calls' virtual clocks and from the REST API's wall clock:
        # keep a room's timestamps monotonic.
        conference.last_timestamp = max(conference.last_timestamp, when)
        conference.date_updated = conference.last_timestamp
        return conference.last_timestamp

    def _event(
        self,
        conference: Conference,
        name: str,
        when: datetime,
        p: Participant | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        params = {
            "ConferenceSid": conference.sid,
            "FriendlyName": conference.friendly_name,
            "AccountSid": conference.account_sid,
            "Timestamp": format_datetime(self._stamp(conference, when)),
            "StatusCallbackEvent": name,
        }
        if p is not None:
            params.update(
                CallSid=p.call_sid,
                Muted=_bool(p.muted),
                Hold=_bool(p.hold),
                Coaching=_bool(p.coaching),
                EndConferenceOnExit=_bool(p.end_on_exit),
                StartConferenceOnEnter=_bool(p.start_on_enter),
            )
            if p.label:
                params["ParticipantLabel"] = p.label
            if p.coaching and p.call_sid_to_coach:
                params["CallSidToCoach"] = p.call_sid_to_coach
        params.update(extra or {})
        spec = conference.callback
        sent = spec is not None and any(name in CONFERENCE_EVENTS.get(e, ()) for e in spec.events)
        if sent and spec is not None:
            conference.sequence += 1
            params["SequenceNumber"] = str(conference.sequence)
            self._dispatcher.post(_Delivery(conference, spec, dict(params)))
        conference.add_event(name, p, params, sent)

    def _create(self, name: str, options: JoinOptions, when: datetime) -> Conference:
        conference = Conference(self, name, options, when)
        self._by_sid[conference.sid] = conference
        self._active[name] = conference
        return conference

    def _new_participant(
        self, conference: Conference, call_sid: str, party: str, options: JoinOptions, when: datetime
    ) -> Participant:
        p = Participant(
            conference=conference,
            call_sid=call_sid,
            party=party,
            label=options.label,
            muted=options.muted,
            start_on_enter=options.start_on_enter,
            end_on_exit=options.end_on_exit,
            beep=options.beep,
            coaching=options.coach is not None,
            call_sid_to_coach=options.coach,
            wait_url=options.wait_url,
            wait_method=options.wait_method,
            date_created=when,
            date_updated=when,
        )
        conference.members.append(p)
        return p

    def _beep(self, conference: Conference, about: Participant, what: str) -> None:
        for other in conference.members:
            if other is not about and other.connected and other.removed is None:
                other.beeps.append(f"{about.display} {what}")
                other.beeped += 1

    # ------------------------------------------------------------------ call side
    def join(self, leg: Leg, name: str, options: JoinOptions, when: datetime) -> Participant | JoinRefused:
        """``leg`` runs ``<Dial><Conference>name</Conference>``: put it in the room (created on demand).

        An API-created participant's call joins the room it was created for, with the options it
        was created with.
        """
        with self._changing() as batch:
            p = self._connecting.pop(leg.sid, None)
            if p is not None:
                if p.removed is not None:
                    return JoinRefused(16030, "participant failed to be added: its conference has ended")
                conference = p.conference
            else:
                conference = self._active.get(name) or self._create(name, options, when)
                # (An API-created participant's label was checked when it was created.)
                if options.label and any(o.label == options.label for o in conference.members):
                    return JoinRefused(16025, f"participant label {options.label!r} is in use by another participant")
            connected = [o for o in conference.members if o.connected]
            if len(connected) >= conference.max_participants:
                if p is not None:
                    self._remove(p, Removal("participant_add_failed"), "in-progress", when, batch, kicked=False)
                return JoinRefused(16020, f"conference {conference.friendly_name!r} is full")
            if p is None:
                p = self._new_participant(conference, leg.sid, leg.party, options, when)
            p.leg, p.party, p.connected = leg, leg.party, True
            p.joined_started = conference.started
            p.date_updated = when
            batch.touch(conference)
            self._event(conference, "participant-join", when, p)
            connected.append(p)
            if not conference.started and len(connected) >= 2 and any(o.start_on_enter for o in connected):
                conference.started = True
                conference.set_status("in-progress", when)
                self._event(conference, "conference-start", when)
            if conference.started and p.beep in ("true", "onEnter"):
                self._beep(conference, p, "joined")
            return p

    def view(self, p: Participant) -> ParticipantView:
        """``p``'s situation now; hands over (and forgets) its pending announcements and beeps."""
        with self.cond:
            announcements, p.inbox = tuple(p.inbox), []
            beeps, p.beeps = tuple(p.beeps), []
            return ParticipantView(
                conference_sid=p.conference.sid,
                conference_name=p.conference.friendly_name,
                removed=p.removed,
                started=p.conference.started,
                hold=p.hold,
                hold_url=p.hold_url,
                hold_method=p.hold_method,
                wait_url=p.wait_url,
                wait_method=p.wait_method,
                muted=p.muted,
                audible=self._audible(p),
                announcements=announcements,
                beeps=beeps,
            )

    def leave(self, p: Participant, reason: str, call_status: str, when: datetime) -> None:
        """``p``'s own call left the room (hung up, redirected, timed out); a no-op if already out."""
        with self._changing() as batch:
            if p.removed is None:
                self._remove(p, Removal(reason), call_status, when, batch, kicked=False)

    def call_ended(self, leg: Leg) -> None:
        """Every call's thread reports its end: an API-created participant that never joined is
        dropped (``participant_add_failed``, with the call's final status), and any participant
        still in a room leaves it."""
        with self._changing() as batch:
            when = leg.call.wall(leg.call.clock)
            pending = self._connecting.pop(leg.sid, None)
            if pending is not None and pending.removed is None:
                self._remove(pending, Removal("participant_add_failed"), leg.status, when, batch, kicked=False)
            for conference in list(self._active.values()):
                for p in list(conference.members):
                    if p.leg is leg and p.removed is None:
                        self._remove(p, Removal("participant_hung_up"), leg.status, when, batch, kicked=False)

    def announcement_result(self, announcement: Announcement, fetch: Callable[[], HttpResult]) -> HttpResult:
        """The AnnounceUrl response, fetched once for everybody who plays the announcement."""
        with announcement.lock:
            if announcement.result is None:
                announcement.result = fetch()
            return announcement.result

    def announcement_done(self, announcement: Announcement, failure: str | None, when: datetime) -> None:
        """Report the announcement once (``announcement-end``, or ``announcement-fail``)."""
        with self.cond:
            if announcement.reported:
                return
            announcement.reported = True
            conference = announcement.conference
            target = announcement.participant
            extra = {"AnnounceUrl": announcement.url}
            if failure is not None:
                extra["ReasonAnnouncementFailed"] = failure
            # Participant fields only for a participant announcement whose participant is still there.
            about = target if target is not None and target.removed is None else None
            name = "announcement-fail" if failure is not None else "announcement-end"
            self._event(conference, name, when, about, extra)
            self.cond.notify_all()

    # ------------------------------------------------------------------ REST side
    def add_connecting(
        self, ref: str, call_sid: str, party: str, options: JoinOptions, when: datetime
    ) -> Participant | RestRefusal:
        """Participant create: the participant exists (``queued``) before its call is even placed.

        ``ref`` is a conference SID or, to create the room on demand, a friendly name.
        """
        with self._changing() as batch:
            conference = self._by_sid.get(ref)
            if conference is None:
                if _CONFERENCE_SID.fullmatch(ref):
                    return RestRefusal(404, 20404, f"Conference {ref} was not found")
                conference = self._active.get(ref) or self._create(ref, options, when)
            elif conference.status == "completed":
                return RestRefusal(404, 20404, f"Conference {ref} has completed")
            if options.label and any(o.label == options.label for o in conference.members):
                message = f"Participant label {options.label!r} is in use by another participant"
                return RestRefusal(400, 16026, message)
            p = self._new_participant(conference, call_sid, party, options, when)
            self._connecting[call_sid] = p
            batch.touch(conference)
            return p

    def attach_call(self, p: Participant, leg: Leg) -> None:
        with self.cond:
            if p.leg is None:
                p.leg = leg

    def abandon(self, p: Participant) -> None:
        """Forget a participant whose call could not even be placed."""
        with self._changing() as batch:
            self._connecting.pop(p.call_sid, None)
            if p.removed is None:
                self._remove(p, Removal("participant_add_failed"), "failed", datetime.now(UTC), batch, kicked=False)

    def update(self, p: Participant, change: ParticipantUpdate) -> None:
        """Participant update: mute, hold, announce, modify — each with its status callback event."""
        with self._changing() as batch:
            if p.removed is not None:
                return
            conference = p.conference
            when = datetime.now(UTC)
            batch.touch(conference)
            p.date_updated = when
            if change.muted is not None and change.muted != p.muted:
                p.muted = change.muted
                self._event(conference, "participant-mute" if p.muted else "participant-unmute", when, p)
            if change.hold is True:
                # A new HoldUrl on a held participant restarts the hold audio with it.
                p.hold_url = change.hold_url
                p.hold_method = change.hold_method or "GET"
                if not p.hold:
                    p.hold = True
                    self._event(conference, "participant-hold", when, p)
            elif change.hold is False and p.hold:
                p.hold, p.hold_url = False, None
                self._event(conference, "participant-unhold", when, p)
            modified = False
            if change.end_on_exit is not None and change.end_on_exit != p.end_on_exit:
                p.end_on_exit, modified = change.end_on_exit, True
            if change.beep_on_exit is not None and change.beep_on_exit != p.beep_on_exit:
                p.beep_on_exit, modified = change.beep_on_exit, True
            if change.coaching is not None and change.coaching != p.coaching:
                p.coaching, modified = change.coaching, True
            if change.call_sid_to_coach is not None and change.call_sid_to_coach != p.call_sid_to_coach:
                p.call_sid_to_coach, modified = change.call_sid_to_coach, True
            if change.wait_url is not None and change.wait_url != p.wait_url:
                p.wait_url, modified = change.wait_url, True
            if change.wait_method is not None:
                p.wait_method = change.wait_method
            if modified:
                self._event(conference, "participant-modify", when, p)
            if change.announce_url is not None:
                p.inbox.append(Announcement(change.announce_url, change.announce_method, conference, p))
                p.announced += 1

    def kick(self, p: Participant) -> None:
        """Participant delete: out of the room; a connected call continues at its ``<Dial>`` action,
        a call still ringing is canceled."""
        with self._changing() as batch:
            if p.removed is None:
                status = "in-progress" if p.connected else "canceled"
                self._remove(p, Removal("participant_updated_via_api"), status, datetime.now(UTC), batch, kicked=True)

    def end(self, conference: Conference) -> None:
        """Conference update ``Status=completed``."""
        with self._changing() as batch:
            if conference.status != "completed":
                self._end(
                    conference, "conference-ended-via-api", None, datetime.now(UTC), batch, "conference_ended_via_api"
                )

    def announce(self, conference: Conference, url: str, method: str) -> None:
        """Conference update ``AnnounceUrl``: played to everybody connected."""
        with self._changing() as batch:
            if conference.status == "completed":
                return
            announcement = Announcement(url, method, conference, None)
            for p in conference.members:
                if p.connected and p.removed is None:
                    p.inbox.append(announcement)
                    p.announced += 1
            batch.touch(conference)

    # ------------------------------------------------------------------ leaving and ending
    def _remove(
        self, p: Participant, removal: Removal, call_status: str, when: datetime, batch: _Batch, *, kicked: bool
    ) -> None:
        conference = p.conference
        p.removed = removal
        p.date_updated = when
        self._connecting.pop(p.call_sid, None)
        if p in conference.members:
            conference.members.remove(p)
        batch.released.append(p)
        batch.touch(conference)
        if not p.connected and p.leg is not None and p.leg.live:
            batch.hang_up.append(p.leg)
        self._event(
            conference,
            "participant-leave",
            when,
            p,
            {"ParticipantCallStatus": call_status, "ReasonParticipantLeft": removal.reason},
        )
        if conference.status == "completed":
            return
        beeps = p.beep_on_exit if p.beep_on_exit is not None else p.beep in ("true", "onExit")
        if conference.started and p.connected and beeps:
            self._beep(conference, p, "left")
        how = "kicked" if kicked else "left"
        if p.end_on_exit and p.connected:
            self._end(
                conference,
                f"participant-with-end-conference-on-exit-{how}",
                p,
                when,
                batch,
                "moderator_ended_conference",
            )
        elif not conference.members:
            self._end(conference, f"last-participant-{how}", p, when, batch, "participant_hung_up")

    def _end(
        self,
        conference: Conference,
        reason: str,
        ending: Participant | None,
        when: datetime,
        batch: _Batch,
        leave_reason: str,
    ) -> None:
        conference.set_status("completed", when)
        conference.reason_ended = reason
        conference.call_sid_ending = ending.call_sid if ending is not None else None
        conference.label_ending = ending.label if ending is not None else None
        if self._active.get(conference.friendly_name) is conference:
            del self._active[conference.friendly_name]
        batch.touch(conference)
        # Everybody still in the room drops out first, then the room reports its end (the order
        # is not documented; this is how the room empties).
        for p in list(conference.members):
            removal = Removal(leave_reason if p.connected else "participant_add_failed", ended=True)
            status = "in-progress" if p.connected else "canceled"
            self._remove(p, removal, status, when, batch, kicked=False)
        extra = {"ReasonConferenceEnded": reason, "Reason": _END_REASONS.get(reason, reason)}
        if ending is not None:
            extra["CallSidEndingConference"] = ending.call_sid
            if ending.label:
                extra["ParticipantLabelEndingConference"] = ending.label
        self._event(conference, "conference-end", when, None, extra)

    # ------------------------------------------------------------------ shutdown
    def drain(self, timeout: float) -> bool:
        return self._dispatcher.drain(timeout)

    def close(self, timeout: float = 2.0) -> None:
        self._dispatcher.drain(timeout)
        self._dispatcher.stop(timeout)


_END_REASONS: Final = {
    "conference-ended-via-api": "Conference ended via API",
    "participant-with-end-conference-on-exit-left": "Participant with endConferenceOnExit left the conference",
    "participant-with-end-conference-on-exit-kicked": "Participant with endConferenceOnExit was removed via API",
    "last-participant-left": "Last participant left the conference",
    "last-participant-kicked": "Last participant was removed via API",
}
