"""Shared fixtures: a fresh, migrated database per test on SQLite and PostgreSQL; the app; a live server on
loopback with the Twilio emulator in front of it.

PostgreSQL tests use the server on 127.0.0.1:5432 (trust auth). Without it they are skipped with a message, unless
WARMLINE_REQUIRE_POSTGRES=1 (CI), where a missing server is an error. Likewise the tests of the optional routing
engines skip, saying what to install, when their packages or models are missing, unless WARMLINE_REQUIRE_EXTRAS=1
(CI: ``make test`` installs them), where that is an error (:func:`skip_without_extra`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator
from werkzeug.serving import BaseWSGIServer, make_server

from crm_sync.db import Store
from crm_sync.models import Base, RepState, utcnow
from crm_sync.queries.customers import upsert_customer
from crm_sync.queries.reps import upsert_rep
from ivr_flows import Classifier, Flow, build_flow_classifier, load_flow
from voice import create_app
from voice.emulator import CallerInput, CallerScript, EmulatedCall, SharedKey, TwilioEmulator

SAMPLE_FLOW = Path(__file__).resolve().parents[1] / "ivr_flows" / "main.yaml"
POSTGRES_ADMIN_URL = os.environ.get("WARMLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://warmline.example.com"

DEMO_CUSTOMERS = [
    ("Jane Doe", "+15551230001", "gold"),
    ("Omar Haddad", "+15551230002", "standard"),
]
DEMO_REPS = [
    # name, phone, departments
    ("Alice Rivera", "+15550100001", ["billing", "general"]),
    ("Bob Chen", "+15550100002", ["technical_support", "general"]),
    ("Carmen Ortiz", "+15550100003", ["sales", "account", "general"]),
]


@pytest.fixture(scope="session")
def sample_flow() -> Flow:
    """The shipped main.yaml, loaded once (flows are immutable, so sharing is safe)."""
    return load_flow(SAMPLE_FLOW)


def skip_without_extra(reason: str) -> NoReturn:
    """Skip a test whose optional routing engine cannot run here (``reason`` says what to install), or fail it when
    WARMLINE_REQUIRE_EXTRAS=1: where the extras are meant to be installed (CI, ``make test``), a missing one must
    not pass as a skip."""
    if os.environ.get("WARMLINE_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"the routing extras are required (WARMLINE_REQUIRE_EXTRAS=1) but: {reason}", pytrace=False)
    pytest.skip(reason)


def tfidf(flow: Flow) -> Classifier:
    """``flow``'s TF-IDF classifier: what the engine's tests route speech with (words only: no model, no NumPy, the
    same answers on every machine). Built per call of the engine; it costs about a millisecond."""
    return build_flow_classifier(flow, engine="tfidf")


# --- databases -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once; each test gets a copy of the file (much faster than migrating per test)."""
    path = tmp_path_factory.mktemp("db") / "template.sqlite3"
    store = Store(f"sqlite:///{path}")
    store.upgrade()
    store.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of our own for this test session, migrated once, dropped at the end."""
    name = f"warmline_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server is not there: skip, or fail where it must be there
        admin.dispose()
        if os.environ.get("WARMLINE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (WARMLINE_REQUIRE_POSTGRES=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    store = Store(url)
    store.upgrade()
    store.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "warmline.sqlite3"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    engine = create_engine(url)
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    yield store
    store.dispose()


def seed_demo(store: Store, *, reps_available: bool = True) -> None:
    with store.unit_of_work() as session:
        for name, phone, tier in DEMO_CUSTOMERS:
            upsert_customer(session, name=name, phone_e164=phone, email=None, tier=tier, notes=None, custom_fields={})
        for name, phone, departments in DEMO_REPS:
            rep, _ = upsert_rep(session, name=name, phone_e164=phone, departments=departments, languages=["en-US"])
            if reps_available:
                rep.choose_presence(RepState.AVAILABLE, now=utcnow())


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    """A flows folder of the test's own holding a copy of the sample flow (``main.yaml``), to edit or break."""
    directory = tmp_path / "flows"
    directory.mkdir()
    shutil.copy(SAMPLE_FLOW, directory / "main.yaml")
    return directory


def add_available_reps(store: Store, count: int, *, departments: tuple[str, ...] = ("general",)) -> list[int]:
    """``count`` more reps on the floor, available (a floor that weighs what a busy one does); their ids."""
    with store.unit_of_work() as session:
        ids = []
        for index in range(count):
            rep, _ = upsert_rep(
                session,
                name=f"Floor Rep {index:03d}",
                phone_e164=f"+1555020{index:04d}",
                departments=list(departments),
                languages=["en-US"],
            )
            rep.choose_presence(RepState.AVAILABLE, now=utcnow())
            session.flush()
            ids.append(rep.id)
        return ids


# --- the app -------------------------------------------------------------------------------------------------------


def app_config(database_url: str, instance: Path, **overrides: Any) -> dict[str, Any]:
    # No after-call wrap-up unless a test asks for it: most scenarios are about who takes the next call.
    routing = {"wrap_up": 0, **overrides.pop("routing", {})}
    return {
        "database_url": database_url,
        "auth_token": AUTH_TOKEN,
        "account_sid": ACCOUNT_SID,
        "public_url": PUBLIC_URL,
        "instance_path": instance,
        "twilio_api_url": "http://127.0.0.1:9",  # nothing listens: REST must never be on the response path
        # Tests that want reloading turn it on; speech routes with TF-IDF, the word matching the scenarios' phrases
        # were written for (the embedding engines have tests of their own, and test_calls_e2e one call with
        # WordLlama, what `make run` installs).
        "flows": {"reload_interval": 0, "classifier": "tfidf"},
        "routing": routing,
        **overrides,
    }


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(app_config(database_url, tmp_path / "instance"))
    app.config["TESTING"] = True
    yield app
    app.extensions["warmline"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def signed_post(client: FlaskClient, path: str, params: dict[str, str], *, base: str = PUBLIC_URL) -> Any:
    """POST as Twilio would: form-encoded, with X-Twilio-Signature over base + path + params."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(base + path, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


@pytest.fixture
def twilio_post(client: FlaskClient) -> Callable[..., Any]:
    def post(path: str, params: dict[str, str], **kwargs: Any) -> Any:
        return signed_post(client, path, params, **kwargs)

    return post


# --- a live server on loopback -------------------------------------------------------------------------------------


class _LateApp:
    """WSGI shim so the server can bind (and we learn its URL) before the app that needs that URL exists."""

    app: Flask | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@dataclass
class PhoneSystem:
    """The app served on loopback and the Twilio emulator calling into it (and serving the REST API it calls)."""

    url: str
    app: Flask
    store: Store
    twilio: TwilioEmulator

    def call(self, caller: str, *inputs: CallerInput, **script: Any) -> EmulatedCall:
        return self.twilio.place_call(
            from_=caller,
            to=COMPANY_NUMBER,
            script=CallerScript(list(inputs), **script),
            status_callback="/voice/status",
        )


COMPANY_NUMBER = "+15550009999"
#: A second number, answered by the support_hours flow (languages, business hours) in the systems below.
SUPPORT_LINE = "+15550001234"
MONDAY_MORNING_IN_NEW_YORK = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 10:00 there: support_hours is open


def support_line_open(phone_system_factory: Callable[..., PhoneSystem], **settings: Any) -> PhoneSystem:
    """A phone system whose SUPPORT_LINE runs support_hours, its clock running from a Monday morning (open)."""
    flows = {"reload_interval": 0, "numbers": {SUPPORT_LINE: "support_hours"}}
    system = phone_system_factory(flows=flows, **settings)
    started = utcnow()
    system.app.extensions["warmline"].clock.source = lambda: MONDAY_MORNING_IN_NEW_YORK + (utcnow() - started)
    return system


#: Seconds between the live server's looks at whether it should stop: shutdown() waits for the next look, and the
#: default half second was most of the end-to-end tests' time (one wait per test, in teardown).
LIVE_SERVER_POLL_INTERVAL = 0.01


def serve_in_thread(shim: Any) -> tuple[BaseWSGIServer, threading.Thread]:
    server = make_server("127.0.0.1", 0, shim, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": LIVE_SERVER_POLL_INTERVAL},
        name="live-server",
        daemon=True,
    )
    thread.start()
    return server, thread


@pytest.fixture
def phone_system_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[..., PhoneSystem]]:
    started: list[tuple[BaseWSGIServer, Flask, TwilioEmulator]] = []

    def start(
        *,
        public_url: str | None = None,
        seed: bool = True,
        time_scale: float = 0.0,
        shared_key: SharedKey | None = None,
        **overrides: Any,
    ) -> PhoneSystem:
        shim = _LateApp()
        server, _thread = serve_in_thread(shim)
        local_url = f"http://127.0.0.1:{server.server_port}"
        twilio = TwilioEmulator(
            public_url=public_url or local_url,
            connect_url=local_url if public_url else None,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            queue_poll_interval=0.02,
            time_scale=time_scale,
            shared_key=shared_key,
        )
        twilio.start()
        config = app_config(
            database_url,
            tmp_path / f"instance{len(started)}",
            public_url=public_url or local_url,
            twilio_api_url=twilio.rest_url,
            **overrides,
        )
        shim.app = create_app(config)
        started.append((server, shim.app, twilio))
        store = shim.app.extensions["warmline"].store
        if seed:
            seed_demo(store)
        return PhoneSystem(url=local_url, app=shim.app, store=store, twilio=twilio)

    yield start
    for server, app, twilio in started:
        twilio.close()
        server.shutdown()
        server.server_close()
        app.extensions["warmline"].close()


@pytest.fixture
def phone_system(phone_system_factory: Callable[..., PhoneSystem]) -> PhoneSystem:
    return phone_system_factory()


@pytest.fixture
def sqlite_store(tmp_path: Path, sqlite_template: Path) -> Iterator[Store]:
    """For the few tests that need only one backend (no database behaviour involved)."""
    path = tmp_path / "only-sqlite.sqlite3"
    shutil.copy(sqlite_template, path)
    store = Store(f"sqlite:///{path}")
    yield store
    store.dispose()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory another user can reach (pytest's own tmp_path is private to the user running the tests)."""
    with tempfile.TemporaryDirectory(prefix="warmline-health-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path
