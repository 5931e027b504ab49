"""The CRM store's tables, as typed SQLAlchemy 2.0 models, and the rules of their lifecycles.

Everything a call needs to survive a worker restart lives here (the interaction's flow state, rep presence, offers),
so that any worker of any host can serve any webhook of any call.

This is the domain model: every change of a state field (an interaction's status and outcome, an offer's, a rep's,
a hand-off's, a callback's, a task's state) happens in one method of its class, named for what happened in the
call (``Offer.accept``, ``Rep.settle``, ``Interaction.close``, ``Handoff.fail``). Services load rows, call these
methods and let the unit of work write them; nothing else assigns a state field (``tests/unit/test_layers.py``
checks it). A method refuses a transition its state does not allow (``InvalidTransition``) unless the call's
callbacks can legitimately race into it, where it answers False and changes nothing.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from crm_sync.errors import PresenceRefused, Refused


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite keeps no zone, so values come back naive; this makes them aware again so that arithmetic between a value
    read from the database and ``utcnow()`` never mixes naive and aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(enum_cls: type[enum.StrEnum]) -> Enum:
    # Stored as plain strings (no native ENUM type) so adding a state later is a code change, not a migration
    # that has to ALTER TYPE on PostgreSQL.
    return Enum(
        enum_cls,
        native_enum=False,
        length=20,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class InvalidTransition(Refused):
    """A state change the current state does not allow (a programming error or a lost race, never user input)."""


def _seconds_between(start: datetime | None, end: datetime) -> int:
    """Whole seconds from ``start`` to ``end``, never negative (another worker's clock may run a moment ahead)."""
    return 0 if start is None else max(0, int((end - start).total_seconds()))


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class RepState(enum.StrEnum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    RESERVED = "reserved"  # being offered a call (ringing / hearing the whisper); expires at reserved_until
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"  # after-call work; available by itself at wrap_up_until
    AWAY = "away"


#: States in which a rep counts as on duty: they will take calls now or soon.
ON_DUTY_STATES = (RepState.AVAILABLE, RepState.RESERVED, RepState.ON_CALL, RepState.WRAP_UP)
#: What a person (the rep, a supervisor, an admin) may set; the others are set by calls.
CHOSEN_STATES = (RepState.AVAILABLE, RepState.AWAY, RepState.OFFLINE)


#: The department of a call nobody routed yet (or whose words were unclear): every flow has it.
GENERAL_DEPARTMENT = "general"


class InteractionStatus(enum.StrEnum):
    IN_FLOW = "in_flow"  # talking to the IVR
    OFFERING = "offering"  # a rep is reserved and being offered the call
    QUEUED = "queued"  # waiting in the department queue
    CALLBACK = "callback"  # hung up keeping a virtual place in the queue; we call back when it is their turn
    CONNECTED = "connected"  # a rep accepted and is talking to the caller
    ENDED = "ended"


#: Statuses of callers who hold a place in a department's line (on hold, or virtually for a callback).
WAITING_STATUSES = (InteractionStatus.QUEUED, InteractionStatus.CALLBACK)


class Outcome(enum.StrEnum):
    ANSWERED = "answered"
    ABANDONED = "abandoned"
    NO_REP = "no-rep"
    FAILED = "failed"
    VOICEMAIL = "voicemail"
    CALLBACK = "callback"  # served by a rep through a callback
    CALLBACK_MISSED = "callback-missed"  # every callback attempt went unanswered: a follow-up task was filed


class OfferState(enum.StrEnum):
    PENDING = "pending"  # rep reserved; the Dial has not started yet (queued caller being pulled)
    RINGING = "ringing"  # the caller's <Dial> is ringing the rep / the rep hears the whisper
    ACCEPTED = "accepted"  # the rep pressed 1
    DECLINED = "declined"  # the rep declined, did not answer, or the whisper ended without a key
    CANCELLED = "cancelled"  # the caller hung up, or the offer was withdrawn
    ENDED = "ended"  # an accepted call finished


#: Offers still in play: a rep is held for them.
LIVE_OFFER_STATES = (OfferState.PENDING, OfferState.RINGING, OfferState.ACCEPTED)


class OfferEnd(enum.StrEnum):
    """How an offer ended, for the rep it was made to (``Rep.settle``)."""

    TALKED = "talked"  # the rep took the call and it is over: wrap-up
    MISSED = "missed"  # rang out, or the whisper got no key: counts towards being set away
    DECLINED = "declined"  # the rep pressed another key: back to available, no penalty
    CANCELLED = "cancelled"  # withdrawn (the caller hung up, another rep of the ring group answered)


class OfferPurpose(enum.StrEnum):
    """What an offer is for."""

    CALL = "call"  # the caller on the line
    CALLBACK = "callback"  # a callback we place
    HANDOFF = "handoff"  # a rep-to-rep warm transfer


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(20), unique=True, index=True)  # E.164
    email: Mapped[str | None] = mapped_column(String(320))
    tier: Mapped[str] = mapped_column(String(32), default="standard")
    notes: Mapped[str | None] = mapped_column(Text)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else ""


class Rep(Base):
    __tablename__ = "reps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    phone: Mapped[str] = mapped_column(String(20))  # E.164
    state: Mapped[RepState] = mapped_column(_enum(RepState), default=RepState.OFFLINE, index=True)
    state_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the rep last became free: "longest idle first" orders by this.
    available_since: Mapped[datetime | None] = mapped_column()
    languages: Mapped[list[str]] = mapped_column(default=list)
    # The offer the rep is reserved for or talking on: releases name it, so a late callback about an older offer
    # can never free (or cut the wrap-up of) a rep who has moved on to another call.
    current_offer_id: Mapped[int | None] = mapped_column(Integer)
    # A reservation nobody answered is released by itself at this time (no lost callback can keep it forever).
    reserved_until: Mapped[datetime | None] = mapped_column()
    wrap_up_until: Mapped[datetime | None] = mapped_column()
    # Offers in a row that rang out or were ignored; at the configured limit the rep is set away.
    missed_offers: Mapped[int] = mapped_column(Integer, default=0)
    # Away or offline, asked for during a call: taken when the call ends (instead of wrap-up).
    after_call_state: Mapped[RepState | None] = mapped_column(_enum(RepState))
    # Round robin hands the next call to the rep offered one longest ago.
    last_offered_at: Mapped[datetime | None] = mapped_column()
    # SHA-256 of the rep's API token (integrations' key to the JSON API); the token itself is never stored.
    api_token_hash: Mapped[str | None] = mapped_column(String(64))
    # "rep" or "supervisor" (the reps CSV's role column): a supervisor sees and acts on every call and task.
    role: Mapped[str] = mapped_column(String(16), default="rep", server_default="rep")
    # The console password, hashed with Argon2id (argon2-cffi); None: the rep signs in with one-time links only.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # Why the rep is away (break, lunch, training, ...: config.yaml console.away_reasons), while away.
    away_reason: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (UniqueConstraint("api_token_hash", name="uq_reps_api_token_hash"),)

    skills: Mapped[list[RepSkill]] = relationship(back_populates="rep", cascade="all, delete-orphan", lazy="selectin")

    @property
    def departments(self) -> list[str]:
        return sorted(skill.department for skill in self.skills)

    def held_for(self, offer_id: int) -> bool:
        """Whether the rep is ringing or talking on this offer (and not on another one since)."""
        return self.current_offer_id == offer_id and self.state in (RepState.RESERVED, RepState.ON_CALL)

    def reserve(self, *, now: datetime, until: datetime) -> None:
        """Hold an available rep for a call; the hold lapses at ``until`` unless the call is answered.

        The caller must have locked the row while it was available (``FOR UPDATE SKIP LOCKED``, or SQLite's one
        writer): two workers never reserve the same rep.
        """
        if self.state is not RepState.AVAILABLE:
            raise InvalidTransition(f"rep {self.name} is {self.state.value}, not available")
        self._become(RepState.RESERVED, now)
        self.reserved_until = until
        self.last_offered_at = now
        self.current_offer_id = None

    def reserve_to_call_out(self, *, now: datetime, until: datetime) -> None:
        """Hold the rep for a call they place themselves (a callback from their work queue): allowed while free,
        in wrap-up or away (working follow-ups); an away rep goes back to away when that call ends."""
        if self.state not in (RepState.AVAILABLE, RepState.WRAP_UP, RepState.AWAY):
            raise InvalidTransition(f"{self.name} is {self.state.value.replace('_', ' ')}: finish that first")
        if self.state is RepState.AWAY:
            self.after_call_state = RepState.AWAY
        self._become(RepState.RESERVED, now)
        self.reserved_until = until
        self.wrap_up_until = None
        self.current_offer_id = None

    def hold_for(self, offer_id: int) -> None:
        """Name the offer a reservation is for: only a release that names it can free the rep."""
        if self.state is not RepState.RESERVED:
            raise InvalidTransition(f"rep {self.name} is {self.state.value}, not reserved")
        self.current_offer_id = offer_id

    def extend_reservation(self, offer_id: int, *, until: datetime) -> bool:
        """Keep a reservation alive while its call is being put through. False when it lapsed or moved on."""
        if self.state is not RepState.RESERVED or self.current_offer_id != offer_id:
            return False
        self.reserved_until = until
        return True

    def take_call(self, offer_id: int, *, now: datetime) -> bool:
        """The rep pressed 1. False when the reservation was already released (too late: passed on)."""
        if self.state is not RepState.RESERVED or self.current_offer_id != offer_id:
            return False
        self._become(RepState.ON_CALL, now)
        self.reserved_until = None
        self.missed_offers = 0
        return True

    def settle(
        self, offer_id: int, end: OfferEnd, *, now: datetime, wrap_up_seconds: int, away_after_missed: int
    ) -> RepState | None:
        """Free the rep from one offer: wrap-up after a call, away after too many missed offers, else available
        (or the presence they asked for during the call).

        Only while the rep is still held for ``offer_id``: a late or repeated callback about an older offer never
        frees a rep who has moved on, nor cuts a wrap-up short. Returns the new state, or None if nothing changed.
        """
        if not self.held_for(offer_id):
            return None
        asked_for = self.after_call_state
        state: RepState
        if end is OfferEnd.TALKED or self.state is RepState.ON_CALL:
            self.missed_offers = 0
            if asked_for is not None:
                state = asked_for
            elif wrap_up_seconds > 0:
                state = RepState.WRAP_UP
                self.wrap_up_until = now + timedelta(seconds=wrap_up_seconds)
            else:
                state = RepState.AVAILABLE
                self.available_since = now
        elif end is OfferEnd.MISSED:
            self.missed_offers += 1
            state = RepState.AWAY if self.missed_offers >= away_after_missed else (asked_for or RepState.AVAILABLE)
        else:
            # Declined or withdrawn: back where they were, keeping their place in the idle order.
            state = asked_for or RepState.AVAILABLE
        self.current_offer_id = None
        self.reserved_until = None
        self.after_call_state = None
        self._become(state, now)
        return state

    def expire_orphan_reservation(self, *, now: datetime) -> bool:
        """A reservation that names no offer (its transaction died half-way): back to available."""
        if self.state is not RepState.RESERVED or self.current_offer_id is not None:
            return False
        self._become(RepState.AVAILABLE, now)
        self.reserved_until = None
        return True

    def end_wrap_up(self, *, now: datetime) -> bool:
        """After-call work time is over: available, idle from now."""
        if self.state is not RepState.WRAP_UP or self.wrap_up_until is None or self.wrap_up_until > now:
            return False
        self._become(RepState.AVAILABLE, now)
        self.available_since = now
        self.wrap_up_until = None
        return True

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"

    def choose_presence(self, state: RepState, *, now: datetime, reason: str | None = None) -> bool:
        """A person sets the rep's presence (``reason``: why they are away). Returns False when it takes effect only
        after the current call.

        Available restarts the idle clock and ends a wrap-up early. Away or offline asked for while ringing or
        talking on a Warmline call is kept for when the call ends, so a rep is never pulled off a live call.
        """
        if state not in CHOSEN_STATES:
            choices = ", ".join(choice.value for choice in CHOSEN_STATES)
            raise PresenceRefused(f"{state.value} is set by calls; choose one of {choices}")
        self.away_reason = reason if state is RepState.AWAY else None
        if self.state in (RepState.RESERVED, RepState.ON_CALL) and self.current_offer_id is not None:
            self.after_call_state = None if state is RepState.AVAILABLE else state
            return False
        self.after_call_state = None
        if self.state == state:
            return True
        self._become(state, now)
        self.wrap_up_until = None
        if state is RepState.AVAILABLE:
            self.available_since = now
            self.missed_offers = 0
        return True

    def set_password_hash(self, password_hash: str | None) -> None:
        self.password_hash = password_hash

    def _become(self, state: RepState, now: datetime) -> None:
        if state is not self.state:
            self.state = state
            self.state_changed_at = now


class RepSkill(Base):
    __tablename__ = "rep_skills"

    rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id", ondelete="CASCADE"), primary_key=True)
    department: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    # 1 (can help) to 10 (expert): free reps with the higher level are offered a department's calls first.
    level: Mapped[int] = mapped_column(Integer, default=5)

    rep: Mapped[Rep] = relationship(back_populates="skills")


class Interaction(Base):
    """One phone call, keyed by Twilio's CallSid, from ring to outcome."""

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    caller_number: Mapped[str] = mapped_column(String(32), index=True)  # E.164 when it parses
    called_number: Mapped[str | None] = mapped_column(String(32))  # our number the caller dialled (E.164)
    # The call carrying the caller now when it is not the first one: the callback we placed to them.
    live_call_sid: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    flow_name: Mapped[str] = mapped_column(String(100))
    flow_version: Mapped[str] = mapped_column(String(64))
    flow_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[InteractionStatus] = mapped_column(_enum(InteractionStatus), default=InteractionStatus.IN_FLOW)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    issue_text: Mapped[str | None] = mapped_column(Text)
    capture_method: Mapped[str | None] = mapped_column(String(16))  # speech | dtmf | none
    speech_confidence: Mapped[float | None] = mapped_column(Float)
    department: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"))
    summary: Mapped[str | None] = mapped_column(Text)  # the whisper the rep heard
    enqueued_at: Mapped[datetime | None] = mapped_column()
    hold_seconds: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[Outcome | None] = mapped_column(_enum(Outcome))
    recording_url: Mapped[str | None] = mapped_column(String(500))
    # The voicemail's words, which engine heard them and how sure it was; on failure the reason, and the recording
    # link above stays: nothing is lost when transcription fails.
    transcript: Mapped[str | None] = mapped_column(Text)
    transcript_engine: Mapped[str | None] = mapped_column(String(40))
    transcript_confidence: Mapped[float | None] = mapped_column(Float)
    transcript_error: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(16))
    survey: Mapped[dict[str, Any]] = mapped_column(default=dict)  # question id → key pressed
    last_call_status: Mapped[str | None] = mapped_column(String(20))
    # Place in line: enqueued_at minus the caller's head start (VIP, repeat caller, frustration, callback), so one
    # ordered column serves priority and first-come-first-served alike (see voice/priority.py).
    rank_at: Mapped[datetime | None] = mapped_column()
    priority_seconds: Mapped[int] = mapped_column(Integer, default=0)
    priority_reasons: Mapped[list[str]] = mapped_column(default=list)
    # The last wait estimate the caller heard (seconds, as computed before rounding) and when.
    announced_at: Mapped[datetime | None] = mapped_column()
    announced_wait: Mapped[int | None] = mapped_column(Integer)
    # Why the caller is leaving the hold loop (<Leave/>): "callback" or "voicemail" (they pressed a key for it).
    leave_reason: Mapped[str | None] = mapped_column(String(16))
    # The rep's wrap-up: how the call ended for the customer (a disposition code), their notes, who and when.
    disposition: Mapped[str | None] = mapped_column(String(40))
    wrap_up_notes: Mapped[str | None] = mapped_column(Text)
    wrapped_up_at: Mapped[datetime | None] = mapped_column()
    wrapped_up_by_rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"))
    # "Wrong department?": where the call should have gone, said by the rep who took it or a supervisor. The
    # department the flow detected stays in ``department`` (and ``confidence``): routing learns from the pair.
    corrected_department: Mapped[str | None] = mapped_column(String(64))
    corrected_at: Mapped[datetime | None] = mapped_column()
    corrected_by_rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"))
    # The last time anything about the call was written: a live call nothing was heard about for a while is
    # checked with Twilio (a status callback may have been lost; the housekeeping pass reconciles it).
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())

    # Loaded only where needed (the whisper, exports): the hot webhooks never touch them.
    customer: Mapped[Customer | None] = relationship()
    rep: Mapped[Rep | None] = relationship(foreign_keys=[rep_id])

    @classmethod
    def heard_of_only_at_its_end(
        cls,
        *,
        call_sid: str,
        caller_number: str,
        called_number: str | None,
        call_status: str,
        duration_seconds: int | None,
        flow_name: str,
        flow_version: str,
        now: datetime,
    ) -> Interaction:
        """A call whose first webhook we could not record (the store was down) and which we hear of only from its
        final status callback: recorded from what that callback says, as failed — nobody could route it."""
        started = now - timedelta(seconds=duration_seconds or 0)
        interaction = cls(
            call_sid=call_sid,
            caller_number=caller_number,
            called_number=called_number,
            flow_name=flow_name,
            flow_version=flow_version,
            flow_state={},
            started_at=started,
            status=InteractionStatus.IN_FLOW,
        )
        interaction.close(outcome=Outcome.FAILED, call_status=call_status, duration_seconds=duration_seconds, now=now)
        return interaction

    @classmethod
    def call_out(
        cls,
        *,
        key: str,
        to: str,
        from_: str,
        customer_id: int | None,
        department: str | None,
        flow_name: str,
        flow_version: str,
        flow_state: dict[str, Any],
        now: datetime,
    ) -> Interaction:
        """A call we place to a customer (a rep calling back from the work queue), waiting for its callback to be
        answered. ``key``: its CallSid is not known until the customer picks up (then ``live_call_sid``)."""
        return cls(
            call_sid=key,
            caller_number=to,
            called_number=from_,
            customer_id=customer_id,
            department=department,
            flow_name=flow_name,
            flow_version=flow_version,
            flow_state=flow_state,
            started_at=now,
            status=InteractionStatus.CALLBACK,
        )

    # --- the IVR ---------------------------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.status is InteractionStatus.ENDED

    @property
    def routed_department(self) -> str:
        """The department the call is for: what the flow chose, else the general one."""
        return Interaction.routed(self.department)

    @staticmethod
    def routed(department: str | None) -> str:
        """``routed_department`` of a call whose ``department`` column was read without loading the call."""
        return department or GENERAL_DEPARTMENT

    @property
    def has_place_in_line(self) -> bool:
        """Whether the caller joined a department's line before (they keep that place when sent back to it)."""
        return self.enqueued_at is not None

    def record_flow(
        self,
        flow_state: dict[str, Any],
        *,
        issue_text: str | None,
        capture_method: str | None,
        speech_confidence: float | None,
        language: str | None,
        survey: dict[str, Any] | None,
    ) -> None:
        """Where the flow is and what the caller said so far."""
        self.flow_state = flow_state
        self.issue_text = issue_text
        self.capture_method = capture_method
        self.speech_confidence = speech_confidence
        if language:
            self.language = language
        if survey:
            self.survey = dict(survey)

    def route_to(self, department: str, *, confidence: float | None) -> None:
        """The flow handed the caller to a department (what was detected, and how sure it was)."""
        self.department = department
        self.confidence = confidence

    def return_to_flow(self) -> None:
        """Nobody is offered the caller any more (an offer nobody took, a hand-off that failed): the call is back
        with Warmline, to be routed again."""
        self._live()
        self.status = InteractionStatus.IN_FLOW
        self.rep_id = None

    def hand_back_to(self, department: str) -> None:
        """A failed hand-off returns the caller to Warmline, for ``department`` this time."""
        self.return_to_flow()
        self.department = department

    # --- offers, the line, callbacks -------------------------------------------------------------------------------

    def offer(self) -> None:
        """One or more reps are being offered the caller (ringing, or reserved while the caller is pulled)."""
        self._live()
        self.status = InteractionStatus.OFFERING
        self.rep_id = None

    def join_line(self, *, now: datetime, head_start_seconds: float = 0.0, reasons: tuple[str, ...] = ()) -> None:
        """Wait in the department's line. A caller joining for the first time ranks ``head_start_seconds`` ahead of
        their arrival (priority); one sent back keeps the place they had."""
        self._live()
        self.status = InteractionStatus.QUEUED
        self.rep_id = None
        if self.enqueued_at is None:
            self.enqueued_at = now
            self.rank_at = now - timedelta(seconds=head_start_seconds)
            self.priority_seconds = int(head_start_seconds)
            self.priority_reasons = list(reasons)
        elif self.rank_at is None:
            self.rank_at = self.enqueued_at

    def back_in_line(self) -> bool:
        """A rep reserved for a caller on hold never got them (the pull was lost): the caller waits on, in place."""
        if self.status is not InteractionStatus.OFFERING:
            return False
        self.status = InteractionStatus.QUEUED
        self.rep_id = None
        return True

    def leave_line_for(self, reason: str) -> None:
        """The caller pressed a key to leave the hold loop: ``callback`` or ``voicemail``."""
        self.leave_reason = reason

    def announced(self, *, now: datetime, wait_seconds: float | None) -> None:
        """The caller heard their place and this estimate."""
        self.announced_at = now
        self.announced_wait = round(wait_seconds) if wait_seconds is not None else None

    def wait_for_callback(self, *, held_seconds: int) -> None:
        """The caller hung up keeping their place: we call them back when it is their turn."""
        self._live()
        self.status = InteractionStatus.CALLBACK
        self.hold_seconds = held_seconds
        self.leave_reason = None

    def retry_callback(self, *, rank_at: datetime) -> None:
        """Nobody answered our callback: wait for the retry, ranked ``rank_at``."""
        self._live()
        self.status = InteractionStatus.CALLBACK
        self.rep_id = None
        self.rank_at = rank_at

    def carried_by(self, call_sid: str) -> None:
        """The caller is on another call now (the callback we placed)."""
        self.live_call_sid = call_sid

    def whispered(self, summary: str) -> None:
        """What the rep heard before taking the call."""
        self.summary = summary

    def waited_seconds(self, now: datetime) -> int:
        """How long the caller has waited in line (0 if they never queued)."""
        return _seconds_between(self.enqueued_at, now)

    def connect(self, rep_id: int, *, now: datetime, callback: bool = False) -> None:
        """A rep took the call (pressed 1): the caller is talking to them now."""
        self._live()
        self.status = InteractionStatus.CONNECTED
        self.rep_id = rep_id
        self.answered_at = self.answered_at or now
        if callback:
            # hold_seconds stays what the caller spent on hold before choosing the callback.
            self.outcome = Outcome.CALLBACK
        else:
            self.outcome = Outcome.ANSWERED
            self.hold_seconds = self.waited_seconds(now)

    def hand_to(self, rep_id: int) -> None:
        """A warm transfer completed: the caller is with another rep."""
        if self.status is InteractionStatus.CONNECTED:
            self.rep_id = rep_id

    # --- outcomes --------------------------------------------------------------------------------------------------

    def no_rep(self) -> None:
        """Nobody could take the caller: they are offered voicemail instead."""
        self.rep_id = None
        self.outcome = Outcome.NO_REP

    def voicemail_left(self, recording_url: str) -> None:
        self.recording_url = recording_url
        self.outcome = Outcome.VOICEMAIL

    def record_transcript(self, text: str | None, *, engine: str, confidence: float | None, error: str | None) -> None:
        """The voicemail's words (or why there are none; the recording link stays)."""
        self.transcript = text
        self.transcript_engine = engine
        self.transcript_confidence = confidence
        self.transcript_error = error

    def note_call_status(self, call_status: str) -> None:
        """A status callback that does not end the interaction (ringing, in-progress, or the caller hanging up
        while they wait for a callback)."""
        if not self.ended:
            self.last_call_status = call_status

    def outcome_when_call_ends(self, call_status: str) -> Outcome:
        """What the call's final status means for an interaction that has no outcome yet."""
        if self.outcome is not None:
            return self.outcome
        if self.answered_at is not None:
            return Outcome.ANSWERED
        if call_status in ("failed", "busy", "no-answer", "canceled") and self.status is InteractionStatus.IN_FLOW:
            return Outcome.FAILED
        return Outcome.ABANDONED

    def close(self, *, outcome: Outcome, call_status: str | None, duration_seconds: int | None, now: datetime) -> bool:
        """Close once. A repeated or late status callback changes nothing (it may only add a missing duration)."""
        if self.ended:
            if duration_seconds is not None and self.duration_seconds is None:
                self.duration_seconds = duration_seconds
            return False
        if self.enqueued_at is not None and self.answered_at is None:
            self.hold_seconds = _seconds_between(self.enqueued_at, now)
        self.status = InteractionStatus.ENDED
        self.outcome = self.outcome or outcome
        self.ended_at = now
        self.duration_seconds = duration_seconds
        self.last_call_status = call_status
        return True

    # --- after the call: the rep's wrap-up ------------------------------------------------------------------------

    def wrap_up(
        self,
        *,
        by_rep_id: int,
        disposition: str | None,
        notes: str | None,
        department: str | None,
        now: datetime,
    ) -> None:
        """The rep's record of the call: a disposition, notes, and, when the flow sent the caller to the wrong
        department, the right one (a correction; choosing the detected one again withdraws it). Saving again
        replaces what was saved; each field given as None is left as it was."""
        if disposition is not None:
            self.disposition = disposition or None
        if notes is not None:
            self.wrap_up_notes = notes.strip() or None
        if department is not None:
            corrected = department if department != self.department else None
            if corrected != self.corrected_department:
                self.corrected_department = corrected
                self.corrected_at = now if corrected else None
                self.corrected_by_rep_id = by_rep_id if corrected else None
        self.wrapped_up_at = now
        self.wrapped_up_by_rep_id = by_rep_id

    def _live(self) -> None:
        if self.ended:
            raise InvalidTransition(f"interaction {self.call_sid} has ended")

    # Every index is written on every commit that touches its columns, and on SQLite each written page costs the
    # commit a WAL frame: a new call used to dirty ten pages, which made the commit most of /voice/incoming's
    # database time (bench/webhook.py). So: no index another one's prefix covers (status alone, customer_id alone,
    # the old status+department+enqueued_at queue), and the ones only finished or transferred calls need are
    # partial, so a call in the IVR or in line never writes them. A query uses a partial index when its WHERE
    # implies the index's (``x = ?`` implies ``x IS NOT NULL`` on SQLite and PostgreSQL alike).
    __table_args__ = (
        # The line: who is waiting in a department, best rank first; its status prefix serves status lookups.
        Index("ix_interactions_line", "status", "department", "rank_at"),
        # Recent handle times per department, for wait estimates: finished calls only.
        Index(
            "ix_interactions_department_ended",
            "department",
            "ended_at",
            sqlite_where=text("ended_at IS NOT NULL"),
            postgresql_where=text("ended_at IS NOT NULL"),
        ),
        Index("ix_interactions_customer_started", "customer_id", "started_at"),
        Index(
            "ix_interactions_live_call_sid",
            "live_call_sid",
            sqlite_where=text("live_call_sid IS NOT NULL"),
            postgresql_where=text("live_call_sid IS NOT NULL"),
        ),
    )


class TaskState(enum.StrEnum):
    OPEN = "open"
    DONE = "done"


class Task(Base):
    """A follow-up someone must do (return a voicemail, call back): filed on the customer's record."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    interaction_id: Mapped[int | None] = mapped_column(ForeignKey("interactions.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # voicemail | callback
    department: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[TaskState] = mapped_column(_enum(TaskState), default=TaskState.OPEN, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime | None] = mapped_column()
    # Who is working on it (claimed from the console's work queue), and how it was closed.
    claimed_by_rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"), index=True)
    claimed_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    closed_by_rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"))
    close_note: Mapped[str | None] = mapped_column(Text)

    customer: Mapped[Customer | None] = relationship()
    interaction: Mapped[Interaction | None] = relationship()
    claimed_by: Mapped[Rep | None] = relationship(foreign_keys=[claimed_by_rep_id])

    @classmethod
    def file(
        cls, interaction: Interaction, *, kind: str, note: str, now: datetime, due_at: datetime | None = None
    ) -> Task:
        """A follow-up on the customer's record about ``interaction`` (a voicemail to return, a callback to make)."""
        return cls(
            customer_id=interaction.customer_id,
            interaction_id=interaction.id,
            kind=kind,
            department=interaction.department,
            note=note,
            state=TaskState.OPEN,
            created_at=now,
            due_at=due_at,
        )

    @property
    def open(self) -> bool:
        return self.state is TaskState.OPEN

    def add_to_note(self, text: str) -> None:
        self.note = f"{self.note}\n{text}" if self.note else text

    def claim(self, rep_id: int, *, now: datetime) -> None:
        """A rep takes the task on (nobody else works it meanwhile; a supervisor may take it over)."""
        if not self.open:
            raise InvalidTransition(f"task {self.id} is closed")
        self.claimed_by_rep_id = rep_id
        self.claimed_at = now

    def release(self) -> None:
        """Back in the work queue for anyone to take."""
        if not self.open:
            raise InvalidTransition(f"task {self.id} is closed")
        self.claimed_by_rep_id = None
        self.claimed_at = None

    def close(self, *, by_rep_id: int, note: str, now: datetime) -> None:
        """Done, with what was done."""
        if not self.open:
            raise InvalidTransition(f"task {self.id} is already closed")
        self.state = TaskState.DONE
        self.closed_at = now
        self.closed_by_rep_id = by_rep_id
        self.close_note = note.strip() or None


class Offer(Base):
    """A rep reserved for a call: one row per attempt, so "who already declined this caller" is a query."""

    __tablename__ = "offers"

    id: Mapped[int] = mapped_column(primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id", ondelete="CASCADE"), index=True)
    rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id"), index=True)
    state: Mapped[OfferState] = mapped_column(_enum(OfferState), default=OfferState.RINGING)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    # The rep's own call leg (CallSid of the whisper request): what a warm transfer redirects into a conference.
    rep_call_sid: Mapped[str | None] = mapped_column(String(64))
    # When the rep answered and heard the whisper (an offer rung but never whispered rang out).
    whispered_at: Mapped[datetime | None] = mapped_column()
    # Offers rung together (ring-all strategy) share the id of the first: the first rep to answer takes the call.
    group_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # What the offer is for: the caller on the line, a callback we place, or a rep-to-rep hand-off.
    purpose: Mapped[str] = mapped_column(String(16), default="call")

    rep: Mapped[Rep] = relationship(lazy="joined")
    interaction: Mapped[Interaction] = relationship()

    @property
    def live(self) -> bool:
        """Whether a rep is still held for this offer."""
        return self.state in LIVE_OFFER_STATES

    @property
    def ringing(self) -> bool:
        return self.state is OfferState.RINGING

    @property
    def pending(self) -> bool:
        return self.state is OfferState.PENDING

    @property
    def taken(self) -> bool:
        """The rep took the call (it may be over)."""
        return self.state in (OfferState.ACCEPTED, OfferState.ENDED)

    def ring(self) -> None:
        """The rep's phone rings now (a caller pulled from the line, or a callback or hand-off put through)."""
        if self.state not in (OfferState.PENDING, OfferState.RINGING):
            raise InvalidTransition(f"offer {self.id} is {self.state.value}: it cannot ring")
        self.state = OfferState.RINGING

    def whisper_heard(self, rep_call_sid: str | None, *, now: datetime) -> None:
        """The rep answered and hears the whisper on their own leg (``rep_call_sid``: what a transfer moves)."""
        self.whispered_at = now
        self.rep_call_sid = rep_call_sid

    def accept(self) -> None:
        """The rep pressed 1."""
        if self.state is not OfferState.RINGING:
            raise InvalidTransition(f"offer {self.id} is {self.state.value}: it cannot be accepted")
        self.state = OfferState.ACCEPTED

    def decline(self, *, now: datetime) -> bool:
        """The rep pressed another key (or the offer rang out). False when it was no longer ringing."""
        if self.state is not OfferState.RINGING:
            return False
        self.state = OfferState.DECLINED
        self.ended_at = now
        return True

    def withdraw(self, *, now: datetime) -> bool:
        """Nobody needs this rep for this call any more (the caller hung up, another rep of the ring group
        answered, the reservation lapsed before the key press). False when it had already ended."""
        if not self.live or self.state is OfferState.ACCEPTED:
            return False
        self.state = OfferState.CANCELLED
        self.ended_at = now
        return True

    def close(self, *, now: datetime, caller_gone: bool = False) -> OfferEnd:
        """The Dial or conference leg this offer rang is over: how it ended, for the rep (``Rep.settle``).

        A taken call ends as talked; one still ringing or pending rang out (missed), unless ``caller_gone``: the
        caller hung up first, which withdraws it and costs the rep nothing.
        """
        if caller_gone:
            self.withdraw(now=now)
        end: OfferEnd
        if self.taken:
            self.state, end = OfferState.ENDED, OfferEnd.TALKED
        elif self.state in (OfferState.RINGING, OfferState.PENDING):
            self.state, end = OfferState.DECLINED, OfferEnd.MISSED
        elif self.state is OfferState.DECLINED:
            end = OfferEnd.DECLINED
        else:
            end = OfferEnd.CANCELLED
        self.ended_at = self.ended_at or now
        return end

    def expire(self, *, now: datetime) -> OfferEnd:
        """The rep's reservation ran out unanswered: a missed offer."""
        if self.live and self.state is not OfferState.ACCEPTED:
            self.state = OfferState.DECLINED
            self.ended_at = now
        return OfferEnd.MISSED


class CallbackState(enum.StrEnum):
    WAITING = "waiting"  # holding a virtual place in line
    CALLING = "calling"  # a rep is reserved and we are ringing the customer
    CONNECTED = "connected"  # the customer answered and is being put through
    DONE = "done"
    MISSED = "missed"  # every attempt went unanswered
    CANCELLED = "cancelled"


class Callback(Base):
    """A caller who chose "call me back" instead of holding: their place in line, kept while they are off the phone."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id", ondelete="CASCADE"), unique=True)
    phone: Mapped[str] = mapped_column(String(32))  # E.164, the number to ring
    from_number: Mapped[str] = mapped_column(String(32))  # the number the customer called: we ring from it
    state: Mapped[CallbackState] = mapped_column(_enum(CallbackState), default=CallbackState.WAITING, index=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A retry waits until then (the place in line is kept meanwhile).
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    call_sid: Mapped[str | None] = mapped_column(String(64))  # the attempt ringing now
    offer_id: Mapped[int | None] = mapped_column(Integer)
    last_result: Mapped[str | None] = mapped_column(String(32))
    ended_at: Mapped[datetime | None] = mapped_column()
    # A rep calling back from their work queue: the task this call works on (its result goes on the task; the
    # callback is placed once, with that rep, never queued or retried).
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))

    interaction: Mapped[Interaction] = relationship()

    @property
    def calling(self) -> bool:
        return self.state is CallbackState.CALLING

    def is_attempt(self, call_sid: str, attempt: int | None) -> bool:
        """Whether a webhook about ``call_sid`` (and attempt number ``attempt``, when its URL carries one) is about
        the attempt under way. Its SID alone cannot tell: between placing an attempt and its answer, the callback
        knows no SID at all, hence the attempt number in every URL."""
        return self.call_sid in (None, call_sid) and (attempt is None or attempt == self.attempts)

    def start_attempt(self, offer_id: int) -> None:
        """A rep is reserved for this callback: we ring the customer now."""
        if self.state is not CallbackState.WAITING:
            raise InvalidTransition(f"callback {self.id} is {self.state.value}: it cannot be placed")
        self.state = CallbackState.CALLING
        self.attempts += 1
        self.offer_id = offer_id
        self.call_sid = None
        self.next_attempt_at = None

    def answered(self, call_sid: str) -> None:
        """The customer picked up (this is the call carrying them now)."""
        self.call_sid = call_sid
        self.state = CallbackState.CONNECTED

    def missed(self, result: str, *, now: datetime, retry_at: datetime | None) -> None:
        """An attempt went unanswered (``result``: what happened). With ``retry_at`` the customer keeps their place
        and is called again from then; without, the callback is given up (a follow-up task takes over)."""
        self.last_result = result[:32]
        self.call_sid = None
        if retry_at is not None:
            self.state = CallbackState.WAITING
            self.next_attempt_at = retry_at
        else:
            self.state = CallbackState.MISSED
            self.ended_at = now

    def done(self, *, now: datetime) -> None:
        """The call we placed is over after the customer was put through."""
        self.state = CallbackState.DONE
        self.ended_at = now


class HandoffState(enum.StrEnum):
    MOVING = "moving"  # the caller and the first rep are being moved into a conference
    DIALING = "dialing"  # the caller is on hold in the conference; the target rep is ringing / hearing the whisper
    CONSULTING = "consulting"  # the target rep joined; the two reps speak while the caller holds
    COMPLETED = "completed"  # the first rep left: the caller is with the target rep
    FAILED = "failed"  # the target did not take it: the caller is back with the first rep (or back in line)
    CANCELLED = "cancelled"  # the caller hung up during the hand-off


ACTIVE_HANDOFF_STATES = (HandoffState.MOVING, HandoffState.DIALING, HandoffState.CONSULTING)


class Handoff(Base):
    """A rep-to-rep warm transfer of one call, step by step (the interaction keeps every one)."""

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id", ondelete="CASCADE"), index=True)
    from_rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id"))
    to_rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id"))
    to_department: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[HandoffState] = mapped_column(_enum(HandoffState), default=HandoffState.MOVING, index=True)
    conference: Mapped[str] = mapped_column(String(64))  # the conference's FriendlyName
    conference_sid: Mapped[str | None] = mapped_column(String(64))  # known from its first status callback
    caller_call_sid: Mapped[str] = mapped_column(String(64))
    from_call_sid: Mapped[str | None] = mapped_column(String(64))  # the first rep's leg
    to_call_sid: Mapped[str | None] = mapped_column(String(64))  # the target rep's leg (REST-created)
    to_offer_id: Mapped[int | None] = mapped_column(Integer)
    # Who is in the conference, from its participant-join / participant-leave events.
    caller_joined_at: Mapped[datetime | None] = mapped_column()
    from_joined_at: Mapped[datetime | None] = mapped_column()
    from_left_at: Mapped[datetime | None] = mapped_column()
    to_joined_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    failure: Mapped[str | None] = mapped_column(String(200))

    interaction: Mapped[Interaction] = relationship()
    from_rep: Mapped[Rep] = relationship(foreign_keys=[from_rep_id])
    to_rep: Mapped[Rep | None] = relationship(foreign_keys=[to_rep_id])

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_HANDOFF_STATES

    @property
    def target_name(self) -> str:
        return self.to_rep.name if self.to_rep else "your colleague"

    @property
    def room(self) -> str:
        """How the REST API addresses the conference: its Sid once a status callback told us, else its name."""
        return self.conference_sid or self.conference

    @property
    def first_rep_in_conference(self) -> bool:
        return self.from_joined_at is not None and self.from_left_at is None

    def leg(self, call_sid: str) -> Literal["caller", "from", "to"] | None:
        """Whose leg of the conference ``call_sid`` is."""
        if call_sid == self.caller_call_sid:
            return "caller"
        if call_sid and call_sid == self.from_call_sid:
            return "from"
        if call_sid and call_sid == self.to_call_sid:
            return "to"
        return None

    def conference_known_as(self, conference_sid: str | None) -> None:
        if conference_sid and not self.conference_sid:
            self.conference_sid = conference_sid

    def first_rep_joined(self, *, now: datetime) -> None:
        self.from_joined_at = self.from_joined_at or now

    def first_rep_left(self, *, now: datetime) -> None:
        self.from_left_at = self.from_left_at or now

    def target_answered(self, call_sid: str) -> None:
        """The target rep picked up the call we placed to them (their leg)."""
        self.to_call_sid = call_sid

    def target_joined(self, *, now: datetime) -> None:
        self.to_joined_at = self.to_joined_at or now

    def caller_joined(self, *, now: datetime) -> bool:
        """The caller is in the conference (on hold). True when that starts ringing the target rep now."""
        if self.caller_joined_at is not None:
            return False
        self.caller_joined_at = now
        if self.state is not HandoffState.MOVING:
            return False
        self.state = HandoffState.DIALING
        return True

    def try_complete(self, *, now: datetime) -> bool:
        """The target rep is in: the reps consult while the first one is still there; the hand-off is complete once
        the first rep has left (or never came). True when it completed now."""
        if self.to_joined_at is None or self.state not in (HandoffState.DIALING, HandoffState.CONSULTING):
            return False
        if self.first_rep_in_conference:
            self.state = HandoffState.CONSULTING
            return False
        self.state = HandoffState.COMPLETED
        self.ended_at = now
        return True

    def fail(self, reason: str, *, now: datetime) -> None:
        """The target did not take the call."""
        self._end(HandoffState.FAILED, reason, now)

    def cancel(self, reason: str, *, now: datetime) -> None:
        """The hand-off can no longer happen (its caller is gone)."""
        self._end(HandoffState.CANCELLED, reason, now)

    def _end(self, state: HandoffState, reason: str, now: datetime) -> None:
        if not self.active:
            raise InvalidTransition(f"hand-off {self.id} is already {self.state.value}")
        self.state = state
        self.ended_at = now
        self.failure = reason[:200]


class AuditEvent(Base):
    """Who changed what, when, from the console, the API or the command line (every change a person makes)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # The rep or supervisor who did it; None for an admin at the command line.
    actor_rep_id: Mapped[int | None] = mapped_column(ForeignKey("reps.id", ondelete="SET NULL"), index=True)
    # What happened, as a verb phrase ("wrap-up saved", "presence set", "task closed", "signed in").
    action: Mapped[str] = mapped_column(String(60))
    # What it happened to: "interaction:CA…", "task:12", "rep:3", "customer:7".
    subject: Mapped[str] = mapped_column(String(100), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ConsoleSession(Base):
    """A signed-in console: the signed session cookie carries a random id whose SHA-256 is this row's key, so
    signing out (or a supervisor's reset) ends it everywhere, and a stolen database holds no usable session."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()

    rep: Mapped[Rep] = relationship()

    def valid_at(self, now: datetime) -> bool:
        return now < self.expires_at


class LoginLink(Base):
    """A one-time sign-in link an admin hands out (``warmline reps login-link NAME``): valid 15 minutes, once."""

    __tablename__ = "login_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()

    def use(self, *, now: datetime) -> bool:
        """Spend the link. False when it was used already or has expired."""
        if self.used_at is not None or now >= self.expires_at:
            return False
        self.used_at = now
        return True


class LoginThrottle(Base):
    """Failed sign-ins per key (a name, an address) in the current window, so guessing is slow for everyone and
    the limit holds across workers and hosts."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_started_at: Mapped[datetime] = mapped_column()
    failures: Mapped[int] = mapped_column(Integer, default=0)


class FlowVersion(Base):
    """Every flow version that went live, as its admin wrote it: a worker that starts while a flow file is broken or
    missing serves the last good version from here, and a call that started on an older version finishes on it
    whichever worker serves it."""

    __tablename__ = "flow_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)  # the content hash calls record
    name: Mapped[str] = mapped_column(String(100), index=True)
    source: Mapped[str] = mapped_column(String(500))  # where it was read from
    text: Mapped[str] = mapped_column(Text)
    first_live_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- routing that learns from the reps' corrections --------------------------------------------------------------


#: Why a learned example stopped counting when the rep took the correction back (saved the detected department).
WITHDRAWN = "the correction was withdrawn"


class LearnedExample(Base):
    """What a rep's "Wrong department?" taught routing: the caller's words and the right department, for the flow
    the call went through. Whether routing uses it is decided afresh, for the flow as it is, by the guard
    (``ivr_flows.learning.admit``); this row only records the correction and its life. Never deleted: an example an
    admin removes, or a correction taken back, is marked removed (who, when, why) and stays on the list."""

    __tablename__ = "learned_examples"

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_name: Mapped[str] = mapped_column(String(100), index=True)
    # One per corrected call: correcting the call again changes this row.
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id"), unique=True)
    text: Mapped[str] = mapped_column(Text)
    department: Mapped[str] = mapped_column(String(64))
    detected_department: Mapped[str | None] = mapped_column(String(64))
    taught_by_rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id"))
    # A supervisor's correction weighs more and is not capped (ivr_flows.learning): as they were when they taught it.
    taught_by_supervisor: Mapped[bool] = mapped_column(default=False)
    taught_at: Mapped[datetime] = mapped_column()
    # Every change counts one more (and says when), so the workers' flow libraries see that a flow's examples
    # changed with one aggregate query, whatever the clock says.
    changes: Mapped[int] = mapped_column(Integer, default=1)
    changed_at: Mapped[datetime] = mapped_column()
    removed_at: Mapped[datetime | None] = mapped_column()
    removed_by: Mapped[str | None] = mapped_column(String(100))
    removed_reason: Mapped[str | None] = mapped_column(String(200))

    taught_by: Mapped[Rep] = relationship(foreign_keys=[taught_by_rep_id])

    @property
    def removed(self) -> bool:
        return self.removed_at is not None

    @classmethod
    def teach(
        cls, interaction: Interaction, *, text: str, department: str, by_rep_id: int, supervisor: bool, now: datetime
    ) -> LearnedExample:
        """A correction of ``interaction``'s department, to learn from."""
        return cls(
            flow_name=interaction.flow_name,
            interaction_id=interaction.id,
            text=text,
            department=department,
            detected_department=interaction.department,
            taught_by_rep_id=by_rep_id,
            taught_by_supervisor=supervisor,
            taught_at=now,
            changes=1,
            changed_at=now,
        )

    def relearn(self, *, department: str, by_rep_id: int, supervisor: bool, now: datetime) -> None:
        """The call was corrected again (another department, or again after the correction was taken back). An
        example an admin removed stays removed: a rep re-saving a wrap-up does not overrule the admin."""
        self.department = department
        self.taught_by_rep_id = by_rep_id
        self.taught_by_supervisor = supervisor
        self.taught_at = now
        self._changed(now)
        if self.removed_reason == WITHDRAWN:
            self.removed_at = self.removed_by = self.removed_reason = None

    def withdraw(self, *, by: str, now: datetime) -> None:
        """The rep took the correction back (they saved the detected department after all)."""
        self.remove(by=by, reason=WITHDRAWN, now=now)

    def remove(self, *, by: str, reason: str, now: datetime) -> bool:
        """Routing stops learning from it; the row stays, marked. Returns whether it was not removed already."""
        if self.removed_at is not None:
            return False
        self.removed_at = now
        self.removed_by = by[:100]
        self.removed_reason = reason[:200]
        self._changed(now)
        return True

    def _changed(self, now: datetime) -> None:
        self.changes += 1
        self.changed_at = now


# --- CRM sync: the outbox, the contacts the CRMs know, each CRM's own state ----------------------------------------


class OutboxState(enum.StrEnum):
    PENDING = "pending"  # to be sent from next_attempt_at
    SENDING = "sending"  # claimed by a delivery worker until claimed_until (a crashed worker's claim runs out)
    DELIVERED = "delivered"
    PARKED = "parked"  # failed for good, with its reason; `warmline crm sync retry` sends it again


#: Rows still to be sent: a worker may claim them (a sending one only once its claim ran out).
OPEN_OUTBOX_STATES = (OutboxState.PENDING, OutboxState.SENDING)


class SyncSubject(enum.StrEnum):
    CALL = "call"  # an interaction, as a call activity on the contact
    TASK = "task"  # a follow-up task


class OutboxMessage(Base):
    """One change to announce to one CRM ("call ended", "wrap-up", "task filed"...), written in the same transaction
    as the change (``crm_sync.sync.outbox``). Delivery sends the record as it is then, keyed on the CallSid, so
    rows of the same record that piled up meanwhile are delivered by that one send (``covered_by``)."""

    __tablename__ = "crm_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(20))  # hubspot | salesforce | webhook
    subject: Mapped[SyncSubject] = mapped_column(_enum(SyncSubject))
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(String(40))  # what changed, for people
    state: Mapped[OutboxState] = mapped_column(_enum(OutboxState), default=OutboxState.PENDING)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Every send, and the failures charged to this record (not those of a CRM that was down for everyone): parked
    # once ``failures`` reaches crm_sync.max_attempts.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    # The record's id in the CRM (HubSpot's call or task id, Salesforce's Task Id), once known.
    remote_id: Mapped[str | None] = mapped_column(String(64))
    # Delivered by the send of another row of the same record (the newer state went out in one request).
    covered_by_id: Mapped[int | None] = mapped_column(Integer)

    interaction: Mapped[Interaction] = relationship()
    task: Mapped[Task | None] = relationship()

    # The claim: open rows, due first. Rows of a finished record keep their state, so the scan stays on open ones.
    __table_args__ = (Index("ix_crm_outbox_due", "state", "next_attempt_at"),)

    @classmethod
    def announce_call(cls, interaction: Interaction, *, target: str, reason: str, now: datetime) -> OutboxMessage:
        """The call's record changed (it ended, its wrap-up or transcript changed): tell ``target``."""
        message = cls(
            target=target,
            subject=SyncSubject.CALL,
            reason=reason,
            state=OutboxState.PENDING,
            created_at=now,
            next_attempt_at=now,
            attempts=0,
            failures=0,
        )
        if interaction.id is None:  # a call recorded and ended in this very flush: the key is filled in by it
            message.interaction = interaction
        else:
            message.interaction_id = interaction.id
        return message

    @classmethod
    def announce_task(cls, task: Task, *, target: str, reason: str, now: datetime) -> OutboxMessage:
        """A follow-up task was filed or changed: tell ``target``."""
        message = cls(
            target=target,
            subject=SyncSubject.TASK,
            reason=reason,
            state=OutboxState.PENDING,
            created_at=now,
            next_attempt_at=now,
            attempts=0,
            failures=0,
        )
        if task.interaction_id is not None:
            message.interaction_id = task.interaction_id
        else:
            message.interaction = task.interaction  # type: ignore[assignment]
        if task.id is None:
            message.task = task
        else:
            message.task_id = task.id
        return message

    @property
    def open(self) -> bool:
        return self.state in OPEN_OUTBOX_STATES

    def claim(self, worker: str, *, now: datetime, until: datetime) -> None:
        """A delivery worker takes the row to send it; nobody else will until ``until`` (its lease)."""
        if self.state is OutboxState.PENDING or (
            self.state is OutboxState.SENDING and self.claimed_until is not None and self.claimed_until <= now
        ):
            self.state = OutboxState.SENDING
            self.claimed_by = worker
            self.claimed_until = until
            self.attempts += 1
            return
        raise InvalidTransition(f"outbox row {self.id} is {self.state.value}: it cannot be claimed")

    def delivered(self, *, now: datetime, remote_id: str | None) -> bool:
        """The CRM has the record. False when it was delivered already (nothing changes)."""
        if self.state is OutboxState.DELIVERED:
            return False
        self.state = OutboxState.DELIVERED
        self.delivered_at = now
        self.claimed_by = None
        self.claimed_until = None
        if remote_id:
            self.remote_id = remote_id
        return True

    def covered_by(self, sent: OutboxMessage, *, now: datetime) -> bool:
        """Delivered by ``sent``: the same record, sent as it was after this change too."""
        if not self.delivered(now=now, remote_id=sent.remote_id):
            return False
        self.covered_by_id = sent.id
        return True

    def failed(self, reason: str, *, now: datetime, retry_at: datetime, charged: bool, park_after: int) -> bool:
        """A send did not land: try again from ``retry_at``. ``charged``: the failure counts against this record
        (not when its CRM was down for every record, or refused our credentials); at ``park_after`` charged
        failures the row is parked instead. Returns True when it was parked."""
        if self.state is OutboxState.DELIVERED:
            return False
        self.last_error = reason[:2000]
        self.claimed_by = None
        self.claimed_until = None
        if charged:
            self.failures += 1
            if self.failures >= park_after:
                self.state = OutboxState.PARKED
                return True
        self.state = OutboxState.PENDING
        self.next_attempt_at = retry_at
        return False

    def release(self, *, retry_at: datetime) -> None:
        """Give a claimed row back unsent (its CRM went down, or refused our credentials, before its turn)."""
        if self.state is not OutboxState.SENDING:
            return
        self.state = OutboxState.PENDING
        self.attempts = max(0, self.attempts - 1)
        self.claimed_by = None
        self.claimed_until = None
        self.next_attempt_at = retry_at

    def park(self, reason: str, *, now: datetime) -> None:
        """The CRM refused the record itself (a validation error): kept, with the CRM's own words, never dropped."""
        if self.state is OutboxState.DELIVERED:
            raise InvalidTransition(f"outbox row {self.id} was delivered")
        self.state = OutboxState.PARKED
        self.last_error = reason[:2000]
        self.claimed_by = None
        self.claimed_until = None

    def retry(self, *, now: datetime) -> bool:
        """Send a parked row again (an admin fixed what was wrong). False when it was not parked."""
        if self.state is not OutboxState.PARKED:
            return False
        self.state = OutboxState.PENDING
        self.failures = 0
        self.next_attempt_at = now
        return True


class CrmContact(Base):
    """A contact (or Salesforce lead) a CRM knows, by phone number: found when a call was filed, created for it, or
    pulled. Calls are filed on it without asking the CRM again, and screen-pop knows pulled contacts by number."""

    __tablename__ = "crm_contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(20))
    remote_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))  # HubSpot: contact; Salesforce: Contact or Lead
    phone: Mapped[str | None] = mapped_column(String(32))  # E.164
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    # The CRM's last-modified time of what we hold (pull conflicts are judged by it), and when we last heard of it.
    remote_modified_at: Mapped[datetime | None] = mapped_column()
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("target", "remote_id", name="uq_crm_contacts_target_remote_id"),
        Index("ix_crm_contacts_target_phone", "target", "phone"),
    )

    def seen(
        self,
        *,
        kind: str,
        phone: str | None,
        name: str | None,
        email: str | None,
        modified_at: datetime | None,
        now: datetime,
    ) -> None:
        """What the CRM says of the contact now."""
        self.kind = kind
        self.phone = phone or self.phone
        self.name = name or self.name
        self.email = email or self.email
        if modified_at is not None:
            self.remote_modified_at = modified_at
        self.seen_at = now

    def link_customer(self, customer_id: int | None) -> None:
        self.customer_id = customer_id


class SyncTargetState(Base):
    """What one CRM connection is going through, shared by every worker: how far contacts were pulled, and
    credentials it refused (reported once, when they start being refused, not once per record)."""

    __tablename__ = "crm_targets"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    # Contacts changed up to this time (the CRM's clock) are in the store.
    pulled_until: Mapped[datetime | None] = mapped_column()
    pulled_at: Mapped[datetime | None] = mapped_column()
    pull_error: Mapped[str | None] = mapped_column(Text)
    refused_since: Mapped[datetime | None] = mapped_column()
    refusal: Mapped[str | None] = mapped_column(Text)

    def refused(self, reason: str, *, now: datetime) -> bool:
        """The CRM refused our credentials (or lacks what we need). True the first time: the one to report."""
        first = self.refused_since is None
        self.refused_since = self.refused_since or now
        self.refusal = reason[:2000]
        return first

    def accepted(self) -> bool:
        """The CRM took a request again. True when it had been refusing (worth saying so once)."""
        if self.refused_since is None:
            return False
        self.refused_since = None
        self.refusal = None
        return True

    def pulled(self, until: datetime | None, *, now: datetime) -> None:
        """Contacts changed up to ``until`` are in."""
        if until is not None and (self.pulled_until is None or until > self.pulled_until):
            self.pulled_until = until
        self.pulled_at = now
        self.pull_error = None

    def pull_failed(self, reason: str, *, now: datetime) -> None:
        self.pull_error = reason[:2000]
