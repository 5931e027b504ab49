"""SQLite as the embedded store: its pragmas, write transactions that lock up front, and a writers' queue.

Several gunicorn workers write to the same file, so every write transaction starts with ``BEGIN IMMEDIATE``: it
takes the write lock at once and waits for it, instead of failing with "database is locked" when a read transaction
later tries to write (a deferred transaction cannot always be upgraded). Reads still go in parallel under WAL, on an
engine whose transactions begin deferred (``Store.unit_of_work(read_only=True)``).

Writers queue on an ``flock()`` before ``BEGIN IMMEDIATE``, asked without blocking and then again after short
pauses (:data:`WRITER_LOCK_PAUSES`, at most 1 ms): SQLite's own busy handler sleeps in growing steps (1 ms, 2 ms,
5 ms, ... up to 100 ms) and wastes the wait. It works across threads and processes alike, since every connection has
its own open file description. The wait for the flock and SQLite's own busy wait share one deadline
(:data:`BUSY_TIMEOUT_MS`): a blocking ``flock()`` has none, and behind a writer stuck for 35 s (another program
holding the database) every webhook queued past Twilio's 15 s and gunicorn's worker timeout, each one in the queue
waiting for the busy timeouts of all those ahead of it. Once a writer has run out of its budget, the process's next
writers get a short one (:data:`STUCK_LOCK_BUDGET_MS`) until a write transaction begins again.

Everything here hangs on SQLAlchemy's own connection events: statements still go through SQLAlchemy (``echo``,
events and error translation see all of them).
"""

from __future__ import annotations

import fcntl
import gc
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import ExceptionContext, make_url

#: SQLite's words for a connection that must be reopened (SQLITE_READONLY_*, SQLITE_IOERR_*).
_REOPEN_AFTER = ("readonly database", "disk i/o error", "unable to open database file")

#: How long a statement waits for another writer before SQLite gives up with "database is locked" (ms): well inside
#: Twilio's 15 s for a webhook (which then answers with fallback TwiML), and gunicorn's worker timeout, rather than
#: SQLite's usual 30 s, which outlasted both.
BUSY_TIMEOUT_MS = 5_000

#: A writer's whole budget once the last one of this process ran out of its own (``_LOCK_STUCK``), until a write
#: transaction begins again: a lock held for longer than a webhook's budget is held by something stuck (another
#: program, a hung process), and five seconds per webhook behind it fill both workers, so that requests queue in the
#: listen backlog past Twilio's 15 s (measured: 155 of them behind a 35 s lock, ``bench/faults.py``). Each writer
#: still tries, so the first one after the lock is freed writes again.
STUCK_LOCK_BUDGET_MS = 200
_LOCK_STUCK: set[str] = set()

#: Every engine of this process on each database file (a Store has two: writers and readers), and the files whose
#: connections failed for good since: see :func:`_reopen_everywhere`.
_ENGINES_BY_FILE: dict[str, weakref.WeakSet[Engine]] = {}
_REOPENING: set[str] = set()

#: Pauses between two asks for the writers' flock while another writer holds it (seconds; the last one repeats).
#: Another worker's write transaction takes ~0.2-0.7 ms (ARCHITECTURE.md), so a waiter looks again about as often.
WRITER_LOCK_PAUSES = (0.0001, 0.0002, 0.0004, 0.0007, 0.001)


class WriterLockTimeout(sqlite3.OperationalError):
    """The writers' flock stayed taken for the whole budget: the same failure as SQLite's "database is locked", so
    a webhook answers with fallback TwiML instead of waiting past Twilio's timeout."""


def writer_lock_path(url: str) -> Path | None:
    """The file SQLite writers queue on; None for other databases and in-memory ones."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(f"{parsed.database}.writer-lock")


def configure(engine: Engine, *, immediate: bool, lock_path: Path | None, autocheckpoint: bool) -> None:
    """Pragmas on every new connection; each transaction begun by SQLAlchemy as ``BEGIN IMMEDIATE`` (or deferred
    ``BEGIN`` for a read engine), behind the writers' flock when ``lock_path`` is given.

    ``autocheckpoint=False``: commits never copy the WAL back into the database file; someone must run
    :func:`checkpoint` regularly (``Store``'s docstring says why).
    """

    database = engine.url.database or ""
    if database not in ("", ":memory:"):
        _ENGINES_BY_FILE.setdefault(database, weakref.WeakSet()).add(engine)

    @event.listens_for(engine, "do_connect")
    def _before_connecting(*_: Any) -> None:
        if database in _REOPENING:
            _REOPENING.discard(database)
            # The connections discarded after a file fault are closed with sqlite3_close_v2, which leaves a closed
            # connection open underneath until its statements are freed; those sit in the failed request's
            # traceback, a reference cycle, until a collection. And while any connection of this process has the
            # file open, SQLite's per-process state of it (the WAL index, mapped read-only during the fault) stays,
            # and every new connection is read-only through it. Collect them first, once per fault.
            gc.collect()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        record.info.pop("busy_timeout_ms", None)  # the record outlives a connection replaced after a fault
        # Let SQLAlchemy, not the driver, decide when transactions begin (the "begin" listener below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Pages are read with read(), not through a memory map (whatever this SQLite build's default): a page that
        # cannot be read through a map kills the worker with SIGBUS instead of failing one request, and the map
        # gained nothing measurable (ARCHITECTURE.md, "SQLite reads pages with read()").
        cursor.execute("PRAGMA mmap_size=0")
        if not autocheckpoint:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Sent on the DBAPI connection itself, inside SQLAlchemy's own begin: through exec_driver_sql it would cost
        # SQLAlchemy's whole execution path (more than the BEGIN), on every unit of work.
        driver = connection.connection.driver_connection
        assert driver is not None  # a checked-out connection always has its DBAPI connection
        if lock_path is not None:
            budget_ms = STUCK_LOCK_BUDGET_MS if database in _LOCK_STUCK else BUSY_TIMEOUT_MS
            try:
                _take_writer_lock(connection.connection.info, lock_path, driver, budget_ms)
            except WriterLockTimeout:
                _LOCK_STUCK.add(database)
                raise
        try:
            driver.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            if lock_path is not None:
                _LOCK_STUCK.discard(database)
        except BaseException as error:
            _drop_writer_lock(connection.connection.info)
            if lock_path is not None and _is_lock_timeout(error):
                _LOCK_STUCK.add(database)
            if _must_reopen(error):
                # This BEGIN ran outside SQLAlchemy's execution path, so handle_error below never sees it: a
                # connection opened read-only while the files were unwritable would fail every BEGIN IMMEDIATE for
                # good (measured: workers restarted during the fault still failed 70 s after it). Discard it.
                connection.invalidate(error)
                _reopen_everywhere(database)
            raise

    @event.listens_for(engine, "handle_error")
    def _reopen_after_file_faults(context: ExceptionContext) -> None:
        # A connection opened while the database files could not be written stays read-only for good ("attempt to
        # write a readonly database"), and one whose files failed under it keeps failing ("disk I/O error"). Treat
        # both like a lost connection: SQLAlchemy then discards the pool's connections, and the next checkout opens
        # new ones, read-write again the moment the files are writable (before: only a restart recovered).
        if _must_reopen(context.original_exception):
            context.is_disconnect = True
            context.invalidate_pool_on_disconnect = True
            _reopen_everywhere(database)

    if lock_path is not None:
        # The flock is given up when the connection goes back to the pool, which a unit of work does the moment
        # its transaction has ended (committed or rolled back on the driver): never before SQLite's own write lock
        # is released, so the next writer's BEGIN IMMEDIATE never meets SQLITE_BUSY and sleeps in the busy handler.
        event.listen(engine, "checkin", lambda _dbapi, record: _drop_writer_lock(record.info))


def checkpoint(engine: Engine) -> tuple[int, int, int]:
    """Copy what it can of the WAL back into the database file without blocking writers (PASSIVE).

    Returns SQLite's (busy, WAL frames, frames checkpointed). A checkpoint runs outside any transaction, so on the
    pooled driver connection itself: a SQLAlchemy ``Connection`` would begin one first.
    """
    connection = engine.raw_connection()
    try:
        busy, frames, copied = connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        connection.close()
    return int(busy), int(frames), int(copied)


def _reopen_everywhere(database: str) -> None:
    """After a file fault, close every connection of this process on ``database``, the read engine's included:
    reads still work on a connection opened read-only, so nothing else would ever close it, and while one is open
    the process's new connections share its read-only view of the WAL index (measured: a fresh connection in the
    same process failed to write after the fault while one in another process could)."""
    _REOPENING.add(database)
    for engine in list(_ENGINES_BY_FILE.get(database, ())):
        engine.dispose()  # idle connections closed now; one in use elsewhere is dropped when it comes back


def _is_lock_timeout(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "database is locked" in str(error).lower()


def _must_reopen(error: BaseException) -> bool:
    return isinstance(error, sqlite3.Error) and any(sign in str(error).lower() for sign in _REOPEN_AFTER)


def _take_writer_lock(info: dict[str, Any], lock_path: Path, driver: Any, budget_ms: int) -> None:
    """Take the writers' flock within ``budget_ms``, then leave SQLite's busy wait only what is left of it;
    :class:`WriterLockTimeout` when the flock never came free."""
    handle = info.get("writer_lock")
    if handle is None:
        handle = info["writer_lock"] = open(lock_path, "a+b")  # noqa: SIM115 - lives as long as the connection
    deadline = time.monotonic() + budget_ms / 1000
    at_once = _try_flock(handle)
    if not at_once:
        pauses = iter(WRITER_LOCK_PAUSES)
        pause = WRITER_LOCK_PAUSES[-1]
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WriterLockTimeout(f"database is locked: the writers' lock stayed taken for {budget_ms} ms")
            time.sleep(min(next(pauses, pause), left))
            if _try_flock(handle):
                break
    info["writer_locked"] = True
    # What the flock took of the budget, SQLite's busy wait (a program writing without the flock) does not get.
    # (The usual case, the flock free at once with the whole budget left, costs no PRAGMA.)
    whole = at_once and budget_ms == BUSY_TIMEOUT_MS
    busy_ms = BUSY_TIMEOUT_MS if whole else max(1, int((deadline - time.monotonic()) * 1000))
    if info.get("busy_timeout_ms", BUSY_TIMEOUT_MS) == busy_ms:
        return
    try:
        driver.execute(f"PRAGMA busy_timeout={busy_ms}")
    except BaseException:
        _drop_writer_lock(info)
        raise
    info["busy_timeout_ms"] = busy_ms


def _try_flock(handle: Any) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _drop_writer_lock(info: dict[str, Any]) -> None:
    if info.pop("writer_locked", False):
        fcntl.flock(info["writer_lock"].fileno(), fcntl.LOCK_UN)
