"""The delivery worker: one claim per row across workers, leases, backoff, parking, outages."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import select

from crm_sync.models import OutboxMessage, OutboxState
from crm_sync.queries import sync as sync_queries
from crm_sync.sync.failures import full_jitter, retry_after_seconds
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sync.conftest import crm_overrides, drain, place_call, store_of, worker_for


def test_full_jitter_stays_under_its_ceiling_and_spreads() -> None:
    rng = random.Random(1)
    waits = [full_jitter(3, base=2.0, cap=600.0, rng=rng) for _ in range(2000)]
    assert max(waits) <= 16.0 and min(waits) >= 0.0
    assert 7.0 < sum(waits) / len(waits) < 9.0  # uniform on [0, 16]
    assert max(full_jitter(40, base=2.0, cap=600.0, rng=rng) for _ in range(200)) <= 600.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Mon, 07 Dec 2026 10:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_two_workers_never_send_the_same_row(sync_app_factory: Callable[..., Flask], receiver: WebhookReceiver) -> None:
    app = sync_app_factory(**crm_overrides(receiver=receiver, batch_size=5))
    for number in range(30):
        place_call(app, f"CA{number:032d}")
    workers = [worker_for(app, name=f"worker-{n}") for n in range(2)]
    done = threading.Event()
    errors: list[BaseException] = []

    def run(worker: object) -> None:
        try:
            drain(worker, store_of(app))  # type: ignore[arg-type]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done.set()
    assert errors == []
    assert len(receiver.records) == 30
    assert set(receiver.deliveries.values()) == {1}  # every record sent exactly once
    with store_of(app).unit_of_work(read_only=True) as session:
        rows = session.scalars(select(OutboxMessage)).all()
        assert {row.state for row in rows} == {OutboxState.DELIVERED}
        assert {row.attempts for row in rows} == {1}


def test_a_dead_workers_claim_is_taken_over_when_its_lease_runs_out(
    sync_app_factory: Callable[..., Flask], receiver: WebhookReceiver
) -> None:
    app = sync_app_factory(**crm_overrides(receiver=receiver, lease=60))
    place_call(app, "CA" + "1" * 32)
    now = datetime.now(UTC)
    with store_of(app).unit_of_work() as session:
        [row] = sync_queries.claimable(session, targets=["webhook"], now=now, limit=10)
        row.claim("a-worker-that-dies", now=now, until=now + timedelta(seconds=60))
    survivor = worker_for(app, clock=lambda: datetime.now(UTC))
    assert survivor.run_once().claimed == 0  # still leased
    later = worker_for(app, clock=lambda: datetime.now(UTC) + timedelta(seconds=61))
    assert later.run_once().delivered == 1
    assert receiver.deliveries == {"call:" + "CA" + "1" * 32: 1}


def test_a_record_failing_alone_is_parked_after_max_attempts_but_an_outage_charges_nobody(
    sync_app_factory: Callable[..., Flask], receiver: WebhookReceiver
) -> None:
    app = sync_app_factory(**crm_overrides(receiver=receiver, max_attempts=3, down_after=3, request_attempts=1))
    clock = _MovingClock()
    worker = worker_for(app, clock=clock)
    # An outage: everything fails. The rows wait; after the first few, none is charged.
    for number in range(6):
        place_call(app, f"CA{number:032d}")
    receiver.faults.fail_rate, receiver.faults.retry_after = 1.0, ""
    for _ in range(30):
        worker.run_once()
        clock.advance(5)
    with store_of(app).unit_of_work(read_only=True) as session:
        rows = session.scalars(select(OutboxMessage)).all()
        assert all(row.state is OutboxState.PENDING for row in rows)
        assert sum(row.failures for row in rows) < 3 * len(rows)
    receiver.faults.fail_rate = 0.0
    clock.advance(3600)
    drain(worker, store_of(app))
    assert len(receiver.records) == 6
    # One record the receiver cannot take (500 every time) while the others go through: parked after 3.
    receiver.scripted.clear()
    original = receiver.route

    def route(request):  # type: ignore[no-untyped-def]
        if "CA" + "7" * 32 in request.get_data(as_text=True):
            from tests.fakes.crm_server import json_response

            return json_response(500, {"error": "boom"})
        return original(request)

    receiver.route = route  # type: ignore[method-assign]
    for number in (7, 8):
        place_call(app, "CA" + str(number) * 32)
    for _ in range(20):
        worker.run_once()
        clock.advance(10)
    with store_of(app).unit_of_work(read_only=True) as session:
        states = {row.interaction.call_sid: (row.state, row.failures) for row in session.scalars(select(OutboxMessage))}
    assert states["CA" + "7" * 32] == (OutboxState.PARKED, 3)
    assert states["CA" + "8" * 32][0] is OutboxState.DELIVERED


class _MovingClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_the_app_that_runs_housekeeping_delivers_on_its_own(
    sync_app_factory: Callable[..., Flask], receiver: WebhookReceiver
) -> None:
    # The housekeeping process under `warmline serve`, or a single-process app: nobody runs `crm sync run`.
    app = sync_app_factory(housekeeping=True, **crm_overrides(receiver=receiver))
    assert app.extensions["warmline"].delivery is not None
    place_call(app, "CA" + "d" * 32)
    deadline = time.monotonic() + 15
    while not receiver.records and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(receiver.records) == 1
    app.extensions["warmline"].close()  # stops the delivery thread (closing twice is harmless)
    assert sync_app_factory(**crm_overrides(receiver=receiver)).extensions["warmline"].delivery is None
