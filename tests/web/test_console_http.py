"""The rep console's HTTP edge over the Flask test client: the cookie, CSRF, who may open what, the errors' answers,
``/console/state``'s JSON, and ``warmline reps login-link``. The browser tests (tests/browser) drive the same pages
in Chromium; these pin down what a browser does not show."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from crm_sync.models import AuditEvent, RepState, utcnow
from crm_sync.queries.reps import find_rep
from tests.conftest import app_config, seed_demo, signed_post
from voice import create_app
from voice.bootstrap import Warmline
from voice.cli import main
from voice.cli.serve import ServingRecord
from voice.web.console.sessions import COOKIE_NAME

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
JSON_ACCEPT = {"Accept": "application/json"}
SID = "CA" + "5" * 32


def parts(app: Flask) -> Warmline:
    warmline: Warmline = app.extensions["warmline"]
    return warmline


def csrf_of(client: FlaskClient, path: str = "/console/sign-in") -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page) or re.search(
        r'<meta name="csrf-token" content="([^"]+)"', page
    )
    assert found, page[:500]
    return found.group(1)


def sign_in(client: FlaskClient, name: str) -> str:
    """Signs ``name`` in with a one-time link, as the console does; returns the session's CSRF token."""
    token = parts(client.application).accounts.issue_login_link(name)
    response = client.post(f"/console/link/{token}", data={"csrf_token": csrf_of(client, f"/console/link/{token}")})
    assert response.status_code == 303, response.get_data(as_text=True)
    return csrf_of(client, "/console")


def make_supervisor(app: Flask, name: str) -> None:
    with parts(app).store.unit_of_work() as session:
        find_rep(session, name).role = "supervisor"


def cookie_header(response: Any) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        cookie.load(header)
    return cookie


def test_the_session_cookie_is_signed_httponly_samesite_and_carries_only_the_session_and_csrf(
    database_url: str, tmp_path: Path
) -> None:
    # Served at an https public URL: the cookie is Secure too.
    app = create_app(app_config(database_url, tmp_path / "instance"))
    seed_demo(parts(app).store)
    client = app.test_client()
    token = parts(app).accounts.issue_login_link("Alice Rivera")
    page = client.get(f"/console/link/{token}", base_url="https://warmline.example.com")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert csrf is not None
    response = client.post(
        f"/console/link/{token}", data={"csrf_token": csrf.group(1)}, base_url="https://warmline.example.com"
    )
    assert response.status_code == 303 and response.headers["Location"] == "/console/password?first=1"
    raw = next(header for header in response.headers.getlist("Set-Cookie") if header.startswith(COOKIE_NAME + "="))
    morsel = cookie_header(response)[COOKIE_NAME]
    assert morsel["httponly"] and morsel["secure"] and morsel["samesite"] == "Lax" and morsel["path"] == "/console"
    assert "Expires" in raw  # lasts console.session_hours, not only until the browser closes
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    assert set(serializer.loads(morsel.value)) == {"sid", "csrf"}
    with pytest.raises(Exception, match="Signature"):
        serializer.loads(morsel.value[:-4] + "AAAA")  # signed: a changed cookie is nobody's
    parts(app).close()


def test_pages_redirect_to_sign_in_and_fetch_calls_get_401_until_signed_in(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    response = client.get("/console/work?x=1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/sign-in?next=/console/work?x%3D1"
    response = client.get("/console/state", headers=JSON_ACCEPT)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    # Signing in goes back where the rep was going, and never to another site.
    parts(app).accounts.set_password(
        parts(app)
        .accounts.sign_in_with_link(parts(app).accounts.issue_login_link("Bob Chen"), address="127.0.0.1")
        .actor,
        current=None,
        new="correct horse battery",
    )
    for next_page, landing in (("/console/work?x=1", "/console/work?x=1"), ("https://evil.example/x", "/console/")):
        form = {"csrf_token": csrf_of(client), "name": "Bob Chen", "password": "correct horse battery"}
        response = client.post("/console/sign-in", data={**form, "next": next_page})
        assert response.status_code == 303 and response.headers["Location"] == landing


def test_state_changing_requests_without_the_csrf_token_are_refused(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    csrf = sign_in(client, "Bob Chen")
    bob = parts(app).presence.roster()[1]
    assert bob.name == "Bob Chen"
    url, body = f"/console/reps/{bob.id}/presence", {"state": "away", "reason": "lunch"}
    missing = client.post(url, json=body)
    assert missing.status_code == 400 and missing.get_json()["error"]["code"] == "csrf_missing"
    wrong = client.post(url, json=body, headers={"X-CSRF-Token": "not-the-token"})
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "csrf_mismatch"
    # A form without it: a page saying so, not a JSON body.
    signed_out = client.post("/console/sign-out")
    assert signed_out.status_code == 400 and "CSRF" in signed_out.get_data(as_text=True)
    assert parts(app).presence.rep(bob.id).state == "available"  # nothing happened
    ok = client.post(url, json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.get_json()["state"] == "away" and ok.get_json()["away_reason"] == "lunch"
    # The reps' API is another credential: a bearer token, no CSRF token.
    token = parts(app).presence.issue_token("Bob Chen")
    response = client.put("/api/me/presence", json={"state": "available"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    # Signing in again gives the browser a new token: the old one is refused.
    newer = sign_in(client, "Bob Chen")
    assert newer != csrf
    assert client.post(url, json=body, headers={"X-CSRF-Token": csrf}).status_code == 403


def test_failed_sign_ins_are_throttled_with_429_and_retry_after(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    limit = parts(app).settings.console.max_failed_sign_ins
    for attempt in range(limit):
        form = {"csrf_token": csrf_of(client), "name": "Alice Rivera", "password": f"guess number {attempt}"}
        response = client.post("/console/sign-in", data=form)
        assert response.status_code == 401
        assert "That name and password do not match." in response.get_data(as_text=True)
    form = {"csrf_token": csrf_of(client), "name": "Alice Rivera", "password": "any at all"}
    response = client.post("/console/sign-in", data=form)
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 15 * 60
    page = response.get_data(as_text=True)
    assert "Too many failed sign-ins: try again in 15 minutes." in page
    assert 'value="Alice Rivera"' in page  # the form comes back as it was sent, with the reason


def test_a_rep_sees_only_their_own_call_and_no_other_reps_callers(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    make_supervisor(app, "Carmen Ortiz")
    signed_post(client, "/voice/incoming", {"CallSid": SID, "From": "+15551230001", "To": "+15550009999"})
    signed_post(client, "/voice/gather", {"CallSid": SID, "SpeechResult": "I was charged twice", "Confidence": "0.9"})

    alice = app.test_client()
    sign_in(alice, "Alice Rivera")
    state = alice.get("/console/state").get_json()
    assert set(state) == {"id", "sent_at", "floor", "me", "screen", "work"}
    assert ISO_UTC.match(state["sent_at"])
    for piece in ("floor", "me", "screen", "work"):
        assert set(state[piece]) == {"detected_at", "data"} and ISO_UTC.match(state[piece]["detected_at"])
    screen = state["screen"]["data"]
    assert screen["call_sid"] == SID and screen["stage"] == "offered" and screen["caller"] == "Jane Doe"
    assert screen["issue"] == "I was charged twice" and screen["department"] == "billing"
    assert state["me"]["data"]["state"] == "reserved" and ISO_UTC.match(state["me"]["data"]["since"])
    assert state["work"]["data"] == {"open": 0, "overdue": 0}
    rows = {row["name"]: row for row in state["floor"]["data"]["reps"]}
    assert rows["Alice Rivera"]["caller"] is None  # reps' floors name nobody's callers, not even their own

    bob = app.test_client()
    sign_in(bob, "Bob Chen")
    state = bob.get("/console/state").get_json()
    assert state["screen"]["data"] is None
    assert all(row["caller"] is None and row["call_sid"] is None for row in state["floor"]["data"]["reps"])
    assert bob.get(f"/console/calls/{SID}").status_code == 403
    response = bob.post(
        f"/console/calls/{SID}/wrap-up", json={"notes": "x"}, headers={"X-CSRF-Token": csrf_of(bob, "/console")}
    )
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    page = bob.get("/console/floor")
    assert page.status_code == 403 and "The floor is for supervisors." in page.get_data(as_text=True)

    carmen = app.test_client()
    sign_in(carmen, "Carmen Ortiz")
    rows = {row["name"]: row for row in carmen.get("/console/state").get_json()["floor"]["data"]["reps"]}
    assert rows["Alice Rivera"]["caller"] == "Jane Doe" and rows["Alice Rivera"]["call_sid"] == SID
    assert carmen.get("/console/floor").status_code == 200
    assert carmen.get(f"/console/calls/{SID}").status_code == 200


def test_signing_out_ends_the_session_and_sets_the_rep_offline(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    csrf = sign_in(client, "Bob Chen")
    response = client.post("/console/sign-out", data={"csrf_token": csrf})
    assert response.status_code == 303 and response.headers["Location"] == "/console/sign-in?notice=signed-out"
    assert parts(app).presence.roster()[1].state == "offline"
    assert client.get("/console").status_code == 302
    with parts(app).store.unit_of_work() as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions[-3:] == ["sign-in link issued", "signed in", "signed out"]


def test_an_expired_session_is_signed_out(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    sign_in(client, "Bob Chen")
    assert client.get("/console").status_code == 200
    hours = parts(app).settings.console.session_hours
    parts(app).clock.source = lambda: utcnow() + timedelta(hours=hours, minutes=1)
    assert client.get("/console").status_code == 302


def test_unknown_console_paths_answer_a_page_and_fetch_calls_json(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    response = client.get("/console/nowhere")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "Not found" in response.get_data(as_text=True)
    response = client.get("/console/nowhere", headers=JSON_ACCEPT)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    csrf = sign_in(client, "Bob Chen")
    response = client.post("/console/tasks/999/claim", headers={"X-CSRF-Token": csrf, **JSON_ACCEPT})
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_the_password_page_sets_a_password_after_a_link(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    csrf = sign_in(client, "Bob Chen")
    form = {"csrf_token": csrf, "first": "1", "new": "short", "confirm": "short"}
    response = client.post("/console/password", data=form)
    assert response.status_code == 400 and "A password needs at least 10 characters." in response.get_data(as_text=True)
    form = {**form, "new": "correct horse battery", "confirm": "correct horse batteries"}
    assert "The two new passwords are not the same." in client.post("/console/password", data=form).get_data(
        as_text=True
    )
    form = {**form, "confirm": "correct horse battery"}
    response = client.post("/console/password", data=form)
    assert response.status_code == 303 and response.headers["Location"] == "/console/?notice=password-saved"
    assert parts(app).accounts.sign_in_with_password("Bob Chen", "correct horse battery", address="x").actor


# --- warmline reps login-link ---------------------------------------------------------------------------------------


def test_login_link_prints_a_one_time_url_on_the_console_base(app: Flask, tmp_path: Path) -> None:
    seed_demo(parts(app).store)
    runner = app.test_cli_runner()
    result = runner.invoke(main, ["reps", "login-link", "Alice Rivera"])
    assert result.exit_code == 0, result.output
    url = result.stdout.strip()
    # The test app's WARMLINE_PUBLIC_URL is the base.
    assert url.startswith("https://warmline.example.com/console/link/")
    assert "works once, for 15 minutes" in result.stderr
    signed_in = parts(app).accounts.sign_in_with_link(url.rsplit("/", 1)[1], address="127.0.0.1")
    assert signed_in.actor.name == "Alice Rivera"
    result = runner.invoke(main, ["reps", "login-link", "Nobody Atall"])
    assert result.exit_code == 1 and "no rep named 'Nobody Atall'" in result.output


def test_login_link_without_a_public_url_uses_the_running_servers_then_5000(database_url: str, tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    app = create_app({**app_config(database_url, instance), "public_url": ""}, background=False)
    seed_demo(parts(app).store)
    runner = app.test_cli_runner()
    first = runner.invoke(main, ["reps", "login-link", "Bob Chen"]).stdout.strip()
    assert first.startswith("http://127.0.0.1:5000/console/link/")
    ServingRecord(url="http://127.0.0.1:5123", public_url="", twilio_api_url="", pid=os.getpid()).write(instance)
    served = runner.invoke(main, ["reps", "login-link", "Bob Chen"]).stdout.strip()
    assert served.startswith("http://127.0.0.1:5123/console/link/")
    parts(app).close()


def test_the_state_json_is_what_the_page_starts_from(app: Flask, client: FlaskClient) -> None:
    seed_demo(parts(app).store)
    sign_in(client, "Bob Chen")
    page = client.get("/console").get_data(as_text=True)
    embedded = re.search(r'<script type="application/json" id="console-state">(.*?)</script>', page, re.S)
    assert embedded is not None
    state = json.loads(embedded.group(1))
    assert state["me"]["data"]["name"] == "Bob Chen" and state["me"]["data"]["state"] == RepState.AVAILABLE.value
    assert [department["department"] for department in state["floor"]["data"]["departments"]][:2] == [
        "billing",
        "technical_support",
    ]
