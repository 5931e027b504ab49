"""The line: callers waiting for a rep, on hold or for a callback, one line per department.

The questions asked on every transfer and every turn of a hold loop are Core statements on the unit of work's
connection: the ORM's execute path (and its autoflush) costs more than they do.

Ordered by ``rank_at`` (arrival minus head start, see ``voice.domain.priority``), then id: one indexed order for
priority and first-come-first-served alike.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crm_sync.models import (
    ON_DUTY_STATES,
    Callback,
    CallbackState,
    Interaction,
    InteractionStatus,
    Offer,
    OfferState,
    Rep,
    RepSkill,
    RepState,
)

_WAITING = or_(Interaction.status == InteractionStatus.QUEUED, Interaction.status == InteractionStatus.CALLBACK)

_AHEAD_IN_LINE = (
    select(func.count())
    .select_from(Interaction)
    .where(
        _WAITING,
        Interaction.department == bindparam("department"),
        or_(
            Interaction.rank_at < bindparam("rank_at"),
            and_(Interaction.rank_at == bindparam("rank_at"), Interaction.id < bindparam("interaction_id")),
        ),
    )
)


def line_position(session: Session, interaction: Interaction) -> int:
    """1-based place in the department's line: callers on hold or awaiting a callback who rank ahead, plus one."""
    if interaction.rank_at is None:
        return 1
    params = {"department": interaction.department, "rank_at": interaction.rank_at, "interaction_id": interaction.id}
    return int(session.connection().execute(_AHEAD_IN_LINE, params).scalar_one()) + 1


def lock_queued_interaction(session: Session, interaction_id: int) -> bool:
    """Lock a caller who is still waiting (no rep being offered), unless another transaction holds them."""
    locked = session.execute(
        select(Interaction.id)
        .where(Interaction.id == interaction_id, Interaction.status == InteractionStatus.QUEUED)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    return locked is not None


@dataclass(frozen=True)
class DepartmentProbe:
    """Where a department stands for one more caller, read in one statement."""

    #: Callers are already waiting in its line, on hold or for a callback (they go first).
    waiting: bool
    #: A rep with the skill is available now (not counting the excluded).
    free: bool
    #: A rep with the skill is on duty — free, ringing, talking or wrapping up (not counting the excluded): worth
    #: queueing for.
    on_duty: bool


def _skilled_reps(states: Sequence[RepState], *, excluding: bool) -> Any:
    query = (
        select(Rep.id)
        .join(RepSkill, RepSkill.rep_id == Rep.id)
        .where(RepSkill.department == bindparam("department"), or_(*(Rep.state == state for state in states)))
    )
    return query.where(Rep.id.not_in(bindparam("exclude", expanding=True))) if excluding else query


_IN_LINE = select(Interaction.id).where(_WAITING, Interaction.department == bindparam("department")).limit(1)


def _probe(*, excluding: bool) -> Any:
    return select(
        exists(_IN_LINE).label("waiting"),
        exists(_skilled_reps([RepState.AVAILABLE], excluding=excluding)).label("free"),
        exists(_skilled_reps(ON_DUTY_STATES, excluding=excluding)).label("on_duty"),
    )


_PROBE = {excluding: _probe(excluding=excluding) for excluding in (False, True)}


def probe_department(session: Session, department: str, *, exclude_rep_ids: Collection[int] = ()) -> DepartmentProbe:
    """Waiting callers, a free rep, anyone on duty: the three facts a transfer decides on, in one round trip."""
    params: dict[str, Any] = {"department": department}
    if exclude_rep_ids:
        params["exclude"] = list(exclude_rep_ids)
    waiting, free, on_duty = session.connection().execute(_PROBE[bool(exclude_rep_ids)], params).one()
    return DepartmentProbe(waiting=bool(waiting), free=bool(free), on_duty=bool(on_duty))


@dataclass(frozen=True)
class Overflow:
    """Callers of ``department`` who joined its line before ``joined_before`` may go to reps of ``to`` too."""

    department: str
    to: tuple[str, ...]
    joined_before: datetime


def _callback_due(now: datetime) -> ColumnElement[bool]:
    return and_(
        Interaction.status == InteractionStatus.CALLBACK,
        Callback.state == CallbackState.WAITING,
        or_(Callback.next_attempt_at.is_(None), Callback.next_attempt_at <= now),
    )


def next_in_line(
    session: Session, *, departments: Collection[str], overflow: Collection[Overflow], rep_id: int, now: datetime
) -> Interaction | None:
    """The first caller a rep with these skills may take: on hold, or a callback that is due, that this rep has not
    already declined; locked (``SKIP LOCKED``: a caller another worker is handing out is passed over). ``overflow``:
    the rules that let this rep take other departments' callers."""
    eligible: list[ColumnElement[bool]] = [Interaction.department.in_(list(departments))] if departments else []
    eligible += [
        and_(Interaction.department == spill.department, Interaction.enqueued_at <= spill.joined_before)
        for spill in overflow
    ]
    if not eligible:
        return None
    already_offered = select(Offer.interaction_id).where(Offer.rep_id == rep_id, Offer.state == OfferState.DECLINED)
    return session.scalars(
        select(Interaction)
        .outerjoin(Callback, Callback.interaction_id == Interaction.id)
        .where(
            or_(Interaction.status == InteractionStatus.QUEUED, _callback_due(now)),
            or_(*eligible),
            Interaction.id.not_in(already_offered),
        )
        .order_by(Interaction.rank_at, Interaction.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=Interaction)
    ).one_or_none()


def anyone_to_match(now: datetime, overflow: Sequence[Overflow]) -> ColumnElement[bool]:
    """Someone in line (on hold, or a callback that is due) and an available rep who may take them and has not
    declined them: a match the housekeeping pass should make."""
    skill_fits = [RepSkill.department == Interaction.department] + [
        and_(
            Interaction.department == rule.department,
            Interaction.enqueued_at <= rule.joined_before,
            RepSkill.department.in_(rule.to),
        )
        for rule in overflow
    ]
    declined = select(Offer.id).where(
        Offer.interaction_id == Interaction.id, Offer.rep_id == Rep.id, Offer.state == OfferState.DECLINED
    )
    return exists(
        select(Interaction.id)
        .outerjoin(Callback, Callback.interaction_id == Interaction.id)
        .join(RepSkill, or_(*skill_fits))
        .join(Rep, Rep.id == RepSkill.rep_id)
        .where(
            or_(Interaction.status == InteractionStatus.QUEUED, _callback_due(now)),
            Rep.state == RepState.AVAILABLE,
            ~exists(declined),
        )
    )


# The most recently *ended* calls: ordered by start instead, the sample would miss the long calls of recent
# arrivals that are still going, and every estimate would come out short (measured: -10 % in bench/queue_sim.py).
_RECENT_HANDLING = (
    select(Interaction.answered_at, Interaction.ended_at)
    .where(
        Interaction.department == bindparam("department"),
        Interaction.ended_at.is_not(None),
        Interaction.answered_at.is_not(None),
    )
    .order_by(Interaction.ended_at.desc())
    .limit(200)
)


def recent_talk_seconds(session: Session, department: str) -> list[float]:
    """How long the department's 200 most recent answered calls lasted once a rep picked up (seconds, newest first).

    200: the mean of exponential-ish handle times over n calls is off by about 1/sqrt(n); 50 would put ±14 % of
    noise into every wait estimate, 200 about ±7 %."""
    rows = session.connection().execute(_RECENT_HANDLING, {"department": department})
    return [max(0.0, (ended - answered).total_seconds()) for answered, ended in rows if answered and ended]
