"""The `warmline` command as an admin uses it: import, presence, export."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import alembic.command
import pytest
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskCliRunner

from crm_sync.db import alembic_config
from crm_sync.models import RepState
from crm_sync.queries.customers import find_customer_by_phone
from crm_sync.queries.reps import find_rep, list_reps
from tests.cli.installed import ROOT, checkout_environment, require_installed_command, warmline
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


def test_one_rejected_row_is_one_row(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("name,phone\nAnn Lee,555 123 0101\nBad Phone,12\n", encoding="utf-8")

    result = runner.invoke(main, ["crm", "import", "customers", str(path)])

    assert result.exit_code == 1
    assert "customers: 1 created, 0 updated, 1 row rejected" in result.output


@pytest.mark.parametrize(
    ("command", "header", "complaint", "expected"),
    [
        pytest.param(
            ["crm", "import", "customers"],
            "name,email",
            "missing required column 'phone'",
            "expected the columns name, phone (optional: email, tier, notes)",
            id="customers",
        ),
        pytest.param(
            ["reps", "import"],
            "name,phone,departmnts",
            "missing required column 'departments' and unknown column 'departmnts'",
            "expected the columns name, phone, departments (optional: languages, role)",
            id="reps",
        ),
    ],
)
def test_a_header_without_a_required_column_is_one_line_saying_what_to_fix(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path, command: list[str], header: str, complaint: str, expected: str
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(f"{header}\nAnn Lee,555 123 0101,billing\n", encoding="utf-8")

    result = runner.invoke(main, [*command, str(path)])

    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: {path}:1: {complaint}; the header has ")
    assert expected in line and line.endswith("(nothing was imported)")


def test_db_upgrade_says_what_it_did(tmp_path: Path) -> None:
    fresh = create_app(app_config(f"sqlite:///{tmp_path}/fresh.sqlite3", tmp_path / "instance"), background=False)
    try:
        runner = fresh.test_cli_runner()
        created = runner.invoke(main, ["db", "upgrade"])
        assert created.exit_code == 0, created.output
        head = re.fullmatch(r"created the database schema \(revision (\w+)\)\n", created.output)
        assert head is not None, created.output
        assert runner.invoke(main, ["db", "upgrade"]).output == (
            f"the database is already up to date at revision {head[1]}\n"
        )
        store = fresh.extensions["warmline"].store
        alembic.command.downgrade(alembic_config(store.engine), "-1")
        with store.engine.connect() as connection:
            [older] = MigrationContext.configure(connection).get_current_heads()
        upgraded = runner.invoke(main, ["db", "upgrade"])
        assert upgraded.output == f"upgraded the database from revision {older} to {head[1]}\n"
    finally:
        fresh.extensions["warmline"].close()


class RefusesToBuild:
    """An app source for commands that must not need the app."""

    def load_app(self) -> Flask:
        raise AssertionError("the app was built")


@pytest.mark.parametrize(
    "arguments", [["--help"], ["reps", "--help"], ["reps", "import", "--help"], ["call", "--help"]]
)
def test_help_builds_no_app_and_shows_only_warmlines_options(arguments: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        arguments,
        prog_name="warmline",
        obj=RefusesToBuild(),
        env={"WARMLINE_CONFIG": str(tmp_path / "missing.yaml")},
    )

    assert result.exit_code == 0, result.output
    assert "Usage: warmline" in result.output
    for flask_option in ("--env-file", "--app", "--debug"):
        assert flask_option not in result.output


def test_one_shot_commands_print_their_answer_and_no_info_logs(tmp_path: Path) -> None:
    require_installed_command()
    env = {**checkout_environment(tmp_path), "TWILIO_AUTH_TOKEN": "not-development"}

    done = warmline("db", "upgrade", env=env, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no "INFO … flow main loaded" (nor anything else) around the answer
    assert done.stdout.count("\n") == 1


def test_only_call_and_simulate_load_the_emulator(tmp_path: Path) -> None:
    env = {**checkout_environment(tmp_path), "TWILIO_AUTH_TOKEN": "not-development"}
    script = (
        "import sys\n"
        "from voice.cli import main\n"
        "for command in (['db', 'upgrade'], ['reps', 'list'], ['crm', 'export', 'interactions']):\n"
        "    main(command, standalone_mode=False)\n"
        "print(sorted(name for name in sys.modules if name.startswith('voice.emulator')))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_flows_commands_use_the_configured_flows_folder_wherever_they_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flows = tmp_path / "company" / "flows"
    flows.mkdir(parents=True)
    shutil.copy(ROOT / "ivr_flows" / "main.yaml", flows / "front_door.yaml")
    config = tmp_path / "company" / "config.yaml"
    config.write_text(f"instance_path: {tmp_path / 'instance'}\nflows:\n  directory: flows\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = {"WARMLINE_CONFIG": str(config), "TWILIO_AUTH_TOKEN": "not-development"}
    runner = CliRunner()

    linted = runner.invoke(main, ["flows", "lint"], env=env)
    assert (linted.exit_code, linted.output) == (0, "1 flow file checked: no problems\n")
    assert runner.invoke(main, ["flows", "lint", "front_door"], env=env).exit_code == 0
    tried = runner.invoke(main, ["flows", "try", "front_door", "I was charged twice", "--engine", "tfidf"], env=env)
    assert tried.exit_code == 0, tried.output
    assert tried.output.startswith("billing")
    drawn = runner.invoke(main, ["flows", "graph", "front_door", "-o", "front_door.dot"], env=env)
    assert drawn.exit_code == 0, drawn.output
    assert "digraph front_door {" in (elsewhere / "front_door.dot").read_text(encoding="utf-8")
    missing = runner.invoke(main, ["flows", "graph", "back_door", "-o", "back_door.dot"], env=env)
    assert missing.exit_code == 1 and f"no flow file 'back_door' (looked in {flows})" in missing.output
