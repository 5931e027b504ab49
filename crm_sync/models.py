"""The CRM store's tables, as typed SQLAlchemy 2.0 models.

Everything a call needs to survive a worker restart lives here (the interaction's flow state, rep presence, offers),
so that any worker of any host can serve any webhook of any call.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

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
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


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
    # SHA-256 of the rep's API token (the rep console's key to the JSON API); the token itself is never stored.
    api_token_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("api_token_hash", name="uq_reps_api_token_hash"),)

    skills: Mapped[list[RepSkill]] = relationship(back_populates="rep", cascade="all, delete-orphan", lazy="selectin")

    @property
    def departments(self) -> list[str]:
        return sorted(skill.department for skill in self.skills)


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
    status: Mapped[InteractionStatus] = mapped_column(
        _enum(InteractionStatus), default=InteractionStatus.IN_FLOW
    )
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

    # Loaded only where needed (the whisper, exports): the hot webhooks never touch them.
    customer: Mapped[Customer | None] = relationship()
    rep: Mapped[Rep | None] = relationship()

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

    interaction: Mapped[Interaction] = relationship()


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
