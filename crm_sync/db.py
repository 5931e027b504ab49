"""The one way into the database: an engine per store, SQLAlchemy's unit of work, and migrations.

Every read and write goes through ``Store.unit_of_work()``: an ORM ``Session`` whose transaction commits when the
block ends normally and rolls back when it raises. Services load rows, call the models' lifecycle methods, and let
the session write them; where a set-based statement pays (a count, an existence probe, a bulk read), it is a Core
statement run on the same session. ``read_only=True`` never writes and, on SQLite, never waits for the write lock.

SQLite is the embedded default (its specifics: ``crm_sync.sqlite``); PostgreSQL serves several workers and hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random

from crm_sync import sqlite
from crm_sync.changes import notify_commits
from crm_sync.sync.outbox import OutboxWriter

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(
    url: str, *, echo: bool = False, immediate: bool = True, autocheckpoint: bool = True, bounded: bool = True
) -> Engine:
    """An engine for ``url``. SQLite: write transactions ``BEGIN IMMEDIATE`` behind the writers' flock
    (``immediate=False``: a read engine, deferred ``BEGIN``); ``autocheckpoint=False``, see :class:`Store`.
    ``bounded=False`` (PostgreSQL): no lock or statement time limit (migrations, which may rightly take long)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"timeout": sqlite.BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        sqlite.configure(
            engine,
            immediate=immediate,
            lock_path=sqlite.writer_lock_path(url) if immediate else None,
            autocheckpoint=autocheckpoint,
        )
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Plain postgresql:// means psycopg 3 here (the driver we pin), not psycopg2.
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    # No pool_pre_ping: it costs a round trip on every webhook. A connection the server dropped fails one request
    # (which still answers with fallback TwiML) and is discarded; pool_recycle retires idle ones before firewalls do.
    # Every wait is bounded so that a webhook fails (and answers with fallback TwiML) well inside Twilio's 15 s,
    # whatever the database does: connecting, waiting for a pooled connection, for a row lock, for a statement.
    limits = f"-c lock_timeout={TIME_BUDGET.lock_ms} -c statement_timeout={TIME_BUDGET.statement_ms}"
    return create_engine(
        url,
        echo=echo,
        pool_recycle=300,
        pool_size=10,
        max_overflow=10,
        pool_timeout=TIME_BUDGET.pool_seconds,
        connect_args={"connect_timeout": TIME_BUDGET.connect_seconds, **({"options": limits} if bounded else {})},
    )


@dataclass(frozen=True)
class TimeBudget:
    """How long one database operation may wait, at most (Twilio gives a webhook 15 s in all)."""

    connect_seconds: int = 3
    pool_seconds: float = 3.0
    lock_ms: int = 4000
    statement_ms: int = 6000


TIME_BUDGET = TimeBudget()


class Store:
    """The database handle the whole app shares: one engine (two on SQLite: writers and readers), one unit of work.

    ``background_checkpoints=True`` (SQLite): webhooks' commits never copy the WAL back into the database file;
    the housekeeping pass calls :meth:`checkpoint` instead. By default SQLite checkpoints inside the commit that
    fills the WAL past 1,000 pages, and that commit still holds the writers' lock, so every other webhook waits for
    the copy and its two fsyncs: about three times a second under ``bench/webhook.py``'s load, hundreds of
    milliseconds each on a slow or busy disk. A PASSIVE checkpoint from elsewhere blocks no writer.

    ``announce_to``: the CRMs configured for sync (``crm_sync.sync``); every write session then writes an outbox row
    per CRM for each change a CRM must hear of, in the same flush as the change (``crm_sync.sync.outbox``).
    """

    def __init__(
        self, url: str, *, echo: bool = False, background_checkpoints: bool = False, announce_to: Sequence[str] = ()
    ) -> None:
        self.url = url
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._background_checkpoints = background_checkpoints and self._sqlite
        self.engine = make_engine(url, echo=echo, autocheckpoint=not self._background_checkpoints)
        # Reads that need no lock: on SQLite a plain (deferred) BEGIN, so they never wait for the write lock.
        self._read_engine = make_engine(url, echo=echo, immediate=False) if self._sqlite else self.engine
        # expire_on_commit=False: views render from objects after the service committed, without a reload query.
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        self.announce_to = tuple(announce_to)
        if self.announce_to:
            event.listen(self._sessions, "before_flush", OutboxWriter(self.announce_to))
        if not self._sqlite:  # other processes hear of every commit (the console's live events; crm_sync.changes)
            notify_commits(self._sessions)

    @contextmanager
    def unit_of_work(self, *, read_only: bool = False) -> Iterator[Session]:
        """A transaction: committed when the block ends normally, rolled back when it raises.

        ``read_only``: rolled back at the end whatever happened (nothing it changed is kept); on SQLite it runs on
        the read engine and never queues for the write lock.
        """
        with (self._read_sessions if read_only else self._sessions)() as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise
            if read_only:
                session.rollback()
            else:
                session.commit()

    @property
    def single_writer(self) -> bool:
        """Whether one write transaction at a time holds the whole database (SQLite): then work that can be done
        before the write transaction, on a read-only one, should be, to keep that lock short. PostgreSQL locks
        rows, and a separate read first would only add a round trip."""
        return self._sqlite

    @property
    def background_checkpoints(self) -> bool:
        return self._background_checkpoints

    def checkpoint(self) -> tuple[int, int, int] | None:
        """SQLite: a PASSIVE WAL checkpoint (``crm_sync.sqlite.checkpoint``); None on other databases."""
        return sqlite.checkpoint(self._read_engine) if self._sqlite else None

    def upgrade(self) -> None:
        """Apply pending Alembic migrations (idempotent), without the time limits webhooks run under."""
        if self._sqlite:
            upgrade_database(self.engine)
            return
        engine = make_engine(self.url, bounded=False)
        try:
            upgrade_database(engine)
        finally:
            engine.dispose()

    def is_migrated(self) -> bool:
        """Whether the database is at the newest migration (a fresh or older one needs :meth:`upgrade`)."""
        with self._read_engine.connect() as connection:  # a read: no writer lock on SQLite
            current = set(MigrationContext.configure(connection).get_current_heads())
        return current == set(ScriptDirectory.from_config(alembic_config(self.engine)).get_heads())

    def dispose(self) -> None:
        self.engine.dispose()
        self._read_engine.dispose()


_Result = TypeVar("_Result")

#: PostgreSQL's SQLSTATE for a transaction it rolled back to break a deadlock.
DEADLOCK_DETECTED = "40P01"


def is_deadlock(error: BaseException) -> bool:
    """Whether ``error`` is PostgreSQL rolling this transaction back to break a deadlock (nothing it did was kept)."""
    return isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) == DEADLOCK_DETECTED


def again_after_deadlock(work: Callable[[], _Result], *, attempts: int = 3) -> _Result:
    """Run ``work`` (a whole use case: its units of work, nothing sent before they commit) and run it again when
    PostgreSQL broke a deadlock by rolling it back. Two use cases that lock the same rows in opposite orders (a
    rep's wrap-up locks the call then the rep; a call's last webhooks lock the rep then the call) are both right;
    the database picks one to roll back, and running that one again is the standard answer, rather than a global
    lock order every use case would have to know. A short random pause lets the other transaction finish first."""
    try:  # the common case, without building a retry loop on every webhook
        return work()
    except DBAPIError as error:
        if not is_deadlock(error) or attempts <= 1:
            raise
    retrying = Retrying(
        retry=retry_if_exception(is_deadlock),
        stop=stop_after_attempt(attempts - 1),
        wait=wait_random(0.0, 0.05),
        reraise=True,
    )
    return retrying(work)


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine) -> None:
    command.upgrade(alembic_config(engine), "head")
