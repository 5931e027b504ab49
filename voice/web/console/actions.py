"""What the console's controls do, as fetch calls (JSON in and out, the CSRF token in ``X-CSRF-Token``): presence,
wrap-up, transfers, the work queue, customers. The same services and bodies as the reps' JSON API; who may do what
is the services' rule (a rep: their own calls and tasks; a supervisor: everyone's)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from voice.web.bodies import CloseTaskBody, CustomerBody, PresenceBody, TransferBody, WrapUpBody, json_body
from voice.web.console import sessions, wire
from voice.web.parts import app_parts

bp = Blueprint("actions", __name__)


@bp.post("/reps/<int:rep_id>/presence")
def set_presence(rep_id: int) -> Response:
    body, actor = json_body(PresenceBody), sessions.actor()
    change = app_parts().presence.set_presence_of(rep_id, body.state, reason=body.reason, actor=actor)
    return jsonify({**wire.rep_json(change.rep), "immediate": change.immediate})


@bp.post("/calls/<call_sid>/wrap-up")
def wrap_up(call_sid: str) -> Response:
    body = json_body(WrapUpBody)
    saved = app_parts().wrap_ups.save(
        sessions.actor(), call_sid, disposition=body.disposition, notes=body.notes, department=body.department
    )
    return jsonify(wire.wrap_up_json(saved))


@bp.post("/calls/<call_sid>/transfer")
def transfer(call_sid: str) -> ResponseReturnValue:
    body, actor = json_body(TransferBody), sessions.actor()
    handoff = app_parts().handoffs.start(
        rep_id=actor.rep_id, call_sid=call_sid, to_department=body.department, to_rep=body.rep, note=body.note
    )
    return jsonify(wire.handoff_json(handoff)), 202


@bp.get("/handoffs/<int:handoff_id>")
def handoff(handoff_id: int) -> Response:
    return jsonify(wire.handoff_json(app_parts().handoffs.status_of(handoff_id, rep_id=sessions.actor().rep_id)))


@bp.post("/tasks/<int:task_id>/claim")
def claim_task(task_id: int) -> Response:
    return jsonify(wire.work_item_json(app_parts().work.claim(sessions.actor(), task_id)))


@bp.post("/tasks/<int:task_id>/release")
def release_task(task_id: int) -> Response:
    return jsonify(wire.work_item_json(app_parts().work.release(sessions.actor(), task_id)))


@bp.post("/tasks/<int:task_id>/close")
def close_task(task_id: int) -> Response:
    note = json_body(CloseTaskBody).note
    return jsonify(wire.work_item_json(app_parts().work.close(sessions.actor(), task_id, note=note)))


@bp.post("/tasks/<int:task_id>/call-back")
def call_back(task_id: int) -> ResponseReturnValue:
    return jsonify({"call_sid": app_parts().work.call_back(sessions.actor(), task_id)}), 202


@bp.post("/customers/<int:customer_id>")
def update_customer(customer_id: int) -> Response:
    body = json_body(CustomerBody)
    record = app_parts().customers.update(sessions.actor(), customer_id, **body.model_dump())
    return jsonify(wire.customer_json(record))
