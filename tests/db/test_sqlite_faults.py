"""SQLite files that cannot be written for a while (issue 16): webhooks answer with fallback TwiML meanwhile, and the
app recovers by itself the moment the files can be written again (before, connections opened during the fault
stayed read-only until a restart)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.exc import OperationalError

from crm_sync.db import Store
from crm_sync.models import Rep
from crm_sync.phones import caller_e164
from tests.conftest import app_config, seed_demo, signed_post
from tests.twiml import parse_twiml, verbs
from tests.unprivileged import hand_to_nobody, in_child_as_nobody
from voice import create_app

CALLER, COMPANY = "+15551230001", "+15550009999"


def test_webhooks_fall_back_while_the_files_are_read_only_and_recover_without_a_restart(
    shared_tmp: Path, sqlite_template: Path
) -> None:
    directory, instance = shared_tmp / "data", shared_tmp / "instance"
    directory.mkdir()
    instance.mkdir()
    database = directory / "warmline.sqlite3"
    shutil.copy(sqlite_template, database)
    hand_to_nobody(directory, database, instance)
    config = app_config(f"sqlite:///{database}", instance, routing={"sweep_interval": 0})

    def serving() -> tuple[Flask, FlaskClient]:
        # As root: everything that reads files of the checkout (modules, package metadata) before the child gives up
        # root, which may not be able to read a checkout in a private directory; opens no database file (that is
        # the child's, as nobody).
        app = create_app(config, background=False)
        for number in (CALLER, COMPANY):  # phonenumbers loads a region's metadata module on its first number
            caller_e164(number, default_region=app.extensions["warmline"].settings.default_region)
        return app, app.test_client()

    def through_the_fault(served: tuple[Flask, FlaskClient]) -> list[list[str]]:
        app, client = served
        seed_demo(app.extensions["warmline"].store)

        def call(number: int) -> list[str]:
            form = {"CallSid": f"CA{number:032d}", "From": CALLER, "To": COMPANY}
            response = signed_post(client, "/voice/incoming", form)
            assert response.status_code == 200
            return verbs(parse_twiml(response.data))

        answers = [call(1)]
        files = [database, directory / "warmline.sqlite3-wal", directory / "warmline.sqlite3-shm"]
        for path in files:
            path.chmod(0o444)
        # Connections opened from now on (a worker that restarts, a pool that opens one more) open read-only.
        app.extensions["warmline"].store.dispose()
        answers += [call(number) for number in range(2, 6)]
        for path in files:
            path.chmod(0o644)
        answers += [call(number) for number in range(6, 10)]
        return answers

    answers: list[Any] = in_child_as_nobody(serving, through_the_fault)
    assert answers[0] == ["Say", "Gather", "Redirect"]
    assert all("Dial" in answer or "Record" in answer for answer in answers[1:5]), answers  # fallback, never a 500
    assert answers[5:] == [["Say", "Gather", "Redirect"]] * 4, answers  # writable again: served again, at once


def test_connections_opened_while_the_files_were_immutable_are_replaced_once_they_are_writable(
    sqlite_store: Store,
) -> None:
    """``chattr +i`` on the database, its WAL and its WAL index: unwritable even for root, what a worker restarted
    during the fault meets. Its connections open read-only; a write fails at ``BEGIN IMMEDIATE``, before any
    statement SQLAlchemy's error handling sees, and a read works, so nothing would close that connection. Once the
    files are writable, the very next write transaction must work: before, every one failed until a restart."""
    database = Path(sqlite_store.url.removeprefix("sqlite:///"))
    with sqlite_store.unit_of_work() as session:
        session.execute(sqlalchemy.insert(Rep).values(name="Before", phone="+15550006666"))
    # Another process keeps the database open, so that the WAL and its index stay (as the other worker would).
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
    sqlite_store.dispose()
    files = [str(database), f"{database}-wal", f"{database}-shm"]
    if subprocess.run(["chattr", "+i", *files], capture_output=True, check=False).returncode != 0:
        holder.kill()
        pytest.skip("chattr +i is not available here (needs root and a file system with the immutable flag)")
    try:
        with sqlite_store.unit_of_work(read_only=True) as session:  # a read works, on a read-only connection
            assert session.scalars(sqlalchemy.select(Rep.name).where(Rep.name == "Before")).all() == ["Before"]
        with (
            pytest.raises((OperationalError, sqlite3.OperationalError), match="readonly"),
            sqlite_store.unit_of_work() as session,
        ):
            session.execute(sqlalchemy.insert(Rep).values(name="During", phone="+15550007777"))
    finally:
        subprocess.run(["chattr", "-i", *files], check=True)
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    with sqlite_store.unit_of_work() as session:  # the next write transaction, at once
        session.execute(sqlalchemy.insert(Rep).values(name="After", phone="+15550008888"))
    with sqlite_store.unit_of_work(read_only=True) as session:
        assert session.scalars(sqlalchemy.select(Rep.name).where(Rep.name == "After")).all() == ["After"]


HOLD_OPEN = (
    "import sqlite3, sys\n"
    "connection = sqlite3.connect(sys.argv[1])\n"
    "connection.execute('SELECT count(*) FROM reps').fetchone()\n"
    "print('open', flush=True)\n"
    "sys.stdin.read()\n"
)
