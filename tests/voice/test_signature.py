"""Every Twilio endpoint checks X-Twilio-Signature against the URL Twilio called."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from tests.conftest import AUTH_TOKEN, PUBLIC_URL, app_config, seed_demo, signed_post
from tests.twiml import parse_twiml, verbs
from voice import create_app

CALL = {"CallSid": "CA" + "1" * 32, "From": "+15551230001", "To": "+15550009999", "CallStatus": "ringing"}
ENDPOINTS = [
    "/voice/incoming",
    "/voice/gather",
    "/voice/hold",
    "/voice/queue-exit",
    "/voice/status",
    "/voice/whisper?offer=1",
    "/voice/whisper/answer?offer=1",
    "/voice/dial-ended?offer=1",
    "/voice/connect?offer=1",
    "/voice/voicemail",
]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_unsigned_request_is_forbidden(client: FlaskClient, path: str) -> None:
    response = client.post(path, data=CALL)
    assert response.status_code == 403
    assert b"X-Twilio-Signature" in response.data


def test_signature_from_another_token_is_forbidden(client: FlaskClient) -> None:
    forged = RequestValidator("not-our-token").compute_signature(PUBLIC_URL + "/voice/incoming", CALL)
    response = client.post("/voice/incoming", data=CALL, headers={"X-Twilio-Signature": forged})
    assert response.status_code == 403


def test_tampered_parameter_is_forbidden(client: FlaskClient) -> None:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + "/voice/incoming", CALL)
    tampered = {**CALL, "From": "+15559999999"}
    response = client.post("/voice/incoming", data=tampered, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


def test_signature_for_the_public_url_is_accepted(client: FlaskClient, app: object) -> None:
    response = signed_post(client, "/voice/incoming", CALL)
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert "Gather" in verbs(parse_twiml(response.data))


def test_signature_for_the_internal_url_is_rejected_when_a_public_url_is_set(client: FlaskClient) -> None:
    """Twilio signs the public https URL; a signature over what the app sees locally proves nothing."""
    response = signed_post(client, "/voice/incoming", CALL, base="http://localhost")
    assert response.status_code == 403


def test_behind_a_proxy_forwarded_headers_rebuild_the_signed_url(database_url: str, tmp_path: Path) -> None:
    """No public URL configured, proxy trusted: X-Forwarded-Proto/Host give back the URL Twilio signed."""
    app = create_app(app_config(database_url, tmp_path / "i", public_url="", proxy={"trust_forwarded_headers": True}))
    seed_demo(app.extensions["warmline"].store)
    client = app.test_client()
    signature = RequestValidator(AUTH_TOKEN).compute_signature("https://calls.acme.test/voice/incoming", CALL)
    headers = {"X-Twilio-Signature": signature, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "calls.acme.test"}
    assert client.post("/voice/incoming", data=CALL, headers=headers).status_code == 200
    # Without trusting the proxy, the same request is checked against http://localhost/… and refused.
    untrusting = create_app(app_config(database_url, tmp_path / "j", public_url=""))
    assert untrusting.test_client().post("/voice/incoming", data=CALL, headers=headers).status_code == 403
    for each in (app, untrusting):
        each.extensions["warmline"].close()


def test_query_string_is_part_of_the_signed_url(client: FlaskClient) -> None:
    params = {"CallSid": CALL["CallSid"], "Digits": "1"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + "/voice/whisper/answer?offer=2", params)
    response = client.post("/voice/whisper/answer?offer=1", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
