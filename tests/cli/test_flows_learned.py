"""`warmline flows learned` and `warmline flows try` with what routing learned from the reps (both databases)."""

from __future__ import annotations

import json

import yaml
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from crm_sync.models import LearnedExample
from tests.cli.installed import ROOT
from tests.conftest import seed_demo
from tests.services.test_console_services import actor, answered_billing_call, parts
from voice.cli import main

FLOWS = str(ROOT / "ivr_flows")
FIRST_CALLER = "my late husband's card is still paying the bill"
NEXT_CALLER = "the bill still charges my late husband's card"


def corrected_calls(app: Flask) -> None:
    """Alice corrects two calls: one the guard learns from, one that repeats the admin's own billing example."""
    seed_demo(parts(app).store)
    client = app.test_client()
    answered_billing_call(client, sid="CA" + "1" * 32, say=FIRST_CALLER)
    parts(app).wrap_ups.save(actor(app, "Alice Rivera"), "CA" + "1" * 32, department="account")
    answered_billing_call(client, sid="CA" + "2" * 32, say="I was charged twice")
    parts(app).wrap_ups.save(actor(app, "Alice Rivera"), "CA" + "2" * 32, department="sales")


def test_learned_lists_who_taught_what_and_whether_routing_uses_it(app: Flask, runner: FlaskCliRunner) -> None:
    corrected_calls(app)
    listed = runner.invoke(main, ["flows", "learned", "main", "--directory", FLOWS])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert "learned" in lines[0] and "account" in lines[0] and repr(FIRST_CALLER) in lines[0]
    assert "taught by Alice Rivera" in lines[0]
    assert "rejected" in lines[1] and "sales" in lines[1]
    assert "the flow's own example 'I was charged twice' is for 'billing'" in lines[2]
    assert lines[-1] == "# routing learns from 1 of 2 examples"

    as_json = json.loads(
        runner.invoke(main, ["flows", "learned", "main", "--directory", FLOWS, "--format", "json"]).output
    )
    assert [(item["department"], item["status"], item["taught_by"]) for item in as_json] == [
        ("account", "learned", "Alice Rivera"),
        ("sales", "rejected", "Alice Rivera"),
    ]


def test_try_routes_with_what_was_learned_and_says_so(app: Flask, runner: FlaskCliRunner) -> None:
    corrected_calls(app)
    tried = runner.invoke(main, ["flows", "try", "main", NEXT_CALLER, "I was charged twice", "--directory", FLOWS])
    assert tried.exit_code == 0, tried.output
    learned_line, admin_line = tried.output.splitlines()
    assert learned_line.startswith("account") and f"(learned from a correction: {FIRST_CALLER!r})" in learned_line
    assert admin_line.startswith("billing") and "learned" not in admin_line
    as_json = json.loads(
        runner.invoke(main, ["flows", "try", "main", NEXT_CALLER, "--directory", FLOWS, "--format", "json"]).output
    )
    assert as_json[0]["learned"] is True and as_json[0]["nearest_example"] == FIRST_CALLER


def test_export_prints_yaml_for_the_flow_and_remove_marks_examples_removed(app: Flask, runner: FlaskCliRunner) -> None:
    corrected_calls(app)
    exported = runner.invoke(main, ["flows", "learned", "main", "--directory", FLOWS, "--export"])
    assert exported.exit_code == 0, exported.output
    assert yaml.safe_load(exported.output) == {"departments": {"account": {"examples": [FIRST_CALLER]}}}

    with parts(app).store.unit_of_work() as session:
        first_id = session.scalars(select(LearnedExample.id).order_by(LearnedExample.id)).first()
    assert runner.invoke(main, ["flows", "learned", "main", "--directory", FLOWS, "--remove", "999"]).exit_code == 1
    removed = runner.invoke(main, ["flows", "learned", "main", "--directory", FLOWS, "--remove", str(first_id)])
    assert removed.output == "1 learned example removed (kept on the list, marked removed)\n"
    listed = runner.invoke(main, ["flows", "learned", "main", "--directory", FLOWS]).output.splitlines()
    assert "removed" in listed[0] and "removed by an admin" in listed[1]
    tried = runner.invoke(main, ["flows", "try", "main", NEXT_CALLER, "--directory", FLOWS]).output
    assert tried.startswith("billing")

    everything = runner.invoke(main, ["flows", "learned", "main", "--directory", FLOWS, "--remove-all"])
    assert everything.output == "1 learned example removed (kept on the list, marked removed)\n"
    with parts(app).store.unit_of_work() as session:
        rows = session.scalars(select(LearnedExample)).all()
    assert len(rows) == 2 and all(row.removed for row in rows)  # nothing deleted
