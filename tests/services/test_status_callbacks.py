"""Twilio's requests repeated or out of order: status callbacks close the interaction once, whatever their order
and however often they come, and a repeated Voice URL is not a second contact."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from crm_sync.models import InteractionStatus, Outcome, RepState
from crm_sync.queries.customers import upsert_customer
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.reps import find_rep
from tests.conftest import seed_demo, signed_post
from tests.twiml import parse_twiml

SID = "CA" + "4" * 32


def start_and_reach_a_rep(client: FlaskClient) -> None:
    signed_post(client, "/voice/incoming", {"CallSid": SID, "From": "+15551230001", "To": "+15550009999"})
    signed_post(client, "/voice/gather", {"CallSid": SID, "SpeechResult": "I was charged twice", "Confidence": "0.9"})


def test_repeated_and_out_of_order_callbacks_close_once(app: Flask, client: FlaskClient) -> None:
    store = app.extensions["warmline"].store
    seed_demo(store)
    start_and_reach_a_rep(client)
    signed_post(client, "/voice/whisper?offer=1", {"CallSid": "CA" + "5" * 32})
    signed_post(client, "/voice/whisper/answer?offer=1", {"CallSid": "CA" + "5" * 32, "Digits": "1"})

    completed = {"CallSid": SID, "CallStatus": "completed", "CallDuration": "75", "SequenceNumber": "3"}
    for _ in range(3):
        response = signed_post(client, "/voice/status", completed)
        assert response.status_code == 200
        parse_twiml(response.data)
    # A late "in-progress" (sent earlier, delivered last) must not reopen the call.
    late = {"CallSid": SID, "CallStatus": "in-progress", "SequenceNumber": "1"}
    assert signed_post(client, "/voice/status", late).status_code == 200
    # The Dial action arriving after the status callback changes nothing either.
    signed_post(client, "/voice/dial-ended?offer=1", {"CallSid": SID, "DialCallStatus": "completed"})

    with store.unit_of_work() as session:
        interaction = require_interaction(session, SID)
        assert interaction.status is InteractionStatus.ENDED
        assert interaction.outcome is Outcome.ANSWERED
        assert interaction.duration_seconds == 75
        assert interaction.last_call_status == "completed"
        assert interaction.ended_at is not None and interaction.answered_at is not None
        ended_at = interaction.ended_at
        rep = find_rep(session, "Alice Rivera")
        assert rep.state is RepState.AVAILABLE  # released exactly once, not stuck on_call

    signed_post(client, "/voice/status", completed)
    with store.unit_of_work() as session:
        assert require_interaction(session, SID).ended_at == ended_at


def test_hang_up_during_the_ivr_is_abandoned(app: Flask, client: FlaskClient) -> None:
    store = app.extensions["warmline"].store
    seed_demo(store)
    signed_post(client, "/voice/incoming", {"CallSid": SID, "From": "+15557654321", "To": "+15550009999"})
    signed_post(client, "/voice/status", {"CallSid": SID, "CallStatus": "completed", "CallDuration": "4"})
    with store.unit_of_work() as session:
        interaction = require_interaction(session, SID)
        assert interaction.outcome is Outcome.ABANDONED
        assert interaction.customer_id is None
        assert interaction.caller_number == "+15557654321"


def test_caller_hangs_up_while_the_rep_hears_the_whisper(app: Flask, client: FlaskClient) -> None:
    store = app.extensions["warmline"].store
    seed_demo(store)
    start_and_reach_a_rep(client)
    signed_post(client, "/voice/status", {"CallSid": SID, "CallStatus": "completed", "CallDuration": "20"})
    # The rep then presses 1 on a call that is gone: they are told, and freed.
    response = signed_post(client, "/voice/whisper/answer?offer=1", {"CallSid": "CA" + "6" * 32, "Digits": "1"})
    root = parse_twiml(response.data)
    assert root.find("Hangup") is not None
    with store.unit_of_work() as session:
        assert find_rep(session, "Alice Rivera").state is RepState.AVAILABLE
        assert require_interaction(session, SID).outcome is Outcome.ABANDONED


def test_status_for_an_unknown_call_is_acknowledged(client: FlaskClient) -> None:
    response = signed_post(client, "/voice/status", {"CallSid": "CA" + "7" * 32, "CallStatus": "completed"})
    assert response.status_code == 200
    assert list(parse_twiml(response.data)) == []


def test_a_retried_voice_url_is_not_a_second_contact(app: Flask, client: FlaskClient) -> None:
    # When the first request times out and the number's fallback URL is this same endpoint, Twilio asks again with
    # the same CallSid: that must not make a first-time caller a "repeat caller" (branches, queue priority).
    store = app.extensions["warmline"].store
    with store.unit_of_work() as session:
        upsert_customer(
            session, name="Nia Brooks", phone_e164="+15551239999", email=None, tier="standard", notes=None,
            custom_fields={},
        )
    for caller in ("+15551239999", "+15557770000"):  # a customer, and a number the CRM does not know
        sid = "CA" + caller[-4:] * 8
        for _ in range(2):
            form = {"CallSid": sid, "From": caller, "To": "+15550009999"}
            assert signed_post(client, "/voice/incoming", form).status_code == 200
        with store.unit_of_work() as session:
            facts = require_interaction(session, sid).flow_state["caller"]
            assert facts["days_since_last_contact"] is None, caller
