"""The console's pages: the rep's home (presence, the call in front of them, the line, the team), the work queue,
customers, one call's record, and the supervisor's floor; and ``/console/state``, what the live panels show, as
JSON (the polling fallback of the live-events stream, and the first paint of every page)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, request
from flask.typing import ResponseReturnValue

from voice.domain.actor import Actor
from voice.domain.errors import Forbidden
from voice.web.console import sessions, wire
from voice.web.parts import app_parts

bp = Blueprint("pages", __name__)


class SupervisorsOnly(Forbidden):
    def __init__(self) -> None:
        super().__init__("the floor is for supervisors")


def state_of(actor: Actor) -> wire.JSON:
    """The four live pieces for ``actor``, read now."""
    parts = app_parts()
    floor = parts.floor.floor()
    return wire.console_state(
        actor, floor, parts.floor.screen_for(actor), parts.work.work_queue(actor), sent_at=parts.clock()
    )


@bp.get("/state")
def state() -> Response:
    response = jsonify(state_of(sessions.actor()))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("")
@bp.get("/")
def home() -> ResponseReturnValue:
    actor = sessions.actor()
    return render_template("console/home.html", state=state_of(actor), page="home")


@bp.get("/floor")
def floor() -> ResponseReturnValue:
    actor = sessions.actor()
    if not actor.supervisor:
        raise SupervisorsOnly()
    return render_template("console/floor.html", state=state_of(actor), page="floor")


@bp.get("/work")
def work() -> ResponseReturnValue:
    actor = sessions.actor()
    items = app_parts().work.work_queue(actor)
    return render_template("console/work.html", items=items, state=state_of(actor), page="work")


@bp.get("/customers")
def customers() -> ResponseReturnValue:
    actor, query = sessions.actor(), request.args.get("q", "").strip()
    found = app_parts().customers.search(actor, query) if query else []
    return render_template("console/customers.html", query=query, found=found, state=state_of(actor), page="customers")


@bp.get("/customers/<int:customer_id>")
def customer(customer_id: int) -> ResponseReturnValue:
    actor = sessions.actor()
    record = app_parts().customers.record(actor, customer_id)
    return render_template("console/customer.html", record=record, state=state_of(actor), page="customers")


@bp.get("/calls/<call_sid>")
def call(call_sid: str) -> ResponseReturnValue:
    actor = sessions.actor()
    screen = app_parts().floor.screen_of_call(actor, call_sid)
    return render_template("console/call.html", screen=wire.screen_json(screen), state=state_of(actor), page="call")
