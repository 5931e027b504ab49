"""Fixtures for the CRM store tests: every ``store`` test runs on SQLite and on PostgreSQL.

PostgreSQL isolation: each test module gets its own scratch database (``warmline_crm_test_<random>``, created from
an autocommit connection to the admin database and dropped afterwards), and each test gets a fresh schema inside it,
selected through ``search_path``, so the migrations run from scratch for every test and tests never see each other's
rows. The PostgreSQL cases are skipped, saying why, only when the server cannot be reached.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from crm_sync.db import Store

#: The admin connection (any existing database) used to create and drop the scratch databases.
POSTGRES_ADMIN_URL = os.environ.get("WARMLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """A scratch PostgreSQL database for one test module; yields its URL."""
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc}); set WARMLINE_TEST_POSTGRES_URL")
    name = f"warmline_crm_test_{secrets.token_hex(4)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            # FORCE: a connection leaked by a failing test must not leave the database behind.
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_store(postgres_database: str) -> Iterator[Store]:
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    store = Store(f"{postgres_database}?options={quote(f'-csearch_path={schema}')}")
    try:
        store.upgrade()
        yield store
    finally:
        store.dispose()
        with psycopg.connect(postgres_database, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/t.sqlite3")
    try:
        store.upgrade()
        yield store
    finally:
        store.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Store:
    """A freshly migrated, empty store on each backend."""
    backend_store: Store = request.getfixturevalue(f"{'postgres' if request.param == 'postgresql' else 'sqlite'}_store")
    return backend_store
