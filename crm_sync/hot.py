"""Hot statements: Core statements compiled once per dialect and run straight on the driver's cursor.

/voice/incoming and /voice/gather run a handful of small statements on every call. Through ``Connection.execute``
each one costs 25-40 µs of SQLAlchemy bookkeeping (cache key, execution context, result metadata) around 3-10 µs
of actual SQLite work (measured with bench/profile_webhook.py), which made the library, not the database, most of a
webhook's time. A ``HotStatement`` keeps what SQLAlchemy is good at — the SQL is generated from the models for each
dialect, and values go through the column types' own bind and result processors (UTC datetimes, JSON, enums) — and
skips the per-execution machinery: the compiled SQL, the parameter order and the processors are worked out once.

It runs inside the caller's transaction (the same DBAPI connection ``Store.transaction`` began on). Only statements
without "expanding" IN parameters qualify, and an INSERT or UPDATE must be given every column that has a
Python-side default (nothing computes defaults here); both are checked when the statement is first compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import ExecutableReturnsRows

Processor = Callable[[Any], Any] | None


class HotStatementError(TypeError):
    """A statement that cannot run as a hot statement (a programming error, raised on its first use)."""


@dataclass(frozen=True)
class _Plan:
    sql: str
    positional: bool
    #: Bind names in the order the driver wants them (positional paramstyles) or to fill the dict (named ones).
    names: tuple[str, ...]
    #: Constant values of binds the statement carries itself (``Interaction.status == InteractionStatus.QUEUED``).
    constants: Mapping[str, Any]
    bind_processors: tuple[Processor, ...]
    result_processors: tuple[Processor, ...]


class HotStatement:
    """One statement; ``first``/``scalar``/``all``/``run`` execute it in a connection's current transaction."""

    def __init__(self, statement: ClauseElement) -> None:
        self._statement = statement
        self._is_dml = isinstance(statement, UpdateBase)
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}

    def first(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        plan, cursor = self._execute(connection, params)
        row = cursor.fetchone()
        return _processed(row, plan.result_processors) if row is not None else None

    def scalar(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        row = self.first(connection, params)
        return row[0] if row is not None else None

    def all(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        plan, cursor = self._execute(connection, params)
        return [_processed(row, plan.result_processors) for row in cursor.fetchall()]

    def run(self, connection: Connection, params: Mapping[str, Any]) -> int:
        """Execute for its effect; returns the number of rows it changed."""
        _plan, cursor = self._execute(connection, params)
        count: int = cursor.rowcount
        return count

    def _execute(self, connection: Connection, params: Mapping[str, Any]) -> tuple[_Plan, Any]:
        dialect = connection.dialect
        # An INSERT or UPDATE compiles to the columns it is given: one plan per set of keys.
        key = (dialect.name, tuple(params) if self._is_dml else ())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile(dialect, key[1])
        values = [params[name] if name in params else plan.constants[name] for name in plan.names]
        bound = [
            value if process is None else process(value)
            for value, process in zip(values, plan.bind_processors, strict=True)
        ]
        driver = connection.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        cursor.execute(plan.sql, bound if plan.positional else dict(zip(plan.names, bound, strict=True)))
        return plan, cursor

    def _compile(self, dialect: Dialect, column_keys: Sequence[str]) -> _Plan:
        compiled: Any = self._statement.compile(dialect=dialect, column_keys=list(column_keys) or None)
        name = type(self._statement).__name__
        if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
            missing = [column.key for column in (*compiled.insert_prefetch, *compiled.update_prefetch)]
            raise HotStatementError(f"{name}: give these columns explicitly (they have Python defaults): {missing}")
        binds = compiled.binds
        if any(bind.expanding for bind in binds.values()) or compiled.post_compile_params:
            raise HotStatementError(f"{name}: expanding IN parameters re-render the SQL on every execution")
        positional = bool(compiled.positional)
        names = tuple(compiled.positiontup) if positional else tuple(compiled.bind_names.values())
        constants = {bind_name: binds[bind_name].effective_value for bind_name in names if bind_name in binds}
        bind_processors = tuple(
            binds[bind_name].type.dialect_impl(dialect).bind_processor(dialect) if bind_name in binds else None
            for bind_name in names
        )
        result_processors: tuple[Processor, ...] = ()
        if isinstance(self._statement, ExecutableReturnsRows):
            result_processors = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in self._statement.exported_columns
            )
        return _Plan(compiled.string, positional, names, constants, bind_processors, result_processors)


def _processed(row: Sequence[Any], processors: Sequence[Processor]) -> tuple[Any, ...]:
    return tuple(value if process is None else process(value) for value, process in zip(row, processors, strict=True))
