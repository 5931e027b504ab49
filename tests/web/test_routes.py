"""Every webhook route is an ``Endpoint`` registered with the leg it answers for; URLs are built from the enum."""

from __future__ import annotations

from flask import Flask

from tests.conftest import PUBLIC_URL
from voice.bootstrap import Warmline
from voice.web.errors import Leg
from voice.web.parts import WebParts, app_parts
from voice.web.urls import Endpoint, callback_urls
from voice.web.webhooks import LEGS


def test_every_webhook_route_is_an_endpoint_registered_with_its_leg(app: Flask) -> None:
    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("voice.")}
    # A route added with @bp.post instead of @webhook would be here without a leg, and a failure on it could not
    # choose safe TwiML.
    assert set(rules) == set(LEGS) == {f"voice.{endpoint.view_name}" for endpoint in Endpoint}
    for endpoint in Endpoint:
        rule = rules[f"voice.{endpoint.view_name}"]
        assert rule.rule == endpoint.path
        assert rule.methods == {"POST", "OPTIONS"}
        assert isinstance(LEGS[rule.endpoint], Leg)


def test_the_paths_twilio_is_configured_with_never_change() -> None:
    assert Endpoint.INCOMING.path == "/voice/incoming"
    assert Endpoint.STATUS.path == "/voice/status"
    # Calls in progress hold TwiML naming these; the emulator's tests call them too.
    assert {endpoint.path for endpoint in Endpoint} >= {
        "/voice/gather",
        "/voice/whisper",
        "/voice/whisper/answer",
        "/voice/dial-ended",
        "/voice/hold",
        "/voice/hold/choice",
        "/voice/queue-exit",
        "/voice/callback/answer",
        "/voice/callback/status",
        "/voice/connect",
        "/voice/voicemail",
        "/voice/handoff/hold-music",
    }


def test_callback_urls_are_absolute_with_their_parameters_in_the_query_string() -> None:
    urls = callback_urls(PUBLIC_URL + "/")
    assert urls(Endpoint.INCOMING) == f"{PUBLIC_URL}/voice/incoming"
    assert urls(Endpoint.WHISPER, offer=7) == f"{PUBLIC_URL}/voice/whisper?offer=7"
    status_url = urls(Endpoint.CALLBACK_STATUS, callback=3, attempt=2)
    assert status_url == f"{PUBLIC_URL}/voice/callback/status?callback=3&attempt=2"
    assert callback_urls(PUBLIC_URL) is callback_urls(PUBLIC_URL)  # one builder per base URL, shared


def as_web_parts(warmline: Warmline) -> WebParts:
    return warmline  # mypy checks here that the assembled app has every part the edge names, with its type


def test_the_edge_finds_the_parts_it_names_in_the_assembled_app(app: Flask) -> None:
    warmline = app.extensions["warmline"]
    with app.test_request_context("/healthz"):
        assert app_parts() is as_web_parts(warmline)
