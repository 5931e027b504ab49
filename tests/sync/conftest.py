"""CRM sync fixtures: the fake HubSpot, Salesforce (over TLS, its throwaway CA trusted through REQUESTS_CA_BUNDLE)
and webhook receiver on loopback; the app configured to sync with them, with delays and backoffs kept short."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from flask import Flask
from sqlalchemy import func, select

from crm_sync.db import Store
from crm_sync.models import OPEN_OUTBOX_STATES, OutboxMessage
from crm_sync.sync.worker import DeliveryWorker
from tests.conftest import app_config, seed_demo, signed_post
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.salesforce import FakeSalesforce
from tests.fakes.webhook_receiver import WebhookReceiver
from voice import create_app
from voice.config import sync_settings

#: Short waits everywhere: the behaviour under test is the same, the suite stays fast.
FAST_SYNC = {
    "backoff_base": 0.01,
    "backoff_cap": 0.05,
    "request_attempts": 3,
    "request_backoff_base": 0.005,
    "inline_wait_cap": 0.05,
    "retry_after_cap": 0.2,
    "connect_timeout": 1.0,
    "request_timeout": 0.5,
    "down_after": 5,
    "lease": 30.0,
    "batch_size": 50,
    "poll_interval": 0.02,
    "pull_interval": 0.0,
}


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    fake = FakeHubSpot().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def throwaway_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return ca, bundle


@pytest.fixture
def salesforce(throwaway_ca: tuple[trustme.CA, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSalesforce]:
    ca, bundle = throwaway_ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    # requests (under simple-salesforce) trusts the throwaway CA as an operator would trust a sandbox's.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    fake = FakeSalesforce(ssl_context=context).start()
    yield fake
    fake.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    fake = WebhookReceiver().start()
    yield fake
    fake.stop()


def crm_overrides(
    *,
    hubspot: FakeHubSpot | None = None,
    salesforce: FakeSalesforce | None = None,
    receiver: WebhookReceiver | None = None,
    **behaviour: Any,
) -> dict[str, Any]:
    """create_app overrides that point CRM sync at these fakes (what the environment variables would say)."""
    overrides: dict[str, Any] = {"crm_sync": {**FAST_SYNC, **behaviour}}
    if hubspot is not None:
        overrides |= {"hubspot_access_token": hubspot.token, "hubspot_api_url": hubspot.url}
    if salesforce is not None:
        overrides |= {"salesforce_instance_url": salesforce.url, "salesforce_access_token": salesforce.token}
    if receiver is not None:
        overrides |= {"sync_webhook_url": receiver.url + "/hooks/warmline", "sync_webhook_secret": receiver.secret}
    return overrides


@pytest.fixture
def sync_app_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def make(*, housekeeping: bool = False, **overrides: Any) -> Flask:
        # No housekeeping thread, so no delivery thread of the app's own: each test drives its worker itself.
        config = app_config(database_url, tmp_path / f"instance{len(made)}", **overrides)
        app = create_app(config, housekeeping=housekeeping)
        app.config["TESTING"] = True
        made.append(app)
        seed_demo(app.extensions["warmline"].store)
        return app

    yield make
    for app in made:
        app.extensions["warmline"].close()


def worker_for(app: Flask, **options: Any) -> DeliveryWorker:
    warmline = app.extensions["warmline"]
    return DeliveryWorker(warmline.store, sync_settings(warmline.settings), **options)


def store_of(app: Flask) -> Store:
    store: Store = app.extensions["warmline"].store
    return store


def place_call(
    app: Flask, call_sid: str, *, caller: str = "+15551230001", words: str | None = None, duration: int = 42
) -> None:
    """A call through the real webhooks: it rings in, (optionally) says why, and hangs up."""
    client = app.test_client()
    base = {"CallSid": call_sid, "From": caller, "To": "+15550009999", "AccountSid": "AC" + "a1" * 16}
    assert signed_post(client, "/voice/incoming", {**base, "CallStatus": "ringing"}).status_code == 200
    if words is not None:
        signed_post(
            client, "/voice/gather", {**base, "CallStatus": "in-progress", "SpeechResult": words, "Confidence": "0.9"}
        )
    ended = signed_post(client, "/voice/status", {**base, "CallStatus": "completed", "CallDuration": str(duration)})
    assert ended.status_code in (200, 204)


def open_rows(store: Store) -> int:
    with store.unit_of_work(read_only=True) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state.in_(OPEN_OUTBOX_STATES))
            )
            or 0
        )


def drain(worker: DeliveryWorker, store: Store, *, timeout: float = 20.0) -> int:
    """Run the worker until no row is left to send (parked ones stay parked). Returns the rows it delivered."""
    delivered = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = worker.run_once()
        delivered += report.delivered
        if report.claimed == 0:
            if open_rows(store) == 0:
                return delivered
            time.sleep(0.01)
    raise AssertionError(f"{open_rows(store)} outbox rows still open after {timeout} s")
