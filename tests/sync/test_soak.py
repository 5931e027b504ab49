"""The soak: 1,000 calls through the real webhooks while the fake HubSpot and Salesforce fail 30 % of requests
(429 with Retry-After, 500, 503), answer some late (after the write: the client times out), and go down for a
stretch; two delivery workers run throughout. Afterwards every call is in each CRM exactly once.

The figures (calls, sends, delivered, duplicates, parked, time to drain) are printed as one JSON line (``-s``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select

from crm_sync.models import OutboxMessage, OutboxState
from crm_sync.sync.worker import DeliveryThread
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.salesforce import FakeSalesforce
from tests.sync.conftest import crm_overrides, open_rows, place_call, store_of
from voice.config import sync_settings

CALLS = 1000
OUTAGE_AFTER = 300  # calls placed before both CRMs go down
OUTAGE_SECONDS = 2.0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_thousand_calls_through_failures_and_an_outage_land_exactly_once(
    sync_app_factory: Callable[..., Flask], hubspot: FakeHubSpot, salesforce: FakeSalesforce
) -> None:
    for number in range(50):
        hubspot.add_contact(phone=f"+1555400{number:04d}", first="Caller", last=str(number))
        salesforce.add_person("Contact", name=f"Caller {number}", phone=f"+1555400{number:04d}")
    app = sync_app_factory(
        **crm_overrides(hubspot=hubspot, salesforce=salesforce, request_timeout=0.25, max_attempts=25, down_after=8)
    )
    for fake in (hubspot, salesforce):
        fake.faults.fail_rate, fake.faults.slow_rate, fake.faults.slow_seconds = 0.3, 0.02, 0.35
        fake.faults.retry_after = "0"
    store = store_of(app)
    settings = sync_settings(app.extensions["warmline"].settings)
    workers = [DeliveryThread(store, settings, name=f"soak-{n}").start() for n in range(2)]
    started = time.monotonic()
    try:
        for number in range(CALLS):
            if number == OUTAGE_AFTER:
                hubspot.go_down()
                salesforce.go_down()
                threading.Timer(OUTAGE_SECONDS, hubspot.come_back).start()
                threading.Timer(OUTAGE_SECONDS, salesforce.come_back).start()
            caller = f"+1555400{number % 80:04d}"  # 50 known to the CRMs, 30 not
            place_call(app, f"CA{number:032d}", caller=caller, words="my bill is wrong" if number % 10 == 0 else None)
        calls_done = time.monotonic()
        deadline = calls_done + 240
        while open_rows(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        drained = time.monotonic()
    finally:
        for worker in workers:
            worker.stop()
    with store.unit_of_work(read_only=True) as session:
        by_state = dict(session.execute(select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)).all())
        sends = session.scalar(select(func.sum(OutboxMessage.attempts))) or 0
        rows = session.scalar(select(func.count()).select_from(OutboxMessage)) or 0
    hubspot_calls = hubspot.calls_by_key()
    salesforce_tasks = salesforce.tasks_by_key()
    figures = {
        "calls": CALLS,
        "outbox_rows": rows,
        "sends": int(sends),
        "delivered": by_state.get(OutboxState.DELIVERED, 0),
        "parked": by_state.get(OutboxState.PARKED, 0),
        "still_open": rows - by_state.get(OutboxState.DELIVERED, 0) - by_state.get(OutboxState.PARKED, 0),
        "hubspot_calls": len(hubspot_calls),
        "hubspot_duplicates": sum(len(found) - 1 for found in hubspot_calls.values()),
        "salesforce_tasks": len(salesforce_tasks),
        "salesforce_duplicates": sum(len(found) - 1 for found in salesforce_tasks.values()),
        "failures_injected": hubspot.failures_injected + salesforce.failures_injected,
        "http_requests": len(hubspot.requests) + len(salesforce.requests),
        "seconds_placing_calls": round(calls_done - started, 1),
        "seconds_to_drain_after_last_call": round(drained - calls_done, 1),
    }
    print("\nSOAK " + json.dumps(figures))
    expected = {f"CA{number:032d}" for number in range(CALLS)}
    assert set(hubspot_calls) == expected
    assert set(salesforce_tasks) == expected
    assert figures["hubspot_duplicates"] == 0 and figures["salesforce_duplicates"] == 0
    assert hubspot.creations["calls"] == CALLS and salesforce.creations == CALLS
    assert figures["parked"] == 0 and figures["still_open"] == 0
    assert figures["failures_injected"] > 0
    # Every call that came from a number a CRM knows is filed on that contact.
    known = {f"+1555400{number:04d}" for number in range(50)}
    for number in range(CALLS):
        call = hubspot_calls[f"CA{number:032d}"][0]
        assert bool(call.associations) == (call.properties["hs_call_from_number"] in known)
