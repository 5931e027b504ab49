"""The one door to the CRM store: every query and write the rest of Warmline makes goes through here.

Functions take the caller's ``Session`` (one unit of work, committed by ``Store.unit_of_work``) so that a webhook can
read, decide and write in a single transaction. Nothing here knows about Flask or Twilio.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.sql.elements import ColumnElement

from crm_sync.db import Store
from crm_sync.hot import HotStatement
from crm_sync.models import (
    ACTIVE_HANDOFF_STATES,
    LIVE_OFFER_STATES,
    ON_DUTY_STATES,
    Callback,
    CallbackState,
    Customer,
    Handoff,
    HandoffState,
    Interaction,
    InteractionStatus,
    Offer,
    OfferState,
    Outcome,
    Rep,
    RepSkill,
    RepState,
    Task,
    TaskState,
    utcnow,
)


class UnknownRep(LookupError):
    """No rep by that name."""


class UnknownInteraction(LookupError):
    """No interaction for that CallSid (a webhook for a call we never saw start)."""


# --- customers -----------------------------------------------------------------------------------------------------


def find_customer_by_phone(session: Session, phone_e164: str) -> Customer | None:
    return session.scalars(select(Customer).where(Customer.phone == phone_e164)).one_or_none()


@dataclass(frozen=True)
class CustomerFields:
    """A customer as an import or an admin gives it; the phone is already E.164."""

    name: str
    phone_e164: str
    email: str | None
    tier: str
    notes: str | None
    custom_fields: dict[str, str]


_LOOKUP_BATCH = 500


def upsert_customers(session: Session, rows: Sequence[CustomerFields]) -> tuple[int, int]:
    """Create or update customers by phone number: one SELECT per 500 numbers, one flush. Returns (created, updated).

    Custom fields merge (a value missing from ``rows`` never erases one already stored); the other fields take the
    given values.
    """
    phones = [row.phone_e164 for row in rows]
    existing: dict[str, Customer] = {}
    for start in range(0, len(phones), _LOOKUP_BATCH):
        batch = phones[start : start + _LOOKUP_BATCH]
        existing.update(
            (customer.phone, customer)
            for customer in session.scalars(select(Customer).where(Customer.phone.in_(batch)))
        )
    created = 0
    for row in rows:
        customer = existing.get(row.phone_e164)
        if customer is None:
            customer = existing[row.phone_e164] = Customer(phone=row.phone_e164, custom_fields={})
            session.add(customer)
            created += 1
        customer.name = row.name
        customer.email = row.email
        customer.tier = row.tier
        customer.notes = row.notes
        customer.custom_fields = {**(customer.custom_fields or {}), **row.custom_fields}
    session.flush()
    return created, len(rows) - created


def upsert_customer(
    session: Session,
    *,
    name: str,
    phone_e164: str,
    email: str | None,
    tier: str,
    notes: str | None,
    custom_fields: dict[str, str],
) -> tuple[Customer, bool]:
    """One customer (see ``upsert_customers``). Returns (customer, created)."""
    created, _ = upsert_customers(session, [CustomerFields(name, phone_e164, email, tier, notes, custom_fields)])
    customer = find_customer_by_phone(session, phone_e164)
    assert customer is not None
    return customer, bool(created)


@dataclass(frozen=True)
class PastContact:
    when: datetime
    department: str | None
    issue_text: str | None


def last_contact(
    session: Session, *, customer_id: int | None, caller_number: str, before_interaction_id: int
) -> PastContact | None:
    """The caller's previous call (the one before this one), for the whisper: the customer's, from any of their
    numbers, or for a caller the CRM does not know, the number's."""
    if customer_id is not None:
        whose = Interaction.customer_id == customer_id
    else:
        whose = Interaction.caller_number == caller_number
    row = session.execute(
        select(Interaction.started_at, Interaction.department, Interaction.issue_text)
        .where(whose, Interaction.id < before_interaction_id)
        .order_by(Interaction.id.desc())
        .limit(1)
    ).first()
    return PastContact(row.started_at, row.department, row.issue_text) if row else None


#: The hot-path functions take a Session (inside a unit of work) or, faster, a Connection (``Store.transaction``).
Db = Session | Connection


def _connection(db: Db) -> Connection:
    return db.connection() if isinstance(db, Session) else db


@contextmanager
def orm_session(db: Db) -> Iterator[Session]:
    """An ORM session inside the transaction ``db`` is in: ``db`` itself, or one bound to the webhook connection
    that joins (never owns) the transaction ``Store.writing`` began on the driver."""
    if isinstance(db, Session):
        yield db
        return
    with Session(bind=Store.joined(db)) as session:
        yield session


# --- the hot path: plain rows, no ORM unit of work ------------------------------------------------------------------
# /voice/incoming and /voice/gather run on every call; an ORM flush cycle costs more than the rest of the request, so
# these read and write columns with Core statements and hand back small frozen rows.


@dataclass(frozen=True)
class CallerView:
    """What a flow's branches may ask about a caller, read in one statement."""

    id: int
    name: str
    tier: str
    custom_fields: dict[str, Any]
    last_contact_at: datetime | None
    has_open_task: bool

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else ""


# Not this call itself: a retried Voice URL (same CallSid) is not a second contact.
_LAST_CONTACT = (
    select(func.max(Interaction.started_at))
    .where(Interaction.customer_id == Customer.id, Interaction.call_sid != bindparam("call_sid"))
    .scalar_subquery()
)
_OPEN_TASKS = (
    select(func.count(Task.id)).where(Task.customer_id == Customer.id, Task.state == TaskState.OPEN).scalar_subquery()
)
_CALLER_BY_PHONE = select(
    Customer.id,
    Customer.name,
    Customer.tier,
    Customer.custom_fields,
    _LAST_CONTACT.label("last_contact_at"),
    _OPEN_TASKS.label("open_tasks"),
).where(Customer.phone == bindparam("phone"))
_CALLER_BY_PHONE_HOT = HotStatement(_CALLER_BY_PHONE)


def caller_view(db: Db, phone_e164: str, *, call_sid: str = "") -> CallerView | None:
    """The customer with this number, if any; ``last_contact_at`` leaves out the call ``call_sid`` itself."""
    row = _CALLER_BY_PHONE_HOT.first(_connection(db), {"phone": phone_e164, "call_sid": call_sid})
    if row is None:
        return None
    customer_id, name, tier, custom_fields, last, open_tasks = row
    return CallerView(customer_id, name, tier, custom_fields or {}, _aggregate_time(last), bool(open_tasks))


# A number's calls, whoever the CRM says made them: a caller it does not know who rang before is a repeat caller
# too (cut off, or calling back about the same thing). Not this call itself, as above.
_LAST_CALL_FROM = select(func.max(Interaction.started_at)).where(
    Interaction.caller_number == bindparam("number"), Interaction.call_sid != bindparam("call_sid")
)
_LAST_CALL_FROM_HOT = HotStatement(_LAST_CALL_FROM)


def last_call_from(db: Db, number: str, *, other_than: str) -> datetime | None:
    """When ``number`` last called (any call but ``other_than``), by the indexed ``caller_number``."""
    row = _LAST_CALL_FROM_HOT.first(_connection(db), {"number": number, "call_sid": other_than})
    return _aggregate_time(row[0]) if row else None


def _aggregate_time(value: datetime | str | None) -> datetime | None:
    if isinstance(value, str):  # SQLite returns an aggregate of a typed column untyped
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class CallRow:
    """The columns a webhook needs to continue a call."""

    id: int
    call_sid: str
    status: InteractionStatus
    flow_name: str
    flow_version: str
    flow_state: dict[str, Any]
    department: str | None
    enqueued_at: datetime | None
    rank_at: datetime | None
    #: Whether any rep was ever offered this call (if not, nobody needs excluding from the next pick).
    offered: bool = False


_CALL_COLUMNS = (
    Interaction.id,
    Interaction.call_sid,
    Interaction.status,
    Interaction.flow_name,
    Interaction.flow_version,
    Interaction.flow_state,
    Interaction.department,
    Interaction.enqueued_at,
    Interaction.rank_at,
    exists().where(Offer.interaction_id == Interaction.id).label("offered"),
)


_CALL_BY_SID = select(*_CALL_COLUMNS).where(Interaction.call_sid == bindparam("sid"))
_CALL_BY_SID_HOT = {
    for_update: HotStatement(_CALL_BY_SID.with_for_update() if for_update else _CALL_BY_SID)
    for for_update in (False, True)
}


def call_row(db: Db, call_sid: str, *, for_update: bool = False) -> CallRow | None:
    row = _CALL_BY_SID_HOT[for_update].first(_connection(db), {"sid": call_sid})
    return CallRow(*row) if row else None


@dataclass(frozen=True)
class CallSpeech:
    """Which flow version a call runs on and the language its caller chose (None: the flow's own)."""

    flow_name: str
    flow_version: str
    language: str | None


def call_speech(db: Db, call_sid: str) -> CallSpeech | None:
    row = _connection(db).execute(
        select(Interaction.flow_name, Interaction.flow_version, Interaction.language).where(
            Interaction.call_sid == call_sid
        )
    ).first()
    return CallSpeech(*row) if row else None


_OPEN_CALL = {
    name: HotStatement(
        dialect_insert(Interaction).on_conflict_do_nothing(index_elements=["call_sid"]).returning(Interaction.id)
    )
    for name, dialect_insert in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))
}


def insert_interaction(
    db: Db,
    *,
    call_sid: str,
    caller_number: str,
    customer_id: int | None,
    flow_name: str,
    flow_version: str,
    flow_state: dict[str, Any],
    now: datetime,
    called_number: str | None = None,
) -> tuple[CallRow, bool]:
    """Open the interaction for a new call. A retried webhook (same CallSid) gets the existing row back.

    Returns (row, created).
    """
    connection = _connection(db)
    values: dict[str, Any] = {
        "call_sid": call_sid,
        "caller_number": caller_number,
        "called_number": called_number,
        "customer_id": customer_id,
        "flow_name": flow_name,
        "flow_version": flow_version,
        "flow_state": flow_state,
        "status": InteractionStatus.IN_FLOW,
        "started_at": now,
        "hold_seconds": 0,
        "survey": {},
        "priority_seconds": 0,
        "priority_reasons": [],
    }
    new_id = _OPEN_CALL[connection.dialect.name].scalar(connection, values)
    if new_id is None:
        existing = call_row(db, call_sid, for_update=True)
        assert existing is not None
        return existing, False
    return (
        CallRow(new_id, call_sid, InteractionStatus.IN_FLOW, flow_name, flow_version, flow_state, None, None, None),
        True,
    )


_UPDATE_CALL = HotStatement(update(Interaction).where(Interaction.id == bindparam("interaction_id_")))


def update_interaction(db: Db, interaction_id: int, **values: Any) -> None:
    """Set some columns of one interaction (the SET clause follows the keys given)."""
    _UPDATE_CALL.run(_connection(db), {"interaction_id_": interaction_id, **values})


_INSERT_OFFER = HotStatement(insert(Offer).returning(Offer.id))


def insert_offer(
    db: Db,
    *,
    interaction_id: int,
    rep_id: int,
    state: OfferState,
    now: datetime,
    group_id: int | None = None,
    purpose: str = "call",
) -> int:
    offer_id: int = _INSERT_OFFER.scalar(
        _connection(db),
        {
            "interaction_id": interaction_id,
            "rep_id": rep_id,
            "state": state,
            "created_at": now,
            "group_id": group_id,
            "purpose": purpose,
        },
    )
    return offer_id


def set_offer_group(db: Db, leader_id: int, offer_ids: Sequence[int]) -> None:
    """Offers rung together share their first offer's id as group (the leader names itself too)."""
    _connection(db).execute(update(Offer).where(Offer.id == leader_id).values(group_id=leader_id))


# --- interactions --------------------------------------------------------------------------------------------------


def open_interaction(
    session: Session,
    *,
    call_sid: str,
    caller_number: str,
    customer: Customer | None,
    flow_name: str,
    flow_version: str,
    flow_state: dict[str, object],
) -> tuple[Interaction, bool]:
    """Open the interaction for a new call. Idempotent per CallSid: a retried webhook gets the same row back.

    Returns (interaction, created).
    """
    existing = get_interaction(session, call_sid)
    if existing is not None:
        return existing, False
    interaction = Interaction(
        call_sid=call_sid,
        caller_number=caller_number,
        customer=customer,
        flow_name=flow_name,
        flow_version=flow_version,
        flow_state=flow_state,
        status=InteractionStatus.IN_FLOW,
        started_at=utcnow(),
    )
    session.add(interaction)
    session.flush()
    return interaction, True


def get_interaction(session: Session, call_sid: str, *, for_update: bool = False) -> Interaction | None:
    """The interaction of a call: the caller's first call, or the call carrying them now (a callback)."""
    query = select(Interaction).where(or_(Interaction.call_sid == call_sid, Interaction.live_call_sid == call_sid))
    if for_update:
        query = query.with_for_update(of=Interaction)
    return session.scalars(query).unique().one_or_none()


def require_interaction(session: Session, call_sid: str, *, for_update: bool = False) -> Interaction:
    interaction = get_interaction(session, call_sid, for_update=for_update)
    if interaction is None:
        raise UnknownInteraction(call_sid)
    return interaction


def close_interaction(
    session: Session,
    interaction: Interaction,
    *,
    outcome: Outcome,
    call_status: str | None,
    duration_seconds: int | None,
    now: datetime,
) -> bool:
    """Close once. A repeated or late status callback changes nothing and returns False."""
    if interaction.status is InteractionStatus.ENDED:
        if duration_seconds is not None and interaction.duration_seconds is None:
            interaction.duration_seconds = duration_seconds
        return False
    if interaction.enqueued_at is not None and interaction.answered_at is None:
        interaction.hold_seconds = max(0, int((now - interaction.enqueued_at).total_seconds()))
    interaction.status = InteractionStatus.ENDED
    interaction.outcome = interaction.outcome or outcome
    interaction.ended_at = now
    interaction.duration_seconds = duration_seconds
    interaction.last_call_status = call_status
    return True


# --- the line: callers waiting for a rep, on hold or for a callback ------------------------------------------------
# One line per department, ordered by rank_at (arrival minus head start, see voice/priority.py), then id.

_WAITING = or_(Interaction.status == InteractionStatus.QUEUED, Interaction.status == InteractionStatus.CALLBACK)
_AHEAD_IN_LINE = HotStatement(
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


def line_position(db: Db, *, department: str, rank_at: datetime | None, interaction_id: int) -> int:
    """1-based place in the department's line: callers on hold or awaiting a callback who rank ahead, plus one."""
    if rank_at is None:
        return 1
    ahead = _AHEAD_IN_LINE.scalar(
        _connection(db), {"department": department, "rank_at": rank_at, "interaction_id": interaction_id}
    )
    return int(ahead) + 1


def lock_queued_interaction(session: Session, interaction_id: int) -> bool:
    """Lock a caller who is still waiting (no rep being offered), unless another transaction holds them."""
    locked = session.execute(
        select(Interaction.id)
        .where(Interaction.id == interaction_id, Interaction.status == InteractionStatus.QUEUED)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    return locked is not None


_WAITING_IN = HotStatement(
    select(Interaction.id)
    .where(Interaction.status == InteractionStatus.QUEUED, Interaction.department == bindparam("department"))
    .limit(1)
)


def has_waiting_callers(db: Db, department: str) -> bool:
    return _WAITING_IN.first(_connection(db), {"department": department}) is not None


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
        # Equalities, not IN: a literal IN list is an "expanding" parameter, re-rendered on every execution.
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


# Two variants, not an optional clause: an "expanding" IN re-renders its SQL on every execution, so it is only used
# when someone is actually excluded (a caller some rep already let ring out); the usual one runs hot.
_PROBE = HotStatement(_probe(excluding=False))
_PROBE_EXCLUDING = _probe(excluding=True)


def probe_department(db: Db, department: str, *, exclude_rep_ids: Collection[int] = ()) -> DepartmentProbe:
    """Waiting callers, a free rep, anyone on duty: the three facts a transfer decides on, in one round trip."""
    connection = _connection(db)
    if exclude_rep_ids:
        params = {"department": department, "exclude": list(exclude_rep_ids)}
        waiting, free, on_duty = connection.execute(_PROBE_EXCLUDING, params).one()
    else:
        row = _PROBE.first(connection, {"department": department})
        assert row is not None
        waiting, free, on_duty = row
    return DepartmentProbe(waiting=bool(waiting), free=bool(free), on_duty=bool(on_duty))


@dataclass(frozen=True)
class Overflow:
    """Callers of ``department`` who joined its line before ``joined_before`` may go to reps of other departments."""

    department: str
    joined_before: datetime


def next_in_line(
    session: Session, *, departments: Collection[str], overflow: Collection[Overflow], rep_id: int, now: datetime
) -> Interaction | None:
    """The first caller a rep with these skills may take: on hold, or a callback that is due, that this rep has not
    already been offered; locked (``SKIP LOCKED``: a caller another worker is handing out is passed over)."""
    eligible: list[ColumnElement[bool]] = [Interaction.department.in_(list(departments))] if departments else []
    eligible += [
        and_(Interaction.department == spill.department, Interaction.enqueued_at <= spill.joined_before)
        for spill in overflow
    ]
    if not eligible:
        return None
    callback_due = and_(
        Interaction.status == InteractionStatus.CALLBACK,
        Callback.state == CallbackState.WAITING,
        or_(Callback.next_attempt_at.is_(None), Callback.next_attempt_at <= now),
    )
    already_offered = select(Offer.interaction_id).where(Offer.rep_id == rep_id, Offer.state == OfferState.DECLINED)
    return (
        session.scalars(
            select(Interaction)
            .outerjoin(Callback, Callback.interaction_id == Interaction.id)
            .where(
                or_(Interaction.status == InteractionStatus.QUEUED, callback_due),
                or_(*eligible),
                Interaction.id.not_in(already_offered),
            )
            .order_by(Interaction.rank_at, Interaction.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=Interaction)
        )
        .unique()
        .one_or_none()
    )


def waiting_departments(db: Db, *, now: datetime) -> set[str]:
    """Departments with someone in line who could be served now (on hold, or a callback that is due)."""
    rows = _connection(db).execute(
        select(Interaction.department)
        .outerjoin(Callback, Callback.interaction_id == Interaction.id)
        .where(
            or_(
                Interaction.status == InteractionStatus.QUEUED,
                and_(
                    Interaction.status == InteractionStatus.CALLBACK,
                    Callback.state == CallbackState.WAITING,
                    or_(Callback.next_attempt_at.is_(None), Callback.next_attempt_at <= now),
                ),
            )
        )
        .distinct()
    )
    return {department for (department,) in rows if department}


@dataclass(frozen=True)
class StaffedRep:
    """A rep on duty for a department, as the wait estimate needs them."""

    state: RepState
    state_changed_at: datetime
    wrap_up_until: datetime | None


_STAFFED = HotStatement(
    select(Rep.state, Rep.state_changed_at, Rep.wrap_up_until)
    .join(RepSkill, RepSkill.rep_id == Rep.id)
    .where(RepSkill.department == bindparam("department"), or_(*(Rep.state == state for state in ON_DUTY_STATES)))
)


def staffed_reps(db: Db, department: str) -> list[StaffedRep]:
    return [StaffedRep(*row) for row in _STAFFED.all(_connection(db), {"department": department})]


# The most recently *ended* calls: ordered by start instead, the sample would miss the long calls of recent
# arrivals that are still going, and every estimate would come out short (measured: -10 % in bench/queue_sim.py).
_RECENT_HANDLING = HotStatement(
    select(Interaction.answered_at, Interaction.ended_at)
    .where(
        Interaction.department == bindparam("department"),
        Interaction.ended_at.is_not(None),
        Interaction.answered_at.is_not(None),
    )
    .order_by(Interaction.ended_at.desc())
    .limit(200)
)


def recent_talk_seconds(db: Db, department: str) -> list[float]:
    """How long the department's 200 most recent answered calls lasted once a rep picked up (seconds, newest first).

    200: the mean of exponential-ish handle times over n calls is off by about 1/sqrt(n); 50 would put ±14 % of
    noise into every wait estimate, 200 about ±7 %."""
    rows = _RECENT_HANDLING.all(_connection(db), {"department": department})
    return [max(0.0, (ended - answered).total_seconds()) for answered, ended in rows if answered and ended]


def iter_interactions(session: Session) -> Iterator[Interaction]:
    """Every interaction, oldest first, streamed in batches (an export must not hold the whole table in memory).

    Only many-to-one relations are joined, so rows need no de-duplication (which ``yield_per`` would forbid).
    """
    yield from session.scalars(select(Interaction).order_by(Interaction.id).execution_options(yield_per=500))


# --- reps: picking one, leases, wrap-up -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RepRow:
    """A rep just reserved: who to dial."""

    id: int
    phone: str


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
def _free_reps_statement(strategy: Strategy, *, excluding: bool, only: bool, count: int) -> Any:
    """Available reps with the skill, best first; built once per shape (this runs on every transfer)."""
    query = (
        select(Rep.id)
        .join(RepSkill, RepSkill.rep_id == Rep.id)
        .where(Rep.state == RepState.AVAILABLE, RepSkill.department == bindparam("department"))
    )
    if excluding:
        query = query.where(Rep.id.not_in(bindparam("exclude", expanding=True)))
    if only:
        query = query.where(Rep.id == bindparam("only"))
    # SKIP LOCKED: concurrent workers pass over a rep another transaction is taking (PostgreSQL; SQLite ignores it
    # and is serialised by BEGIN IMMEDIATE instead, see crm_sync.db).
    return query.order_by(*_pick_order(strategy)).limit(count).with_for_update(skip_locked=True, of=Rep)


@functools.cache
def _free_reps_hot(strategy: Strategy, *, only: bool, count: int) -> HotStatement:
    return HotStatement(_free_reps_statement(strategy, excluding=False, only=only, count=count))


_TAKE_REP = HotStatement(
    update(Rep)
    .where(Rep.id == bindparam("rep_id"), Rep.state == RepState.AVAILABLE)
    .values(
        state=RepState.RESERVED,
        state_changed_at=bindparam("now"),
        reserved_until=bindparam("until"),
        last_offered_at=bindparam("now"),
        current_offer_id=None,
    )
    .returning(Rep.id, Rep.phone)
)


def reserve_reps(
    db: Db,
    *,
    department: str,
    now: datetime,
    until: datetime,
    strategy: Strategy = "longest_idle",
    count: int = 1,
    exclude_rep_ids: Collection[int] = (),
    only_rep_id: int | None = None,
    day_start: datetime | None = None,
) -> list[RepRow]:
    """Atomically reserve up to ``count`` available reps with the department's skill, best first.

    Each reservation is a guarded UPDATE (the rep must still be available), so two workers can never reserve the
    same rep; it expires at ``until`` unless the call is answered (see ``expired_reservations``). ``day_start``:
    where "today" begins for the fewest_calls strategy.
    """
    connection = _connection(db)
    only = only_rep_id is not None
    params: dict[str, Any] = {"department": department}
    if only:
        params["only"] = only_rep_id
    if strategy == "fewest_calls":
        params["day_start"] = day_start or now
    if exclude_rep_ids:  # an expanding IN: through SQLAlchemy, which re-renders it (see crm_sync.hot)
        statement = _free_reps_statement(strategy, excluding=True, only=only, count=count)
        candidates = connection.execute(statement, {**params, "exclude": list(exclude_rep_ids)}).scalars().all()
    else:
        candidates = [rep_id for (rep_id,) in _free_reps_hot(strategy, only=only, count=count).all(connection, params)]
    taken: list[RepRow] = []
    for rep_id in candidates:
        row = _TAKE_REP.first(connection, {"rep_id": rep_id, "now": now, "until": until})
        if row is not None:
            taken.append(RepRow(*row))
    return taken


def reserve_rep(
    db: Db,
    *,
    department: str,
    now: datetime,
    until: datetime,
    strategy: Strategy = "longest_idle",
    exclude_rep_ids: Collection[int] = (),
    only_rep_id: int | None = None,
    day_start: datetime | None = None,
) -> RepRow | None:
    """One rep (see ``reserve_reps``), or None."""
    taken = reserve_reps(
        db,
        department=department,
        now=now,
        until=until,
        strategy=strategy,
        exclude_rep_ids=exclude_rep_ids,
        only_rep_id=only_rep_id,
        day_start=day_start,
    )
    return taken[0] if taken else None


_ATTACH_OFFER = HotStatement(
    update(Rep).where(Rep.id == bindparam("rep_id")).values(current_offer_id=bindparam("offer_id"))
)


def attach_offer(db: Db, rep_id: int, offer_id: int) -> None:
    """Name the offer a reserved rep is held for: only a release that names it can free the rep."""
    _ATTACH_OFFER.run(_connection(db), {"rep_id": rep_id, "offer_id": offer_id})


class OfferEnd(enum.StrEnum):
    """How an offer ended, for the rep it was made to."""

    TALKED = "talked"  # the rep took the call and it is over: wrap-up
    MISSED = "missed"  # rang out, or the whisper got no key: counts towards being set away
    DECLINED = "declined"  # the rep pressed another key: back to available, no penalty
    CANCELLED = "cancelled"  # withdrawn (the caller hung up, another rep of the ring group answered)


def settle_rep(
    db: Db,
    rep_id: int,
    *,
    offer_id: int,
    end: OfferEnd,
    now: datetime,
    wrap_up_seconds: int,
    away_after_missed: int,
) -> RepState | None:
    """Free a rep from one offer: wrap-up after a call, away after too many missed offers, else available.

    Only acts while the rep is still held for ``offer_id``: a late or repeated callback about an older offer never
    frees a rep who has moved on, nor cuts a wrap-up short. Returns the rep's new state, or None if nothing changed.
    """
    connection = _connection(db)
    row = connection.execute(
        select(Rep.state, Rep.current_offer_id, Rep.missed_offers, Rep.after_call_state)
        .where(Rep.id == rep_id)
        .with_for_update()
    ).first()
    if row is None or row.current_offer_id != offer_id or row.state not in (RepState.RESERVED, RepState.ON_CALL):
        return None
    values: dict[str, Any] = {"current_offer_id": None, "reserved_until": None, "state_changed_at": now}
    state: RepState
    if end is OfferEnd.TALKED or row.state is RepState.ON_CALL:
        values["missed_offers"] = 0
        if row.after_call_state is not None:
            state = row.after_call_state
        elif wrap_up_seconds > 0:
            state = RepState.WRAP_UP
            values["wrap_up_until"] = now + timedelta(seconds=wrap_up_seconds)
        else:
            state = RepState.AVAILABLE
            values["available_since"] = now
    elif end is OfferEnd.MISSED:
        missed = row.missed_offers + 1
        values["missed_offers"] = missed
        state = RepState.AWAY if missed >= away_after_missed else (row.after_call_state or RepState.AVAILABLE)
    else:
        state = row.after_call_state or RepState.AVAILABLE
    values["state"] = state
    if state is not RepState.AVAILABLE or row.after_call_state is not None:
        values["after_call_state"] = None
    connection.execute(update(Rep).where(Rep.id == rep_id, Rep.current_offer_id == offer_id).values(**values))
    return state


def mark_rep_on_call(db: Db, rep_id: int, *, offer_id: int, now: datetime) -> bool:
    """The rep took the offered call (pressed 1). False when the reservation was already released (too late)."""
    taken = _connection(db).execute(
        update(Rep)
        .where(Rep.id == rep_id, Rep.state == RepState.RESERVED, Rep.current_offer_id == offer_id)
        .values(state=RepState.ON_CALL, state_changed_at=now, reserved_until=None, missed_offers=0)
        .returning(Rep.id)
    )
    return taken.first() is not None


def end_wrap_ups(db: Db, *, now: datetime) -> list[int]:
    """Reps whose after-call work time is over become available (idle from now). Returns their ids."""
    rows = _connection(db).execute(
        update(Rep)
        .where(Rep.state == RepState.WRAP_UP, Rep.wrap_up_until <= now)
        .values(state=RepState.AVAILABLE, state_changed_at=now, available_since=now, wrap_up_until=None)
        .returning(Rep.id)
    )
    return [rep_id for (rep_id,) in rows]


@dataclass(frozen=True)
class ExpiredReservation:
    rep_id: int
    offer_id: int | None


def expired_reservations(db: Db, *, now: datetime) -> list[ExpiredReservation]:
    """Reservations nobody answered in time (a lost callback, a crashed worker): to release."""
    rows = _connection(db).execute(
        select(Rep.id, Rep.current_offer_id)
        .where(Rep.state == RepState.RESERVED, Rep.reserved_until <= now)
        .with_for_update(skip_locked=True)
    )
    return [ExpiredReservation(rep_id, offer_id) for rep_id, offer_id in rows]


def release_orphan_reservation(db: Db, rep_id: int, *, now: datetime) -> bool:
    """A reservation that names no offer (its transaction died half-way): back to available."""
    released = _connection(db).execute(
        update(Rep)
        .where(Rep.id == rep_id, Rep.state == RepState.RESERVED, Rep.current_offer_id.is_(None))
        .values(state=RepState.AVAILABLE, state_changed_at=now, reserved_until=None)
        .returning(Rep.id)
    )
    return released.first() is not None


def get_offer(session: Session, offer_id: int) -> Offer | None:
    return session.get(Offer, offer_id)


def open_offer(session: Session, interaction_id: int) -> Offer | None:
    """The interaction's offer still in play (pending, ringing or accepted), if any."""
    return session.scalars(
        select(Offer)
        .where(
            Offer.interaction_id == interaction_id,
            or_(*(Offer.state == state for state in LIVE_OFFER_STATES)),
            Offer.purpose != "handoff",
        )
        .order_by(Offer.id.desc())
        .limit(1)
    ).one_or_none()


def live_offers(session: Session, interaction_id: int) -> Sequence[Offer]:
    """Every offer of the interaction still holding a rep (a ring-all group has several; a hand-off has two)."""
    return session.scalars(
        select(Offer)
        .where(Offer.interaction_id == interaction_id, or_(*(Offer.state == state for state in LIVE_OFFER_STATES)))
        .order_by(Offer.id)
    ).all()


def extend_reservation(db: Db, rep_id: int, *, offer_id: int, until: datetime) -> bool:
    """Keep a reservation alive while its call is being put through (a pulled caller's Dial starts now)."""
    kept = _connection(db).execute(
        update(Rep)
        .where(Rep.id == rep_id, Rep.state == RepState.RESERVED, Rep.current_offer_id == offer_id)
        .values(reserved_until=until)
        .returning(Rep.id)
    )
    return kept.first() is not None


def offers_in_group(session: Session, group_id: int) -> Sequence[Offer]:
    return session.scalars(select(Offer).where(Offer.group_id == group_id).order_by(Offer.id)).all()


# A rep who declined a caller or let the call ring out is not offered that caller again; an offer withdrawn
# (cancelled: the caller hung up, another rep of a ring group answered, a callback went unanswered) does not count.
_OFFERED_REPS = HotStatement(
    select(Offer.rep_id).where(Offer.interaction_id == bindparam("interaction_id"), Offer.state == OfferState.DECLINED)
)


def offered_rep_ids(db: Db, interaction_id: int) -> set[int]:
    """Reps who declined this caller or let their call ring out."""
    return {rep_id for (rep_id,) in _OFFERED_REPS.all(_connection(db), {"interaction_id": interaction_id})}


def find_rep(session: Session, name: str) -> Rep:
    rep = session.scalars(select(Rep).where(func.lower(Rep.name) == name.strip().lower())).one_or_none()
    if rep is None:
        raise UnknownRep(name)
    return rep


def list_reps(session: Session) -> Sequence[Rep]:
    return session.scalars(select(Rep).order_by(Rep.name)).all()


class PresenceRefused(ValueError):
    """A presence a rep cannot choose (reserved, on a call and wrap-up are set by calls, not by people)."""


#: What a person (the rep, an admin) may set.
CHOSEN_STATES = (RepState.AVAILABLE, RepState.AWAY, RepState.OFFLINE)


def set_rep_presence(session: Session, rep: Rep, state: RepState, *, now: datetime) -> bool:
    """A rep (or an admin) sets presence. Returns False when it takes effect only after the current call.

    Available restarts the idle clock and ends a wrap-up early. Away or offline asked for while ringing or talking
    on a Warmline call is kept for when the call ends, so a rep is never pulled off a live call.
    """
    if state not in CHOSEN_STATES:
        choices = ", ".join(choice.value for choice in CHOSEN_STATES)
        raise PresenceRefused(f"{state.value} is set by calls; choose one of {choices}")
    if rep.state in (RepState.RESERVED, RepState.ON_CALL) and rep.current_offer_id is not None:
        rep.after_call_state = None if state is RepState.AVAILABLE else state
        return False
    rep.after_call_state = None
    if rep.state == state:
        return True
    rep.state = state
    rep.state_changed_at = now
    rep.wrap_up_until = None
    if state is RepState.AVAILABLE:
        rep.available_since = now
        rep.missed_offers = 0
    return True


def upsert_rep(
    session: Session,
    *,
    name: str,
    phone_e164: str,
    departments: Sequence[str],
    languages: Sequence[str],
    levels: Mapping[str, int] | None = None,
) -> tuple[Rep, bool]:
    """Create or update a rep by name: phone, languages and skills (levels 1-10 per department; default kept, or 5
    for a new skill)."""
    rep = session.scalars(select(Rep).where(func.lower(Rep.name) == name.lower())).one_or_none()
    created = rep is None
    if rep is None:
        rep = Rep(name=name, phone=phone_e164, state=RepState.OFFLINE, state_changed_at=utcnow())
        session.add(rep)
    rep.phone = phone_e164
    rep.languages = list(languages)
    wanted = set(departments)
    rep.skills = [skill for skill in rep.skills if skill.department in wanted]
    have = {skill.department for skill in rep.skills}
    rep.skills.extend(RepSkill(department=department, level=5) for department in sorted(wanted - have))
    for skill in rep.skills:
        if levels and skill.department in levels:
            skill.level = levels[skill.department]
    session.flush()
    return rep, created


# --- callbacks -----------------------------------------------------------------------------------------------------


def create_callback(
    session: Session, interaction: Interaction, *, phone: str, from_number: str, now: datetime
) -> Callback:
    """The caller chose a callback: keep their place (idempotent: asking twice keeps the first request)."""
    existing = callback_for(session, interaction.id)
    if existing is not None:
        return existing
    callback = Callback(
        interaction_id=interaction.id,
        phone=phone,
        from_number=from_number,
        state=CallbackState.WAITING,
        requested_at=now,
        attempts=0,
    )
    session.add(callback)
    session.flush()
    return callback


def callback_for(session: Session, interaction_id: int) -> Callback | None:
    return session.scalars(select(Callback).where(Callback.interaction_id == interaction_id)).one_or_none()


def get_callback(session: Session, callback_id: int, *, for_update: bool = False) -> Callback | None:
    query = select(Callback).where(Callback.id == callback_id)
    return session.scalars(query.with_for_update() if for_update else query).one_or_none()


def start_callback_attempt(session: Session, callback: Callback, *, offer_id: int, now: datetime) -> None:
    callback.state = CallbackState.CALLING
    callback.attempts += 1
    callback.offer_id = offer_id
    callback.call_sid = None
    callback.next_attempt_at = None


_LIVE_OFFER_IDS = select(Offer.id).where(or_(*(Offer.state == state for state in LIVE_OFFER_STATES)))
_STALE_CALLBACK = and_(
    Callback.state == CallbackState.CALLING,
    or_(Callback.offer_id.is_(None), Callback.offer_id.not_in(_LIVE_OFFER_IDS)),
)


def stale_callbacks(session: Session) -> Sequence[Callback]:
    """Callbacks still "ringing the customer" whose rep reservation is gone: the status callback about that attempt
    was lost (the reservation expired meanwhile)."""
    return session.scalars(select(Callback).where(_STALE_CALLBACK).with_for_update(skip_locked=True)).all()


# --- housekeeping (voice.services.presence.Housekeeper) ---------------------------------------------------------------


@dataclass(frozen=True)
class OverflowRule:
    """Callers of ``department`` who joined before ``joined_before`` may go to reps of ``to`` too."""

    department: str
    to: tuple[str, ...]
    joined_before: datetime


def _matchable(now: datetime, overflow: Sequence[OverflowRule]) -> Any:
    """Someone in line (on hold, or a callback that is due) and an available rep who may take them and was not
    offered them already."""
    callback_due = and_(
        Interaction.status == InteractionStatus.CALLBACK,
        Callback.state == CallbackState.WAITING,
        or_(Callback.next_attempt_at.is_(None), Callback.next_attempt_at <= now),
    )
    skill_fits = [RepSkill.department == Interaction.department] + [
        and_(
            Interaction.department == rule.department,
            Interaction.enqueued_at <= rule.joined_before,
            RepSkill.department.in_(rule.to),
        )
        for rule in overflow
    ]
    offered = select(Offer.id).where(
        Offer.interaction_id == Interaction.id, Offer.rep_id == Rep.id, Offer.state == OfferState.DECLINED
    )
    return exists(
        select(Interaction.id)
        .outerjoin(Callback, Callback.interaction_id == Interaction.id)
        .join(RepSkill, or_(*skill_fits))
        .join(Rep, Rep.id == RepSkill.rep_id)
        .where(
            or_(Interaction.status == InteractionStatus.QUEUED, callback_due),
            Rep.state == RepState.AVAILABLE,
            ~exists(offered),
        )
    )


def _offers_of_ended_calls() -> Any:
    return (
        select(Offer)
        .join(Interaction, Interaction.id == Offer.interaction_id)
        .join(Rep, and_(Rep.id == Offer.rep_id, Rep.current_offer_id == Offer.id))
        .where(
            Interaction.status == InteractionStatus.ENDED,
            or_(*(Offer.state == state for state in LIVE_OFFER_STATES)),
        )
    )


def housekeeping_due(db: Db, *, now: datetime, overflow: Sequence[OverflowRule]) -> bool:
    """Whether a sweep has anything to do (read-only, so that an idle sweep never takes the write lock)."""
    expired = exists(select(Rep.id).where(Rep.state == RepState.RESERVED, Rep.reserved_until <= now))
    wrapped = exists(select(Rep.id).where(Rep.state == RepState.WRAP_UP, Rep.wrap_up_until <= now))
    ended = exists(_offers_of_ended_calls().with_only_columns(Offer.id))
    stale = exists(select(Callback.id).where(_STALE_CALLBACK))
    row = _connection(db).execute(select(or_(expired, wrapped, ended, stale, _matchable(now, overflow)))).scalar()
    return bool(row)


def offers_of_ended_calls(session: Session) -> Sequence[Offer]:
    """Offers still holding a rep although the interaction is closed (the Dial action about them was lost)."""
    return session.scalars(_offers_of_ended_calls()).unique().all()


def available_rep_ids(db: Db) -> list[int]:
    rows = _connection(db).execute(
        select(Rep.id).where(Rep.state == RepState.AVAILABLE).order_by(Rep.available_since.asc().nulls_first(), Rep.id)
    )
    return [rep_id for (rep_id,) in rows]


def long_running_calls(db: Db, *, answered_before: datetime) -> list[str]:
    """Calls a rep took before ``answered_before`` that are still open: worth asking Twilio whether they ended."""
    rows = _connection(db).execute(
        select(func.coalesce(Interaction.live_call_sid, Interaction.call_sid)).where(
            Interaction.status == InteractionStatus.CONNECTED, Interaction.answered_at < answered_before
        )
    )
    return [call_sid for (call_sid,) in rows]


def rep_by_token_digest(session: Session, digest: str) -> Rep | None:
    return session.scalars(select(Rep).where(Rep.api_token_hash == digest)).one_or_none()


# --- rep-to-rep hand-offs -----------------------------------------------------------------------------------------


def active_handoff(session: Session, interaction_id: int) -> Handoff | None:
    """The hand-off of this call still under way (moving, dialing or consulting), if any."""
    return session.scalars(
        select(Handoff)
        .where(
            Handoff.interaction_id == interaction_id,
            or_(*(Handoff.state == state for state in ACTIVE_HANDOFF_STATES)),
        )
        .order_by(Handoff.id.desc())
        .limit(1)
        .with_for_update()
    ).one_or_none()


def cancel_handoff(handoff: Handoff, *, reason: str, now: datetime) -> None:
    """End a hand-off that can no longer happen (its caller is gone). Its offers are settled by whoever calls this."""
    handoff.state = HandoffState.CANCELLED
    handoff.ended_at = now
    handoff.failure = reason[:200]


def get_handoff(session: Session, handoff_id: int, *, for_update: bool = False) -> Handoff | None:
    query = select(Handoff).where(Handoff.id == handoff_id)
    return session.scalars(query.with_for_update() if for_update else query).one_or_none()


def handoffs_of_interactions(session: Session, interaction_ids: Sequence[int]) -> dict[int, list[Handoff]]:
    """The hand-offs of many interactions (with both reps loaded), oldest first per interaction."""
    found: dict[int, list[Handoff]] = {}
    if not interaction_ids:
        return found
    query = (
        select(Handoff)
        .where(Handoff.interaction_id.in_(list(interaction_ids)))
        .options(joinedload(Handoff.from_rep), joinedload(Handoff.to_rep))
        .order_by(Handoff.interaction_id, Handoff.id)
    )
    for handoff in session.scalars(query).unique():
        found.setdefault(handoff.interaction_id, []).append(handoff)
    return found


def handoffs_of(session: Session, interaction_id: int) -> Sequence[Handoff]:
    return session.scalars(select(Handoff).where(Handoff.interaction_id == interaction_id).order_by(Handoff.id)).all()


def reserve_named_rep(db: Db, rep_id: int, *, now: datetime, until: datetime) -> RepRow | None:
    """Reserve one particular rep if they are available (a transfer to a named colleague)."""
    row = _TAKE_REP.first(_connection(db), {"rep_id": rep_id, "now": now, "until": until})
    return RepRow(*row) if row else None


# --- follow-up tasks -----------------------------------------------------------------------------------------------


def file_task(
    session: Session, *, interaction: Interaction, kind: str, note: str, due_at: datetime | None = None
) -> Task:
    """A follow-up on the customer's record (a voicemail to return, a callback to make)."""
    task = Task(
        customer_id=interaction.customer_id,
        interaction_id=interaction.id,
        kind=kind,
        department=interaction.department,
        note=note,
        state=TaskState.OPEN,
        created_at=utcnow(),
        due_at=due_at,
    )
    session.add(task)
    session.flush()
    return task


def tasks_for_interaction(session: Session, interaction_id: int) -> Sequence[Task]:
    return session.scalars(select(Task).where(Task.interaction_id == interaction_id).order_by(Task.id)).all()


def record_transcript(
    session: Session,
    call_sid: str,
    *,
    text: str | None,
    engine: str,
    confidence: float | None,
    error: str | None,
) -> None:
    """Attach a voicemail's transcript (or why there is none) to the interaction and its open voicemail task."""
    interaction = require_interaction(session, call_sid, for_update=True)
    interaction.transcript = text
    interaction.transcript_engine = engine
    interaction.transcript_confidence = confidence
    interaction.transcript_error = error
    for task in tasks_for_interaction(session, interaction.id):
        if task.kind == "voicemail" and task.state is TaskState.OPEN:
            heard = f'Transcript ({engine}): "{text}"' if text else f"No transcript ({error}); listen to the recording."
            task.note = f"{task.note}\n{heard}"
