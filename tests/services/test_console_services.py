"""The services behind the rep console (issue 17): accounts, wrap-up, the work queue, customers, the floor.

Calls are driven through the real webhooks (signed, as Twilio sends them); the services are called as the console's
views call them. Both databases.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm_sync.errors import InvalidInput, PresenceRefused
from crm_sync.models import AuditEvent, Interaction, Outcome, RepState, Task, TaskState, utcnow
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.reps import find_rep
from tests.conftest import app_config, seed_demo, signed_post
from voice import create_app
from voice.bootstrap import Warmline
from voice.domain.actor import Actor
from voice.services.accounts import SignInRefused, TooManyAttempts, actor_of
from voice.services.worklist import TaskRefused
from voice.services.wrapup import WrapUpRefused

SID = "CA" + "7" * 32
REP_LEG = "CA" + "8" * 32


def parts(app: Flask) -> Warmline:
    warmline: Warmline = app.extensions["warmline"]
    return warmline


def actor(app: Flask, name: str, *, supervisor: bool = False) -> Actor:
    with parts(app).store.unit_of_work() as session:
        rep = find_rep(session, name)
        if supervisor:
            rep.role = "supervisor"
        return actor_of(rep)


def answered_billing_call(client: FlaskClient, *, sid: str = SID, say: str = "I was charged twice") -> None:
    """Jane calls, says why, Alice (billing) takes it and talks; the call ends: Alice is in wrap-up."""
    signed_post(client, "/voice/incoming", {"CallSid": sid, "From": "+15551230001", "To": "+15550009999"})
    signed_post(client, "/voice/gather", {"CallSid": sid, "SpeechResult": say, "Confidence": "0.9"})
    with client.application.extensions["warmline"].store.unit_of_work() as session:
        offer_id = find_rep(session, "Alice Rivera").current_offer_id
    signed_post(client, f"/voice/whisper?offer={offer_id}", {"CallSid": REP_LEG})
    signed_post(client, f"/voice/whisper/answer?offer={offer_id}", {"CallSid": REP_LEG, "Digits": "1"})
    signed_post(client, "/voice/status", {"CallSid": sid, "CallStatus": "completed", "CallDuration": "95"})
    signed_post(client, f"/voice/dial-ended?offer={offer_id}", {"CallSid": sid, "DialCallStatus": "completed"})


# --- accounts ------------------------------------------------------------------------------------------------------


def test_a_sign_in_link_works_once_and_only_for_15_minutes(app: Flask) -> None:
    seed_demo(parts(app).store)
    accounts = parts(app).accounts
    token = accounts.issue_login_link("Alice Rivera")
    signed_in = accounts.sign_in_with_link(token, address="127.0.0.1")
    assert signed_in.actor.name == "Alice Rivera" and signed_in.needs_password
    assert accounts.actor_for_session(signed_in.session_id) == signed_in.actor
    with pytest.raises(SignInRefused):
        accounts.sign_in_with_link(token, address="127.0.0.1")  # once
    late = accounts.issue_login_link("Alice Rivera")
    parts(app).clock.source = lambda: utcnow() + timedelta(minutes=15, seconds=1)
    with pytest.raises(SignInRefused):
        accounts.sign_in_with_link(late, address="127.0.0.1")


def test_a_password_is_stored_as_an_argon2_hash_and_signs_the_rep_in(app: Flask) -> None:
    seed_demo(parts(app).store)
    accounts = parts(app).accounts
    alice = actor(app, "Alice Rivera")
    with pytest.raises(InvalidInput):
        accounts.set_password(alice, current=None, new="short")
    accounts.set_password(alice, current=None, new="correct horse battery")
    with parts(app).store.unit_of_work() as session:
        stored = find_rep(session, "Alice Rivera").password_hash
    assert stored is not None and stored.startswith("$argon2id$") and "horse" not in stored
    assert accounts.sign_in_with_password("alice rivera", "correct horse battery", address="10.0.0.1").actor == alice
    with pytest.raises(SignInRefused) as wrong:
        accounts.sign_in_with_password("Alice Rivera", "wrong horse battery", address="10.0.0.1")
    with pytest.raises(SignInRefused) as nobody:
        accounts.sign_in_with_password("Nobody Here", "wrong horse battery", address="10.0.0.1")
    assert str(wrong.value) == str(nobody.value)  # nothing tells a guesser which names exist
    with pytest.raises(Exception, match="current password"):
        accounts.set_password(alice, current="not it at all", new="another good phrase")


def test_failed_sign_ins_pause_sign_in_for_that_name(app: Flask) -> None:
    seed_demo(parts(app).store)
    accounts = parts(app).accounts
    accounts.set_password(actor(app, "Alice Rivera"), current=None, new="correct horse battery")
    limit = parts(app).settings.console.max_failed_sign_ins
    for attempt in range(limit):
        with pytest.raises(SignInRefused):
            accounts.sign_in_with_password("Alice Rivera", f"guess number {attempt}", address=f"10.0.0.{attempt}")
    with pytest.raises(TooManyAttempts) as paused:
        accounts.sign_in_with_password("Alice Rivera", "correct horse battery", address="10.9.9.9")
    assert 0 < paused.value.retry_after_seconds <= 15 * 60
    parts(app).clock.source = lambda: utcnow() + timedelta(minutes=16)
    assert accounts.sign_in_with_password("Alice Rivera", "correct horse battery", address="10.9.9.9")


def test_signing_out_ends_the_session_and_sets_the_rep_offline(app: Flask) -> None:
    seed_demo(parts(app).store)
    accounts = parts(app).accounts
    signed_in = accounts.sign_in_with_link(accounts.issue_login_link("Bob Chen"), address="127.0.0.1")
    accounts.sign_out(signed_in.session_id)
    assert accounts.actor_for_session(signed_in.session_id) is None
    with parts(app).store.unit_of_work() as session:
        assert find_rep(session, "Bob Chen").state is RepState.OFFLINE
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions[-2:] == ["signed in", "signed out"]


# --- presence ------------------------------------------------------------------------------------------------------


def test_away_takes_a_configured_reason_and_only_a_supervisor_sets_someone_elses(app: Flask) -> None:
    seed_demo(parts(app).store)
    presence = parts(app).presence
    bob = actor(app, "Bob Chen")
    alice_id = actor(app, "Alice Rivera").rep_id
    change = presence.set_presence_of(bob.rep_id, RepState.AWAY, reason="lunch", actor=bob)
    assert change.rep.state == "away" and change.rep.away_reason == "lunch"
    with pytest.raises(InvalidInput):
        presence.set_presence_of(bob.rep_id, RepState.AWAY, reason="napping", actor=bob)
    with pytest.raises(PresenceRefused):
        presence.set_presence_of(alice_id, RepState.OFFLINE, actor=bob)
    carmen = actor(app, "Carmen Ortiz", supervisor=True)
    assert presence.set_presence_of(alice_id, RepState.AWAY, reason="training", actor=carmen).rep.state == "away"


# --- wrap-up -------------------------------------------------------------------------------------------------------


def test_wrap_up_keeps_what_was_detected_next_to_the_correction_and_frees_the_rep(
    database_url: str, tmp_path: Path
) -> None:
    app = create_app(app_config(database_url, tmp_path / "instance", routing={"wrap_up": 120}))
    client = app.test_client()
    seed_demo(parts(app).store)
    answered_billing_call(client)
    with parts(app).store.unit_of_work() as session:
        assert find_rep(session, "Alice Rivera").state is RepState.WRAP_UP
    alice = actor(app, "Alice Rivera")
    saved = parts(app).wrap_ups.save(
        alice, SID, disposition="resolved", notes="Refunded the second charge.", department="account"
    )
    assert saved.detected_department == "billing" and saved.corrected_department == "account"
    assert saved.wrap_up_ended
    with parts(app).store.unit_of_work() as session:
        record = require_interaction(session, SID)
        assert (record.department, record.corrected_department) == ("billing", "account")
        assert record.disposition == "resolved"
        assert record.wrapped_up_by_rep_id == alice.rep_id and record.corrected_by_rep_id == alice.rep_id
        assert find_rep(session, "Alice Rivera").state is RepState.AVAILABLE  # saving ended the wrap-up
    # Choosing the detected department again withdraws the correction.
    assert parts(app).wrap_ups.save(alice, SID, department="billing").corrected_department is None
    parts(app).close()


def test_only_the_rep_who_took_the_call_or_a_supervisor_wraps_it_up(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    answered_billing_call(client)
    with pytest.raises(WrapUpRefused):
        parts(app).wrap_ups.save(actor(app, "Bob Chen"), SID, notes="not mine")
    with pytest.raises(InvalidInput):
        parts(app).wrap_ups.save(actor(app, "Alice Rivera"), SID, disposition="made up")
    with pytest.raises(InvalidInput):
        parts(app).wrap_ups.save(actor(app, "Alice Rivera"), SID, department="astrology")
    parts(app).clock.source = lambda: utcnow() + timedelta(days=3)  # days later, a supervisor corrects it
    saved = parts(app).wrap_ups.save(actor(app, "Carmen Ortiz", supervisor=True), SID, department="technical_support")
    assert saved.corrected_department == "technical_support"


# --- the work queue ------------------------------------------------------------------------------------------------


def test_a_rep_works_the_tasks_of_their_departments_and_closes_them_with_a_note(app: Flask) -> None:
    seed_demo(parts(app).store)
    with parts(app).store.unit_of_work() as session:
        call = Interaction(call_sid="CAvm", caller_number="+15551230001", flow_name="main", flow_version="v")
        call.department = "billing"
        session.add(call)
        session.flush()
        session.add(Task.file(call, kind="voicemail", note="Return the voicemail", now=utcnow(), due_at=utcnow()))
        other = Interaction(call_sid="CAsales", caller_number="+15551230002", flow_name="main", flow_version="v")
        other.department = "sales"
        session.add(other)
        session.flush()
        session.add(Task.file(other, kind="callback", note="Call back about sales", now=utcnow()))
    work = parts(app).work
    alice, bob = actor(app, "Alice Rivera"), actor(app, "Bob Chen")
    [item] = work.work_queue(alice)  # billing's, not sales'
    assert item.kind == "voicemail" and item.overdue  # it was due the moment it was filed
    claimed = work.claim(alice, item.id)
    assert claimed.claimed_by_me
    with pytest.raises(TaskRefused):
        work.claim(bob, item.id)
    with pytest.raises(InvalidInput):
        work.close(alice, item.id, note="  ")
    closed = work.close(alice, item.id, note="Called back, refund confirmed.")
    assert not closed.open and closed.close_note == "Called back, refund confirmed."
    assert work.work_queue(alice) == []
    assert len(work.work_queue(actor(app, "Carmen Ortiz", supervisor=True))) == 1  # a supervisor sees the rest
    with parts(app).store.unit_of_work() as session:
        assert session.get(Task, item.id).state is TaskState.DONE  # type: ignore[union-attr]


# --- customers -----------------------------------------------------------------------------------------------------


def test_customers_are_found_by_name_or_digits_and_their_timeline_shows_the_wrap_up(
    app: Flask, client: FlaskClient
) -> None:
    seed_demo(parts(app).store)
    answered_billing_call(client)
    alice = actor(app, "Alice Rivera")
    parts(app).wrap_ups.save(alice, SID, disposition="resolved", notes="Refunded.")
    customers = parts(app).customers
    [jane] = customers.search(alice, "jane")
    assert customers.search(alice, "230001")[0].id == jane.id
    record = customers.record(alice, jane.id)
    [entry] = [entry for entry in record.timeline if entry.call_sid == SID]
    assert entry.title.startswith("Call about billing: answered, with Alice Rivera")
    assert "Disposition: resolved" in (entry.detail or "") and "Notes: Refunded." in (entry.detail or "")
    updated = customers.update(
        alice, jane.id, name="Jane Doe", phone="(555) 123-0001", email="jane@example.com", tier="gold", notes="VIP"
    )
    assert updated.email == "jane@example.com" and updated.notes == "VIP"
    with pytest.raises(InvalidInput, match="Omar"):
        customers.update(alice, jane.id, name="Jane", phone="+15551230002", email=None, tier="gold", notes=None)
    with parts(app).store.unit_of_work() as session:
        audited = session.scalars(select(AuditEvent).where(AuditEvent.action == "customer updated")).all()
    assert [event.details["fields"] for event in audited] == [["email", "notes"]]


# --- the floor -----------------------------------------------------------------------------------------------------


def test_the_floor_counts_todays_calls_service_level_and_handle_time(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    answered_billing_call(client)
    with parts(app).store.unit_of_work() as session:
        abandoned = Interaction(
            call_sid="CAgone", caller_number="+15551230002", flow_name="main", flow_version="v", department="billing"
        )
        session.add(abandoned)
        session.flush()
        abandoned.close(outcome=Outcome.ABANDONED, call_status="completed", duration_seconds=50, now=utcnow())
    floor = parts(app).floor.floor()
    billing = next(figures for figures in floor.departments if figures.department == "billing")
    assert (billing.answered_today, billing.abandoned_today, billing.waiting) == (1, 1, 0)
    assert billing.service_level == 0.5  # answered at once, and one who hung up
    assert billing.average_handle_seconds is not None
    alice = next(rep for rep in floor.reps if rep.name == "Alice Rivera")
    assert alice.state == "available" and alice.call_sid is None
