"""The reps' JSON API over the Flask test client: tokens, presence, transfer requests and their errors."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

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
        ({"state": "sleeping"}, "state"),
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
    assert response.status_code == 403  # another rep's call: not Bob's, whatever the moment (not a 409)
    assert error_of(response) == {
        "code": "forbidden",
        "message": "only the rep talking with the caller can transfer this call",
    }


def test_a_presence_set_by_calls_is_refused_with_409_saying_why(app: Flask, client: FlaskClient) -> None:
    """The rep model refuses it (PresenceRefused, a Refused): 409, not the 400 of a body that cannot be read."""
    seed_demo(app.extensions["warmline"].store)
    token = token_for(app, "Bob Chen")
    for state in ("on_call", "reserved", "wrap_up"):
        response = client.put("/api/me/presence", json={"state": state}, headers=auth(token))
        assert response.status_code == 409, state
        assert error_of(response) == {
            "code": "refused",
            "message": f"{state} is set by calls; choose one of available, away, offline",
        }


def test_unknown_things_are_404(app: Flask, client: FlaskClient) -> None:
    seed_demo(app.extensions["warmline"].store)
    token = token_for(app, "Bob Chen")
    response = client.get("/api/handoffs/999", headers=auth(token))
    assert response.status_code == 404
    assert error_of(response) == {"code": "not_found", "message": "not found: hand-off 999"}
    response = client.post("/api/calls/CA1/transfer", json={"rep": "Nobody Atall"}, headers=auth(token))
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


def test_unknown_paths_and_wrong_methods_answer_the_apis_json_error(app: Flask, client: FlaskClient) -> None:
    seed_demo(app.extensions["warmline"].store)
    token = token_for(app, "Bob Chen")
    for headers in ({}, auth(token)):
        for path in ("/api", "/api/", "/api/nowhere", "/api/me/nowhere", "/api/handoffs/not-a-number"):
            response = client.get(path, headers=headers)
            assert response.status_code == 404 and response.mimetype == "application/json", path
            assert error_of(response)["code"] == "not_found"
        response = client.delete("/api/me", headers=headers)
        assert response.status_code == 405 and response.mimetype == "application/json"
        assert error_of(response)["code"] == "method_not_allowed"
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_what_nobody_raised_on_purpose_is_a_500_and_says_nothing_more(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A real failure: the reps table is gone under the running app."""
    store = app.extensions["warmline"].store
    seed_demo(store)
    token = token_for(app, "Bob Chen")
    with store.engine.begin() as connection:
        connection.execute(text("ALTER TABLE reps RENAME TO reps_gone"))
    try:
        response = client.get("/api/me", headers=auth(token))
    finally:
        with store.engine.begin() as connection:
            connection.execute(text("ALTER TABLE reps_gone RENAME TO reps"))
    assert response.status_code == 500
    assert error_of(response) == {"code": "internal", "message": "something went wrong on our side"}
    assert "API request GET /api/me failed" in caplog.text and "Traceback" in caplog.text
