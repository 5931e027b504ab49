"""Routing learns from the reps' corrections while the service runs (issue 18): a wrap-up's "Wrong department?"
becomes a learned example, and within ``flows.reload_interval`` the next caller with similar words reaches the
right department, with no restart. Real webhooks, both databases, the flow watcher's own thread."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, text

from crm_sync.models import WITHDRAWN, LearnedExample, utcnow
from crm_sync.queries.interactions import require_interaction
from tests.conftest import SAMPLE_FLOW, app_config, seed_demo, signed_post
from tests.services.test_console_services import actor, answered_billing_call, parts
from tests.services.test_flow_reload import rewrite
from tests.web.test_api import token_for
from voice import create_app

FIRST_CALLER = "my late husband's card is still paying the bill"
NEXT_CALLER = "the bill still charges my late husband's card"
FIRST_SID = "CA" + "1" * 32
NEXT_SID = "CA" + "2" * 32
RELOAD_INTERVAL = 0.1


@pytest.fixture
def learning_app(database_url: str, tmp_path: Path, flows_dir: Path) -> Iterator[Flask]:
    config = app_config(database_url, tmp_path / "instance")
    config["flows"] = {"directory": str(flows_dir), "reload_interval": RELOAD_INTERVAL, "classifier": "tfidf"}
    app = create_app(config)
    seed_demo(parts(app).store)
    yield app
    parts(app).close()


def routes(app: Flask, words: str) -> tuple[str, bool]:
    flows = parts(app).flows
    result = flows.classifier_for(flows.current()).classify(words)
    return result.department, result.matched_learned


def within_reload(check: Callable[[], bool], *, polls: int = 20) -> float:
    """Seconds until ``check`` holds, failing past ``polls`` reload intervals (plus the watcher's own slack)."""
    started = time.monotonic()
    deadline = started + polls * RELOAD_INTERVAL + 2.0
    while not check():
        assert time.monotonic() < deadline, "routing did not relearn within the reload interval"
        time.sleep(RELOAD_INTERVAL / 4)
    return time.monotonic() - started


def department_of(app: Flask, sid: str) -> str | None:
    with parts(app).store.unit_of_work() as session:
        return require_interaction(session, sid).department


def test_a_correction_routes_the_next_caller_right_without_a_restart(learning_app: Flask) -> None:
    app = learning_app
    client = app.test_client()
    answered_billing_call(client, sid=FIRST_SID, say=FIRST_CALLER)
    assert department_of(app, FIRST_SID) == "billing"
    assert routes(app, NEXT_CALLER) == ("billing", False)

    parts(app).wrap_ups.save(actor(app, "Alice Rivera"), FIRST_SID, department="account")
    with parts(app).store.unit_of_work() as session:
        taught = session.scalars(select(LearnedExample)).one()
        assert (taught.text, taught.department, taught.detected_department) == (FIRST_CALLER, "account", "billing")
        assert taught.flow_name == "main" and not taught.removed
    waited = within_reload(lambda: routes(app, NEXT_CALLER) == ("account", True))
    assert waited < 2.0

    # The next caller, through the real webhooks, reaches account services.
    signed_post(client, "/voice/incoming", {"CallSid": NEXT_SID, "From": "+15551230009", "To": "+15550009999"})
    signed_post(client, "/voice/gather", {"CallSid": NEXT_SID, "SpeechResult": NEXT_CALLER, "Confidence": "0.9"})
    assert department_of(app, NEXT_SID) == "account"
    # What the admin wrote still routes as written.
    assert routes(app, "I was charged twice") == ("billing", False)


def test_a_correction_taken_back_is_marked_withdrawn_and_forgotten_and_may_be_made_again(learning_app: Flask) -> None:
    app = learning_app
    answered_billing_call(app.test_client(), sid=FIRST_SID, say=FIRST_CALLER)
    alice = actor(app, "Alice Rivera")
    parts(app).wrap_ups.save(alice, FIRST_SID, department="account")
    within_reload(lambda: routes(app, NEXT_CALLER)[0] == "account")

    parts(app).wrap_ups.save(alice, FIRST_SID, department="billing")  # the detected one: the correction is withdrawn
    within_reload(lambda: routes(app, NEXT_CALLER)[0] == "billing")
    with parts(app).store.unit_of_work() as session:
        kept = session.scalars(select(LearnedExample)).one()  # not deleted
        assert kept.removed and kept.removed_reason == WITHDRAWN and kept.removed_by == "Alice Rivera"

    parts(app).wrap_ups.save(alice, FIRST_SID, department="account")
    within_reload(lambda: routes(app, NEXT_CALLER)[0] == "account")


def test_a_flow_whose_departments_change_keeps_what_still_applies(learning_app: Flask, flows_dir: Path) -> None:
    app = learning_app
    answered_billing_call(app.test_client(), sid=FIRST_SID, say=FIRST_CALLER)
    parts(app).wrap_ups.save(actor(app, "Alice Rivera"), FIRST_SID, department="account")
    within_reload(lambda: routes(app, NEXT_CALLER) == ("account", True))

    # The admin renames the department: the example for the old name is kept, inactive; nothing routes there.
    flow_file = flows_dir / "main.yaml"
    rewrite(flow_file, "  account:\n", "  accounts:\n")
    rewrite(flow_file, "sales, account, general]", "sales, accounts, general]")
    within_reload(lambda: "accounts" in parts(app).flows.current().departments)
    assert routes(app, NEXT_CALLER)[1] is False
    with parts(app).store.unit_of_work() as session:
        assert not session.scalars(select(LearnedExample)).one().removed

    # The department comes back: so does what was learned for it.
    shutil.copy(SAMPLE_FLOW, flow_file)
    rewrite(flow_file, "company: Acme", "company: Acme ")  # a new stamp for the watcher
    within_reload(lambda: routes(app, NEXT_CALLER) == ("account", True))


def test_a_supervisor_corrects_a_call_days_later_and_routing_learns_it(learning_app: Flask) -> None:
    app = learning_app
    answered_billing_call(app.test_client(), sid=FIRST_SID, say=FIRST_CALLER)
    parts(app).clock.source = lambda: utcnow() + timedelta(days=3)
    parts(app).wrap_ups.save(actor(app, "Carmen Ortiz", supervisor=True), FIRST_SID, department="account")
    within_reload(lambda: routes(app, NEXT_CALLER) == ("account", True))
    with parts(app).store.unit_of_work() as session:
        assert session.scalars(select(LearnedExample)).one().taught_by_supervisor


def test_a_correction_over_the_api_days_later_teaches_routing_too(learning_app: Flask) -> None:
    app = learning_app
    client = app.test_client()
    answered_billing_call(client, sid=FIRST_SID, say=FIRST_CALLER)
    parts(app).clock.source = lambda: utcnow() + timedelta(days=5)
    token = token_for(app, "Alice Rivera")
    response = client.post(
        f"/api/calls/{FIRST_SID}/wrap-up", json={"department": "account"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.get_json()
    within_reload(lambda: routes(app, NEXT_CALLER) == ("account", True))


def test_when_the_store_cannot_be_read_routing_keeps_what_it_learned(
    learning_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    app = learning_app
    caplog.set_level(logging.INFO, logger="voice.adapters.learned_examples")
    answered_billing_call(app.test_client(), sid=FIRST_SID, say=FIRST_CALLER)
    parts(app).wrap_ups.save(actor(app, "Alice Rivera"), FIRST_SID, department="account")
    within_reload(lambda: routes(app, NEXT_CALLER) == ("account", True))
    # The table is out of reach (renamed, and put back after: PostgreSQL's test database outlives the test).
    with parts(app).store.engine.begin() as connection:
        connection.execute(text("ALTER TABLE learned_examples RENAME TO learned_examples_away"))
    try:
        within_reload(lambda: "learned examples not readable" in caplog.text)
        assert routes(app, NEXT_CALLER) == ("account", True)
        time.sleep(5 * RELOAD_INTERVAL)
        assert caplog.text.count("learned examples not readable") == 1  # said once, not at every poll
    finally:
        with parts(app).store.engine.begin() as connection:
            connection.execute(text("ALTER TABLE learned_examples_away RENAME TO learned_examples"))
    within_reload(lambda: "learned examples readable again" in caplog.text)
    assert routes(app, NEXT_CALLER) == ("account", True)


def test_every_worker_learns_a_correction_saved_in_another(
    learning_app: Flask, database_url: str, tmp_path: Path, flows_dir: Path
) -> None:
    # A second app on the same database and flows: another gunicorn worker, with its own flow library and watcher.
    config = app_config(database_url, tmp_path / "other-worker")
    config["flows"] = {"directory": str(flows_dir), "reload_interval": RELOAD_INTERVAL, "classifier": "tfidf"}
    other_worker = create_app(config)
    try:
        assert routes(other_worker, NEXT_CALLER) == ("billing", False)
        answered_billing_call(learning_app.test_client(), sid=FIRST_SID, say=FIRST_CALLER)
        parts(learning_app).wrap_ups.save(actor(learning_app, "Alice Rivera"), FIRST_SID, department="account")
        within_reload(lambda: routes(other_worker, NEXT_CALLER) == ("account", True))
    finally:
        parts(other_worker).close()
