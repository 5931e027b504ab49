"""The hot webhooks' connection: kept by each thread between webhooks, its transactions begun and ended on the
driver, and nothing left open, locked or half-written after a block — on SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select

from crm_sync import db as db_module
from crm_sync import service as crm
from crm_sync.db import Store, writer_lock_path
from crm_sync.models import Interaction, Rep

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def _open_call(connection: object, sid: str) -> None:
    crm.insert_interaction(
        connection,  # type: ignore[arg-type]
        call_sid=sid,
        caller_number="+15557650000",
        customer_id=None,
        flow_name="main",
        flow_version="v1",
        flow_state={"node": "ask"},
        now=NOW,
    )


def _count(store: Store, table: type) -> int:
    with store.unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def _driver_idle(connection: object) -> bool:
    driver = connection.connection.driver_connection  # type: ignore[attr-defined]
    if hasattr(driver, "in_transaction") and not hasattr(driver, "info"):
        return not driver.in_transaction  # sqlite3
    from psycopg.pq import TransactionStatus

    return bool(driver.info.transaction_status == TransactionStatus.IDLE)


def test_a_thread_keeps_its_connection_between_webhooks_and_other_threads_have_their_own(store: Store) -> None:
    with store.connection() as first:
        pass
    with store.connection() as second:
        pass
    assert second is first

    seen: list[object] = []
    worker = threading.Thread(target=lambda: seen.append(store.connection().__enter__()))
    worker.start()
    worker.join()
    assert seen and seen[0] is not first


def test_writes_commit_on_the_driver_and_leave_nothing_open(store: Store) -> None:
    with store.connection() as connection:
        with store.writing(connection):
            _open_call(connection, "CA" + "1" * 32)
        assert _driver_idle(connection)
        assert not connection.in_transaction()
    assert _count(store, Interaction) == 1


def test_a_failed_block_writes_nothing_and_its_connection_goes_back_to_the_pool(store: Store) -> None:
    with pytest.raises(LookupError), store.connection() as connection, store.writing(connection):
        _open_call(connection, "CA" + "2" * 32)
        raise LookupError("the webhook failed")
    assert connection.closed
    assert _count(store, Interaction) == 0
    with store.connection() as fresh:
        assert fresh is not connection
        with store.writing(fresh):
            _open_call(fresh, "CA" + "3" * 32)
    assert _count(store, Interaction) == 1


def test_reads_without_a_write_leave_no_transaction_open(store: Store) -> None:
    # On PostgreSQL a read opens the driver's transaction; left open, the held connection would sit idle in
    # transaction between webhooks (holding back VACUUM) and later reads would see an old snapshot.
    with store.connection() as connection:
        assert crm.call_row(connection, "CA" + "4" * 32) is None
        connection.execute(select(func.count()).select_from(Rep))  # through SQLAlchemy too
    assert _driver_idle(connection)
    assert not connection.in_transaction()
    with store.unit_of_work() as session:
        session.execute(insert(Rep).values(name="Late Rep", phone="+15550109999"))
    with store.connection() as again:
        assert again is connection
        assert again.execute(select(func.count()).select_from(Rep)).scalar() == 1


def test_an_orm_session_joins_the_transaction_instead_of_ending_it(store: Store) -> None:
    with store.connection() as connection:
        with store.writing(connection):
            _open_call(connection, "CA" + "5" * 32)
            with crm.orm_session(connection) as session:
                session.add(Rep(name="Orm Rep", phone="+15550108888"))
                session.flush()
            # The session closed without committing: the transaction, and the call opened before it, go on.
            _open_call(connection, "CA" + "6" * 32)
        assert _driver_idle(connection)
        assert not connection.in_transaction()
    assert (_count(store, Interaction), _count(store, Rep)) == (2, 1)


def test_a_rolled_back_block_with_an_orm_session_writes_nothing(store: Store) -> None:
    with pytest.raises(LookupError), store.connection() as connection, store.writing(connection):
        _open_call(connection, "CA" + "7" * 32)
        with crm.orm_session(connection) as session:
            session.add(Rep(name="Orm Rep", phone="+15550108888"))
            session.flush()
        raise LookupError("the webhook failed")
    assert (_count(store, Interaction), _count(store, Rep)) == (0, 0)


def test_a_held_connection_is_handed_back_after_a_while(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "HELD_CONNECTION_SECONDS", 0.0)
    with store.connection() as first:
        pass
    with store.connection() as second:
        pass
    assert first.closed and second is not first


def test_a_connection_inherited_through_fork_is_neither_used_nor_closed(store: Store) -> None:
    with store.connection() as parents:
        pass
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a gunicorn worker forked after the app was used (e.g. --preload)
        try:
            with store.connection() as childs:
                ok = childs is not parents and not parents.closed
                with store.writing(childs):
                    _open_call(childs, "CA" + "8" * 32)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"1"
    with store.connection() as again:
        assert again is parents
    assert _count(store, Interaction) == 1


def test_dispose_closes_every_threads_connection(store: Store) -> None:
    held: list[object] = []

    def webhook() -> None:
        with store.connection() as connection:
            held.append(connection)

    threads = [threading.Thread(target=webhook) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.dispose()
    assert len(held) == 3 and all(connection.closed for connection in held)  # type: ignore[attr-defined]


def test_the_sqlite_writer_lock_is_free_after_every_block(tmp_path: object, sqlite_template: object) -> None:
    import fcntl
    import shutil

    path = f"{tmp_path}/lock.sqlite3"
    shutil.copy(str(sqlite_template), path)
    store = Store(f"sqlite:///{path}")
    lock_path = writer_lock_path(store.url)
    assert lock_path is not None
    try:
        with store.connection() as connection, store.writing(connection):
            _open_call(connection, "CA" + "9" * 32)
        with pytest.raises(LookupError), store.connection() as connection, store.writing(connection):
            raise LookupError("the webhook failed")
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        store.dispose()


def test_a_block_nested_in_another_leaves_the_outer_transaction_alone(store: Store) -> None:
    with store.connection() as outer, store.writing(outer):
        _open_call(outer, "CA" + "a" * 32)
        with store.connection() as inner:
            assert inner is not outer
            assert crm.call_row(inner, "CA" + "b" * 32) is None
        _open_call(outer, "CA" + "b" * 32)  # still in the outer transaction, which commits both
    assert _count(store, Interaction) == 2
    with store.connection() as again:
        assert again is outer
