"""GET /healthz: JSON always; 200 when the store answers, 503 saying what is wrong when it cannot be reached.

Every failure here is real: a PostgreSQL database that does not exist, a port nothing listens on, a server that
accepts and never answers, an SQLite file whose directory was removed or cannot be read. No mocks.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_ADMIN_URL, app_config
from tests.unprivileged import hand_to_nobody, in_child_as_nobody
from voice import create_app
from voice.web.health import DATABASE_CHECK_SECONDS

T = TypeVar("T")


@pytest.fixture
def app_at(tmp_path: Path) -> Iterator[Any]:
    """An app pointed at any database URL (no housekeeping thread: it would only log the same failure)."""
    apps: list[Flask] = []

    def make(database_url: str) -> FlaskClient:
        config = app_config(database_url, tmp_path / f"instance{len(apps)}", routing={"sweep_interval": 0})
        app = create_app(config)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["warmline"].close()


def assert_unavailable(response: Any) -> dict[str, Any]:
    assert response.status_code == 503, response.data
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    assert body["status"] == "unavailable"
    assert body["database"].startswith("cannot be reached") or body["database"].startswith("no answer"), body
    return body


def test_a_reachable_store_is_ok(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    assert body == {"status": "ok", "database": "ok", "flow": "main", "version": body["version"], "problems": []}
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.postgres
def test_a_postgresql_database_that_does_not_exist(app_at: Any, postgres_database: str) -> None:
    missing = make_url(POSTGRES_ADMIN_URL).set(database=f"warmline_missing_{uuid.uuid4().hex[:8]}")
    body = assert_unavailable(app_at(missing.render_as_string(hide_password=False)).get("/healthz"))
    assert "warmline_missing" not in str(body)  # the public answer names no database, host or port


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_postgresql_port_nothing_listens_on(app_at: Any) -> None:
    port = free_port()
    body = assert_unavailable(app_at(f"postgresql+psycopg://postgres@127.0.0.1:{port}/warmline").get("/healthz"))
    assert str(port) not in str(body)


def test_a_server_that_never_answers_is_given_up_on_quickly(app_at: Any) -> None:
    """A listener that accepts connections and says nothing: the driver would wait for the server's greeting until
    TCP gives up; the probe answers 503 after its own timeout, and later probes do not pile up threads."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        client = app_at(f"postgresql+psycopg://postgres@127.0.0.1:{listener.getsockname()[1]}/warmline")
        threads_before = threading.active_count()
        for _ in range(3):
            started = time.monotonic()
            body = assert_unavailable(client.get("/healthz"))
            assert time.monotonic() - started < DATABASE_CHECK_SECONDS + 1.0
            # The probe's own limit, or the driver's connect timeout (3 s, crm_sync.db.TIME_BUDGET) once it passed.
            assert body["database"] in (
                f"no answer within {DATABASE_CHECK_SECONDS:g} s",
                "cannot be reached (OperationalError)",
            )
        assert threading.active_count() <= threads_before + 1  # the one hung check, not one per probe
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()  # the hung check now fails and its thread ends
        listener.close()


def test_an_sqlite_file_whose_directory_was_removed(app_at: Any, tmp_path: Path, sqlite_template: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    shutil.copy(sqlite_template, directory / "warmline.sqlite3")
    client = app_at(f"sqlite:///{directory / 'warmline.sqlite3'}")
    assert client.get("/healthz").status_code == 200  # the pool now holds an open connection to the file
    shutil.rmtree(directory)
    body = assert_unavailable(client.get("/healthz"))
    assert str(directory) not in str(body)


def test_an_sqlite_file_in_a_directory_that_cannot_be_read(shared_tmp: Path, sqlite_template: Path) -> None:
    directory, instance = shared_tmp / "data", shared_tmp / "instance"
    directory.mkdir()
    instance.mkdir()
    shutil.copy(sqlite_template, directory / "warmline.sqlite3")
    hand_to_nobody(directory, directory / "warmline.sqlite3", instance)  # the unprivileged child owns its files
    config = app_config(f"sqlite:///{directory / 'warmline.sqlite3'}", instance, routing={"sweep_interval": 0})

    def app_checked_once() -> FlaskClient:
        client = create_app(config, background=False).test_client()
        assert client.get("/healthz").status_code == 200  # everything a check needs is loaded now
        return client

    def readable_then_not(client: FlaskClient) -> list[tuple[int, Any]]:
        answers = [client.get("/healthz")]
        directory.chmod(0)
        answers.append(client.get("/healthz"))
        return [(answer.status_code, answer.get_json()) for answer in answers]

    try:
        (readable, _), (unreadable, body) = in_child_as_nobody(app_checked_once, readable_then_not)
    finally:
        directory.chmod(0o755)
    assert readable == 200  # the unprivileged user can use the database while its directory is readable
    assert unreadable == 503
    assert body["status"] == "unavailable" and body["database"] == "cannot be reached (PermissionError)"
