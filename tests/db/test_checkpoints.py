"""SQLite's WAL is checkpointed by the housekeeping thread, not inside a webhook's commit (see ``crm_sync.db.Store``).

A checkpoint inside a commit runs while that webhook still holds the writers' flock: every other webhook waits for
the copy and its fsyncs. With ``background_checkpoints`` no commit checkpoints; ``Store.checkpoint`` (PASSIVE: no
lock that writers need) does, from the sweep thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from crm_sync.db import Store
from tests.conftest import app_config
from voice import create_app
from voice.services.housekeeping import SweepThread

PAGE_FILLER = "x" * 3000  # about one WAL frame per row


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[Callable[..., Store]]:
    made: list[Store] = []

    def make(*, background: bool) -> Store:
        store = Store(f"sqlite:///{tmp_path}/wal-{len(made)}.sqlite3", background_checkpoints=background)
        with store.unit_of_work() as session:
            session.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
        made.append(store)
        return store

    yield make
    for store in made:
        store.dispose()


def write_pages(store: Store, rows: int) -> None:
    for start in range(0, rows, 100):  # in several commits, as webhooks write
        with store.unit_of_work() as session:
            session.execute(
                text("INSERT INTO notes (body) VALUES (:body)"),
                [{"body": f"{n} {PAGE_FILLER}"} for n in range(start, min(rows, start + 100))],
            )


def test_by_default_commits_keep_the_wal_short(store_factory: Callable[..., Store]) -> None:
    store = store_factory(background=False)
    write_pages(store, 2500)
    checkpoint = store.checkpoint()
    assert checkpoint is not None
    busy, frames, _copied = checkpoint
    assert busy == 0 and frames < 1300  # commits checkpointed past 1,000 pages: the WAL started over


def test_with_background_checkpoints_no_commit_checkpoints_and_the_sweep_does(
    store_factory: Callable[..., Store],
) -> None:
    store = store_factory(background=True)
    assert store.background_checkpoints
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    write_pages(store, 2500)
    checkpoint = store.checkpoint()
    assert checkpoint is not None
    busy, frames, copied = checkpoint
    assert busy == 0 and frames > 2500 and copied == frames  # everything was still in the WAL, and now is copied
    write_pages(store, 200)  # the next writer starts the WAL over: it stays as short as one sweep's writes
    after = store.checkpoint()
    assert after is not None and after[1] < 400
    with store.unit_of_work(read_only=True) as session:
        assert session.execute(text("SELECT count(*) FROM notes")).scalar() == 2700


def test_the_sweep_thread_checkpoints_only_a_store_that_leaves_it_to_the_sweep(
    store_factory: Callable[..., Store], tmp_path: Path
) -> None:
    app = create_app(app_config(f"sqlite:///{tmp_path}/app.sqlite3", tmp_path / "instance"), background=False)
    try:
        housekeeper = app.extensions["warmline"].housekeeper
        app.extensions["warmline"].store.upgrade()
        background = store_factory(background=True)
        write_pages(background, 1500)
        result = SweepThread(housekeeper, interval=60, store=background).run_once()
        assert result is not None and result[0] == 0 and result[1] > 1500 and result[2] == result[1]
        usual = store_factory(background=False)
        assert SweepThread(housekeeper, interval=60, store=usual).run_once() is None
    finally:
        app.extensions["warmline"].close()


def test_the_service_leaves_checkpoints_to_its_sweep_thread_and_the_cli_does_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/svc.sqlite3"
    served = create_app(app_config(url, tmp_path / "a", routing={"sweep_interval": 1}))
    one_shot = create_app(app_config(url, tmp_path / "b", routing={"sweep_interval": 1}), background=False)
    slow_sweep = create_app(app_config(url, tmp_path / "c", routing={"sweep_interval": 30}))
    try:
        assert served.extensions["warmline"].store.background_checkpoints
        assert not one_shot.extensions["warmline"].store.background_checkpoints
        assert not slow_sweep.extensions["warmline"].store.background_checkpoints
    finally:
        for app in (served, one_shot, slow_sweep):
            app.extensions["warmline"].close()
