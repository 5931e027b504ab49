"""JSON request bodies, validated by pydantic (unknown keys refused): the reps' API and the console's fetch calls
take the same ones, and a bad one is an ``InvalidInput`` naming each bad key and why."""

from __future__ import annotations

from typing import TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crm_sync.models import RepState
from voice.domain.errors import InvalidInput


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PresenceBody(_Body):
    # Any presence there is; which of them a person may choose is the rep model's rule (a refusal, 409, says why).
    state: RepState
    # Why the rep is away (one of config.yaml's console.away_reasons).
    reason: str | None = Field(default=None, min_length=1, max_length=40)


class TransferBody(_Body):
    department: str | None = Field(default=None, min_length=1, max_length=64)
    rep: str | None = Field(default=None, min_length=1, max_length=200)
    note: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _one_target(self) -> TransferBody:
        if (self.department is None) == (self.rep is None):
            raise ValueError("give either 'department' or 'rep'")
        return self


class WrapUpBody(_Body):
    """Each field given replaces what was there; a missing one (or null) leaves it. ``department``: where the call
    should have gone ("Wrong department?"); the detected one withdraws a correction."""

    disposition: str | None = Field(default=None, max_length=40)
    notes: str | None = Field(default=None, max_length=5000)
    department: str | None = Field(default=None, min_length=1, max_length=64)


class CloseTaskBody(_Body):
    note: str = Field(max_length=2000)


class CustomerBody(_Body):
    name: str = Field(max_length=200)
    phone: str = Field(max_length=40)
    email: str | None = Field(default=None, max_length=254)
    tier: str = Field(default="standard", max_length=40)
    notes: str | None = Field(default=None, max_length=5000)


Body = TypeVar("Body", bound=_Body)


def json_body(model: type[Body]) -> Body:
    """The request's JSON body as ``model``; InvalidInput naming each bad key and why."""
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = (f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}" for item in exc.errors())
        raise InvalidInput("; ".join(problems)) from exc
