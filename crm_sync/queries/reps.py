"""Reps: who is free for a department (best first, locked), who is on duty, presence, skills and API tokens."""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session, selectinload

from crm_sync.errors import UnknownRep
from crm_sync.models import ON_DUTY_STATES, Customer, Interaction, Offer, OfferState, Rep, RepSkill, RepState, utcnow

Strategy = Literal["longest_idle", "fewest_calls", "round_robin", "ring_all"]

_CALLS_TODAY = (
    select(func.count(Offer.id))
    .where(
        Offer.rep_id == Rep.id,
        or_(Offer.state == OfferState.ACCEPTED, Offer.state == OfferState.ENDED),
        Offer.created_at >= bindparam("day_start"),
    )
    .scalar_subquery()
)


def _pick_order(strategy: Strategy) -> tuple[Any, ...]:
    """Best skill level first; then the strategy's own order; ties by id, so the pick is deterministic."""
    idle = Rep.available_since.asc().nulls_first()
    if strategy == "round_robin":
        keys: tuple[Any, ...] = (Rep.last_offered_at.asc().nulls_first(), idle)
    elif strategy == "fewest_calls":
        keys = (_CALLS_TODAY.asc(), idle)
    else:  # longest_idle; ring_all rings the longest idle first too
        keys = (idle,)
    return (RepSkill.level.desc(), *keys, Rep.id)


@functools.cache
def _free_reps_statement(strategy: Strategy, *, excluding: bool, only: bool) -> Any:
    """Available reps with the skill, best first; built once per shape (this runs on every transfer)."""
    query = (
        select(Rep)
        .join(RepSkill, RepSkill.rep_id == Rep.id)
        .where(Rep.state == RepState.AVAILABLE, RepSkill.department == bindparam("department"))
    )
    if excluding:
        query = query.where(Rep.id.not_in(bindparam("exclude", expanding=True)))
    if only:
        query = query.where(Rep.id == bindparam("only"))
    # SKIP LOCKED: concurrent workers pass over a rep another transaction is taking (PostgreSQL; SQLite ignores it
    # and is serialised by BEGIN IMMEDIATE instead, see crm_sync.sqlite).
    return query.order_by(*_pick_order(strategy)).limit(bindparam("count")).with_for_update(skip_locked=True, of=Rep)


def free_reps(
    session: Session,
    *,
    department: str,
    strategy: Strategy = "longest_idle",
    count: int = 1,
    exclude_rep_ids: Collection[int] = (),
    only_rep_id: int | None = None,
    day_start: datetime | None = None,
) -> Sequence[Rep]:
    """Up to ``count`` available reps with the department's skill, best first, each locked while available (so the
    caller may ``Rep.reserve`` them: two workers never get the same rep). ``day_start``: where "today" begins for
    the fewest_calls strategy."""
    params: dict[str, Any] = {"department": department, "count": count}
    if exclude_rep_ids:
        params["exclude"] = list(exclude_rep_ids)
    if only_rep_id is not None:
        params["only"] = only_rep_id
    if strategy == "fewest_calls":
        params["day_start"] = day_start or utcnow()
    statement = _free_reps_statement(strategy, excluding=bool(exclude_rep_ids), only=only_rep_id is not None)
    return session.scalars(statement, params).all()


def lock_rep(session: Session, rep_id: int) -> Rep:
    """The rep, locked and freshly read (another worker may have just changed it)."""
    rep = session.get(Rep, rep_id, with_for_update=True, populate_existing=True)
    if rep is None:
        raise UnknownRep(f"rep {rep_id}")
    return rep


def find_rep(session: Session, name: str) -> Rep:
    rep = session.scalars(select(Rep).where(func.lower(Rep.name) == name.strip().lower())).one_or_none()
    if rep is None:
        raise UnknownRep(name)
    return rep


def list_reps(session: Session) -> Sequence[Rep]:
    return session.scalars(select(Rep).options(selectinload(Rep.skills)).order_by(Rep.name)).all()


@dataclass(frozen=True)
class RepOnTheFloor:
    """A rep as the floor shows them, read without loading the ORM objects (the consoles read the floor on every
    change, ~140 reps at a time), and the call in front of them, if any."""

    id: int
    name: str
    state: RepState
    away_reason: str | None
    state_changed_at: datetime
    after_call_state: RepState | None
    departments: tuple[str, ...]
    call: CallInFrontOf | None


@dataclass(frozen=True)
class CallInFrontOf:
    """The call a rep is ringing for or talking on: its CallSid, the caller (the customer's name, or the number for
    a caller the CRM does not know) and the department it is for."""

    call_sid: str
    caller: str
    department: str


_FLOOR_REPS = select(Rep.id, Rep.name, Rep.state, Rep.away_reason, Rep.state_changed_at, Rep.after_call_state).order_by(
    Rep.name
)
_EVERY_SKILL = select(RepSkill.rep_id, RepSkill.department).order_by(RepSkill.department)
# The offer a rep's reservation or call names, and its call.
_CALLS_IN_FRONT = (
    select(Rep.id, Interaction.call_sid, Customer.name, Interaction.caller_number, Interaction.department)
    .join(Offer, Offer.id == Rep.current_offer_id)
    .join(Interaction, Interaction.id == Offer.interaction_id)
    .outerjoin(Customer, Customer.id == Interaction.customer_id)
)


def reps_on_the_floor(session: Session) -> list[RepOnTheFloor]:
    """Every rep by name, with their departments (sorted, as ``Rep.departments``) and the call in front of them."""
    connection = session.connection()
    departments: dict[int, list[str]] = {}
    for rep_id, department in connection.execute(_EVERY_SKILL):
        departments.setdefault(rep_id, []).append(department)
    calls = {
        rep_id: CallInFrontOf(call_sid, customer_name or caller_number, Interaction.routed(department))
        for rep_id, call_sid, customer_name, caller_number, department in connection.execute(_CALLS_IN_FRONT)
    }
    return [
        RepOnTheFloor(*row, departments=tuple(departments.get(row.id, ())), call=calls.get(row.id))
        for row in connection.execute(_FLOOR_REPS)
    ]


def rep_by_token_digest(session: Session, digest: str) -> Rep | None:
    return session.scalars(select(Rep).where(Rep.api_token_hash == digest)).one_or_none()


def upsert_rep(
    session: Session,
    *,
    name: str,
    phone_e164: str,
    departments: Sequence[str],
    languages: Sequence[str],
    levels: Mapping[str, int] | None = None,
    role: str | None = None,
) -> tuple[Rep, bool]:
    """Create or update a rep by name: phone, languages, skills (levels 1-10 per department; default kept, or 5
    for a new skill) and role (None: a new rep is a rep, an existing one keeps theirs). A new rep starts offline."""
    rep = session.scalars(select(Rep).where(func.lower(Rep.name) == name.lower())).one_or_none()
    created = rep is None
    if rep is None:
        rep = Rep(name=name, phone=phone_e164, state_changed_at=utcnow())
        session.add(rep)
    rep.phone = phone_e164
    rep.languages = list(languages)
    if role is not None:
        rep.role = role
    elif created:
        rep.role = "rep"
    wanted = set(departments)
    rep.skills = [skill for skill in rep.skills if skill.department in wanted]
    have = {skill.department for skill in rep.skills}
    rep.skills.extend(RepSkill(department=department, level=5) for department in sorted(wanted - have))
    for skill in rep.skills:
        if levels and skill.department in levels:
            skill.level = levels[skill.department]
    session.flush()
    return rep, created


def available_reps(session: Session) -> Sequence[Rep]:
    """Every available rep, longest idle first."""
    return session.scalars(
        select(Rep).where(Rep.state == RepState.AVAILABLE).order_by(Rep.available_since.asc().nulls_first(), Rep.id)
    ).all()


def expired_reservations(session: Session, *, now: datetime) -> Sequence[Rep]:
    """Reps whose reservation nobody answered in time (a lost callback, a crashed worker), locked."""
    return session.scalars(
        select(Rep).where(Rep.state == RepState.RESERVED, Rep.reserved_until <= now).with_for_update(skip_locked=True)
    ).all()


def wrap_ups_over(session: Session, *, now: datetime) -> Sequence[Rep]:
    """Reps whose after-call work time is over, locked."""
    return session.scalars(
        select(Rep).where(Rep.state == RepState.WRAP_UP, Rep.wrap_up_until <= now).with_for_update(skip_locked=True)
    ).all()


@dataclass(frozen=True)
class StaffedRep:
    """A rep on duty for a department, as the wait estimate needs them."""

    state: RepState
    state_changed_at: datetime
    wrap_up_until: datetime | None


_STAFFED = (
    select(Rep.state, Rep.state_changed_at, Rep.wrap_up_until)
    .join(RepSkill, RepSkill.rep_id == Rep.id)
    .where(RepSkill.department == bindparam("department"), or_(*(Rep.state == state for state in ON_DUTY_STATES)))
)


def staffed_reps(session: Session, department: str) -> list[StaffedRep]:
    return [StaffedRep(*row) for row in session.connection().execute(_STAFFED, {"department": department})]
