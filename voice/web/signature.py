"""X-Twilio-Signature checking, against the URL Twilio actually called.

Behind a TLS terminator or reverse proxy the app sees http://127.0.0.1:5000/… while Twilio signed https://host/…;
rebuilding the URL from WARMLINE_PUBLIC_URL (or trusted X-Forwarded-* headers, via ProxyFix) is what keeps every
call from failing with 403.

By default Twilio signs with the account's Auth Token and HMAC-SHA1. When a Webhook Rule (Webhooks configuration
API) matches our URL, it signs with that rule's SharedKey and algorithm instead (HMAC-SHA256) and says so in
``X-Twilio-Webhooks-Signature-Settings``; only the key and the hash change. The shared key's secret comes from
TWILIO_WEBHOOK_SHARED_KEY. Without it such requests cannot be checked, so they are refused, with a log line that
says what to set (twilio's own Node middleware answers 500 there; we never do).
"""

from __future__ import annotations

import hmac
import logging

from flask import Request
from twilio.request_validator import SIGNATURE_SETTINGS_HEADER, RequestValidator, get_signature_algorithm
from werkzeug.datastructures import ImmutableMultiDict

log = logging.getLogger(__name__)


class SignedParams(ImmutableMultiDict[str, str]):
    """Werkzeug's form and query dict, with the ``getall`` RequestValidator asks every field for first.

    Without it each field costs the validator a caught AttributeError before it falls back to ``getlist``: ~19 of a
    webhook's ~45 µs of signature checking (Twilio's ~30 fields).
    """

    def getall(self, key: str) -> list[str]:
        return self.getlist(key)


class WebhookRequest(Request):
    """The app's request class: forms and query strings arrive as :class:`SignedParams`."""

    parameter_storage_class = SignedParams


class SignatureRejected(Exception):
    """The request is not signed by Twilio with our auth token (forged, or the URL is configured wrong)."""


# Set in the request's WSGI environ once its signature checked out: until then, whatever goes wrong is answered
# 403 or 413 and nothing else (voice.web.errors), so a stranger never sees what a signed request would.
_SIGNED = "warmline.twilio_signed"


def is_signed(request: Request) -> bool:
    """Whether this request's signature has been checked and is Twilio's."""
    return request.environ.get(_SIGNED) is True


def url_twilio_called(request: Request, *, public_url: str) -> str:
    if not public_url:
        return request.url  # already reflects X-Forwarded-Proto/Host when ProxyFix is on
    query = request.query_string.decode("latin-1")
    return public_url.rstrip("/") + request.path + (f"?{query}" if query else "")


def verify_twilio_request(request: Request, *, auth_token: str, public_url: str, shared_key: str = "") -> None:
    signature = request.headers.get("X-Twilio-Signature", "")
    url = url_twilio_called(request, public_url=public_url)
    # The form itself, not a dict copy: RequestValidator reads every value of a repeated field through ``getall``
    # (a plain dict would drop all but one, and costs it two caught AttributeErrors per field).
    params = request.form if request.method == "POST" else {}
    settings = request.headers.get(SIGNATURE_SETTINGS_HEADER)
    if settings is None:
        secret, algorithm = auth_token, None
    elif shared_key:
        secret, algorithm = shared_key, get_signature_algorithm(settings)
    else:
        log.error(
            "rejected %s %s: signed with a webhook shared key (%s) but TWILIO_WEBHOOK_SHARED_KEY is not set",
            request.method,
            url,
            SIGNATURE_SETTINGS_HEADER,
        )
        raise SignatureRejected(url)
    validator = RequestValidator(secret)
    # One HMAC for the URL as configured covers real traffic; ``validate`` (which also tries the URL with and
    # without a default port) only runs when that first comparison fails.
    try:
        expected = validator.compute_signature(url, params, algorithm)
    except ValueError:  # an algorithm this twilio release does not know: ``validate`` refuses it (and logs it)
        expected = ""
    checks_out = bool(signature) and (
        (bool(expected) and hmac.compare_digest(expected, signature))
        or validator.validate(url, params, signature, algorithm)
    )
    if not checks_out:
        log.warning("rejected %s %s: %s", request.method, url, "bad signature" if signature else "no signature")
        raise SignatureRejected(url)
    request.environ[_SIGNED] = True
