"""Salesforce: a call is a Task (TaskSubtype Call) on the Contact or Lead, upserted on its External ID."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.fakes.crm_server import Scripted
from tests.fakes.salesforce import EXTERNAL_ID_FIELD, FakeSalesforce
from tests.sync.conftest import crm_overrides, drain, place_call, store_of, worker_for


def test_a_call_is_a_task_on_the_contact_found_by_phone(
    sync_app_factory: Callable[..., Flask], salesforce: FakeSalesforce
) -> None:
    contact = salesforce.add_person("Contact", name="Jane Doe", phone="(555) 123-0001")
    lead = salesforce.add_person("Lead", name="Omar Haddad", phone="555.123.0002")
    app = sync_app_factory(**crm_overrides(salesforce=salesforce))
    place_call(app, "CA" + "1" * 32, words="my invoice is wrong", duration=61)
    place_call(app, "CA" + "2" * 32, caller="+15551230002")
    place_call(app, "CA" + "3" * 32, caller="+15559990000")
    drain(worker_for(app), store_of(app))
    task = salesforce.task("CA" + "1" * 32).fields
    assert task["TaskSubtype"] == "Call"
    assert task["CallType"] == "Inbound"
    assert task["CallDurationInSeconds"] == 61
    assert task["WhoId"] == contact
    assert task["Status"] == "Completed"
    assert task["CallObject"] == "CA" + "1" * 32
    assert "my invoice is wrong" in task["Description"]
    assert task["CallDisposition"]
    assert salesforce.task("CA" + "2" * 32).fields["WhoId"] == lead
    assert "WhoId" not in salesforce.task("CA" + "3" * 32).fields
    assert salesforce.task("CA" + "3" * 32).fields[EXTERNAL_ID_FIELD] == "CA" + "3" * 32


def test_a_task_created_by_an_attempt_that_timed_out_is_updated_not_duplicated(
    sync_app_factory: Callable[..., Flask], salesforce: FakeSalesforce
) -> None:
    app = sync_app_factory(**crm_overrides(salesforce=salesforce, request_timeout=0.2))
    salesforce.faults.slow_rate, salesforce.faults.slow_seconds = 1.0, 0.3  # every write lands, every answer is late
    place_call(app, "CA" + "4" * 32)
    worker = worker_for(app)
    worker.run_once()
    salesforce.faults.slow_rate = 0.0
    drain(worker, store_of(app))
    assert len(salesforce.tasks_by_key()["CA" + "4" * 32]) == 1
    assert salesforce.creations == 1
    assert salesforce.task("CA" + "4" * 32).fields["TaskSubtype"] == "Call"  # set when it was created


def test_503_and_the_api_limit_are_retried_and_validation_errors_parked(
    sync_app_factory: Callable[..., Flask], salesforce: FakeSalesforce
) -> None:
    app = sync_app_factory(**crm_overrides(salesforce=salesforce))
    salesforce.scripted += [
        Scripted(503, [{"message": "Server Unavailable", "errorCode": "SERVER_UNAVAILABLE"}]),
        Scripted(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]),
    ]
    salesforce.invalid["CA" + "6" * 32] = "Calls need a disposition"
    place_call(app, "CA" + "5" * 32)
    place_call(app, "CA" + "6" * 32)
    drain(worker_for(app), store_of(app))
    assert len(salesforce.tasks_by_key()["CA" + "5" * 32]) == 1
    status = app.test_cli_runner().invoke(__import__("voice.cli", fromlist=["main"]).main, ["crm", "sync", "status"])
    assert "1 parked" in status.output and "Calls need a disposition" in status.output


def test_a_connected_apps_client_credentials_are_exchanged_for_a_token_and_renewed(
    sync_app_factory: Callable[..., Flask], salesforce: FakeSalesforce
) -> None:
    overrides = crm_overrides(salesforce=salesforce)
    overrides |= {
        "salesforce_access_token": "",
        "salesforce_client_id": salesforce.client_id,
        "salesforce_client_secret": salesforce.client_secret,
    }
    app = sync_app_factory(**overrides)
    place_call(app, "CA" + "7" * 32)
    worker = worker_for(app)
    drain(worker, store_of(app))
    assert salesforce.issued_tokens == 1
    # The token expires: the next request is refused once, a new token is asked for, and it goes through.
    salesforce.scripted.append(
        Scripted(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    )
    place_call(app, "CA" + "8" * 32)
    drain(worker, store_of(app))
    assert salesforce.issued_tokens == 2
    assert len(salesforce.tasks_by_key()) == 2


def test_contacts_are_pulled_incrementally(sync_app_factory: Callable[..., Flask], salesforce: FakeSalesforce) -> None:
    from datetime import UTC, datetime, timedelta

    from crm_sync.queries.customers import find_customer_by_phone

    earlier = datetime.now(UTC) - timedelta(hours=2)
    for number in range(2500):  # more than one page of SOQL results
        salesforce.add_person(
            "Contact", name=f"Person {number}", phone=f"+1555300{number:04d}", when=earlier + timedelta(seconds=number)
        )
    app = sync_app_factory(**crm_overrides(salesforce=salesforce))
    worker = worker_for(app)
    [report] = worker.pull()
    assert report.seen == 2500 and report.created == 2500
    salesforce.add_person("Contact", name="Newly Added", phone="+15553109999")
    [again] = worker.pull()
    assert again.seen <= 2 and again.created == 1
    with store_of(app).unit_of_work(read_only=True) as session:
        customer = find_customer_by_phone(session, "+15553109999")
        assert customer is not None and customer.name == "Newly Added"


def test_a_scheduled_pull_from_a_crm_that_is_down_is_recorded_and_does_not_raise(
    sync_app_factory: Callable[..., Flask], salesforce: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    from crm_sync.queries import sync as sync_queries

    app = sync_app_factory(**crm_overrides(salesforce=salesforce, pull_interval=60.0))
    worker = worker_for(app)
    salesforce.go_down()
    with caplog.at_level("WARNING", logger="crm_sync.sync.worker"):
        assert worker.pull_when_due() == []  # the delivery loop goes on; no traceback per pull interval
    assert [r.getMessage() for r in caplog.records if "contact pull failed" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]
    with store_of(app).unit_of_work(read_only=True) as session:
        assert sync_queries.target_state(session, "salesforce").pull_error
    salesforce.come_back()
    assert worker.pull_when_due() == []  # not due again before the interval
