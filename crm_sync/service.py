"""The one door to the CRM store: every query and write the rest of Warmline makes goes through here.

Functions take the caller's ``Session`` (one unit of work, committed by ``Store.unit_of_work``) so that a webhook can
read, decide and write in a single transaction. Nothing here knows about Flask or Twilio.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from crm_sync.models import (
    Customer,
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


def last_contact(session: Session, customer_id: int, *, before_interaction_id: int) -> PastContact | None:
    """The customer's previous call (the one before this one), for the whisper."""
    row = session.execute(
        select(Interaction.started_at, Interaction.department, Interaction.issue_text)
        .where(Interaction.customer_id == customer_id, Interaction.id < before_interaction_id)
        .order_by(Interaction.id.desc())
        .limit(1)
    ).first()
    return PastContact(row.started_at, row.department, row.issue_text) if row else None


#: The hot-path functions take a Session (inside a unit of work) or, faster, a Connection (``Store.transaction``).
Db = Session | Connection


def _connection(db: Db) -> Connection:
    return db.connection() if isinstance(db, Session) else db


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


_LAST_CONTACT = select(func.max(Interaction.started_at)).where(Interaction.customer_id == Customer.id).scalar_subquery()
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


def caller_view(db: Db, phone_e164: str) -> CallerView | None:
    row = _connection(db).execute(_CALLER_BY_PHONE, {"phone": phone_e164}).first()
    if row is None:
        return None
    last = row.last_contact_at
    if isinstance(last, str):  # SQLite returns an aggregate of a typed column untyped
        last = datetime.fromisoformat(last)
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return CallerView(row.id, row.name, row.tier, row.custom_fields or {}, last, bool(row.open_tasks))


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
    exists().where(Offer.interaction_id == Interaction.id).label("offered"),
)


_CALL_BY_SID = select(*_CALL_COLUMNS).where(Interaction.call_sid == bindparam("sid"))
_CALL_BY_SID_LOCKED = _CALL_BY_SID.with_for_update()


def call_row(db: Db, call_sid: str, *, for_update: bool = False) -> CallRow | None:
    statement = _CALL_BY_SID_LOCKED if for_update else _CALL_BY_SID
    row = _connection(db).execute(statement, {"sid": call_sid}).first()
    return CallRow(*row) if row else None


_OPEN_CALL = {
    name: dialect_insert(Interaction).on_conflict_do_nothing(index_elements=["call_sid"]).returning(Interaction.id)
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
) -> tuple[CallRow, bool]:
    """Open the interaction for a new call. A retried webhook (same CallSid) gets the existing row back.

    Returns (row, created).
    """
    connection = _connection(db)
    values = {
        "call_sid": call_sid,
        "caller_number": caller_number,
        "customer_id": customer_id,
        "flow_name": flow_name,
        "flow_version": flow_version,
        "flow_state": flow_state,
        "status": InteractionStatus.IN_FLOW,
        "started_at": now,
        "hold_seconds": 0,
        "survey": {},
    }
    new_id = connection.execute(_OPEN_CALL[connection.dialect.name], values).scalar_one_or_none()
    if new_id is None:
        existing = call_row(db, call_sid, for_update=True)
        assert existing is not None
        return existing, False
    return CallRow(new_id, call_sid, InteractionStatus.IN_FLOW, flow_name, flow_version, flow_state, None, None), True


_UPDATE_CALL = update(Interaction).where(Interaction.id == bindparam("interaction_id_"))


def update_interaction(db: Db, interaction_id: int, **values: Any) -> None:
    """Set some columns of one interaction (the SET clause follows the keys given)."""
    _connection(db).execute(_UPDATE_CALL, {"interaction_id_": interaction_id, **values})


_INSERT_OFFER = insert(Offer).returning(Offer.id)


def insert_offer(db: Db, *, interaction_id: int, rep_id: int, state: OfferState, now: datetime) -> int:
    offer_id: int = (
        _connection(db)
        .execute(_INSERT_OFFER, {"interaction_id": interaction_id, "rep_id": rep_id, "state": state, "created_at": now})
        .scalar_one()
    )
    return offer_id


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
    query = select(Interaction).where(Interaction.call_sid == call_sid)
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


def queue_position(session: Session, interaction: Interaction) -> int:
    """1-based place in the department's line (callers waiting or being pulled who queued earlier)."""
    if interaction.enqueued_at is None:
        return 1
    ahead = session.scalar(
        select(func.count())
        .select_from(Interaction)
        .where(
            Interaction.status.in_([InteractionStatus.QUEUED, InteractionStatus.OFFERING]),
            Interaction.department == interaction.department,
            Interaction.enqueued_at.is_not(None),
            Interaction.enqueued_at < interaction.enqueued_at,
        )
    )
    return int(ahead or 0) + 1


def lock_queued_interaction(session: Session, interaction_id: int) -> bool:
    """Lock a caller who is still waiting (no rep being offered), unless another transaction holds them."""
    locked = session.execute(
        select(Interaction.id)
        .where(Interaction.id == interaction_id, Interaction.status == InteractionStatus.QUEUED)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    return locked is not None


_WAITING_IN = (
    select(Interaction.id)
    .where(Interaction.status == InteractionStatus.QUEUED, Interaction.department == bindparam("department"))
    .limit(1)
)


def has_waiting_callers(db: Db, department: str) -> bool:
    return _connection(db).execute(_WAITING_IN, {"department": department}).first() is not None


@dataclass(frozen=True)
class DepartmentProbe:
    """Where a department stands for one more caller, read in one statement."""

    #: Callers are already waiting in its queue (they go first).
    waiting: bool
    #: A rep with the skill is available now (not counting the excluded).
    free: bool
    #: A rep with the skill is logged in — free, ringing or talking (not counting the excluded): worth queueing for.
    on_duty: bool


def _skilled_reps(states: Sequence[RepState], *, excluding: bool) -> Any:
    query = (
        select(Rep.id)
        .join(RepSkill, RepSkill.rep_id == Rep.id)
        # Equalities, not IN: a literal IN list is an "expanding" parameter, re-rendered on every execution.
        .where(RepSkill.department == bindparam("department"), or_(*(Rep.state == state for state in states)))
    )
    return query.where(Rep.id.not_in(bindparam("exclude", expanding=True))) if excluding else query


_ON_DUTY_STATES = (RepState.AVAILABLE, RepState.RESERVED, RepState.ON_CALL)
# Variants, not optional clauses: an "expanding" IN re-renders its SQL on every execution, so it is only used when
# someone is actually excluded (a caller some rep already let ring out).
_PROBES = {
    excluding: select(
        exists(_WAITING_IN).label("waiting"),
        exists(_skilled_reps([RepState.AVAILABLE], excluding=excluding)).label("free"),
        exists(_skilled_reps(_ON_DUTY_STATES, excluding=excluding)).label("on_duty"),
    )
    for excluding in (False, True)
}


def probe_department(db: Db, department: str, *, exclude_rep_ids: Collection[int] = ()) -> DepartmentProbe:
    """Waiting callers, a free rep, anyone on duty: the three facts a transfer decides on, in one round trip."""
    params: dict[str, Any] = {"department": department}
    if exclude_rep_ids:
        params["exclude"] = list(exclude_rep_ids)
    row = _connection(db).execute(_PROBES[bool(exclude_rep_ids)], params).one()
    return DepartmentProbe(waiting=bool(row.waiting), free=bool(row.free), on_duty=bool(row.on_duty))


def next_waiting_caller_for(session: Session, rep: Rep) -> Interaction | None:
    """The longest-waiting queued caller this rep can take and has not already turned down."""
    departments = [skill.department for skill in rep.skills]
    if not departments:
        return None
    already_offered = select(Offer.interaction_id).where(Offer.rep_id == rep.id)
    return (
        session.scalars(
            select(Interaction)
            .where(
                Interaction.status == InteractionStatus.QUEUED,
                Interaction.department.in_(departments),
                Interaction.id.not_in(already_offered),
            )
            .order_by(Interaction.enqueued_at, Interaction.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=Interaction)
        )
        .unique()
        .one_or_none()
    )


def iter_interactions(session: Session) -> Iterator[Interaction]:
    """Every interaction, oldest first, streamed in batches (an export must not hold the whole table in memory).

    Only many-to-one relations are joined, so rows need no de-duplication (which ``yield_per`` would forbid).
    """
    yield from session.scalars(select(Interaction).order_by(Interaction.id).execution_options(yield_per=500))


# --- reps and offers -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepRow:
    """A rep just reserved: who to dial."""

    id: int
    phone: str


# Available reps with a skill, longest idle first; `exclude` and `only` narrow it (an empty `exclude` excludes
# nobody, a null `only` allows everyone). Built once: this runs on every transfer.
_FREE_REPS = (
    select(Rep.id)
    .join(RepSkill, RepSkill.rep_id == Rep.id)
    .where(Rep.state == RepState.AVAILABLE, RepSkill.department == bindparam("department"))
    .order_by(Rep.available_since.asc().nulls_first(), Rep.id)
    .limit(1)
)
# Variants rather than optional clauses: an "expanding" IN re-renders its SQL on every execution, so it is only
# used when someone is actually excluded.
_FREE_REP_VARIANTS = {
    (excluding, only): (
        _FREE_REPS.where(*([Rep.id.not_in(bindparam("exclude", expanding=True))] if excluding else [])).where(
            *([Rep.id == bindparam("only")] if only else [])
        )
    )
    for excluding in (False, True)
    for only in (False, True)
}
_FREE_REP_LOCKED_VARIANTS = {
    key: statement.with_for_update(skip_locked=True, of=Rep) for key, statement in _FREE_REP_VARIANTS.items()
}
_TAKE_REP = (
    update(Rep)
    .where(Rep.id == bindparam("rep_id"), Rep.state == RepState.AVAILABLE)
    .values(state=RepState.RESERVED, state_changed_at=bindparam("now"))
    .returning(Rep.id, Rep.phone)
)


def _free_rep_query(
    department: str, exclude_rep_ids: Collection[int], only_rep_id: int | None, *, locked: bool
) -> tuple[Any, dict[str, Any]]:
    key = (bool(exclude_rep_ids), only_rep_id is not None)
    params: dict[str, Any] = {"department": department}
    if exclude_rep_ids:
        params["exclude"] = list(exclude_rep_ids)
    if only_rep_id is not None:
        params["only"] = only_rep_id
    return (_FREE_REP_LOCKED_VARIANTS if locked else _FREE_REP_VARIANTS)[key], params


def free_rep_exists(db: Db, *, department: str, exclude_rep_ids: Collection[int]) -> bool:
    """A plain read, no locks: cheap enough for every turn of every hold loop."""
    statement, params = _free_rep_query(department, exclude_rep_ids, None, locked=False)
    return _connection(db).execute(statement, params).first() is not None


def reserve_rep(
    db: Db,
    *,
    department: str,
    exclude_rep_ids: Collection[int],
    now: datetime,
    only_rep_id: int | None = None,
) -> RepRow | None:
    """Atomically take the longest-idle available rep with the department's skill, or None.

    PostgreSQL: ``FOR UPDATE OF reps SKIP LOCKED`` lets concurrent workers pass over a rep another transaction is
    taking, and the guarded UPDATE (state must still be available) makes a double reservation impossible.
    SQLite: transactions are serialised by BEGIN IMMEDIATE (see crm_sync.db), so the same statements are atomic.
    """
    connection = _connection(db)
    statement, params = _free_rep_query(department, exclude_rep_ids, only_rep_id, locked=True)
    rep_id = connection.execute(statement, params).scalar_one_or_none()
    if rep_id is None:
        return None
    taken = connection.execute(_TAKE_REP, {"rep_id": rep_id, "now": now}).first()
    return RepRow(taken.id, taken.phone) if taken else None


def release_rep(session: Session, rep_id: int, *, now: datetime) -> bool:
    """A reserved or busy rep becomes available again (idle from now). Returns whether anything changed."""
    released = session.execute(
        update(Rep)
        .where(Rep.id == rep_id, Rep.state.in_([RepState.RESERVED, RepState.ON_CALL]))
        .values(state=RepState.AVAILABLE, state_changed_at=now, available_since=now)
        .returning(Rep.id)
    ).scalar_one_or_none()
    if released is not None:
        session.expire_all()
    return released is not None


def mark_rep_on_call(session: Session, rep_id: int, *, now: datetime) -> None:
    session.execute(
        update(Rep)
        .where(Rep.id == rep_id, Rep.state == RepState.RESERVED)
        .values(state=RepState.ON_CALL, state_changed_at=now)
    )


def get_offer(session: Session, offer_id: int) -> Offer | None:
    return session.get(Offer, offer_id)


def open_offer(session: Session, interaction_id: int) -> Offer | None:
    """The interaction's offer still in play (pending, ringing or accepted), if any."""
    return session.scalars(
        select(Offer)
        .where(
            Offer.interaction_id == interaction_id,
            Offer.state.in_([OfferState.PENDING, OfferState.RINGING, OfferState.ACCEPTED]),
        )
        .order_by(Offer.id.desc())
        .limit(1)
    ).one_or_none()


_OFFERED_REPS = select(Offer.rep_id).where(Offer.interaction_id == bindparam("interaction_id"))


def offered_rep_ids(db: Db, interaction_id: int) -> set[int]:
    return set(_connection(db).execute(_OFFERED_REPS, {"interaction_id": interaction_id}).scalars())


_ON_DUTY_ANYONE = (
    select(Rep.id)
    .join(RepSkill, RepSkill.rep_id == Rep.id)
    .where(
        RepSkill.department == bindparam("department"),
        Rep.state.in_([RepState.AVAILABLE, RepState.RESERVED, RepState.ON_CALL]),
    )
    .limit(1)
)
# An "expanding" IN re-renders its SQL on every execution: keep it out of the common case (nobody excluded).
_ON_DUTY_EXCEPT = _ON_DUTY_ANYONE.where(Rep.id.not_in(bindparam("exclude", expanding=True)))


def department_has_reps_on_duty(db: Db, department: str, *, exclude_rep_ids: Collection[int] = ()) -> bool:
    """Someone with the skill is logged in (free, ringing or talking) and not excluded: worth queueing for."""
    if exclude_rep_ids:
        statement, params = _ON_DUTY_EXCEPT, {"department": department, "exclude": list(exclude_rep_ids)}
    else:
        statement, params = _ON_DUTY_ANYONE, {"department": department}
    return _connection(db).execute(statement, params).first() is not None


def find_rep(session: Session, name: str) -> Rep:
    rep = session.scalars(select(Rep).where(func.lower(Rep.name) == name.strip().lower())).one_or_none()
    if rep is None:
        raise UnknownRep(name)
    return rep


def list_reps(session: Session) -> Sequence[Rep]:
    return session.scalars(select(Rep).order_by(Rep.name)).all()


def set_rep_presence(session: Session, rep: Rep, state: RepState, *, now: datetime) -> None:
    """A rep (or an admin) sets presence. Becoming available restarts the idle clock."""
    if rep.state == state:
        return
    rep.state = state
    rep.state_changed_at = now
    if state is RepState.AVAILABLE:
        rep.available_since = now


def upsert_rep(
    session: Session, *, name: str, phone_e164: str, departments: Sequence[str], languages: Sequence[str]
) -> tuple[Rep, bool]:
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
    rep.skills.extend(RepSkill(department=department) for department in sorted(wanted - have))
    session.flush()
    return rep, created


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
