"""Pulling contacts from a CRM into the local store, incrementally (by the CRM's last-modified time), so that the
webhooks keep looking callers up locally and never wait on a remote API.

The rule when both sides changed: a pulled contact brings its name and email (and its number, which is how callers
are matched); Warmline's own fields (tier, notes, custom fields) are never touched. When the local customer was also
edited since the contact was last pulled, ``crm_sync.conflicts`` decides: ``newest`` (the default) keeps whichever
side changed last, ``crm`` always takes the CRM's values, ``local`` always keeps ours; each conflict is logged.
A contact whose number matches no customer becomes one (tier ``standard``), so its callers are greeted by name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from crm_sync.db import Store
from crm_sync.models import CrmContact, Customer, utcnow
from crm_sync.phones import mask_phone
from crm_sync.queries import sync as sync_queries
from crm_sync.queries.customers import find_customer_by_phone
from crm_sync.sync.settings import Behaviour
from crm_sync.sync.targets import RemoteContact, Target

log = logging.getLogger(__name__)

#: Contacts written per transaction while pulling.
_BATCH = 200


@dataclass
class PullReport:
    target: str
    seen: int = 0
    created: int = 0
    updated: int = 0
    conflicts: int = 0
    until: datetime | None = None


def pull_contacts(store: Store, target: Target, behaviour: Behaviour, *, full: bool = False) -> PullReport:
    """Bring in the contacts ``target`` changed since the last pull (all of them with ``full``). Raises the
    adapter's failures (``crm_sync.sync.failures``); what was pulled before a failure stays, and the mark only moves
    once a pull has gone through."""
    report = PullReport(target=target.name)
    with store.unit_of_work() as session:
        since = None if full else sync_queries.target_state(session, target.name).pulled_until
    report.until = since
    batch: list[RemoteContact] = []
    for contact in target.changed_contacts(since):
        batch.append(contact)
        if contact.modified_at is not None and (report.until is None or contact.modified_at > report.until):
            report.until = contact.modified_at
        if len(batch) >= _BATCH:
            _apply(store, target.name, batch, behaviour, report)
            batch = []
    _apply(store, target.name, batch, behaviour, report)
    with store.unit_of_work() as session:
        sync_queries.target_state(session, target.name, for_update=True).pulled(report.until, now=utcnow())
    return report


def _apply(
    store: Store, name: str, contacts: Sequence[RemoteContact], behaviour: Behaviour, report: PullReport
) -> None:
    if not contacts:
        return
    with store.unit_of_work() as session:
        for contact in contacts:
            _apply_one(session, name, contact, behaviour, report)
    report.seen += len(contacts)


def _apply_one(session: Session, name: str, contact: RemoteContact, behaviour: Behaviour, report: PullReport) -> None:
    now = utcnow()
    link = sync_queries.contact_by_remote_id(session, name, contact.remote_id)
    customer = find_customer_by_phone(session, contact.phone) if contact.phone else None
    if customer is None and contact.phone:
        customer = Customer(
            name=contact.name or contact.phone,
            phone=contact.phone,
            email=contact.email,
            tier="standard",
            custom_fields={},
        )
        session.add(customer)
        report.created += 1
    elif (
        customer is not None
        and _differs(customer, contact)
        and _crm_wins(customer, contact, link, behaviour.conflicts, name, report)
    ):
        customer.name = contact.name or customer.name
        customer.email = contact.email or customer.email
        report.updated += 1
    if link is None:
        link = CrmContact(target=name, remote_id=contact.remote_id, kind=contact.kind)
        session.add(link)
    session.flush()
    link.seen(
        kind=contact.kind,
        phone=contact.phone,
        name=contact.name,
        email=contact.email,
        modified_at=contact.modified_at,
        # Not before the customer's own last write (this very one): only later local edits count as changes.
        now=max(now, customer.updated_at) if customer is not None else now,
    )
    link.link_customer(customer.id if customer is not None else None)


def _differs(customer: Customer, contact: RemoteContact) -> bool:
    return bool(contact.name and contact.name != customer.name) or bool(
        contact.email and contact.email != customer.email
    )


def _crm_wins(
    customer: Customer,
    contact: RemoteContact,
    link: CrmContact | None,
    rule: str,
    name: str,
    report: PullReport,
) -> bool:
    """Whether the CRM's values replace the customer's (see the module's docstring for the rule)."""
    changed_here = link is None or customer.updated_at > link.seen_at
    if not changed_here:
        return True  # only the CRM changed it: take it
    report.conflicts += 1
    if rule == "crm":
        crm_wins = True
    elif rule == "local":
        crm_wins = False
    else:
        crm_wins = contact.modified_at is not None and contact.modified_at >= customer.updated_at
    log.info(
        "%s contact %s and customer %s (%s) both changed since the last pull: kept %s's (%s, rule %r)",
        name,
        contact.remote_id,
        customer.id,
        mask_phone(customer.phone),
        name if crm_wins else "Warmline",
        contact.name if crm_wins else customer.name,
        rule,
    )
    return crm_wins
