"""HubSpot: every call lands once on the right contact, whatever the fake HubSpot does meanwhile."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from crm_sync.models import OutboxMessage, OutboxState
from tests.fakes.hubspot import FakeHubSpot
from tests.sync.conftest import crm_overrides, drain, place_call, store_of, worker_for
from voice.cli import main


def test_a_call_lands_on_the_callers_contact_with_the_documented_properties(
    sync_app_factory: Callable[..., Flask], hubspot: FakeHubSpot
) -> None:
    contact_id = hubspot.add_contact(phone="(555) 123-0001", first="Jane", last="Doe")
    app = sync_app_factory(**crm_overrides(hubspot=hubspot))
    place_call(app, "CA" + "1" * 32, words="I was charged twice", duration=75)
    worker = worker_for(app)
    assert drain(worker, store_of(app)) == 1
    call = hubspot.call("CA" + "1" * 32)
    properties = call.properties
    assert properties["hs_call_direction"] == "INBOUND"
    assert properties["hs_call_duration"] == "75000"
    assert properties["hs_call_from_number"] == "+15551230001"
    assert properties["hs_call_to_number"] == "+15550009999"
    assert properties["hs_call_status"] in ("CANCELED", "COMPLETED", "NO_ANSWER")
    assert properties["hs_call_title"].startswith("Call from Jane Doe")
    assert "I was charged twice" in properties["hs_call_body"]
    assert properties["hs_timestamp"].endswith("Z")
    assert call.associations == {(contact_id, 194)}
    worker.close()


def _rows(app: Flask) -> list[OutboxMessage]:
    from sqlalchemy import select

    with store_of(app).unit_of_work(read_only=True) as session:
        rows = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        session.expunge_all()  # kept as read: a read-only unit of work rolls back, which would expire them
        return rows


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_timeouts_after_the_write_and_rate_limits_make_no_duplicate(
    sync_app_factory: Callable[..., Flask], hubspot: FakeHubSpot
) -> None:
    hubspot.add_contact(phone="+15551230001", first="Jane", last="Doe")
    app = sync_app_factory(**crm_overrides(hubspot=hubspot, request_timeout=0.2))
    # Every write lands, then its answer comes after the client gave up; and a 429 with Retry-After first.
    hubspot.scripted.append(
        __import__("tests.fakes.crm_server", fromlist=["Scripted"]).Scripted(
            429, {"status": "error", "errorType": "RATE_LIMIT", "message": "ten_secondly_rolling"}, {"Retry-After": "0"}
        )
    )
    hubspot.faults.slow_rate, hubspot.faults.slow_seconds = 0.5, 0.4
    for number in range(5):
        place_call(app, f"CA{number:032d}")
    drain(worker_for(app), store_of(app))
    calls = hubspot.calls_by_key()
    assert sorted(calls) == [f"CA{number:032d}" for number in range(5)]
    assert all(len(found) == 1 for found in calls.values())
    assert hubspot.creations["calls"] == 5


def test_a_wrap_up_after_the_call_updates_the_same_hubspot_call(
    sync_app_factory: Callable[..., Flask], hubspot: FakeHubSpot
) -> None:
    from crm_sync.queries import interactions

    app = sync_app_factory(**crm_overrides(hubspot=hubspot))
    place_call(app, "CA" + "2" * 32)
    worker = worker_for(app)
    drain(worker, store_of(app))
    with store_of(app).unit_of_work() as session:
        interaction = interactions.require_interaction(session, "CA" + "2" * 32, for_update=True)
        from crm_sync.models import utcnow

        interaction.wrap_up(
            by_rep_id=1, disposition="resolved", notes="Refunded the double charge", department=None, now=utcnow()
        )
    drain(worker, store_of(app))
    call = hubspot.call("CA" + "2" * 32)
    assert "Refunded the double charge" in call.properties["hs_call_body"]
    assert hubspot.creations["calls"] == 1
    assert [row.reason for row in _rows(app)] == ["call ended", "wrap-up"]
    assert {row.state for row in _rows(app)} == {OutboxState.DELIVERED}


def test_unknown_numbers_get_a_contact_only_when_configured(
    sync_app_factory: Callable[..., Flask], hubspot: FakeHubSpot
) -> None:
    app = sync_app_factory(**crm_overrides(hubspot=hubspot, create_contacts=True))
    place_call(app, "CA" + "3" * 32, caller="+15557654321")
    place_call(app, "CA" + "4" * 32, caller="+15557654321")
    drain(worker_for(app), store_of(app))
    [contact] = hubspot.objects["contacts"].values()
    assert contact.properties["phone"] == "+15557654321"
    assert contact.properties["warmline_contact_id"] == "+15557654321"
    assert hubspot.call("CA" + "3" * 32).associations == {(contact.id, 194)}
    assert hubspot.call("CA" + "4" * 32).associations == {(contact.id, 194)}
    # The second call was filed on the contact the first one found: one search in all.
    assert sum(1 for method, path in hubspot.requests if path.startswith("/crm/v3/objects/contacts/search")) == 1


def test_a_call_hubspot_rejects_is_parked_with_its_words_and_retried_on_demand(
    sync_app_factory: Callable[..., Flask], hubspot: FakeHubSpot
) -> None:
    app = sync_app_factory(**crm_overrides(hubspot=hubspot))
    hubspot.invalid["CA" + "5" * 32] = "Property values were not valid: hs_call_to_number"
    place_call(app, "CA" + "5" * 32)
    place_call(app, "CA" + "6" * 32)
    worker = worker_for(app)
    drain(worker, store_of(app))
    rows = {row.interaction_id: row for row in _rows(app)}
    parked = [row for row in rows.values() if row.state is OutboxState.PARKED]
    assert len(parked) == 1
    assert "Property values were not valid: hs_call_to_number" in (parked[0].last_error or "")
    assert "CA" + "6" * 32 in hubspot.calls_by_key()
    # Fixed on HubSpot's side: `warmline crm sync retry ID` sends it again.
    del hubspot.invalid["CA" + "5" * 32]
    result = app.test_cli_runner().invoke(main, ["crm", "sync", "retry", str(parked[0].id)])
    assert result.exit_code == 0, result.output
    assert "1 record queued" in result.output
    drain(worker, store_of(app))
    assert len(hubspot.calls_by_key()["CA" + "5" * 32]) == 1


def test_a_wrong_token_is_reported_once_and_loses_nothing(
    sync_app_factory: Callable[..., Flask], hubspot: FakeHubSpot, caplog: pytest.LogCaptureFixture
) -> None:
    app = sync_app_factory(**crm_overrides(hubspot=hubspot))
    real_token, hubspot.token = hubspot.token, "rotated-by-an-admin"
    for number in range(4):
        place_call(app, f"CA{number:032d}")
    worker = worker_for(app, clock=_Clock())
    with caplog.at_level("ERROR", logger="crm_sync.sync.worker"):
        for _ in range(5):
            worker.run_once()
            worker._clock.advance(120)  # type: ignore[attr-defined]
    refusals = [record for record in caplog.records if "HUBSPOT_ACCESS_TOKEN" in record.getMessage()]
    assert len(refusals) == 1, [record.getMessage() for record in caplog.records]
    assert all(row.state is OutboxState.PENDING and row.failures == 0 for row in _rows(app))
    status = app.test_cli_runner().invoke(main, ["crm", "sync", "status"])
    assert "REFUSED" in status.output and "HUBSPOT_ACCESS_TOKEN" in status.output
    hubspot.token = real_token
    worker._clock.advance(120)  # type: ignore[attr-defined]
    drain(worker, store_of(app))
    assert len(hubspot.calls_by_key()) == 4
    assert "REFUSED" not in app.test_cli_runner().invoke(main, ["crm", "sync", "status"]).output


def test_a_missing_unique_property_stops_the_target_instead_of_parking_every_call(
    sync_app_factory: Callable[..., Flask], hubspot: FakeHubSpot
) -> None:
    hubspot.unique_properties["calls"] = "some_other_property"
    app = sync_app_factory(**crm_overrides(hubspot=hubspot))
    place_call(app, "CA" + "7" * 32)
    worker_for(app).run_once()
    [row] = _rows(app)
    assert row.state is OutboxState.PENDING
    status = app.test_cli_runner().invoke(main, ["crm", "sync", "status"]).output
    assert "create it as README" in status


class _Clock:
    """A clock tests move forward (the worker's pauses and retries are judged by it)."""

    def __init__(self) -> None:
        from crm_sync.models import utcnow

        self.now = utcnow()

    def __call__(self):  # type: ignore[no-untyped-def]
        return self.now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.now += timedelta(seconds=seconds)
