"""CRM sync: claiming outbox rows, what each call's sync state is (the console), and what `warmline crm sync status`
reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from crm_sync.models import (
    CrmContact,
    Interaction,
    OutboxMessage,
    OutboxState,
    SyncSubject,
    SyncTargetState,
)


def claimable(session: Session, *, targets: Sequence[str], now: datetime, limit: int) -> Sequence[OutboxMessage]:
    """Rows due for sending, locked for this transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL: another worker
    skips them instead of waiting; SQLite's one writer serialises claims anyway).

    A pending row whose time has come, or a sending one whose worker's claim ran out; and only the oldest open row of
    each record, so that no two workers ever send the same record to the same CRM at once (the newer rows are
    usually delivered along with it: the record is sent as it is when it is sent)."""
    if not targets:
        return []
    older = aliased(OutboxMessage)
    same_record_waiting = exists().where(
        older.target == OutboxMessage.target,
        older.subject == OutboxMessage.subject,
        older.interaction_id == OutboxMessage.interaction_id,
        older.task_id.is_not_distinct_from(OutboxMessage.task_id),
        older.id < OutboxMessage.id,
        older.state.in_([OutboxState.PENDING, OutboxState.SENDING]),
    )
    query = (
        select(OutboxMessage)
        .where(
            OutboxMessage.target.in_(list(targets)),
            or_(
                and_(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.next_attempt_at <= now),
                and_(OutboxMessage.state == OutboxState.SENDING, OutboxMessage.claimed_until <= now),
            ),
            ~same_record_waiting,
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=OutboxMessage)
    )
    return session.scalars(query).all()


def outbox_row(session: Session, row_id: int, *, for_update: bool = False) -> OutboxMessage | None:
    query = select(OutboxMessage).where(OutboxMessage.id == row_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def same_record_pending(session: Session, row: OutboxMessage, *, for_update: bool = False) -> Sequence[OutboxMessage]:
    """The other rows of ``row``'s record for its CRM still waiting (written since it was, by later changes)."""
    query = (
        select(OutboxMessage)
        .where(
            OutboxMessage.target == row.target,
            OutboxMessage.subject == row.subject,
            OutboxMessage.interaction_id == row.interaction_id,
            OutboxMessage.task_id.is_not_distinct_from(row.task_id),
            OutboxMessage.id != row.id,
            OutboxMessage.state == OutboxState.PENDING,
        )
        .order_by(OutboxMessage.id)
    )
    return session.scalars(query.with_for_update() if for_update else query).all()


def parked(session: Session, *, row_id: int | None = None) -> Sequence[OutboxMessage]:
    query = select(OutboxMessage).where(OutboxMessage.state == OutboxState.PARKED)
    if row_id is not None:
        query = query.where(OutboxMessage.id == row_id)
    return session.scalars(query.order_by(OutboxMessage.id).with_for_update()).all()


# --- a call's sync state, for the console --------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetSync:
    """Where one CRM is with one call (its record and its tasks), for the console."""

    target: str
    state: str  # delivered | pending | sending | parked: the worst of the call's rows for this CRM
    rows: int
    attempts: int
    last_error: str | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    remote_id: str | None


#: Which state a call shows when its rows differ: anything parked first, then anything not yet delivered.
_WORST_FIRST = (OutboxState.PARKED, OutboxState.SENDING, OutboxState.PENDING, OutboxState.DELIVERED)


def sync_state_of(session: Session, interaction_id: int) -> list[TargetSync]:
    """Each CRM's state for one call (its call record and its tasks), worst first within a CRM; [] when sync is off
    or nothing about the call was announced yet (it has not ended)."""
    rows = session.scalars(
        select(OutboxMessage).where(OutboxMessage.interaction_id == interaction_id).order_by(OutboxMessage.id)
    ).all()
    return _summarise(rows).get(interaction_id, [])


def sync_states_of(session: Session, interaction_ids: Sequence[int]) -> dict[int, list[TargetSync]]:
    """:func:`sync_state_of` for many calls at once (a list of calls): one query."""
    if not interaction_ids:
        return {}
    rows = session.scalars(
        select(OutboxMessage).where(OutboxMessage.interaction_id.in_(list(interaction_ids))).order_by(OutboxMessage.id)
    ).all()
    return _summarise(rows)


def sync_state_by_call_sid(session: Session, call_sid: str) -> list[TargetSync]:
    interaction_id = session.scalar(select(Interaction.id).where(Interaction.call_sid == call_sid))
    return [] if interaction_id is None else sync_state_of(session, interaction_id)


def _summarise(rows: Sequence[OutboxMessage]) -> dict[int, list[TargetSync]]:
    grouped: dict[int, dict[str, list[OutboxMessage]]] = {}
    for row in rows:
        grouped.setdefault(row.interaction_id, {}).setdefault(row.target, []).append(row)
    summary: dict[int, list[TargetSync]] = {}
    for interaction_id, by_target in grouped.items():
        states: list[TargetSync] = []
        for target, target_rows in by_target.items():
            worst = min(target_rows, key=lambda row: (_WORST_FIRST.index(row.state), -row.id))
            call_rows = [row for row in target_rows if row.subject is SyncSubject.CALL and row.remote_id]
            delivered = [row.delivered_at for row in target_rows if row.delivered_at is not None]
            states.append(
                TargetSync(
                    target=target,
                    state=worst.state.value,
                    rows=len(target_rows),
                    attempts=sum(row.attempts for row in target_rows),
                    last_error=worst.last_error if worst.state is not OutboxState.DELIVERED else None,
                    delivered_at=max(delivered) if worst.state is OutboxState.DELIVERED and delivered else None,
                    next_attempt_at=worst.next_attempt_at if worst.state is OutboxState.PENDING else None,
                    remote_id=call_rows[-1].remote_id if call_rows else None,
                )
            )
        summary[interaction_id] = states
    return summary


# --- `warmline crm sync status` ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetStatus:
    target: str
    counts: dict[str, int]  # state -> rows
    oldest_open_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    attempts: int
    refused_since: datetime | None
    refusal: str | None
    pulled_until: datetime | None
    pulled_at: datetime | None
    pull_error: str | None


def status(session: Session, *, targets: Sequence[str]) -> list[TargetStatus]:
    """Per CRM (configured ones, and any other that still has rows): rows by state, the oldest row still to send,
    the last error, credentials refused, how far contacts were pulled."""
    counts: dict[str, dict[str, int]] = {}
    attempts: dict[str, int] = {}
    for target, row_state, number, tries in session.execute(
        select(OutboxMessage.target, OutboxMessage.state, func.count(), func.sum(OutboxMessage.attempts)).group_by(
            OutboxMessage.target, OutboxMessage.state
        )
    ):
        counts.setdefault(target, {})[OutboxState(row_state).value] = int(number)
        attempts[target] = attempts.get(target, 0) + int(tries or 0)
    oldest = dict(
        session.execute(
            select(OutboxMessage.target, func.min(OutboxMessage.created_at))
            .where(OutboxMessage.state.in_([OutboxState.PENDING, OutboxState.SENDING]))
            .group_by(OutboxMessage.target)
        ).all()
    )
    states = {row.name: row for row in session.scalars(select(SyncTargetState))}
    names = list(targets) + sorted(set(counts) - set(targets))
    report: list[TargetStatus] = []
    for name in names:
        last = session.execute(
            select(OutboxMessage.last_error, func.coalesce(OutboxMessage.next_attempt_at, OutboxMessage.created_at))
            .where(OutboxMessage.target == name, OutboxMessage.last_error.is_not(None))
            .order_by(OutboxMessage.next_attempt_at.desc(), OutboxMessage.id.desc())
            .limit(1)
        ).first()
        state = states.get(name)
        report.append(
            TargetStatus(
                target=name,
                counts={key.value: counts.get(name, {}).get(key.value, 0) for key in OutboxState},
                oldest_open_at=oldest.get(name),
                last_error=last[0] if last else None,
                last_error_at=last[1] if last else None,
                attempts=attempts.get(name, 0),
                refused_since=state.refused_since if state else None,
                refusal=state.refusal if state else None,
                pulled_until=state.pulled_until if state else None,
                pulled_at=state.pulled_at if state else None,
                pull_error=state.pull_error if state else None,
            )
        )
    return report


# --- each CRM's own state, and the contacts it knows -----------------------------------------------------------------


def target_state(session: Session, name: str, *, for_update: bool = False) -> SyncTargetState:
    """The CRM connection's shared state, created the first time it is needed."""
    query = select(SyncTargetState).where(SyncTargetState.name == name)
    if for_update:
        query = query.with_for_update()
    state = session.scalars(query).one_or_none()
    if state is None:
        state = SyncTargetState(name=name)
        session.add(state)
        session.flush()
    return state


def contact_for_phone(session: Session, target: str, phone: str) -> CrmContact | None:
    """The contact ``target`` knows for this number (the one it changed last, when several share it)."""
    return session.scalars(
        select(CrmContact)
        .where(CrmContact.target == target, CrmContact.phone == phone)
        .order_by(CrmContact.remote_modified_at.desc().nulls_last(), CrmContact.id.desc())
        .limit(1)
    ).first()


def contact_by_remote_id(session: Session, target: str, remote_id: str) -> CrmContact | None:
    return session.scalars(
        select(CrmContact).where(CrmContact.target == target, CrmContact.remote_id == remote_id)
    ).one_or_none()


def known_remote_id(session: Session, row: OutboxMessage) -> str | None:
    """The record's id in ``row``'s CRM, from an earlier delivery of it (None: it may not exist there yet)."""
    return session.scalar(
        select(OutboxMessage.remote_id)
        .where(
            OutboxMessage.target == row.target,
            OutboxMessage.subject == row.subject,
            OutboxMessage.interaction_id == row.interaction_id,
            OutboxMessage.task_id.is_not_distinct_from(row.task_id),
            OutboxMessage.remote_id.is_not(None),
        )
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    )


def target_states(session: Session) -> dict[str, SyncTargetState]:
    return {state.name: state for state in session.scalars(select(SyncTargetState))}
