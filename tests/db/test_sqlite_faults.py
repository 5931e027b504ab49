"""SQLite files that cannot be written for a while (issue 16): webhooks answer with fallback TwiML meanwhile, and the
app recovers by itself the moment the files can be written again (before, connections opened during the fault
stayed read-only until a restart)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from flask import Flask

from tests.conftest import app_config, seed_demo, signed_post
from tests.twiml import parse_twiml, verbs
from tests.unprivileged import hand_to_nobody, in_child_as_nobody
from voice import create_app


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

    def serving() -> Flask:  # as root: loads the modules; opens no database file (that is the child's, as nobody)
        return create_app(config, background=False)

    def through_the_fault(app: Flask) -> list[list[str]]:
        seed_demo(app.extensions["warmline"].store)
        client = app.test_client()

        def call(number: int) -> list[str]:
            form = {"CallSid": f"CA{number:032d}", "From": "+15551230001", "To": "+15550009999"}
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
