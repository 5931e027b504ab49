"""The outbox's write side: rows are written by the flush that writes the change, for every configured CRM, and
only for what a CRM must hear of."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from crm_sync.db import Store
from crm_sync.models import Interaction, OutboxMessage, Task, utcnow
from crm_sync.queries import interactions
from crm_sync.queries.sync import sync_state_by_call_sid
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sync.conftest import crm_overrides, drain, place_call, store_of, worker_for


def _reasons(store: Store) -> list[tuple[str, str]]:
    with store.unit_of_work(read_only=True) as session:
        return [(row.target, row.reason) for row in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]


def test_ended_calls_wrap_ups_transcripts_and_tasks_are_announced_to_each_crm(store: Store) -> None:
    announcing = Store(store.url, announce_to=("hubspot", "webhook"))
    try:
        with announcing.unit_of_work() as session:
            interactions.open_interaction(
                session,
                call_sid="CA1",
                caller_number="+15551230001",
                called_number="+15550009999",
                customer_id=None,
                flow_name="main",
                flow_version="v1",
                flow_state={},
                now=utcnow(),
            )
        assert _reasons(announcing) == []  # a live call: nothing yet
        with announcing.unit_of_work() as session:
            call = interactions.require_interaction(session, "CA1", for_update=True)
            call.voicemail_left("https://api.twilio.com/recording.mp3")
            session.add(Task.file(call, kind="voicemail", note="Return it", now=utcnow()))
            call.close(
                outcome=call.outcome_when_call_ends("completed"),
                call_status="completed",
                duration_seconds=30,
                now=utcnow(),
            )
        with announcing.unit_of_work() as session:
            call = interactions.require_interaction(session, "CA1", for_update=True)
            call.record_transcript("please call me back", engine="sphinx", confidence=0.8, error=None)
            call.close(
                outcome=call.outcome_when_call_ends("completed"),
                call_status="completed",
                duration_seconds=None,
                now=utcnow(),
            )  # a repeat: no change
        with announcing.unit_of_work() as session:
            [task] = session.scalars(select(Task)).all()
            task.close(by_rep_id=_a_rep(session), note="called back", now=utcnow())
        assert sorted(_reasons(announcing)) == sorted(
            [
                ("hubspot", "call ended"),
                ("webhook", "call ended"),
                ("hubspot", "task filed"),
                ("webhook", "task filed"),
                ("hubspot", "transcript"),
                ("webhook", "transcript"),
                ("hubspot", "task closed"),
                ("webhook", "task closed"),
            ]
        )
    finally:
        announcing.dispose()


def _a_rep(session: object) -> int:
    from crm_sync.queries.reps import upsert_rep

    rep, _ = upsert_rep(session, name="Alice", phone_e164="+15550100001", departments=["general"], languages=[])  # type: ignore[arg-type]
    session.flush()  # type: ignore[attr-defined]
    return rep.id


def _ended_call(call_sid: str) -> Interaction:
    """A call the store hears of only when it ends: its unit of work announces it to the CRMs."""
    return Interaction.heard_of_only_at_its_end(
        call_sid=call_sid,
        caller_number="+15551230001",
        called_number=None,
        call_status="completed",
        duration_seconds=5,
        flow_name="main",
        flow_version="v1",
        now=utcnow(),
    )


def test_the_row_is_in_the_changes_transaction_and_goes_when_it_rolls_back(store: Store) -> None:
    announcing = Store(store.url, announce_to=("webhook",))
    try:
        with announcing.unit_of_work() as session:
            session.add(_ended_call("CA2"))
        assert _reasons(announcing) == [("webhook", "call ended")]
        with pytest.raises(RuntimeError), announcing.unit_of_work() as session:
            session.add(_ended_call("CA3"))
            session.flush()
            raise RuntimeError("the webhook failed after the flush")
        assert _reasons(announcing) == [("webhook", "call ended")]
    finally:
        announcing.dispose()


def test_without_a_configured_crm_nothing_is_written(store: Store) -> None:
    with store.unit_of_work() as session:
        session.add(_ended_call("CA4"))
    assert _reasons(store) == []


def test_the_console_reads_each_calls_sync_state(
    sync_app_factory: Callable[..., Flask], receiver: WebhookReceiver
) -> None:
    app = sync_app_factory(**crm_overrides(receiver=receiver))
    place_call(app, "CA" + "9" * 32)
    with store_of(app).unit_of_work(read_only=True) as session:
        [waiting] = sync_state_by_call_sid(session, "CA" + "9" * 32)
    assert (waiting.target, waiting.state) == ("webhook", "pending")
    drain(worker_for(app), store_of(app))
    with store_of(app).unit_of_work(read_only=True) as session:
        [done] = sync_state_by_call_sid(session, "CA" + "9" * 32)
    assert (done.state, done.attempts) == ("delivered", 1)
    assert receiver.records["call:" + "CA" + "9" * 32]["data"]["call_sid"] == "CA" + "9" * 32
    assert receiver.bad_signatures == 0
