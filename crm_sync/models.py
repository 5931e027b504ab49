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
    RESERVED = "reserved"  # being offered a call (ringing / hearing the whisper)
    ON_CALL = "on_call"
    AWAY = "away"


class InteractionStatus(enum.StrEnum):
    IN_FLOW = "in_flow"  # talking to the IVR
    OFFERING = "offering"  # a rep is reserved and being offered the call
    QUEUED = "queued"  # waiting in the department queue
    CONNECTED = "connected"  # a rep accepted and is talking to the caller
    ENDED = "ended"


class Outcome(enum.StrEnum):
    ANSWERED = "answered"
    ABANDONED = "abandoned"
    NO_REP = "no-rep"
    FAILED = "failed"
    VOICEMAIL = "voicemail"


class OfferState(enum.StrEnum):
    PENDING = "pending"  # rep reserved; the Dial has not started yet (queued caller being pulled)
    RINGING = "ringing"  # the caller's <Dial> is ringing the rep / the rep hears the whisper
    ACCEPTED = "accepted"  # the rep pressed 1
    DECLINED = "declined"  # the rep declined, did not answer, or the whisper ended without a key
    CANCELLED = "cancelled"  # the caller hung up, or the offer was withdrawn
    ENDED = "ended"  # an accepted call finished


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

    skills: Mapped[list[RepSkill]] = relationship(back_populates="rep", cascade="all, delete-orphan", lazy="selectin")

    @property
    def departments(self) -> list[str]:
        return sorted(skill.department for skill in self.skills)


class RepSkill(Base):
    __tablename__ = "rep_skills"

    rep_id: Mapped[int] = mapped_column(ForeignKey("reps.id", ondelete="CASCADE"), primary_key=True)
    department: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)

    rep: Mapped[Rep] = relationship(back_populates="skills")


class Interaction(Base):
    """One phone call, keyed by Twilio's CallSid, from ring to outcome."""

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    caller_number: Mapped[str] = mapped_column(String(32), index=True)  # E.164 when it parses
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    flow_name: Mapped[str] = mapped_column(String(100))
    flow_version: Mapped[str] = mapped_column(String(64))
    flow_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[InteractionStatus] = mapped_column(
        _enum(InteractionStatus), default=InteractionStatus.IN_FLOW, index=True
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

    # Loaded only where needed (the whisper, exports): the hot webhooks never touch them.
    customer: Mapped[Customer | None] = relationship()
    rep: Mapped[Rep | None] = relationship()

    __table_args__ = (
        # The queue: waiting interactions of a department, oldest first.
        Index("ix_interactions_queue", "status", "department", "enqueued_at"),
        Index("ix_interactions_customer_started", "customer_id", "started_at"),
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

    rep: Mapped[Rep] = relationship(lazy="joined")
    interaction: Mapped[Interaction] = relationship()
