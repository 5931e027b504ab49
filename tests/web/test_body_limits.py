"""Oversized bodies are refused with 413 at the edge, signed or not, on every webhook and on the API; an unsigned
request never gets anything but 403 or 413, and never a word of the configuration (issue 16, item 6).

The bodies are real: a 600 KB field (urlencoded and multipart), a multipart field over the per-field limit but
under the body limit, and 1,001 multipart parts in a body under the body limit.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask import Flask
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from tests.conftest import AUTH_TOKEN, PUBLIC_URL, app_config, seed_demo, serve_in_thread
from tests.web.test_api import auth, error_of, token_for
from voice import create_app
from voice.web import BODY_LIMITS
from voice.web.urls import Endpoint

FALLBACK_NUMBER = "+15550109999"
CALL = {"CallSid": "CA" + "5" * 32, "From": "+15551230001", "To": "+15550009999", "CallStatus": "ringing"}
IDS = "?offer=1&handoff=1&callback=1"


@dataclass(frozen=True)
class Body:
    name: str
    fields: MultiDict[str, str]  # what a sender would sign
    raw: bytes
    content_type: str


def urlencoded(name: str, fields: MultiDict[str, str]) -> Body:
    return Body(name, fields, urlencode(list(fields.items(multi=True))).encode(), "application/x-www-form-urlencoded")


def multipart(name: str, fields: MultiDict[str, str]) -> Body:
    boundary = "X7"  # short, so that 1,001 parts stay under the body limit
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
        for key, value in fields.items(multi=True)
    ]
    raw = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return Body(name, fields, raw, f"multipart/form-data; boundary={boundary}")


def with_call(*extra: tuple[str, str]) -> MultiDict[str, str]:
    return MultiDict([*CALL.items(), *extra])


OVER_BODY_LIMIT = "a" * 600_000
OVER_FIELD_LIMIT = "a" * (BODY_LIMITS["MAX_FORM_MEMORY_SIZE"] + 1)
BODIES = [
    urlencoded("urlencoded, one field of 600 KB", with_call(("SpeechResult", OVER_BODY_LIMIT))),
    multipart("multipart, one field of 600 KB", with_call(("SpeechResult", OVER_BODY_LIMIT))),
    multipart("multipart, one field over the field limit", with_call(("SpeechResult", OVER_FIELD_LIMIT))),
    multipart("multipart, 1,001 parts", with_call(*[("Tag", "x")] * 1_001)),
]


def test_the_bodies_test_what_they_say() -> None:
    limit = BODY_LIMITS["MAX_CONTENT_LENGTH"]
    big, big_multipart, wide_field, many_parts = BODIES
    assert len(big.raw) > limit and len(big_multipart.raw) > limit
    assert len(wide_field.raw) < limit and len(many_parts.raw) < limit  # refused for what they are, not their size
    assert len(many_parts.fields) == len(CALL) + 1 and len(many_parts.fields.getlist("Tag")) == 1_001


@pytest.fixture
def guarded_app(tmp_path: Path, sqlite_template: Path) -> Iterator[Flask]:
    """An app with a fallback number to leak (no database behaviour involved: SQLite only)."""
    path = tmp_path / "warmline.sqlite3"
    shutil.copy(sqlite_template, path)
    app = create_app(app_config(f"sqlite:///{path}", tmp_path / "instance", fallback={"number": FALLBACK_NUMBER}))
    seed_demo(app.extensions["warmline"].store)
    yield app
    app.extensions["warmline"].close()


def assert_refused_as_too_large(response: TestResponse, where: str) -> None:
    status, data = response.status_code, response.get_data(as_text=True)
    assert status == 413, f"{where}: {status} {data[:300]}"
    assert "<Response" not in data and FALLBACK_NUMBER not in data and "0109999" not in data, where


@pytest.mark.parametrize("body", BODIES, ids=lambda body: body.name)
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_every_webhook_refuses_an_oversized_body_with_413(guarded_app: Flask, body: Body, signed: bool) -> None:
    client = guarded_app.test_client()
    for endpoint in Endpoint:
        path = endpoint.path + IDS
        headers = {"Content-Type": body.content_type}
        if signed:  # as Twilio would sign these fields: the limit holds before any signature can be checked
            signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, body.fields)
            headers["X-Twilio-Signature"] = signature
        assert_refused_as_too_large(client.post(path, data=body.raw, headers=headers), f"{body.name} {path}")


def test_an_unsigned_request_learns_nothing_of_the_configuration(guarded_app: Flask) -> None:
    client = guarded_app.test_client()
    for endpoint in Endpoint:
        for body in (urlencoded("small", with_call()), multipart("small", with_call())):
            response = client.post(endpoint.path + IDS, data=body.raw, headers={"Content-Type": body.content_type})
            assert response.status_code == 403, endpoint
            assert FALLBACK_NUMBER not in response.get_data(as_text=True) and b"<Response" not in response.data


@pytest.mark.parametrize("body", BODIES, ids=lambda body: body.name)
def test_the_api_refuses_an_oversized_body_with_a_json_413(guarded_app: Flask, body: Body) -> None:
    client = guarded_app.test_client()
    token = token_for(guarded_app, "Alice Rivera")
    too_large = len(body.raw) > BODY_LIMITS["MAX_CONTENT_LENGTH"]
    for method, path, authorization in (
        ("PUT", "/api/me/presence", auth(token)),
        ("POST", "/api/calls/CA1/transfer", auth(token)),
        ("POST", "/api/calls/CA1/transfer", {}),  # no token: the size is refused first, before any other work
        ("POST", "/api/nowhere", {}),
    ):
        headers = {"Content-Type": body.content_type, **authorization}
        response = client.open(path, method=method, data=body.raw, headers=headers)
        if too_large:
            assert response.status_code == 413, (body.name, path)
            assert error_of(response)["code"] == "too_large"
        else:  # under the body limit, and the API never parses a form: a JSON error for what it is
            assert response.status_code in (400, 401, 404), (body.name, path)
            assert error_of(response)["code"] in ("invalid", "unauthorized", "not_found")


def test_an_oversized_json_body_is_a_json_413(guarded_app: Flask) -> None:
    client = guarded_app.test_client()
    big = b'{"state": "away", "pad": "' + b"a" * 600_000 + b'"}'
    headers = {"Content-Type": "application/json", **auth(token_for(guarded_app, "Alice Rivera"))}
    response = client.put("/api/me/presence", data=big, headers=headers)
    assert response.status_code == 413
    assert error_of(response) == {
        "code": "too_large",
        "message": f"the body is larger than {BODY_LIMITS['MAX_CONTENT_LENGTH']} bytes",
    }


def test_over_a_real_connection_the_413_comes_before_the_body_is_sent(guarded_app: Flask) -> None:
    """Only the headers announce 10 MB and no body follows: an app that tried to read it would wait forever."""
    server, thread = serve_in_thread(guarded_app)
    try:
        for path in (Endpoint.INCOMING.path, "/api/me/presence", "/api/nowhere"):
            with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as connection:
                connection.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    f"Content-Length: {10 * 1024 * 1024}\r\n\r\n".encode()
                )
                answer = connection.recv(65536).decode("latin-1")
            assert answer.startswith("HTTP/1.1 413"), (path, answer[:200])
            assert FALLBACK_NUMBER not in answer
    finally:
        server.shutdown()
        thread.join()
