"""Liveness for load balancers and `make run` users: is the app up, can it reach its database?"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    warmline = current_app.extensions["warmline"]
    with warmline.store.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    problems = warmline.flows.problems
    return jsonify(
        status="degraded" if problems else "ok",
        flow=warmline.flows.current().name,
        version=warmline.flows.current().version,
        problems=problems,
    )
