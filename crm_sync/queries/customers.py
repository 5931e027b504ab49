"""Customers: lookups by number (the first thing every call does), imports, and what a caller's history says."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, case, func, literal_column, select
from sqlalchemy.orm import Session

from crm_sync.models import Customer, Interaction, Task, TaskState


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
# A number's calls, whoever the CRM says made them: a caller it does not know who rang before is a repeat caller
# too (cut off, or calling back about the same thing). Not this call itself, as above.
_LAST_CALL_FROM = (
    select(func.max(Interaction.started_at))
    .where(Interaction.caller_number == bindparam("phone"), Interaction.call_sid != bindparam("call_sid"))
    .scalar_subquery()
)
# One row whether or not the CRM knows the number: the customer's columns (NULL when it does not) beside the
# number's own last call. Every call starts with this lookup, and one statement costs half of two (SQLAlchemy's
# execution path, not SQLite, is most of a small statement's cost: bench/RESULTS.md).
_ONE_ROW = select(literal_column("1").label("one")).subquery()
_CALLER_BY_PHONE = (
    select(
        Customer.id,
        Customer.name,
        Customer.tier,
        Customer.custom_fields,
        _LAST_CONTACT.label("last_contact_at"),
        _OPEN_TASKS.label("open_tasks"),
        # Only for a number the CRM does not know (CASE evaluates it only then): a customer's last contact comes with
        # the record, by the (customer, started) index, and a busy customer's number would otherwise scan all its calls.
        case((Customer.id.is_(None), _LAST_CALL_FROM)).label("last_call_from_number"),
    )
    .select_from(_ONE_ROW)
    .outerjoin(Customer, Customer.phone == bindparam("phone"))
)


@dataclass(frozen=True)
class CallerLookup:
    """Who is calling from a number: the customer (None: the CRM does not know it), and for a number it does not
    know, when the number last called; neither counts the call being looked up for."""

    customer: CallerView | None
    last_call_from_number: datetime | None


def look_up_caller(session: Session, phone_e164: str, *, call_sid: str = "") -> CallerLookup:
    """The customer with this number, if any, else the number's last call; neither counts the call ``call_sid``."""
    # Core on the unit of work's connection (this runs on every call): the ORM's execute path costs more than the
    # query itself.
    row = session.connection().execute(_CALLER_BY_PHONE, {"phone": phone_e164, "call_sid": call_sid}).one()
    customer_id, name, tier, custom_fields, last, open_tasks, last_from_number = row
    customer = None
    if customer_id is not None:
        customer = CallerView(customer_id, name, tier, custom_fields or {}, _aggregate_time(last), bool(open_tasks))
    return CallerLookup(customer, _aggregate_time(last_from_number))


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


def _aggregate_time(value: datetime | str | None) -> datetime | None:
    if isinstance(value, str):  # SQLite returns an aggregate of a typed column untyped
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
