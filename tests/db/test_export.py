"""Interaction export: parse the JSON and CSV back and compare them with the values that were stored."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from crm_sync.db import Store
from crm_sync.export import EXPORT_FIELDS, export_interactions
from crm_sync.models import Handoff, HandoffState, Interaction, InteractionStatus, Outcome
from crm_sync.queries.customers import upsert_customer
from crm_sync.queries.reps import upsert_rep

STARTED = datetime(2025, 3, 4, 15, 6, 7, tzinfo=UTC)
ISSUE = 'Mi factura está mal — cobrado dos veces ☕\u2028(line separator) and "quotes", commas'
SUMMARY = 'Jane Doe, gold.\nSays: "charged twice"'

# What the export must say about the two calls seeded below, written out by hand (not computed by the exporter).
EXPECTED: list[dict[str, Any]] = [
    {
        "call_sid": "CA0001",
        "caller_number": "+15551230001",
        "customer_name": "Jane Doe",
        "customer_phone": "+15551230001",
        "started_at": "2025-03-04T15:06:07Z",
        "answered_at": "2025-03-04T15:07:09.250000Z",
        "ended_at": "2025-03-04T15:12:00Z",
        "duration_seconds": 353,
        "hold_seconds": 42,
        "issue_text": ISSUE,
        "capture_method": "speech",
        "department": "billing",
        "confidence": 0.875,
        "rep_name": "Alice Morgan",
        "summary": SUMMARY,
        "outcome": "answered",
        "status": "ended",
        "flow_name": "main",
        "flow_version": "3f2a9c",
        "recording_url": "https://api.twilio.com/recordings/RE1",
        "called_number": "+15550009999",
        "language": "es-MX",
        "transcript": "hola, me cobraron dos veces",
        "survey": "resolved=1; rating=5",
        # The first rep's note goes with each transfer (issue 15: it was not exported).
        "handoffs": (
            'Alice Morgan -> Bruno Diaz (failed: no-answer) note: "Wants the March invoice refunded."; '
            'Alice Morgan -> Carla Reyes (completed) note: "Wants the March invoice refunded."'
        ),
        # The rep's wrap-up, and where the call should have gone next to what the flow detected.
        "disposition": "resolved",
        "wrap_up_notes": "Refund issued for the duplicate charge.",
        "corrected_department": "account",
        "wrapped_up_at": "2025-03-04T15:13:30Z",
    },
    {
        "call_sid": "CA0002",
        "caller_number": "anonymous",
        "customer_name": None,
        "customer_phone": None,
        "started_at": "2025-03-04T15:30:00Z",
        "answered_at": None,
        "ended_at": None,
        "duration_seconds": None,
        "hold_seconds": 0,
        "issue_text": None,
        "capture_method": None,
        "department": None,
        "confidence": None,
        "rep_name": None,
        "summary": None,
        "outcome": None,
        "status": "in_flow",
        "flow_name": "main",
        "flow_version": "3f2a9c",
        "recording_url": None,
        "called_number": None,
        "language": None,
        "transcript": None,
        "survey": None,
        "handoffs": None,
        "disposition": None,
        "wrap_up_notes": None,
        "corrected_department": None,
        "wrapped_up_at": None,
    },
]


def seed(store: Store) -> None:
    """Two calls: a finished one with every field set (times given in a non-UTC zone), and one still in the IVR."""
    plus_two = timezone(timedelta(hours=2))
    with store.unit_of_work() as session:
        jane, _ = upsert_customer(
            session,
            name="Jane Doe",
            phone_e164="+15551230001",
            email=None,
            tier="gold",
            notes=None,
            custom_fields={},
        )
        alice, _ = upsert_rep(
            session, name="Alice Morgan", phone_e164="+15550100001", departments=["billing"], languages=["en-US"]
        )
        call = Interaction(
            call_sid="CA0001", caller_number="+15551230001", customer=jane, flow_name="main", flow_version="3f2a9c"
        )
        session.add(call)
        call.started_at = STARTED.astimezone(plus_two)
        call.answered_at = datetime(2025, 3, 4, 17, 7, 9, 250000, tzinfo=plus_two)
        call.issue_text = ISSUE
        call.capture_method = "speech"
        call.department = "billing"
        call.confidence = 0.875
        call.rep = alice
        call.summary = SUMMARY
        call.recording_url = "https://api.twilio.com/recordings/RE1"
        call.called_number = "+15550009999"
        call.language = "es-MX"
        call.transcript = "hola, me cobraron dos veces"
        call.survey = {"resolved": "1", "rating": "5"}
        session.flush()
        for name, phone, state, failure in (
            ("Bruno Diaz", "+15550100002", HandoffState.FAILED, "no-answer"),
            ("Carla Reyes", "+15550100003", HandoffState.COMPLETED, None),
        ):
            target, _ = upsert_rep(
                session, name=name, phone_e164=phone, departments=["billing"], languages=["es-MX"]
            )
            session.add(
                Handoff(
                    interaction_id=call.id,
                    from_rep_id=alice.id,
                    to_rep_id=target.id,
                    state=state,
                    failure=failure,
                    conference=f"handoff-{name}",
                    note="Wants the March\n invoice refunded.",
                    caller_call_sid="CA0001",
                )
            )
        call.close(
            outcome=Outcome.ANSWERED,
            call_status="completed",
            duration_seconds=353,
            now=datetime(2025, 3, 4, 15, 12, tzinfo=UTC),
        )
        call.hold_seconds = 42
        call.wrap_up(
            by_rep_id=alice.id,
            disposition="resolved",
            notes="Refund issued for the duplicate charge.",
            department="account",
            now=datetime(2025, 3, 4, 15, 13, 30, tzinfo=UTC),
        )
        anonymous = Interaction(
            call_sid="CA0002",
            caller_number="anonymous",
            flow_name="main",
            flow_version="3f2a9c",
            started_at=datetime(2025, 3, 4, 15, 30, tzinfo=UTC),
        )
        session.add(anonymous)
        session.flush()
        assert anonymous.status is InteractionStatus.IN_FLOW


def as_csv_cells(record: dict[str, Any]) -> dict[str, str]:
    return {key: "" if value is None else str(value) for key, value in record.items()}


def test_json_export_round_trips(store: Store) -> None:
    seed(store)
    out = io.StringIO()

    count = export_interactions(store, out, fmt="json")

    assert count == 2
    text = out.getvalue()
    assert json.loads(text) == EXPECTED
    # Pretty and human-readable: the very text json.dump would give, accents and emoji unescaped, phones unmasked.
    assert text == json.dumps(EXPECTED, indent=2, ensure_ascii=False) + "\n"
    assert "está mal" in text and "☕" in text and "+15551230001" in text


def test_csv_export_round_trips(store: Store) -> None:
    seed(store)
    out = io.StringIO(newline="")

    count = export_interactions(store, out, fmt="csv")

    assert count == 2
    out.seek(0)
    reader = csv.DictReader(out)
    assert tuple(reader.fieldnames or ()) == EXPORT_FIELDS
    rows = list(reader)
    assert rows == [as_csv_cells(record) for record in EXPECTED]
    # The cells parse back to the stored values, not just to equal strings.
    first = rows[0]
    assert datetime.fromisoformat(first["answered_at"]) == datetime(2025, 3, 4, 15, 7, 9, 250000, tzinfo=UTC)
    assert float(first["confidence"]) == 0.875 and int(first["duration_seconds"]) == 353


def test_export_files_on_disk_are_utf8(store: Store, tmp_path: Any) -> None:
    seed(store)
    path = tmp_path / "interactions.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        export_interactions(store, out, fmt="csv")

    with path.open(encoding="utf-8", newline="") as back:
        rows = list(csv.DictReader(back))
    assert rows[0]["issue_text"] == ISSUE
    assert rows[0]["summary"] == SUMMARY


@pytest.mark.parametrize(("fmt", "text"), [("json", "[]\n"), ("csv", ",".join(EXPORT_FIELDS) + "\r\n")])
def test_empty_store_exports_an_empty_document(store: Store, fmt: Any, text: str) -> None:
    out = io.StringIO(newline="")

    assert export_interactions(store, out, fmt=fmt) == 0
    assert out.getvalue() == text


def test_unknown_format_is_refused(sqlite_store: Store) -> None:
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        export_interactions(sqlite_store, io.StringIO(), fmt="xml")  # type: ignore[arg-type]
