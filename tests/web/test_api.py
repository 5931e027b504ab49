"""The reps' JSON API over the Flask test client: tokens, presence, transfer requests and their errors."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from crm_sync.models import RepState
from crm_sync.queries.reps import find_rep
from tests.conftest import seed_demo, signed_post
from voice.cli import main


def token_for(app: Flask, name: str) -> str:
    result = app.test_cli_runner().invoke(main, ["reps", "token", name])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: Any) -> dict[str, str]:
    body = response.get_json()
    assert set(body) == {"error"}, body
    error: dict[str, str] = body["error"]
    return error


def test_requests_without_a_valid_token_are_refused(app: Flask, client: FlaskClient) -> None:
    seed_demo(app.extensions["warmline"].store)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YWxpY2U6cHc="}):
        response = client.get("/api/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert error_of(response)["code"] == "unauthorized"


def test_a_rep_sees_and_sets_their_presence(app: Flask, client: FlaskClient) -> None:
    store = app.extensions["warmline"].store
    seed_demo(store)
    token = token_for(app, "Bob Chen")
    me = client.get("/api/me", headers=auth(token)).get_json()
    assert me["name"] == "Bob Chen" and me["state"] == "available"
    assert me["departments"] == ["general", "technical_support"]

    response = client.put("/api/me/presence", json={"state": "away"}, headers=auth(token))
    assert response.status_code == 200 and response.get_json()["state"] == "away"
    with store.unit_of_work() as session:
        assert find_rep(session, "Bob Chen").state is RepState.AWAY
        # Only the digest is kept.
        assert find_rep(session, "Bob Chen").api_token_hash not in (None, token)

    # A new token replaces the old one.
    newer = token_for(app, "Bob Chen")
    assert client.get("/api/me", headers=auth(token)).status_code == 401
    assert client.get("/api/me", headers=auth(newer)).status_code == 200


def test_bad_bodies_get_specific_errors(app: Flask, client: FlaskClient) -> None:
    seed_demo(app.extensions["warmline"].store)
    token = token_for(app, "Alice Rivera")
    cases = [
        ({"state": "on_call"}, "state"),
        ({"state": "away", "mood": "grumpy"}, "mood"),
        ([], "JSON object"),
    ]
    for body, mention in cases:
        response = client.put("/api/me/presence", json=body, headers=auth(token))
        assert response.status_code == 400
        assert error_of(response)["code"] == "invalid" and mention in error_of(response)["message"]
    both = {"department": "billing", "rep": "Bob"}
    response = client.post("/api/calls/CA123/transfer", json=both, headers=auth(token))
    assert response.status_code == 400 and "either 'department' or 'rep'" in error_of(response)["message"]


def test_only_the_rep_on_a_call_may_transfer_it(app: Flask, client: FlaskClient) -> None:
    seed_demo(app.extensions["warmline"].store)
    token = token_for(app, "Bob Chen")
    response = client.post("/api/calls/CAnope/transfer", json={"department": "billing"}, headers=auth(token))
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"

    sid = "CA" + "7" * 32
    signed_post(client, "/voice/incoming", {"CallSid": sid, "From": "+15551230001", "To": "+15550009999"})
    signed_post(client, "/voice/gather", {"CallSid": sid, "Digits": "1"})  # ringing Alice, not Bob
    response = client.post(f"/api/calls/{sid}/transfer", json={"department": "sales"}, headers=auth(token))
    assert response.status_code == 409
    assert error_of(response) == {
        "code": "refused",
        "message": "only the rep talking with the caller can transfer this call",
    }
