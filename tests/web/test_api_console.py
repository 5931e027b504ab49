"""The reps' JSON API's console additions: wrap-up, the work queue, customers — the same services and rules as the
console's pages (a rep: their own calls and tasks; a supervisor: everyone's), the same error table."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from crm_sync.models import Interaction, RepState, Task, utcnow
from crm_sync.queries.customers import find_customer_by_phone
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.reps import find_rep
from tests.conftest import seed_demo, signed_post
from tests.web.test_api import auth, error_of, token_for

SID = "CA" + "6" * 32
REP_LEG = "CA" + "9" * 32


def answered_billing_call(client: FlaskClient) -> None:
    """Jane calls about billing; Alice takes it; the call ends."""
    signed_post(client, "/voice/incoming", {"CallSid": SID, "From": "+15551230001", "To": "+15550009999"})
    signed_post(client, "/voice/gather", {"CallSid": SID, "SpeechResult": "I was charged twice", "Confidence": "0.9"})
    with client.application.extensions["warmline"].store.unit_of_work() as session:
        offer_id = find_rep(session, "Alice Rivera").current_offer_id
    signed_post(client, f"/voice/whisper?offer={offer_id}", {"CallSid": REP_LEG})
    signed_post(client, f"/voice/whisper/answer?offer={offer_id}", {"CallSid": REP_LEG, "Digits": "1"})
    signed_post(client, "/voice/status", {"CallSid": SID, "CallStatus": "completed", "CallDuration": "60"})


def test_wrap_up_by_the_rep_who_took_the_call(app: Flask, client: FlaskClient) -> None:
    store = app.extensions["warmline"].store
    seed_demo(store)
    answered_billing_call(client)
    body = {"disposition": "resolved", "notes": "Refunded the second charge.", "department": "account"}
    response = client.post(f"/api/calls/{SID}/wrap-up", json=body, headers=auth(token_for(app, "Alice Rivera")))
    assert response.status_code == 200, response.get_json()
    saved = response.get_json()
    assert saved["detected_department"] == "billing" and saved["corrected_department"] == "account"
    assert saved["disposition"] == "resolved" and saved["notes"] == "Refunded the second charge."
    with store.unit_of_work() as session:
        assert require_interaction(session, SID).corrected_department == "account"

    bob = auth(token_for(app, "Bob Chen"))
    response = client.post(f"/api/calls/{SID}/wrap-up", json={"notes": "mine now"}, headers=bob)
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    response = client.post(
        f"/api/calls/{SID}/wrap-up", json={"disposition": "made up"}, headers=auth(token_for(app, "Alice Rivera"))
    )
    assert response.status_code == 400 and "disposition" in error_of(response)["message"]
    response = client.post("/api/calls/CAnope/wrap-up", json={}, headers=bob)
    assert response.status_code == 404


def file_tasks(app: Flask) -> tuple[int, int]:
    """A billing voicemail (Jane's) and a sales callback (Omar's)."""
    with app.extensions["warmline"].store.unit_of_work() as session:
        jane, omar = (find_customer_by_phone(session, number) for number in ("+15551230001", "+15551230002"))
        assert jane is not None and omar is not None
        billing = Interaction(
            call_sid="CAvm1",
            caller_number=jane.phone,
            customer_id=jane.id,
            called_number="+15550009999",
            flow_name="main",
            flow_version="v",
        )
        billing.department = "billing"
        sales = Interaction(
            call_sid="CAcb1",
            caller_number=omar.phone,
            customer_id=omar.id,
            called_number="+15550009999",
            flow_name="main",
            flow_version="v",
        )
        sales.department = "sales"
        session.add_all([billing, sales])
        session.flush()
        voicemail = Task.file(billing, kind="voicemail", note="Return Jane's voicemail", now=utcnow(), due_at=utcnow())
        callback = Task.file(sales, kind="callback", note="Call Omar back about sales", now=utcnow())
        session.add_all([voicemail, callback])
        session.flush()
        return voicemail.id, callback.id


def test_the_work_queue_claim_release_close(app: Flask, client: FlaskClient) -> None:
    seed_demo(app.extensions["warmline"].store)
    voicemail, callback = file_tasks(app)
    alice, bob = auth(token_for(app, "Alice Rivera")), auth(token_for(app, "Bob Chen"))
    tasks = client.get("/api/tasks", headers=alice).get_json()["tasks"]
    assert [(task["id"], task["kind"], task["overdue"]) for task in tasks] == [(voicemail, "voicemail", True)]
    assert tasks[0]["customer"] == "Jane Doe" and tasks[0]["call_sid"] == "CAvm1"

    claimed = client.post(f"/api/tasks/{voicemail}/claim", headers=alice).get_json()
    assert claimed["claimed_by"] == "Alice Rivera" and claimed["claimed_by_me"]
    response = client.post(f"/api/tasks/{callback}/claim", headers=alice)  # sales: not in Alice's queue
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    response = client.post(f"/api/tasks/{voicemail}/close", json={"note": " "}, headers=alice)
    assert response.status_code == 400 and "note" in error_of(response)["message"]
    released = client.post(f"/api/tasks/{voicemail}/release", headers=alice).get_json()
    assert released["claimed_by"] is None
    closed = client.post(f"/api/tasks/{voicemail}/close", json={"note": "Called back, refunded."}, headers=alice)
    assert closed.status_code == 200
    assert not closed.get_json()["open"] and closed.get_json()["close_note"] == "Called back, refunded."
    assert client.get("/api/tasks", headers=alice).get_json()["tasks"] == []
    assert client.get("/api/tasks", headers=bob).get_json()["tasks"] == []  # technical support and general only
    response = client.post(f"/api/tasks/{callback}/call-back", headers=bob)
    assert response.status_code == 403


def test_calling_back_from_a_task_places_the_call_with_the_rep(app: Flask, client: FlaskClient) -> None:
    store = app.extensions["warmline"].store
    seed_demo(store)
    voicemail, _ = file_tasks(app)
    response = client.post(f"/api/tasks/{voicemail}/call-back", headers=auth(token_for(app, "Alice Rivera")))
    assert response.status_code == 202, response.get_json()
    call_sid = response.get_json()["call_sid"]
    with store.unit_of_work() as session:
        assert require_interaction(session, call_sid).caller_number == "+15551230001"
        assert find_rep(session, "Alice Rivera").state is RepState.RESERVED  # waiting for Jane to answer


def test_customers_search_read_and_update(app: Flask, client: FlaskClient) -> None:
    seed_demo(app.extensions["warmline"].store)
    answered_billing_call(client)
    alice = auth(token_for(app, "Alice Rivera"))
    found = client.get("/api/customers?q=jane", headers=alice).get_json()["customers"]
    assert [customer["name"] for customer in found] == ["Jane Doe"]
    assert client.get("/api/customers?q=230002", headers=alice).get_json()["customers"][0]["name"] == "Omar Haddad"
    assert client.get("/api/customers", headers=alice).get_json() == {"customers": []}
    record = client.get(f"/api/customers/{found[0]['id']}", headers=alice).get_json()
    assert record["phone"] == "+15551230001" and record["timeline"][0]["call_sid"] == SID
    body: dict[str, Any] = {
        "name": "Jane Doe",
        "phone": "(555) 123-0001",
        "email": "jane@example.com",
        "tier": "gold",
        "notes": "Prefers a callback after 5 pm.",
    }
    updated = client.put(f"/api/customers/{found[0]['id']}", json=body, headers=alice)
    assert updated.status_code == 200
    assert updated.get_json()["email"] == "jane@example.com" and updated.get_json()["notes"] == body["notes"]
    clash = client.put(f"/api/customers/{found[0]['id']}", json={**body, "phone": "+15551230002"}, headers=alice)
    assert clash.status_code == 400 and "Omar Haddad" in error_of(clash)["message"]
    assert client.get("/api/customers/999", headers=alice).status_code == 404
    unknown_key = client.put(f"/api/customers/{found[0]['id']}", json={**body, "vip": True}, headers=alice)
    assert unknown_key.status_code == 400 and "vip" in error_of(unknown_key)["message"]


def test_away_with_a_reason_through_the_api(app: Flask, client: FlaskClient) -> None:
    seed_demo(app.extensions["warmline"].store)
    bob = auth(token_for(app, "Bob Chen"))
    response = client.put("/api/me/presence", json={"state": "away", "reason": "lunch"}, headers=bob)
    assert response.status_code == 200 and response.get_json()["away_reason"] == "lunch"
    response = client.put("/api/me/presence", json={"state": "away", "reason": "napping"}, headers=bob)
    assert response.status_code == 400 and "napping" in error_of(response)["message"]
