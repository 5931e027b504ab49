"""Database engine, sessions and migrations.

SQLite is the embedded default. Several gunicorn workers write to the same file, so every transaction starts with
``BEGIN IMMEDIATE``: it takes the write lock up front and waits for it (busy timeout), instead of failing with
"database is locked" when a read transaction later tries to write. Reads still go in parallel under WAL.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: How long a thread keeps its webhook connection before handing it back to the pool (see ``Store.connection``):
#: short enough that PostgreSQL's pool_recycle and an engine's dispose still reach it within minutes.
HELD_CONNECTION_SECONDS = 60.0


def make_engine(url: str, *, echo: bool = False, immediate: bool = True, autocheckpoint: bool = True) -> Engine:
    """``autocheckpoint=False`` (SQLite): commits never checkpoint the WAL; someone must call
    :meth:`Store.checkpoint` regularly (see :class:`Store`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(
            engine,
            immediate=immediate,
            lock_path=writer_lock_path(url) if immediate else None,
            autocheckpoint=autocheckpoint,
        )
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Plain postgresql:// means psycopg 3 here (the driver we pin), not psycopg2.
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    # No pool_pre_ping: it costs a round trip on every webhook. A connection the server dropped fails one request
    # (which still answers with fallback TwiML) and is discarded; pool_recycle retires idle ones before firewalls do.
    return create_engine(url, echo=echo, pool_recycle=300, pool_size=10, max_overflow=10)


def writer_lock_path(url: str) -> Path | None:
    """The file SQLite writers queue on (see ``_configure_sqlite``); None for other databases and in-memory ones."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(f"{parsed.database}.writer-lock")


def _configure_sqlite(engine: Engine, *, immediate: bool, lock_path: Path | None, autocheckpoint: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Read pages through a shared memory map: when another worker process commits, this connection's page
        # cache is invalidated, and without the map every transaction would copy its pages in again with read()
        # (measured: 2 gunicorn workers served 511 -> 1191 requests/s with it, bench/webhook.py).
        cursor.execute("PRAGMA mmap_size=268435456")
        if not autocheckpoint:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.connection.driver_connection.in_transaction:
            return  # Store.transaction began it on the driver already; SQLAlchemy is only catching up
        if lock_path is not None:
            _take_writer_lock(connection.connection.info, lock_path)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
        except BaseException:
            _drop_writer_lock(connection.connection.info)
            raise

    if lock_path is not None:
        # Writers queue on an flock() first: the kernel wakes the next one the moment the lock is free, where
        # SQLite's own busy handler sleeps in growing steps (1 ms, 2 ms, 5 ms, ... up to 100 ms) and wastes the
        # wait. Across threads and gunicorn workers alike, since every connection has its own open file
        # description.
        event.listen(engine, "commit", lambda connection: _end_then_unlock(connection, commit=True))
        event.listen(engine, "rollback", lambda connection: _end_then_unlock(connection, commit=False))
        event.listen(engine, "checkin", lambda _dbapi, record: _drop_writer_lock(record.info))


def _end_then_unlock(connection: Connection, *, commit: bool) -> None:
    """End the transaction on the driver, then let the next writer in.

    SQLAlchemy's ``commit``/``rollback`` events fire *before* it ends the transaction. Dropping the flock there
    woke the next writer while this one still held SQLite's write lock: its BEGIN IMMEDIATE met SQLITE_BUSY and
    SQLite's busy handler slept a whole millisecond, with the flock held, so every hand-over between two gunicorn
    workers cost a sleep (measured: ~1 sleep per request under bench/webhook.py's load). Ending it here first
    leaves SQLAlchemy's own commit/rollback with nothing to do (the driver is then outside any transaction).
    """
    info = connection.connection.info
    if not info.get("writer_locked"):
        return
    try:
        driver = connection.connection.driver_connection
        if driver is not None and driver.in_transaction:
            driver.commit() if commit else driver.rollback()
    finally:
        _drop_writer_lock(info)


def _end_transaction(connection: Connection, *, commit: bool) -> None:
    """End ``Store.writing``'s transaction: through SQLAlchemy if it knows of it (its events then end it on the
    driver and hand the flock on), else on the driver, then hand the flock on."""
    if connection.in_transaction():
        connection.commit() if commit else connection.rollback()
        return
    driver = connection.connection.driver_connection
    try:
        if driver is not None:
            driver.commit() if commit else driver.rollback()
    finally:
        _drop_writer_lock(connection.connection.info)


class _Held:
    """A connection a thread keeps between webhooks: in which process, and until when."""

    __slots__ = ("busy", "connection", "pid", "until")

    def __init__(self, connection: Connection, pid: int, until: float) -> None:
        self.connection = connection
        self.pid = pid
        self.until = until
        self.busy = False  # inside a ``Store.connection`` block


def _take_writer_lock(info: dict[str, Any], lock_path: Path) -> None:
    handle = info.get("writer_lock")
    if handle is None:
        handle = info["writer_lock"] = open(lock_path, "a+b")  # noqa: SIM115 - lives as long as the connection
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    info["writer_locked"] = True


def _drop_writer_lock(info: dict[str, Any]) -> None:
    if info.pop("writer_locked", False):
        fcntl.flock(info["writer_lock"].fileno(), fcntl.LOCK_UN)


class Store:
    """The database handle the whole app shares: one engine, one session factory.

    ``background_checkpoints=True`` (SQLite): webhooks' commits never copy the WAL back into the database file;
    the process's housekeeping thread calls :meth:`checkpoint` after each pass instead. By default SQLite checkpoints
    inside the commit that fills the WAL past 1,000 pages, and that commit still holds the writer flock, so every
    other webhook waits for the copy and its two fsyncs: about three times a second under ``bench/webhook.py``'s
    load (strace: 24 fdatasync in 4 s), ~0.1 ms each on this disk but hundreds of milliseconds on a slow or busy
    one, which stalls every caller at once. A checkpoint from the housekeeping thread takes neither the flock nor
    SQLite's write lock (PASSIVE), so writers go on while it copies.
    """

    def __init__(self, url: str, *, echo: bool = False, background_checkpoints: bool = False) -> None:
        self.url = url
        self._background_checkpoints = background_checkpoints
        self.engine = make_engine(url, echo=echo, autocheckpoint=not background_checkpoints)
        # expire_on_commit=False: views render from objects after the service committed, without a reload query.
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._writer_lock = writer_lock_path(url)
        # Reads that need no lock: on SQLite a plain (deferred) BEGIN, so they never wait for the write lock.
        self._read_engine = make_engine(url, echo=echo, immediate=False) if self._sqlite else self.engine
        # Each thread's webhook connection (see ``connection``), and all of them, so that ``dispose`` closes them.
        self._held = threading.local()
        self._held_lock = threading.Lock()
        self._all_held: set[Connection] = set()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A transaction: committed when the block ends normally, rolled back when it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction on a bare Core connection, for the hot webhooks: no ORM session to set up and tear down.

        Committed when the block ends normally, rolled back when it raises. On SQLite it is begun on the driver
        itself: going through SQLAlchemy's ``exec_driver_sql`` cost more than the BEGIN it sends
        (bench/profile_webhook.py).
        """
        with self.engine.connect() as connection, self.writing(connection):
            yield connection

    @property
    def single_writer(self) -> bool:
        """Whether one write transaction at a time holds the whole database (SQLite): then work that can be done
        before ``writing`` should be, to keep that lock short. PostgreSQL locks rows, and a read before the
        transaction would only add a round trip."""
        return self._sqlite

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for a webhook that first reads, then works things out, then writes in ``writing``.

        Its reads before ``writing`` take no lock on SQLite (each is its own snapshot), so a webhook can look the
        call up and run the flow engine before it queues for the one writer lock, and hold that lock for its
        writes only. On PostgreSQL the reads open the transaction that ``writing`` then commits.

        Each thread keeps its connection checked out between webhooks (for ``HELD_CONNECTION_SECONDS``): a pool
        checkout and check-in cost ~25 µs, a third of what a webhook spent on transaction plumbing
        (bench/profile_webhook.py). Whatever a block leaves open is rolled back when it ends, as the pool's check-in
        would; a block that raises hands its connection back to the pool, which discards it if it broke. A thread
        holds one connection at most, so the pool needs no more than it did (one per request being served), and a
        block nested in another gets a pooled connection of its own.
        """
        held = self._held_connection()
        if held.busy:
            # A block inside another on the same thread: ending it must not end the outer block's transaction.
            with self.engine.connect() as connection:
                yield connection
            return
        connection = held.connection
        held.busy = True
        try:
            yield connection
        except BaseException:
            self._unhold(connection)
            raise
        finally:
            held.busy = False
        try:
            if connection.in_transaction():  # a read went through SQLAlchemy and nothing wrote: end it
                connection.rollback()
            driver = connection.connection.driver_connection
            if driver is not None:
                driver.rollback()  # PostgreSQL's reads opened a transaction; a no-op when none is open
        except BaseException:
            self._unhold(connection)
            raise
        finally:
            _drop_writer_lock(connection.connection.info)

    def _held_connection(self) -> _Held:
        held: _Held | None = getattr(self._held, "value", None)
        if held is not None:
            if held.pid != os.getpid():
                # Inherited through fork: the parent's, not ours to use or close (SQLite forbids both).
                self._held.value = None
            elif held.busy or (not held.connection.closed and time.monotonic() < held.until):
                return held
            else:
                self._unhold(held.connection)
        connection = self.engine.connect()
        held = self._held.value = _Held(connection, os.getpid(), time.monotonic() + HELD_CONNECTION_SECONDS)
        with self._held_lock:
            self._all_held.add(connection)
        return held

    def _unhold(self, connection: Connection) -> None:
        """Give this thread's connection back to the pool (which rolls back and, if it broke, discards it)."""
        self._held.value = None
        with self._held_lock:
            self._all_held.discard(connection)
        connection.close()

    @contextmanager
    def writing(self, connection: Connection) -> Iterator[Connection]:
        """The write transaction of ``transaction``, on a connection from ``connection``.

        It is begun and ended on the driver: SQLAlchemy's own begin and commit cost more than the hot webhooks'
        statements. Should anything go through SQLAlchemy meanwhile (``connection.execute``, or an ORM session
        that first made sure SQLAlchemy knows the transaction, see ``joined``), SQLAlchemy ends it instead.
        """
        pooled = connection.connection
        driver = pooled.driver_connection
        assert driver is not None
        # A read that went through SQLAlchemy began the transaction already (on SQLite with the writer lock, see
        # ``_on_begin``): carry on in it. PostgreSQL's driver opens one by itself with the first statement.
        if self._sqlite and not connection.in_transaction():
            if self._writer_lock is not None:
                _take_writer_lock(pooled.info, self._writer_lock)
            try:
                driver.execute("BEGIN IMMEDIATE")
            except BaseException:
                _drop_writer_lock(pooled.info)
                raise
        try:
            yield connection
        except BaseException:
            _end_transaction(connection, commit=False)
            raise
        _end_transaction(connection, commit=True)

    @staticmethod
    def joined(connection: Connection) -> Connection:
        """Make sure SQLAlchemy knows the transaction ``writing`` began on the driver, so that an ORM Session bound
        to ``connection`` joins it (without, the Session would begin and own one, and roll it all back on close)."""
        if not connection.in_transaction():
            connection.begin()  # on SQLite ``_on_begin`` sees the driver's transaction and sends nothing
        return connection

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only look at the store (nothing is committed; on SQLite it never waits for the write lock)."""
        with self._read_engine.connect() as connection:
            yield connection

    def checkpoint(self) -> tuple[int, int, int] | None:
        """Copy what it can of SQLite's WAL back into the database file without blocking writers (PASSIVE).

        Returns SQLite's (busy, WAL frames, frames checkpointed); None on other databases. Needed only with
        ``background_checkpoints``; harmless otherwise.
        """
        if not self._sqlite:
            return None
        with self._read_engine.connect() as connection:
            # On the driver, outside any transaction (SQLAlchemy would BEGIN first): a checkpoint needs none.
            driver = connection.connection.driver_connection
            assert driver is not None
            busy, frames, copied = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(copied)

    @property
    def background_checkpoints(self) -> bool:
        return self._background_checkpoints and self._sqlite

    def upgrade(self) -> None:
        """Apply pending Alembic migrations (idempotent)."""
        upgrade_database(self.engine)

    def is_migrated(self) -> bool:
        """Whether the database is at the newest migration (a fresh or older one needs :meth:`upgrade`)."""
        with self._read_engine.connect() as connection:  # a read: no writer lock on SQLite
            current = set(MigrationContext.configure(connection).get_current_heads())
        return current == set(ScriptDirectory.from_config(alembic_config(self.engine)).get_heads())

    def dispose(self) -> None:
        with self._held_lock:
            held, self._all_held = list(self._all_held), set()
        for connection in held:
            connection.close()
        self.engine.dispose()
        self._read_engine.dispose()


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine) -> None:
    command.upgrade(alembic_config(engine), "head")
