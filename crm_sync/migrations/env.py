"""Alembic environment: runs against the engine the app hands over (see crm_sync.db.alembic_config)."""

from alembic import context

from crm_sync.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # the `alembic` command line: take the URL from the environment like the app does
    import os

    from crm_sync.db import make_engine

    engine = make_engine(os.environ.get("WARMLINE_DATABASE_URL", "sqlite:///instance/warmline.sqlite3"))

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
