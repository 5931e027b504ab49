"""Migrations: the models and the Alembic history describe the same schema, and upgrades keep existing rows."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, text

from crm_sync.db import Store, alembic_config
from crm_sync.models import Base


def test_models_match_the_migrations(store: Store) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_upgrade_from_the_first_revision_keeps_calls(database_url: str) -> None:
    engine = create_engine(database_url)
    existing = MetaData()
    existing.reflect(engine)  # every table the fixture created, whatever revisions exist by now
    existing.drop_all(engine)
    store = Store(database_url)
    command.upgrade(alembic_config(store.engine), "0001")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO interactions (call_sid, caller_number, flow_name, flow_version, flow_state, status,"
                " started_at, hold_seconds) VALUES ('CA1', '+15551230001', 'main', 'v1', '{}', 'ended',"
                " CURRENT_TIMESTAMP, 0)"
            )
        )
    store.upgrade()
    with store.engine.connect() as connection:
        survey = connection.execute(text("SELECT survey FROM interactions WHERE call_sid = 'CA1'")).scalar_one()
    assert survey in ({}, "{}")
    store.dispose()
    engine.dispose()
