"""Interactions: one per call, keyed by the CallSid of the caller's first call."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from crm_sync.errors import UnknownInteraction
from crm_sync.models import Interaction, InteractionStatus

_OPENED_COLUMNS = (
    "call_sid",
    "caller_number",
    "called_number",
    "customer_id",
    "flow_name",
    "flow_version",
    "flow_state",
    "started_at",
)


def _open_statement(insert: Any) -> Any:
    """INSERT … ON CONFLICT (call_sid) DO NOTHING RETURNING id, built once per dialect (this runs on every call)."""
    return (
        insert(Interaction)
        .values({column: bindparam(column) for column in _OPENED_COLUMNS})
        .on_conflict_do_nothing(index_elements=["call_sid"])
        .returning(Interaction.id)
    )


_OPEN = {"postgresql": _open_statement(postgresql_insert), "sqlite": _open_statement(sqlite_insert)}


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
    connection = session.connection()
    values = {
        "call_sid": call_sid,
        "caller_number": caller_number,
        "called_number": called_number,
        "customer_id": customer_id,
        "flow_name": flow_name,
        "flow_version": flow_version,
        "flow_state": flow_state,
        "started_at": now,
    }
    new_id: int | None = connection.execute(_OPEN[connection.dialect.name], values).scalar()
    return new_id


@dataclass(frozen=True)
class FlowPosition:
    """Where a call stands in its flow, read without the ORM (the gather step reads it before the write lock)."""

    status: InteractionStatus
    flow_name: str
    flow_version: str
    flow_state: dict[str, Any]


_POSITION = select(
    Interaction.status, Interaction.flow_name, Interaction.flow_version, Interaction.flow_state
).where(or_(Interaction.call_sid == bindparam("sid"), Interaction.live_call_sid == bindparam("sid")))


def flow_position(session: Session, call_sid: str) -> FlowPosition | None:
    row = session.connection().execute(_POSITION, {"sid": call_sid}).first()
    return FlowPosition(*row) if row else None


_BY_CALL_SID = select(Interaction).where(
    or_(Interaction.call_sid == bindparam("sid"), Interaction.live_call_sid == bindparam("sid"))
)
# Built once: every webhook of a call looks its interaction up, and building the statement cost more than running it.
_BY_CALL_SID_FOR_UPDATE = _BY_CALL_SID.with_for_update(of=Interaction)


def find_interaction(session: Session, call_sid: str, *, for_update: bool = False) -> Interaction | None:
    """The interaction of a call: the caller's first call, or the call carrying them now (a callback)."""
    query = _BY_CALL_SID_FOR_UPDATE if for_update else _BY_CALL_SID
    return session.scalars(query, {"sid": call_sid}).one_or_none()


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


def recorded_call_sids(session: Session, call_sids: Collection[str]) -> set[str]:
    """Which of ``call_sids`` the store has an interaction for (as its first call, or the call carrying it now)."""
    if not call_sids:
        return set()
    wanted = list(call_sids)
    rows = session.execute(
        select(Interaction.call_sid, Interaction.live_call_sid).where(
            or_(Interaction.call_sid.in_(wanted), Interaction.live_call_sid.in_(wanted))
        )
    )
    return {sid for row in rows for sid in row if sid is not None} & set(wanted)


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
