"""Telling other processes that the store changed: on PostgreSQL every write transaction sends ``NOTIFY
warmline_changes`` as it commits (the console's live-events server LISTENs, whichever worker or host wrote); SQLite,
one host only, needs no message: a reader sees ``PRAGMA data_version`` move (``voice.live.feeds``).

The NOTIFY is sent inside the transaction, just before its commit, not from a new one after it: PostgreSQL holds a
notification back until its transaction commits and drops it on rollback, so a listener hears of exactly the commits
and nothing costs a second transaction. The payload says what changed (the tables written, as far as the session
saw them), small and for logs and tests: a listener recomputes what it shows whatever the payload says.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

CHANGES_CHANNEL = "warmline_changes"
#: PostgreSQL refuses payloads of 8,000 bytes or more; ours names a few tables.
MAX_PAYLOAD = 7_000
_TABLES = "warmline_changed_tables"


def _written_tables(session: Session) -> set[str]:
    tables: set[str] = session.info.setdefault(_TABLES, set())
    return tables


def _note_flushed(session: Session, _context: Any) -> None:
    for instance in (*session.new, *session.dirty, *session.deleted):
        table = getattr(instance, "__tablename__", None)
        if table:
            _written_tables(session).add(table)


def _note_statement(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        name = getattr(table, "name", None)
        if name:
            _written_tables(state.session).add(str(name))


def _notify(session: Session) -> None:
    # Pending objects the commit's own flush is about to write count too.
    _note_flushed(session, None)
    tables = sorted(session.info.pop(_TABLES, set()))
    payload = json.dumps({"tables": tables}, separators=(",", ":"))
    if len(payload) > MAX_PAYLOAD:
        payload = '{"tables":"many"}'
    # A write unit of work that wrote through a raw connection leaves no trace in the session: it still notifies.
    session.connection().exec_driver_sql(
        "SELECT pg_notify(%(channel)s, %(payload)s)",
        {
            "channel": CHANGES_CHANNEL,
            "payload": payload,
        },
    )


def notify_commits(sessions: sessionmaker[Session]) -> None:
    """Every commit of a session from ``sessions`` (PostgreSQL) notifies :data:`CHANGES_CHANNEL`."""
    event.listen(sessions, "after_flush", _note_flushed)
    event.listen(sessions, "do_orm_execute", _note_statement)
    event.listen(sessions, "before_commit", _notify)
