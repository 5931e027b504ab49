"""SQLite writers hand over in order: when the next writer gets the flock, the last one's transaction is over.

Otherwise the next writer's BEGIN IMMEDIATE meets SQLITE_BUSY and SQLite's busy handler sleeps (a whole millisecond
at first) while holding the flock, and every hand-over between two gunicorn workers pays for that sleep.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import event

from crm_sync.db import Store
from crm_sync.models import Rep
from crm_sync.sqlite import writer_lock_path


@contextmanager
def _flock_now(store: Store) -> Iterator[None]:
    """Take the writers' flock without waiting (another open file description, as another worker has)."""
    lock_path = writer_lock_path(store.url)
    assert lock_path is not None
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: still held
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _next_writer_begins_at_once(store: Store) -> list[str]:
    """What a second worker sees once the flock is free: it must begin writing with no busy wait at all."""
    seen: list[str] = []
    with _flock_now(store):
        database = store.url.split("///", 1)[1]
        other = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            seen.append(other.execute("SELECT count(*) FROM reps WHERE name = 'Hand Over'").fetchone()[0])
            other.execute("ROLLBACK")
        finally:
            other.close()
    return seen


@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_the_flock_is_released_only_after_the_transaction_ended(sqlite_store: Store, ending: str) -> None:
    seen: list[Any] = []

    # Listeners run in the order they were added: this one runs right after the store's own, the moment the flock
    # is handed on.
    @event.listens_for(sqlite_store.engine, "checkin")
    def _right_after_the_store(_dbapi: Any, _record: Any) -> None:
        seen.extend(_next_writer_begins_at_once(sqlite_store))

    failure = pytest.raises(LookupError) if ending == "rollback" else nullcontext()
    with failure, sqlite_store.unit_of_work() as session:
        session.execute(sqlalchemy.insert(Rep).values(name="Hand Over", phone="+15550009999"))
        if ending == "rollback":
            raise LookupError("the webhook failed")

    assert seen == ([1] if ending == "commit" else [0])
