"""Two workers must never reserve the same rep: threads race for one rep on a real database."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient

from crm_sync.db import Store
from crm_sync.models import RepState, utcnow
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.offers import live_offers
from crm_sync.queries.reps import find_rep, free_reps, list_reps, upsert_rep
from tests.conftest import signed_post
from tests.twiml import parse_twiml

THREADS = 8


def one_available_rep(store: Store) -> None:
    with store.unit_of_work() as session:
        rep, _ = upsert_rep(
            session, name="Only Rep", phone_e164="+15550100009", departments=["billing"], languages=[]
        )
        rep.choose_presence(RepState.AVAILABLE, now=utcnow())


def test_threads_racing_for_one_rep_get_it_once(store: Store) -> None:
    one_available_rep(store)
    barrier = threading.Barrier(THREADS)

    def try_to_reserve(_: int) -> int | None:
        barrier.wait()
        with store.unit_of_work() as session:
            now = utcnow()
            free = free_reps(session, department="billing")
            if not free:
                return None
            free[0].reserve(now=now, until=now + timedelta(seconds=60))
            return free[0].id

    with ThreadPoolExecutor(THREADS) as pool:
        winners = [rep_id for rep_id in pool.map(try_to_reserve, range(THREADS)) if rep_id is not None]
    assert len(winners) == 1
    with store.unit_of_work() as session:
        assert find_rep(session, "Only Rep").state is RepState.RESERVED


def test_concurrent_callers_one_rep_one_dial_the_rest_queue(app: Flask, client: FlaskClient) -> None:
    """The same race through the webhooks: exactly one caller is dialled to the rep, every other one is queued."""
    one_available_rep(app.extensions["warmline"].store)
    sids = [f"CA{index:032d}" for index in range(THREADS)]
    for sid in sids:
        signed_post(client, "/voice/incoming", {"CallSid": sid, "From": "+15557650000", "To": "+15550009999"})
    barrier = threading.Barrier(THREADS)

    def ask_for_billing(sid: str) -> str:
        local = app.test_client()
        barrier.wait()
        response = signed_post(local, "/voice/gather", {"CallSid": sid, "Digits": "1"})
        root = parse_twiml(response.data)
        return "dial" if root.find("Dial") is not None else "queue" if root.find("Enqueue") is not None else "other"

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(ask_for_billing, sids))
    assert outcomes.count("dial") == 1, outcomes
    assert outcomes.count("queue") == THREADS - 1, outcomes


def test_a_duplicated_gather_never_leaves_two_reps_held(app: Flask, client: FlaskClient) -> None:
    """Twilio retries a Gather action while the first copy is still being served: whatever the order, one rep at
    most is held for the caller, and both copies get valid TwiML."""
    store = app.extensions["warmline"].store
    one_available_rep(store)
    with store.unit_of_work() as session:
        rep, _ = upsert_rep(
            session, name="Second Rep", phone_e164="+15550100008", departments=["billing"], languages=[]
        )
        rep.choose_presence(RepState.AVAILABLE, now=utcnow())
    sid = "CA" + "9" * 32
    signed_post(client, "/voice/incoming", {"CallSid": sid, "From": "+15557650000", "To": "+15550009999"})
    barrier = threading.Barrier(2)

    def answer(_: int) -> str:
        local = app.test_client()
        barrier.wait()
        response = signed_post(local, "/voice/gather", {"CallSid": sid, "Digits": "1"})
        assert response.status_code == 200
        return parse_twiml(response.data)[-1].tag

    with ThreadPoolExecutor(2) as pool:
        verbs = list(pool.map(answer, range(2)))
    assert verbs == ["Dial", "Dial"], verbs
    with store.unit_of_work() as session:
        interaction = require_interaction(session, sid)
        live = live_offers(session, interaction.id)
        reserved = [each for each in list_reps(session) if each.state is RepState.RESERVED]
        assert len(live) == 1 and [each.id for each in reserved] == [live[0].rep_id]
