"""How the live-events server hears of commits made by other processes: PostgreSQL's NOTIFY, sent by every write
transaction as it commits (and never by a rollback or a read), and the feeds that listen (LISTEN on PostgreSQL,
``PRAGMA data_version`` on SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import select

from crm_sync.changes import CHANGES_CHANNEL
from crm_sync.db import Store
from crm_sync.queries.reps import upsert_rep
from voice.live.feeds import feed_for, libpq_url

postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def add_rep(store: Store, name: str) -> None:
    with store.unit_of_work() as session:
        upsert_rep(session, name=name, phone_e164="+15550301234", departments=["general"], languages=["en-US"])


@pytest.fixture
def listener(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        connection.execute(f"LISTEN {CHANGES_CHANNEL}")
        yield connection


def heard(connection: psycopg.Connection[tuple[object, ...]], timeout: float) -> list[dict[str, object]]:
    return [json.loads(notice.payload) for notice in connection.notifies(timeout=timeout, stop_after=1)]


@postgres_only
def test_a_write_transaction_notifies_what_it_changed_as_it_commits(
    store: Store, listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    add_rep(store, "Nia Okafor")
    [payload] = heard(listener, timeout=5)
    assert "reps" in payload["tables"]  # type: ignore[operator]


@postgres_only
def test_a_rollback_or_a_read_notifies_nobody(store: Store, listener: psycopg.Connection[tuple[object, ...]]) -> None:
    with pytest.raises(RuntimeError), store.unit_of_work() as session:
        upsert_rep(session, name="Nia Okafor", phone_e164="+15550301234", departments=["general"], languages=[])
        session.flush()
        raise RuntimeError("changed my mind")
    with store.unit_of_work(read_only=True) as session:
        session.execute(select(1))
    assert heard(listener, timeout=0.5) == []


class RunningFeed:
    """A feed on an event loop of its own thread, counting the changes it reports."""

    def __init__(self, url: str) -> None:
        self.changes = 0
        self.seen = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.feed = feed_for(url)
        self.thread.start()

    def _changed(self) -> None:
        with self.seen:
            self.changes += 1
            self.seen.notify_all()

    def _run(self) -> None:
        self.task = self.loop.create_task(self.feed.run(self._changed))
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.task)

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.seen:
            return self.seen.wait_for(lambda: self.changes >= count, timeout)

    def stop(self) -> None:
        assert self.task is not None
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(5)


def test_the_feed_reports_commits_from_another_connection_and_not_reads(store: Store) -> None:
    running = RunningFeed(store.url)
    try:
        assert running.wait_for(1, timeout=5)  # once listening: whatever came before is worth a look
        settled = running.changes
        with store.unit_of_work(read_only=True) as session:
            session.execute(select(1))
        assert not running.wait_for(settled + 1, timeout=0.6)
        add_rep(store, "Nia Okafor")
        assert running.wait_for(settled + 1, timeout=5)
    finally:
        running.stop()
