"""The reps' JSON API — what the rep console uses: presence, and warm transfers onward.

Authentication: ``Authorization: Bearer <token>``, a per-rep token from ``warmline reps token NAME`` (only its
SHA-256 is stored). Bodies are JSON validated by pydantic (unknown keys refused); every error is JSON of the form
``{"error": {"code": …, "message": …}}``, its status chosen by the error's kind in ``voice.web.errors``.

    GET  /api/me                        who I am, my presence and skills
    PUT  /api/me/presence               {"state": "available" | "away" | "offline"}
    POST /api/calls/<CallSid>/transfer  {"department": "billing"} or {"rep": "Bob Chen"}, optional "note"
    GET  /api/handoffs/<id>             how a transfer I started (or received) is going
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crm_sync.models import RepState
from voice.domain.errors import InvalidInput
from voice.services.handoffs import HandoffView
from voice.services.presence import RepView
from voice.web.errors import API_PREFIX, Unauthorized, api_failure
from voice.web.parts import app_parts

bp = Blueprint("api", __name__, url_prefix=API_PREFIX)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PresenceBody(_Body):
    # Any presence there is; which of them a person may choose is the rep model's rule (a refusal, 409, says why).
    state: RepState


class TransferBody(_Body):
    department: str | None = Field(default=None, min_length=1, max_length=64)
    rep: str | None = Field(default=None, min_length=1, max_length=200)
    note: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _one_target(self) -> TransferBody:
        if (self.department is None) == (self.rep is None):
            raise ValueError("give either 'department' or 'rep'")
        return self


def _me() -> RepView:
    rep: RepView = g.rep
    return rep


Body = TypeVar("Body", bound=_Body)


def _body(model: type[Body]) -> Body:
    """The request's JSON body as ``model``; InvalidInput naming each bad key and why."""
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = (f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in exc.errors())
        raise InvalidInput("; ".join(problems)) from exc


@bp.before_request
def authenticate() -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    rep = app_parts().presence.rep_for_token(token.strip()) if scheme.lower() == "bearer" else None
    if rep is None:
        raise Unauthorized()
    g.rep = rep


@bp.errorhandler(Exception)
def on_error(error: Exception) -> ResponseReturnValue:
    return api_failure(error)


def _rep_json(rep: RepView) -> dict[str, Any]:
    return {
        "id": rep.id,
        "name": rep.name,
        "state": rep.state,
        "after_call": rep.after_call,
        "departments": list(rep.departments),
    }


def _handoff_json(handoff: HandoffView) -> dict[str, Any]:
    return {
        "id": handoff.id,
        "state": handoff.state,
        "to_rep": handoff.to_rep,
        "to_department": handoff.to_department,
        "failure": handoff.failure,
    }


@bp.get("/me")
def me() -> Response:
    return jsonify(_rep_json(app_parts().presence.rep(_me().id)))


@bp.put("/me/presence")
def set_presence() -> Response:
    change = app_parts().presence.set_presence_of(_me().id, _body(PresenceBody).state)
    return jsonify({**_rep_json(change.rep), "immediate": change.immediate})


@bp.post("/calls/<call_sid>/transfer")
def transfer(call_sid: str) -> tuple[Response, int]:
    body = _body(TransferBody)
    handoff = app_parts().handoffs.start(
        rep_id=_me().id, call_sid=call_sid, to_department=body.department, to_rep=body.rep, note=body.note
    )
    return jsonify(_handoff_json(handoff)), 202


@bp.get("/handoffs/<int:handoff_id>")
def handoff(handoff_id: int) -> Response:
    return jsonify(_handoff_json(app_parts().handoffs.status_of(handoff_id, rep_id=_me().id)))
