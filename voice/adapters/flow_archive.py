"""Every flow version that went live, kept in the store (``crm_sync.models.FlowVersion``).

What it is for: a worker that boots while a flow file is broken or missing (an admin's bad save, a deploy that lost
a file) serves the last version that went live instead of failing to boot, which under gunicorn would take the
whole service down; and a call in progress finishes on the version it started on, whichever worker (or host) serves
its next webhook.

Never fatal, never in the way: versions are written by a thread of the archive's own (a worker must boot and answer
even while the database hangs), and when the store cannot be read or written (a fresh database before ``warmline db
upgrade``, an outage) the library works from the files alone, as it always could.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from crm_sync.db import Store
from crm_sync.models import FlowVersion, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchivedFlow:
    version: str
    name: str
    source: str
    text: str


class FlowArchive:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: queue.Queue[ArchivedFlow | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()

    def keep(self, *, version: str, name: str, source: str, text: str) -> None:
        """Remember a version that goes live (once: every worker of every host may say so), in the background."""
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_pending, name="flow-archive", daemon=True)
                self._writer.start()
        self._pending.put(ArchivedFlow(version, name, source, text))

    def close(self) -> None:
        """Write what is pending, then stop the writer."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._pending.put(None)
            writer.join(timeout=30)

    def _write_pending(self) -> None:
        while (flow := self._pending.get()) is not None:
            self._write(flow)

    def _write(self, flow: ArchivedFlow) -> None:
        version, name, source, text = flow.version, flow.name, flow.source, flow.text
        try:
            with self._store.unit_of_work() as session:
                insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
                session.execute(
                    insert(FlowVersion)
                    .values(version=version, name=name, source=source, text=text, first_live_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["version"])
                )
        except SQLAlchemyError as exc:
            log.warning("flow %s@%s not archived (the store is not ready): %s", name, version, exc.__class__.__name__)

    def latest(self, name: str) -> ArchivedFlow | None:
        """The newest version of ``name`` that went live."""
        return self._find(
            select(FlowVersion).where(FlowVersion.name == name).order_by(FlowVersion.first_live_at.desc())
        )

    def version(self, version: str) -> ArchivedFlow | None:
        return self._find(select(FlowVersion).where(FlowVersion.version == version))

    def _find(self, query: Select[FlowVersion]) -> ArchivedFlow | None:
        try:
            with self._store.unit_of_work(read_only=True) as session:
                found = session.scalars(query.limit(1)).first()
                return ArchivedFlow(found.version, found.name, found.source, found.text) if found else None
        except SQLAlchemyError as exc:
            log.warning("flow archive not readable: %s", exc.__class__.__name__)
            return None
