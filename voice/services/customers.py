"""The customer view: find a customer by name or number, see everything that happened with them on one timeline
(calls with their wrap-ups, voicemails, tasks), and keep their contact details and notes right.

Reps look customers up to help them, so every rep may search and read every record; every change is audited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from crm_sync.errors import InvalidInput, UnknownCustomer
from crm_sync.models import Customer, Interaction, Task
from crm_sync.phones import InvalidPhoneNumber, to_e164
from crm_sync.queries import customers
from voice.domain.actor import Actor
from voice.services.audit import audit
from voice.services.context import Service

SEARCH_LIMIT = 25
TIMELINE_LIMIT = 200


@dataclass(frozen=True)
class CustomerSummary:
    id: int
    name: str
    phone: str
    email: str | None
    tier: str


@dataclass(frozen=True)
class TimelineEntry:
    when: datetime
    kind: str  # call | voicemail | task
    title: str
    detail: str | None
    call_sid: str | None = None
    recording_url: str | None = None
    task_id: int | None = None
    open: bool = False


@dataclass(frozen=True)
class CustomerRecord:
    id: int
    name: str
    phone: str
    email: str | None
    tier: str
    notes: str | None
    custom_fields: dict[str, str]
    timeline: tuple[TimelineEntry, ...]


class CustomerService(Service):
    def search(self, actor: Actor, query: str) -> list[CustomerSummary]:
        """Customers whose name contains the words, or whose number contains the digits, given."""
        words = query.strip()
        if not words:
            return []
        digits = re.sub(r"\D", "", words)
        with self._store.unit_of_work(read_only=True) as session:
            conditions = [func.lower(Customer.name).contains(words.lower())]
            if len(digits) >= 3:
                conditions.append(Customer.phone.contains(digits))
            found = session.scalars(
                select(Customer).where(or_(*conditions)).order_by(Customer.name).limit(SEARCH_LIMIT)
            ).all()
            return [CustomerSummary(c.id, c.name, c.phone, c.email, c.tier) for c in found]

    def record(self, actor: Actor, customer_id: int) -> CustomerRecord:
        with self._store.unit_of_work(read_only=True) as session:
            customer = _require(session, customer_id)
            return CustomerRecord(
                id=customer.id,
                name=customer.name,
                phone=customer.phone,
                email=customer.email,
                tier=customer.tier,
                notes=customer.notes,
                custom_fields={str(k): str(v) for k, v in (customer.custom_fields or {}).items()},
                timeline=tuple(self._timeline(session, customer)),
            )

    def update(
        self,
        actor: Actor,
        customer_id: int,
        *,
        name: str,
        phone: str,
        email: str | None,
        tier: str,
        notes: str | None,
    ) -> CustomerRecord:
        """New contact details and notes. The number must be a real one, and no other customer's."""
        name, tier = name.strip(), tier.strip() or "standard"
        if not name:
            raise InvalidInput("name: a customer needs a name")
        try:
            phone_e164 = to_e164(phone, default_region=self._settings.default_region)
        except InvalidPhoneNumber as exc:
            raise InvalidInput(f"phone: {exc}") from exc
        with self._store.unit_of_work() as session:
            customer = _require(session, customer_id, lock=True)
            other = customers.find_customer_by_phone(session, phone_e164)
            if other is not None and other.id != customer.id:
                raise InvalidInput(f"phone: {phone_e164} is {other.name}'s number")
            changed = {
                field: new
                for field, old, new in (
                    ("name", customer.name, name),
                    ("phone", customer.phone, phone_e164),
                    ("email", customer.email, (email or "").strip() or None),
                    ("tier", customer.tier, tier),
                    ("notes", customer.notes, (notes or "").strip() or None),
                )
                if old != new
            }
            for field, value in changed.items():
                setattr(customer, field, value)
            if changed:
                audit(session, actor, "customer updated", f"customer:{customer.id}", fields=sorted(changed))
        return self.record(actor, customer_id)

    def _timeline(self, session: Session, customer: Customer) -> list[TimelineEntry]:
        entries: list[TimelineEntry] = []
        calls = session.scalars(
            select(Interaction)
            .where(Interaction.customer_id == customer.id)
            .order_by(Interaction.started_at.desc())
            .limit(TIMELINE_LIMIT)
        ).all()
        for call in calls:
            flow = self._flow_of(call)
            department = flow.department_name(call.corrected_department or call.routed_department)
            outcome = call.outcome.value if call.outcome else call.status.value.replace("_", " ")
            parts = [f"In their words: {call.issue_text}" if call.issue_text else None]
            if call.disposition:
                parts.append(f"Disposition: {call.disposition}")
            if call.wrap_up_notes:
                parts.append(f"Notes: {call.wrap_up_notes}")
            if call.transcript:
                parts.append(f'Voicemail: "{call.transcript}"')
            title = f"Call about {department}: {outcome}" + (f", with {call.rep.name}" if call.rep else "")
            entries.append(
                TimelineEntry(
                    when=call.started_at,
                    kind="voicemail" if call.recording_url else "call",
                    title=title,
                    detail="\n".join(part for part in parts if part) or None,
                    call_sid=call.call_sid,
                    recording_url=call.recording_url,
                )
            )
        tasks = session.scalars(
            select(Task).where(Task.customer_id == customer.id).order_by(Task.created_at.desc()).limit(TIMELINE_LIMIT)
        ).all()
        for task in tasks:
            state = "open" if task.open else f"closed {task.closed_at:%Y-%m-%d %H:%M}" if task.closed_at else "closed"
            detail = task.note + (f"\nClosed: {task.close_note}" if task.close_note else "")
            entries.append(
                TimelineEntry(
                    when=task.created_at,
                    kind="task",
                    title=f"Task: {task.kind.replace('-', ' ')} ({state})",
                    detail=detail,
                    task_id=task.id,
                    open=task.open,
                )
            )
        return sorted(entries, key=lambda entry: entry.when, reverse=True)


def _require(session: Session, customer_id: int, *, lock: bool = False) -> Customer:
    customer = session.get(Customer, customer_id, with_for_update=lock)
    if customer is None:
        raise UnknownCustomer(f"customer {customer_id}")
    return customer
