"""Every Twilio endpoint checks X-Twilio-Signature against the URL Twilio called."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from tests.conftest import AUTH_TOKEN, PUBLIC_URL, PhoneSystem, app_config, seed_demo, signed_post
from tests.twiml import parse_twiml, verbs
from voice import create_app
from voice.emulator import Digits, RepScript, SharedKey

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


# --- Webhook Rules: Twilio signs with a shared key (HMAC-SHA256) and names it in a header ------------------------

SHARED_SECRET = "shared-key-secret-for-tests"


def _shared_key_headers(path: str, params: dict[str, str], *, secret: str, algorithm: str) -> dict[str, str]:
    signature = RequestValidator(secret).compute_signature(PUBLIC_URL + path, params, algorithm)
    return {
        "X-Twilio-Signature": signature,
        "X-Twilio-Webhooks-Signature-Settings": f"key=KS{'1' * 32},algorithm={algorithm}",
    }


@pytest.fixture
def shared_key_client(database_url: str, tmp_path: Path) -> Iterator[FlaskClient]:
    app = create_app(app_config(database_url, tmp_path / "instance", webhook_shared_key=SHARED_SECRET))
    seed_demo(app.extensions["warmline"].store)
    yield app.test_client()
    app.extensions["warmline"].close()


def test_a_shared_key_signature_is_checked_with_that_key_and_its_algorithm(shared_key_client: FlaskClient) -> None:
    headers = _shared_key_headers("/voice/incoming", CALL, secret=SHARED_SECRET, algorithm="HMAC_SHA256")
    response = shared_key_client.post("/voice/incoming", data=CALL, headers=headers)
    assert response.status_code == 200
    assert "Gather" in verbs(parse_twiml(response.data))
    # The Auth Token still signs the webhooks no Webhook Rule matches.
    assert signed_post(shared_key_client, "/voice/incoming", CALL).status_code == 200


def test_a_shared_key_header_over_another_signature_is_forbidden(shared_key_client: FlaskClient) -> None:
    for secret, algorithm in ((AUTH_TOKEN, "HMAC_SHA256"), (SHARED_SECRET, "HMAC_SHA1"), ("other", "HMAC_SHA256")):
        headers = _shared_key_headers("/voice/incoming", CALL, secret=secret, algorithm="HMAC_SHA256")
        if algorithm != "HMAC_SHA256":  # signed with SHA-1 but claiming SHA-256
            headers["X-Twilio-Signature"] = RequestValidator(secret).compute_signature(
                PUBLIC_URL + "/voice/incoming", CALL, algorithm
            )
        assert shared_key_client.post("/voice/incoming", data=CALL, headers=headers).status_code == 403


def test_an_unknown_algorithm_is_forbidden(shared_key_client: FlaskClient) -> None:
    headers = _shared_key_headers("/voice/incoming", CALL, secret=SHARED_SECRET, algorithm="HMAC_SHA256")
    headers["X-Twilio-Webhooks-Signature-Settings"] = "key=KS1,algorithm=HMAC_MD5"
    assert shared_key_client.post("/voice/incoming", data=CALL, headers=headers).status_code == 403


def test_a_shared_key_signature_without_the_secret_configured_is_refused_saying_what_to_set(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    headers = _shared_key_headers("/voice/incoming", CALL, secret=SHARED_SECRET, algorithm="HMAC_SHA256")
    with caplog.at_level(logging.ERROR, logger="voice.web.signature"):
        response = client.post("/voice/incoming", data=CALL, headers=headers)
    assert response.status_code == 403
    assert "TWILIO_WEBHOOK_SHARED_KEY is not set" in caplog.text


def test_a_whole_call_signed_with_a_shared_key(phone_system_factory: Callable[..., PhoneSystem]) -> None:
    system = phone_system_factory(shared_key=SharedKey(SHARED_SECRET), webhook_shared_key=SHARED_SECRET)
    system.twilio.register_rep("+15550100001", RepScript.accepts(talk_seconds=5))
    call = system.call("+15551230001", Digits("1"))
    assert call.wait_finished(timeout=10)
    assert call.errors == []
    assert any("Connecting you to billing" in line for line in call.heard("caller"))
    # Every webhook of the call, the rep's whisper leg included, passed the check.
    assert len(call.webhooks) >= 4
    assert all(exchange.status_code == 200 for exchange in call.webhooks)


def test_every_value_of_a_repeated_field_is_signed(client: FlaskClient) -> None:
    from werkzeug.datastructures import MultiDict

    from voice.web.signature import SignedParams

    fields = MultiDict([*CALL.items(), ("Tag", "b"), ("Tag", "a")])
    url = PUBLIC_URL + "/voice/incoming"
    both = RequestValidator(AUTH_TOKEN).compute_signature(url, fields)
    one = RequestValidator(AUTH_TOKEN).compute_signature(url, {**CALL, "Tag": "a"})
    assert both != one
    # The app's form answers RequestValidator's ``getall`` with every value, as the MultiDict it signed did.
    assert SignedParams(fields).getall("Tag") == ["b", "a"]
    assert client.post("/voice/incoming", data=fields, headers={"X-Twilio-Signature": both}).status_code == 200
    assert client.post("/voice/incoming", data=fields, headers={"X-Twilio-Signature": one}).status_code == 403
