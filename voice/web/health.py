"""Liveness for load balancers and `make run` users: is the app up, can it reach its database? JSON, always.

200 ``{"status": "ok", "database": "ok", ...}``; 503 ``{"status": "unavailable", "database": "<what is wrong>"}``
when the store cannot be reached. The check is one ``SELECT 1`` (no table, no lock: a read-only unit of work),
given ``DATABASE_CHECK_SECONDS`` to answer. The answer names the kind of failure only; the log has the detail
(the endpoint is public, and a driver's message names hosts, ports and databases).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from crm_sync.db import Store
from voice.web.parts import app_parts

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

#: How long the database gets to answer. A dead server refuses at once, but one behind a dropped route or a hung
#: one would hold the probe until TCP gives up (minutes), and load balancers give up after a few seconds.
DATABASE_CHECK_SECONDS = 1.0


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    parts = app_parts()
    problem = _probe(parts.store).problem(timeout=DATABASE_CHECK_SECONDS)
    flow = parts.flows.current()
    # Degraded (still answering callers, but someone must look): a flow file kept out of service, or a flow
    # answering with a stand-in (voice/adapters/flow_library.py). Unavailable: the store cannot be reached.
    problems = parts.flows.problems
    status = "unavailable" if problem else "degraded" if problems else "ok"
    body = {"status": status, "database": problem or "ok", "flow": flow.name, "version": flow.version}
    return jsonify({**body, "problems": problems}), 503 if problem else 200, _NO_STORE


_NO_STORE = {"Cache-Control": "no-store"}


class StoreProbe:
    """Checks the store on a thread of its own, one check at a time: probes that arrive while a check hangs wait
    for that same check (up to their timeout), so a hung database costs one thread, not one per probe. The thread
    is a daemon: a check stuck in the driver never keeps the process from exiting."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._running: Future[str | None] | None = None

    def problem(self, *, timeout: float) -> str | None:
        """What is wrong with the store, in words; None when it answered."""
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                threading.Thread(target=self._check, args=(self._running,), name="healthz", daemon=True).start()
            running = self._running
        try:
            return running.result(timeout=timeout)
        except FutureTimeout:
            log.error("health check: the database did not answer within %g s", timeout)
            return f"no answer within {timeout:g} s"

    def _check(self, outcome: Future[str | None]) -> None:
        try:
            url = self._store.engine.url
            if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
                # An open SQLite connection keeps answering from a file that was deleted, or whose directory went
                # away or became unreadable; the next connection (another worker, a new pool slot) would fail.
                os.stat(url.database)
            with self._store.unit_of_work(read_only=True) as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # whatever it is, the store cannot serve: say so, never raise into the probe
            log.error("health check: the database cannot be reached: %s", exc)
            outcome.set_result(f"cannot be reached ({type(exc).__name__})")
        else:
            outcome.set_result(None)


def _probe(store: Store) -> StoreProbe:
    """The app's one probe (one per store, so checks never pile up across requests)."""
    probe: StoreProbe | None = current_app.extensions.get("warmline.healthz")
    if probe is None:
        probe = current_app.extensions.setdefault("warmline.healthz", StoreProbe(store))
    return probe
