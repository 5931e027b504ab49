"""The reps' JSON API, for integrations: presence, warm transfers, wrap-up, the work queue and customers — the same
services as the rep console, the same rules (a rep acts on their own calls and tasks, a supervisor on everyone's).

Authentication: ``Authorization: Bearer <token>``, a per-rep token from ``warmline reps token NAME`` (only its
SHA-256 is stored): a credential apart from the console's sessions, so no CSRF token here. Bodies are JSON validated
by pydantic (unknown keys refused, ``voice.web.bodies``); every error is JSON of the form
``{"error": {"code": …, "message": …}}``, its status chosen by the error's kind in ``voice.web.errors``.

    GET  /api/me                                  who I am, my presence and skills
    PUT  /api/me/presence                         {"state": "available" | "away" | "offline", "reason": "lunch"}
    POST /api/calls/<CallSid>/transfer            {"department": "billing"} or {"rep": "Bob Chen"}, optional "note"
    GET  /api/handoffs/<id>                       how a transfer I started (or received) is going
    POST /api/calls/<CallSid>/wrap-up             {"disposition", "notes", "department"} (each optional)
    GET  /api/tasks                               my work queue (a supervisor's: every open task)
    POST /api/tasks/<id>/claim|release            take a task, or give it back
    POST /api/tasks/<id>/close                    {"note": "what was done"}
    POST /api/tasks/<id>/call-back                Warmline calls the customer and whispers me (202)
    GET  /api/customers?q=…                       search by name or number
    GET  /api/customers/<id>                      contact details, notes and the timeline
    PUT  /api/customers/<id>                      {"name", "phone", "email", "tier", "notes"}
"""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue

from voice.domain.actor import Actor
from voice.web.bodies import CloseTaskBody, CustomerBody, PresenceBody, TransferBody, WrapUpBody, json_body
from voice.web.console import wire
from voice.web.errors import API_PREFIX, Unauthorized, api_failure
from voice.web.parts import app_parts

bp = Blueprint("api", __name__, url_prefix=API_PREFIX)


def _me() -> Actor:
    actor: Actor = g.actor
    return actor


@bp.before_request
def authenticate() -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    actor = app_parts().accounts.actor_for_token(token.strip()) if scheme.lower() == "bearer" else None
    if actor is None:
        raise Unauthorized()
    g.actor = actor


@bp.errorhandler(Exception)
def on_error(error: Exception) -> ResponseReturnValue:
    return api_failure(error)


# --- presence and transfers -----------------------------------------------------------------------------------------


@bp.get("/me")
def me() -> Response:
    return jsonify(wire.rep_json(app_parts().presence.rep(_me().rep_id)))


@bp.put("/me/presence")
def set_presence() -> Response:
    body = json_body(PresenceBody)
    change = app_parts().presence.set_presence_of(_me().rep_id, body.state, reason=body.reason, actor=_me())
    return jsonify({**wire.rep_json(change.rep), "immediate": change.immediate})


@bp.post("/calls/<call_sid>/transfer")
def transfer(call_sid: str) -> tuple[Response, int]:
    body = json_body(TransferBody)
    handoff = app_parts().handoffs.start(
        rep_id=_me().rep_id, call_sid=call_sid, to_department=body.department, to_rep=body.rep, note=body.note
    )
    return jsonify(wire.handoff_json(handoff)), 202


@bp.get("/handoffs/<int:handoff_id>")
def handoff(handoff_id: int) -> Response:
    return jsonify(wire.handoff_json(app_parts().handoffs.status_of(handoff_id, rep_id=_me().rep_id)))


# --- wrap-up --------------------------------------------------------------------------------------------------------


@bp.post("/calls/<call_sid>/wrap-up")
def wrap_up(call_sid: str) -> Response:
    body = json_body(WrapUpBody)
    saved = app_parts().wrap_ups.save(
        _me(), call_sid, disposition=body.disposition, notes=body.notes, department=body.department
    )
    return jsonify(wire.wrap_up_json(saved))


# --- the work queue -------------------------------------------------------------------------------------------------


@bp.get("/tasks")
def tasks() -> Response:
    return jsonify({"tasks": [wire.work_item_json(item) for item in app_parts().work.work_queue(_me())]})


@bp.post("/tasks/<int:task_id>/claim")
def claim_task(task_id: int) -> Response:
    return jsonify(wire.work_item_json(app_parts().work.claim(_me(), task_id)))


@bp.post("/tasks/<int:task_id>/release")
def release_task(task_id: int) -> Response:
    return jsonify(wire.work_item_json(app_parts().work.release(_me(), task_id)))


@bp.post("/tasks/<int:task_id>/close")
def close_task(task_id: int) -> Response:
    note = json_body(CloseTaskBody).note
    return jsonify(wire.work_item_json(app_parts().work.close(_me(), task_id, note=note)))


@bp.post("/tasks/<int:task_id>/call-back")
def call_back(task_id: int) -> tuple[Response, int]:
    return jsonify({"call_sid": app_parts().work.call_back(_me(), task_id)}), 202


# --- customers ------------------------------------------------------------------------------------------------------


@bp.get("/customers")
def search_customers() -> Response:
    found = app_parts().customers.search(_me(), request.args.get("q", ""))
    return jsonify({"customers": [wire.customer_summary_json(customer) for customer in found]})


@bp.get("/customers/<int:customer_id>")
def customer(customer_id: int) -> Response:
    return jsonify(wire.customer_json(app_parts().customers.record(_me(), customer_id)))


@bp.put("/customers/<int:customer_id>")
def update_customer(customer_id: int) -> Response:
    body = json_body(CustomerBody)
    record = app_parts().customers.update(_me(), customer_id, **body.model_dump())
    return jsonify(wire.customer_json(record))
