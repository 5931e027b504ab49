"""HotStatement: the same rows and writes as SQLAlchemy's own execution, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, insert, select, update

from crm_sync import service as crm
from crm_sync.db import Store
from crm_sync.hot import HotStatement, HotStatementError
from crm_sync.models import Interaction, InteractionStatus, Rep, RepState

NOW = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)


def _open_call(store: Store, sid: str) -> int:
    with store.transaction() as connection:
        row, created = crm.insert_interaction(
            connection,
            call_sid=sid,
            caller_number="+15557650000",
            customer_id=None,
            flow_name="main",
            flow_version="v1",
            flow_state={"node": "ask", "caller": {"tier": "gold"}, "retries": [1, 2]},
            now=NOW,
        )
    assert created
    return row.id


def test_rows_come_back_typed_like_sqlalchemy_returns_them(store: Store) -> None:
    interaction_id = _open_call(store, "CA" + "1" * 32)
    statement = select(
        Interaction.id, Interaction.status, Interaction.started_at, Interaction.flow_state, Interaction.rank_at
    ).where(Interaction.id == bindparam("interaction_id"))
    with store.transaction() as connection:
        expected = tuple(connection.execute(statement, {"interaction_id": interaction_id}).one())
        got = HotStatement(statement).first(connection, {"interaction_id": interaction_id})
    assert got == expected
    assert got is not None
    assert got[1] is InteractionStatus.IN_FLOW
    assert got[2] == NOW and got[2].tzinfo is not None
    assert got[3]["caller"] == {"tier": "gold"}
    assert got[4] is None


def test_writes_go_through_the_column_types_and_join_the_transaction(store: Store) -> None:
    interaction_id = _open_call(store, "CA" + "2" * 32)
    change = HotStatement(update(Interaction).where(Interaction.id == bindparam("interaction_id_")))
    later = NOW + timedelta(seconds=42)
    with pytest.raises(RuntimeError), store.transaction() as connection:
        change.run(connection, {"interaction_id_": interaction_id, "department": "sales"})
        raise RuntimeError("rolled back")
    with store.transaction() as connection:
        changed = change.run(
            connection,
            {
                "interaction_id_": interaction_id,
                "status": InteractionStatus.QUEUED,
                "enqueued_at": later,
                "flow_state": {"node": "transfer"},
            },
        )
    assert changed == 1
    with store.unit_of_work() as session:
        interaction = crm.require_interaction(session, "CA" + "2" * 32)
        assert interaction.status is InteractionStatus.QUEUED
        assert interaction.department is None  # the rolled-back UPDATE left nothing behind
        assert interaction.enqueued_at == later
        assert interaction.flow_state == {"node": "transfer"}


def test_constants_in_the_statement_are_bound_too(store: Store) -> None:
    _open_call(store, "CA" + "3" * 32)
    statement = select(Interaction.call_sid).where(Interaction.status == InteractionStatus.IN_FLOW).limit(5)
    with store.transaction() as connection:
        assert HotStatement(statement).all(connection, {}) == [("CA" + "3" * 32,)]
        assert HotStatement(statement.where(Interaction.department == "sales")).all(connection, {}) == []


def test_a_column_with_a_python_default_must_be_given(store: Store) -> None:
    statement = HotStatement(insert(Rep))
    with store.transaction() as connection, pytest.raises(HotStatementError, match="state_changed_at"):
        statement.run(connection, {"name": "Ada", "phone": "+15550100001", "state": RepState.AVAILABLE})


def test_expanding_parameters_are_refused(store: Store) -> None:
    statement = HotStatement(select(Rep.id).where(Rep.id.in_(bindparam("ids", expanding=True))))
    with store.transaction() as connection, pytest.raises(HotStatementError, match="expanding"):
        statement.all(connection, {"ids": [1, 2]})
