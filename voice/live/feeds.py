"""How the live-events server hears that the store changed, whichever process or host changed it.

PostgreSQL: ``LISTEN warmline_changes`` on a connection of its own (psycopg's async connection), where every write
transaction of every worker notifies as it commits (``crm_sync.changes``). SQLite (one host): ``PRAGMA
data_version`` on one connection of its own, read every ``interval``; it moves whenever another connection commits,
so a look costs a few microseconds and no lock.

A feed calls ``changed()`` once per change it hears of (several commits may make one call); the server coalesces.
Once listening, and again after a lost connection, a feed calls ``changed()`` once, for what it may have missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Protocol

import psycopg
from sqlalchemy.engine import make_url

from crm_sync.changes import CHANGES_CHANNEL

log = logging.getLogger(__name__)

#: Seconds between two looks at SQLite's data_version (the latency floor of a change on SQLite).
SQLITE_POLL_SECONDS = 0.25
#: Seconds before connecting again after PostgreSQL's connection was lost.
RECONNECT_SECONDS = 1.0


class ChangeFeed(Protocol):
    async def run(self, changed: Callable[[], None]) -> None:
        """Call ``changed()`` for each change heard of, until cancelled."""


class SqliteDataVersion:
    def __init__(self, path: str, *, interval: float = SQLITE_POLL_SECONDS) -> None:
        self.path = path
        self.interval = interval

    async def run(self, changed: Callable[[], None]) -> None:
        # Autocommit (isolation_level=None): data_version only moves between transactions, and this connection must
        # never hold one open. Read-only: it never writes, so it never takes the writers' lock.
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        try:
            last = connection.execute("PRAGMA data_version").fetchone()[0]
            changed()  # what committed before the first look (a console may have been painted before it)
            while True:
                await asyncio.sleep(self.interval)
                version = connection.execute("PRAGMA data_version").fetchone()[0]
                if version != last:
                    last = version
                    changed()
        finally:
            connection.close()


class PostgresListen:
    def __init__(self, url: str, *, reconnect_seconds: float = RECONNECT_SECONDS) -> None:
        self.conninfo = libpq_url(url)
        self.reconnect_seconds = reconnect_seconds
        #: The payloads heard (the last few: what changed, for logs and tests).
        self.heard: list[dict[str, object]] = []

    async def run(self, changed: Callable[[], None]) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                    # Commits before LISTEN (at start, or while the connection was lost) were not heard.
                    changed()
                    async for notice in connection.notifies():
                        self._remember(notice.payload)
                        changed()
            except psycopg.Error as exc:
                log.warning(
                    "live events: listening for changes failed (%s); again in %.0f s", exc, self.reconnect_seconds
                )
                await asyncio.sleep(self.reconnect_seconds)

    def _remember(self, payload: str) -> None:
        try:
            self.heard.append(json.loads(payload))
        except ValueError:
            self.heard.append({"raw": payload})
        del self.heard[:-50]


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://…``) as libpq takes it (``postgresql://…``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def feed_for(url: str) -> ChangeFeed:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("live events need a database file other processes share, not an in-memory database")
        return SqliteDataVersion(parsed.database)
    return PostgresListen(url)
