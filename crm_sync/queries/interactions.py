"""Interactions: one per call, keyed by the CallSid of the caller's first call."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from crm_sync.errors import UnknownInteraction
from crm_sync.models import Interaction, InteractionStatus


def open_interaction(
    session: Session,
    *,
    call_sid: str,
    caller_number: str,
    called_number: str | None,
    customer_id: int | None,
    flow_name: str,
    flow_version: str,
    flow_state: dict[str, Any],
    now: datetime,
) -> int | None:
    """Open the interaction of a new call (in the flow, the columns' defaults). Returns its id, or None when it is
    open already: Twilio retried the Voice URL with the same CallSid, and one statement settles that race between
    workers (``ON CONFLICT DO NOTHING``)."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(Interaction)
        .values(
            call_sid=call_sid,
            caller_number=caller_number,
            called_number=called_number,
            customer_id=customer_id,
            flow_name=flow_name,
            flow_version=flow_version,
            flow_state=flow_state,
            started_at=now,
        )
        .on_conflict_do_nothing(index_elements=["call_sid"])
        .returning(Interaction.id)
    )
    new_id: int | None = session.execute(statement).scalar()
    return new_id


def find_interaction(session: Session, call_sid: str, *, for_update: bool = False) -> Interaction | None:
    """The interaction of a call: the caller's first call, or the call carrying them now (a callback)."""
    query = select(Interaction).where(or_(Interaction.call_sid == call_sid, Interaction.live_call_sid == call_sid))
    if for_update:
        query = query.with_for_update(of=Interaction)
    return session.scalars(query).one_or_none()


def require_interaction(session: Session, call_sid: str, *, for_update: bool = False) -> Interaction:
    interaction = find_interaction(session, call_sid, for_update=for_update)
    if interaction is None:
        raise UnknownInteraction(call_sid)
    return interaction


@dataclass(frozen=True)
class CallSpeech:
    """Which flow version a call runs on and the language its caller chose (None: the flow's own)."""

    flow_name: str
    flow_version: str
    language: str | None


def call_speech(session: Session, call_sid: str) -> CallSpeech | None:
    row = session.execute(
        select(Interaction.flow_name, Interaction.flow_version, Interaction.language).where(
            Interaction.call_sid == call_sid
        )
    ).first()
    return CallSpeech(*row) if row else None


def iter_interactions(session: Session) -> Iterator[Interaction]:
    """Every interaction, oldest first, streamed in batches (an export must not hold the whole table in memory).

    Only many-to-one relations are joined, so rows need no de-duplication (which ``yield_per`` would forbid).
    """
    yield from session.scalars(select(Interaction).order_by(Interaction.id).execution_options(yield_per=500))


def quiet_calls(session: Session, *, quiet_since: datetime) -> list[str]:
    """Calls still open that nothing was heard about since ``quiet_since`` (a status callback lost in an outage,
    a worker killed mid-webhook, or just a long conversation): worth asking Twilio whether they ended. Callers
    waiting for a callback are not on a call."""
    rows = session.execute(
        select(func.coalesce(Interaction.live_call_sid, Interaction.call_sid)).where(
            Interaction.status.in_(
                [
                    InteractionStatus.IN_FLOW,
                    InteractionStatus.OFFERING,
                    InteractionStatus.QUEUED,
                    InteractionStatus.CONNECTED,
                ]
            ),
            Interaction.updated_at < quiet_since,
        )
    )
    return [call_sid for (call_sid,) in rows]
