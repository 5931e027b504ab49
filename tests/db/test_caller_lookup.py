"""The lookup every call starts with: one statement says who the number belongs to, and for a number the CRM does
not know, when it last called (a repeat caller is a repeat caller whether or not they are in the CRM)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from crm_sync.db import Store
from crm_sync.models import Task
from crm_sync.queries.customers import look_up_caller, upsert_customer
from crm_sync.queries.interactions import open_interaction, require_interaction

KNOWN = "+15551230001"
UNKNOWN = "+15551230002"
MORNING = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _call(store: Store, call_sid: str, number: str, at: datetime, customer_id: int | None = None) -> None:
    with store.unit_of_work() as session:
        open_interaction(
            session,
            call_sid=call_sid,
            caller_number=number,
            called_number=None,
            customer_id=customer_id,
            flow_name="support",
            flow_version="v1",
            flow_state={},
            now=at,
        )


def test_a_known_number_gives_the_customer_with_their_last_contact_and_open_tasks(store: Store) -> None:
    with store.unit_of_work() as session:
        customer, _ = upsert_customer(
            session,
            name="Ada Lovelace",
            phone_e164=KNOWN,
            email=None,
            tier="gold",
            notes=None,
            custom_fields={"language": "fr"},
        )
        customer_id = customer.id
    _call(store, "CA-earlier", KNOWN, MORNING, customer_id)
    with store.unit_of_work() as session:
        earlier = require_interaction(session, "CA-earlier")
        session.add(Task.file(earlier, kind="voicemail", note="Call Ada back", now=MORNING))
    _call(store, "CA-now", KNOWN, MORNING + timedelta(days=2), customer_id)

    with store.unit_of_work(read_only=True) as session:
        lookup = look_up_caller(session, KNOWN, call_sid="CA-now")

    assert lookup.customer is not None
    assert (lookup.customer.id, lookup.customer.first_name, lookup.customer.tier) == (customer_id, "Ada", "gold")
    assert lookup.customer.custom_fields == {"language": "fr"}
    assert lookup.customer.last_contact_at == MORNING, "the call being looked up for is not its own last contact"
    assert lookup.customer.has_open_task
    assert lookup.last_call_from_number is None, "a customer's last contact comes with the record"


def test_an_unknown_number_gives_no_customer_and_when_the_number_last_called(store: Store) -> None:
    _call(store, "CA-first", UNKNOWN, MORNING)
    _call(store, "CA-second", UNKNOWN, MORNING + timedelta(hours=3))
    _call(store, "CA-retried", UNKNOWN, MORNING + timedelta(hours=5))

    with store.unit_of_work(read_only=True) as session:
        lookup = look_up_caller(session, UNKNOWN, call_sid="CA-retried")
        never_called = look_up_caller(session, "+15551239999", call_sid="CA-new")

    assert lookup.customer is None
    assert lookup.last_call_from_number == MORNING + timedelta(hours=3)
    assert never_called.customer is None
    assert never_called.last_call_from_number is None
