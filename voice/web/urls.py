"""Absolute URLs for the TwiML we send: Twilio must be able to call them back, from outside."""

from __future__ import annotations

import functools

from flask import current_app, request
from werkzeug.routing import Map

from voice.web.twiml import UrlFor


@functools.lru_cache(maxsize=64)
def url_builder(url_map: Map, base_url: str) -> UrlFor:
    """Build URLs from the app's routes without needing a request (background pulls, the CLI). One builder per
    base URL, reused by every request."""
    adapter = url_map.bind("localhost")
    base = base_url.rstrip("/")

    def build(endpoint: str, /, **params: object) -> str:
        return base + adapter.build(endpoint, {key: str(value) for key, value in params.items()})

    return build


def request_url_builder() -> UrlFor:
    """The public base URL when configured (what Twilio calls), else the host this request came in on."""
    base = current_app.extensions["warmline"].settings.public_url or request.host_url
    return url_builder(current_app.url_map, base)
