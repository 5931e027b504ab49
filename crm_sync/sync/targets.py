"""What every CRM adapter offers the delivery worker (the adapters: ``hubspot``, ``salesforce``, ``webhook``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from crm_sync.sync.records import CallRecord, TaskRecord


@dataclass(frozen=True)
class RemoteContact:
    """A contact (or lead) as a CRM has it."""

    remote_id: str
    kind: str
    phone: str | None  # E.164 when it parses
    name: str | None
    email: str | None
    modified_at: datetime | None


@dataclass(frozen=True)
class Delivery:
    """What a CRM answered to a record it took: the record's id there, and the contact it was filed on."""

    remote_id: str | None
    contact: RemoteContact | None = None


class Target(Protocol):
    """One CRM. Every write is an upsert keyed on the record's key (the CallSid), so sending the same record twice,
    after a timeout for instance, updates it and never makes a second one. Raises ``crm_sync.sync.failures``'
    kinds: ``TryLater``, ``Rejected``, ``TargetRefused``."""

    name: str
    #: Whether contacts can be pulled from it (the generic webhook has none).
    pulls: bool

    def push_call(self, record: CallRecord, contact: RemoteContact | None, *, remote_id: str | None) -> Delivery:
        """File the call on ``contact`` (known from an earlier call or a pull), else on the contact found (or, if
        configured, created) by the customer's number. ``remote_id``: the record's id there, when known."""
        ...

    def push_task(self, record: TaskRecord, contact: RemoteContact | None, *, remote_id: str | None) -> Delivery: ...

    def changed_contacts(self, since: datetime | None) -> Iterator[RemoteContact]:
        """Contacts changed after ``since`` (all of them when None), oldest change first."""
        ...

    def close(self) -> None: ...
