"""The delivery worker: claims outbox rows, sends each record as it is now, and records what happened.

Any number of workers (threads, processes, hosts) may run against one database: a claim locks the rows it takes
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer) and leases them for ``crm_sync.lease`` seconds,
so a worker that dies mid-send only delays its rows. Only the oldest open row of a record can be claimed, so one
record is never sent to one CRM by two workers at once; every write is an upsert keyed on the CallSid, so a send
repeated after a timeout or a lost lease changes nothing.

Failures, by kind (``crm_sync.sync.failures``): a passing one (429, 5xx, timeout, connection) retries the row after
full-jitter backoff, or after the CRM's ``Retry-After`` (which also pauses every row of that CRM); ``down_after``
of them in a row and the CRM counts as down: its rows wait uncharged, and one row probes it now and then. A record
the CRM rejects is parked with the CRM's words; a CRM that refuses the credentials is reported once (its state row
says so for `status`) and its rows wait. ``max_attempts`` failures charged to one record park it. Parked rows wait
for `warmline crm sync retry`: nothing is ever dropped.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from crm_sync.db import Store
from crm_sync.models import CrmContact, OutboxState, SyncSubject, utcnow
from crm_sync.queries import sync as sync_queries
from crm_sync.sync.connect import build_targets
from crm_sync.sync.failures import Rejected, TargetRefused, TryLater, full_jitter
from crm_sync.sync.pull import PullReport, pull_contacts
from crm_sync.sync.records import CallRecord, TaskRecord, call_record, task_record
from crm_sync.sync.settings import SyncSettings
from crm_sync.sync.targets import Delivery, RemoteContact, Target

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one :meth:`DeliveryWorker.run_once` did."""

    claimed: int = 0
    delivered: int = 0
    covered: int = 0  # other rows of the same records, delivered by those sends
    retried: int = 0
    parked: int = 0
    released: int = 0  # given back unsent (their CRM went down or refused us meanwhile)


@dataclass
class _Health:
    """This worker's view of one CRM."""

    failures_in_row: int = 0
    pauses: int = 0
    paused_until: datetime | None = None
    refused: bool = False

    def paused(self, now: datetime) -> bool:
        return self.paused_until is not None and now < self.paused_until


@dataclass(frozen=True)
class _Claimed:
    row_id: int
    target: str


@dataclass
class _Snapshot:
    record: CallRecord | TaskRecord
    contact: RemoteContact | None
    remote_id: str | None
    later_rows: list[int] = field(default_factory=list)


class DeliveryWorker:
    def __init__(
        self,
        store: Store,
        settings: SyncSettings,
        *,
        targets: dict[str, Target] | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._behaviour = settings.behaviour
        self._targets = build_targets(settings, sleep=sleep) if targets is None else targets
        self._clock = clock
        self._rng = rng or random.Random()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._health = {target: _Health() for target in self._targets}
        self._last_pull: dict[str, float] = {}

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def run_once(self) -> PassReport:
        """Claim the rows due now (up to ``batch_size``) and deliver them. Returns what happened."""
        report = PassReport()
        now = self._clock()
        self._notice_refusals()
        ready = [name for name in self._targets if not self._health[name].paused(now)]
        if not ready:
            return report
        lease = timedelta(seconds=self._behaviour.lease)
        with self._store.unit_of_work() as session:
            rows = sync_queries.claimable(session, targets=ready, now=now, limit=self._behaviour.batch_size)
            for row in rows:
                row.claim(self.name, now=now, until=now + lease)
            claimed = [_Claimed(row.id, row.target) for row in rows]
        report.claimed = len(claimed)
        for item in claimed:
            health = self._health[item.target]
            if health.paused(self._clock()):
                self._release(item, retry_at=health.paused_until or self._clock())
                report.released += 1
                continue
            self._deliver(item, report)
        return report

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set: at once while there is work, else every ``poll_interval`` seconds; pull
        contacts every ``pull_interval`` seconds."""
        while not stop.is_set():
            try:
                report = self.run_once()
                self.pull_when_due()
            except Exception:  # the database may be away for a moment: keep going, never die silently
                log.exception("CRM delivery pass failed; trying again")
                report = PassReport()
            if report.claimed == 0:
                stop.wait(self._behaviour.poll_interval)

    def pull_when_due(self) -> list[PullReport]:
        interval = self._behaviour.pull_interval
        if interval <= 0:
            return []
        reports: list[PullReport] = []
        for name, target in self._targets.items():
            last = self._last_pull.get(name)
            if not target.pulls or (last is not None and time.monotonic() - last < interval):
                continue
            self._last_pull[name] = time.monotonic()
            try:
                reports += self.pull([name])
            except (TryLater, Rejected, TargetRefused) as failure:
                # A scheduled pull from a CRM that is down or refusing is the CRM's state, recorded on it by pull()
                # (`crm sync status` shows it): one line, not a traceback per pull interval; the next pull retries.
                log.warning("CRM %s: contact pull failed: %s", name, failure)
        return reports

    def pull(self, names: list[str] | None = None, *, full: bool = False) -> list[PullReport]:
        """Pull contacts from these CRMs now (every configured one that has contacts by default)."""
        reports: list[PullReport] = []
        for name in names or list(self._targets):
            target = self._targets[name]
            if not target.pulls:
                continue
            try:
                reports.append(pull_contacts(self._store, target, self._behaviour, full=full))
            except TargetRefused as refusal:
                self._refused(name, str(refusal))
                raise
            except (TryLater, Rejected) as failure:
                with self._store.unit_of_work() as session:
                    sync_queries.target_state(session, name, for_update=True).pull_failed(str(failure), now=utcnow())
                raise
        return reports

    def close(self) -> None:
        for target in self._targets.values():
            target.close()

    # --- one row -----------------------------------------------------------------------------------------------------

    def _deliver(self, item: _Claimed, report: PassReport) -> None:
        snapshot = self._snapshot(item)
        if snapshot is None:
            return
        target = self._targets[item.target]
        record = snapshot.record
        try:
            if isinstance(record, CallRecord):
                delivery = target.push_call(record, snapshot.contact, remote_id=snapshot.remote_id)
            else:
                delivery = target.push_task(record, snapshot.contact, remote_id=snapshot.remote_id)
        except TryLater as failure:
            self._try_later(item, failure, report)
        except Rejected as rejection:
            self._healthy(item.target)
            self._park(item, str(rejection))
            report.parked += 1
        except TargetRefused as refusal:
            self._refused(item.target, str(refusal))
            self._release(item, retry_at=self._health[item.target].paused_until or self._clock())
            report.released += 1
        except Exception as error:  # a bug of ours or an answer we cannot read: charged, so it parks in the end
            log.exception("CRM delivery of outbox row %s to %s failed unexpectedly", item.row_id, item.target)
            self._try_later(item, TryLater(f"{type(error).__name__}: {error}"), report, charged=True)
        else:
            self._healthy(item.target)
            report.covered += self._delivered(item, snapshot, delivery)
            report.delivered += 1

    def _snapshot(self, item: _Claimed) -> _Snapshot | None:
        """The record as it is now, and what we know of it in the CRM (read-only, no lock held while sending)."""
        with self._store.unit_of_work(read_only=True) as session:
            row = sync_queries.outbox_row(session, item.row_id)
            if row is None or row.state is not OutboxState.SENDING or row.claimed_by != self.name:
                return None  # our lease ran out and another worker took it over
            # The rows written before the record is read are covered by this send (read in this order: a change
            # committed in between is sent now and once more later, never lost).
            later = [other.id for other in sync_queries.same_record_pending(session, row)]
            interaction = row.interaction
            record: CallRecord | TaskRecord
            if row.subject is SyncSubject.CALL:
                record = call_record(interaction)
            else:
                assert row.task is not None
                record = task_record(row.task, interaction)
            known = sync_queries.contact_for_phone(session, item.target, record.customer_number)
            contact = (
                RemoteContact(
                    remote_id=known.remote_id,
                    kind=known.kind,
                    phone=known.phone,
                    name=known.name,
                    email=known.email,
                    modified_at=known.remote_modified_at,
                )
                if known is not None
                else None
            )
            return _Snapshot(record, contact, sync_queries.known_remote_id(session, row), later)

    def _delivered(self, item: _Claimed, snapshot: _Snapshot, delivery: Delivery) -> int:
        now = self._clock()
        covered = 0
        with self._store.unit_of_work() as session:
            row = sync_queries.outbox_row(session, item.row_id, for_update=True)
            if row is None:
                return 0
            row.delivered(now=now, remote_id=delivery.remote_id or snapshot.remote_id)
            for other in sync_queries.same_record_pending(session, row, for_update=True):
                if other.id in snapshot.later_rows and other.covered_by(row, now=now):
                    covered += 1
            contact = delivery.contact
            if contact is not None and contact != snapshot.contact:
                self._remember_contact(session, item.target, contact, snapshot.record)
        return covered

    @staticmethod
    def _remember_contact(
        session: Session, target: str, contact: RemoteContact, record: CallRecord | TaskRecord
    ) -> None:
        link = sync_queries.contact_by_remote_id(session, target, contact.remote_id)
        if link is None:
            link = CrmContact(target=target, remote_id=contact.remote_id, kind=contact.kind)
            session.add(link)
        link.seen(
            kind=contact.kind,
            phone=contact.phone or record.customer_number,
            name=contact.name,
            email=contact.email,
            modified_at=contact.modified_at,
            now=utcnow(),
        )
        if record.customer_id is not None:
            link.link_customer(record.customer_id)

    def _try_later(self, item: _Claimed, failure: TryLater, report: PassReport, *, charged: bool | None = None) -> None:
        now = self._clock()
        behaviour = self._behaviour
        health = self._health[item.target]
        health.failures_in_row += 1
        down = health.failures_in_row >= behaviour.down_after
        if failure.retry_after is not None:
            # A rate limit (or a maintenance window) applies to every row of that CRM, not just this one.
            wait = min(failure.retry_after, behaviour.retry_after_cap)
            health.paused_until = max(health.paused_until or now, now + timedelta(seconds=wait))
        if down and not health.paused(now):
            health.pauses += 1
            probe_in = max(
                behaviour.backoff_base,
                full_jitter(health.pauses, base=behaviour.backoff_base, cap=behaviour.backoff_cap, rng=self._rng),
            )
            health.paused_until = now + timedelta(seconds=probe_in)
            if health.pauses == 1:
                log.warning("%s is failing every request (%s); its records wait", item.target, failure)
        with self._store.unit_of_work() as session:
            row = sync_queries.outbox_row(session, item.row_id, for_update=True)
            if row is None:
                return
            backoff = full_jitter(row.failures, base=behaviour.backoff_base, cap=behaviour.backoff_cap, rng=self._rng)
            retry_at = now + timedelta(seconds=backoff)
            if health.paused_until is not None and health.paused_until > retry_at:
                retry_at = health.paused_until
            parked = row.failed(
                str(failure),
                now=now,
                retry_at=retry_at,
                charged=(not down) if charged is None else charged,
                park_after=behaviour.max_attempts,
            )
        if parked:
            report.parked += 1
            log.warning(
                "outbox row %s for %s parked after %s failures: %s",
                item.row_id,
                item.target,
                behaviour.max_attempts,
                failure,
            )
        else:
            report.retried += 1

    def _park(self, item: _Claimed, reason: str) -> None:
        with self._store.unit_of_work() as session:
            row = sync_queries.outbox_row(session, item.row_id, for_update=True)
            if row is not None and row.state is not OutboxState.DELIVERED:
                row.park(reason, now=self._clock())
        log.warning("outbox row %s for %s parked: %s", item.row_id, item.target, reason)

    def _release(self, item: _Claimed, *, retry_at: datetime) -> None:
        with self._store.unit_of_work() as session:
            row = sync_queries.outbox_row(session, item.row_id, for_update=True)
            if row is not None:
                row.release(retry_at=retry_at)

    # --- a CRM's health ----------------------------------------------------------------------------------------------

    def _healthy(self, name: str) -> None:
        health = self._health[name]
        if health.pauses:
            log.info("%s answers again", name)
        health.failures_in_row = 0
        health.pauses = 0
        if health.refused:
            health.refused = False
            with self._store.unit_of_work() as session:
                if sync_queries.target_state(session, name, for_update=True).accepted():
                    log.warning("%s accepts our credentials again; its waiting records are being sent", name)

    def _refused(self, name: str, reason: str) -> None:
        health = self._health[name]
        health.refused = True
        # Ask again now and then (someone may fix the credentials), one row at a time.
        probe_in = max(self._behaviour.poll_interval, min(60.0, self._behaviour.backoff_cap))
        health.paused_until = self._clock() + timedelta(seconds=probe_in)
        with self._store.unit_of_work() as session:
            first = sync_queries.target_state(session, name, for_update=True).refused(reason, now=self._clock())
        if first:
            log.error(
                "%s: %s. Nothing is lost: its records wait until this is fixed (warmline crm sync status).",
                name,
                reason,
            )

    def _notice_refusals(self) -> None:
        """Learn of a refusal another worker recorded, so a success here can clear it."""
        if not self._targets:
            return
        with self._store.unit_of_work(read_only=True) as session:
            refused = {name for name, state in sync_queries.target_states(session).items() if state.refused_since}
        for name, health in self._health.items():
            if name in refused:
                health.refused = True


class DeliveryThread:
    """A worker running in a background thread of this process (``warmline serve``'s seam; tests)."""

    def __init__(self, store: Store, settings: SyncSettings, **worker_options: object) -> None:
        self.worker = DeliveryWorker(store, settings, **worker_options)  # type: ignore[arg-type]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.worker.run, args=(self._stop,), name="crm-delivery", daemon=True)

    def start(self) -> DeliveryThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.worker.close()
