"""The `warmline` command as an admin uses it: import, presence, export."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from flask import Flask
from flask.testing import FlaskCliRunner

from crm_sync.models import RepState
from crm_sync.queries.customers import find_customer_by_phone
from crm_sync.queries.reps import find_rep, list_reps
from tests.conftest import app_config
from voice import create_app
from voice.cli import main

DEMO = Path(__file__).resolve().parents[2] / "crm_sync" / "demo"


def test_demo_data_imports_and_reps_go_available(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(main, ["crm", "import", "customers", str(DEMO / "customers.csv")])
    assert result.exit_code == 0, result.output
    assert "customers: 8 created, 0 updated, 0 rows rejected" in result.output
    result = runner.invoke(main, ["reps", "import", str(DEMO / "reps.csv"), "--status", "available"])
    assert result.exit_code == 0, result.output
    assert "5 reps set to available" in result.output
    listing = runner.invoke(main, ["reps", "list"])
    assert listing.output.count("available") == 5
    assert "+15550100001" not in listing.output  # numbers are masked on screen too


def test_bad_rows_are_reported_by_line_and_the_good_ones_load(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        "name,phone,email,tier,notes\nAnn Lee,555 123 0101,,gold,\nBad Phone,12,,,\nBen Ode,+15551230102,nope,,\n"
    )
    result = runner.invoke(main, ["crm", "import", "customers", str(path)])
    assert result.exit_code == 1
    assert f"{path}:3: phone '12'" in result.output
    assert f"{path}:4: " in result.output and "email" in result.output
    assert "customers: 1 created, 0 updated, 2 rows rejected" in result.output
    with app.extensions["warmline"].store.unit_of_work() as session:
        assert find_customer_by_phone(session, "+15551230101") is not None


def test_reps_status_changes_presence_and_names_unknown_reps(app: Flask, runner: FlaskCliRunner) -> None:
    runner.invoke(main, ["reps", "import", str(DEMO / "reps.csv")])
    with app.extensions["warmline"].store.unit_of_work() as session:
        name = list_reps(session)[0].name
    result = runner.invoke(main, ["reps", "status", name, "away"])
    assert result.exit_code == 0, result.output
    with app.extensions["warmline"].store.unit_of_work() as session:
        assert find_rep(session, name).state is RepState.AWAY
    result = runner.invoke(main, ["reps", "status", "Nobody Here", "available"])
    assert result.exit_code != 0 and "no rep named 'Nobody Here'" in result.output


def test_export_interactions_as_json_and_csv(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    from tests.conftest import seed_demo, signed_post

    seed_demo(app.extensions["warmline"].store)
    client = app.test_client()
    signed_post(client, "/voice/incoming", {"CallSid": "CA" + "8" * 32, "From": "+15551230001", "To": "+15550009999"})
    signed_post(client, "/voice/gather", {"CallSid": "CA" + "8" * 32, "SpeechResult": "I need a refund"})
    result = runner.invoke(main, ["crm", "export", "interactions", "--format", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert records[0]["call_sid"] == "CA" + "8" * 32 and records[0]["department"] == "billing"
    out = tmp_path / "interactions.csv"
    assert runner.invoke(main, ["crm", "export", "interactions", "--format", "csv", "-o", str(out)]).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[0]["issue_text"] == "I need a refund" and rows[0]["customer_name"] == "Jane Doe"


def test_a_command_run_before_the_database_is_set_up_says_what_to_run(tmp_path: Path) -> None:
    fresh = create_app(app_config(f"sqlite:///{tmp_path}/fresh.sqlite3", tmp_path / "instance"), background=False)
    try:
        runner = fresh.test_cli_runner()
        refused = runner.invoke(main, ["reps", "import", str(DEMO / "reps.csv")])
        assert refused.exit_code == 1
        assert "is not set up for this version of Warmline: run `warmline db upgrade` first" in refused.output
        assert "Traceback" not in refused.output and "no such table" not in refused.output
        assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
        loaded = runner.invoke(main, ["reps", "import", str(DEMO / "reps.csv")])
        assert loaded.exit_code == 0, loaded.output
    finally:
        fresh.extensions["warmline"].close()
