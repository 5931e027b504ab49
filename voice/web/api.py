"""The reps' JSON API — what the rep console uses: presence, and warm transfers onward.

Authentication: ``Authorization: Bearer <token>``, a per-rep token from ``warmline reps token NAME`` (only its
SHA-256 is stored). Bodies are JSON validated by pydantic (unknown keys refused); every error is JSON of the form
``{"error": {"code": …, "message": …}}``, mapped from exception types in one place (``_errors``).

    GET  /api/me                        who I am, my presence and skills
    PUT  /api/me/presence               {"state": "available" | "away" | "offline"}
    POST /api/calls/<CallSid>/transfer  {"department": "billing"} or {"rep": "Bob Chen"}, optional "note"
    GET  /api/handoffs/<id>             how a transfer I started (or received) is going
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from werkzeug.exceptions import HTTPException

from crm_sync.errors import PresenceRefused, UnknownInteraction, UnknownRep
from crm_sync.models import RepState
from voice.bootstrap import Warmline
from voice.services.handoffs import HandoffRefused, HandoffView
from voice.services.presence import RepView

bp = Blueprint("api", __name__, url_prefix="/api")


class Unauthorized(Exception):
    """No token, or not a rep's token."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PresenceBody(_Body):
    state: Literal["available", "away", "offline"]


class TransferBody(_Body):
    department: str | None = Field(default=None, min_length=1, max_length=64)
    rep: str | None = Field(default=None, min_length=1, max_length=200)
    note: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _one_target(self) -> TransferBody:
        if (self.department is None) == (self.rep is None):
            raise ValueError("give either 'department' or 'rep'")
        return self


def _warmline() -> Warmline:
    warmline: Warmline = current_app.extensions["warmline"]
    return warmline


def _me() -> RepView:
    rep: RepView = g.rep
    return rep


def _body(model: type[_Body]) -> Any:
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    return model.model_validate(payload)


@bp.before_request
def authenticate() -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    rep = _warmline().presence.rep_for_token(token.strip()) if scheme.lower() == "bearer" else None
    if rep is None:
        raise Unauthorized()
    g.rep = rep


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
    return jsonify(_rep_json(_warmline().presence.rep(_me().id)))


@bp.put("/me/presence")
def set_presence() -> Response:
    change = _warmline().presence.set_presence_of(_me().id, RepState(_body(PresenceBody).state))
    return jsonify({**_rep_json(change.rep), "immediate": change.immediate})


@bp.post("/calls/<call_sid>/transfer")
def transfer(call_sid: str) -> tuple[Response, int]:
    body: TransferBody = _body(TransferBody)
    handoff = _warmline().handoffs.start(
        rep_id=_me().id, call_sid=call_sid, to_department=body.department, to_rep=body.rep, note=body.note
    )
    return jsonify(_handoff_json(handoff)), 202


@bp.get("/handoffs/<int:handoff_id>")
def handoff(handoff_id: int) -> Response:
    return jsonify(_handoff_json(_warmline().handoffs.status_of(handoff_id, rep_id=_me().id)))


# --- errors, by type, in one place --------------------------------------------------------------------------------

_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (Unauthorized, 401, "unauthorized"),
    (ValidationError, 400, "invalid"),
    (ValueError, 400, "invalid"),
    (UnknownRep, 404, "not_found"),
    (UnknownInteraction, 404, "not_found"),
    (PresenceRefused, 409, "refused"),
    (HandoffRefused, 409, "refused"),
)


@bp.errorhandler(Exception)
def _errors(error: Exception) -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
    if isinstance(error, HTTPException):
        return jsonify({"error": {"code": error.name.lower().replace(" ", "_"), "message": error.description}}), (
            error.code or 500
        )
    for kind, status, code in _STATUS:
        if isinstance(error, kind):
            message = _message(error)
            body = jsonify({"error": {"code": code, "message": message}})
            if status == 401:
                return body, status, {"WWW-Authenticate": 'Bearer realm="warmline"'}
            return body, status
    current_app.logger.exception("API request %s failed", request.path)
    return jsonify({"error": {"code": "internal", "message": "something went wrong on our side"}}), 500


def _message(error: Exception) -> str:
    if isinstance(error, Unauthorized):
        return "send 'Authorization: Bearer <token>' with your rep token (warmline reps token NAME)"
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
        )
    if isinstance(error, UnknownRep | UnknownInteraction):
        return f"no such {'rep' if isinstance(error, UnknownRep) else 'call'}: {error.args[0] if error.args else ''}"
    return str(error)
