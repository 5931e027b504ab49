"""The console's blueprint: every console route under ``/console``, one CSRF check before each of them, one error
answer (``voice.web.errors.console_failure``), and what every page is given."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, current_app, request
from flask.typing import ResponseReturnValue

from voice.config import Settings
from voice.web.console import actions, auth, pages, sessions, wire
from voice.web.errors import CONSOLE_PREFIX, console_failure
from voice.web.parts import app_parts

#: How often a page asks ``/console/state`` when it has no live-events stream (seconds).
POLL_SECONDS = 2.0
#: The app.config key naming the live-events stream's URL for the pages ("" : none; the pages poll). Set by tests;
#: otherwise ``console.events_url`` and :data:`EVENTS_PORT_CONFIG` decide.
EVENTS_URL_CONFIG = "WARMLINE_CONSOLE_EVENTS_URL"
#: The app.config key holding the port of the live-events server ``warmline serve`` started beside the app.
EVENTS_PORT_CONFIG = "WARMLINE_CONSOLE_EVENTS_PORT"
#: Where the live-events server answers (voice/live/server.py).
EVENTS_PATH = "/console/events"

console = Blueprint(
    "console",
    __name__,
    url_prefix=CONSOLE_PREFIX,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
console.register_blueprint(auth.bp)
console.register_blueprint(pages.bp)
console.register_blueprint(actions.bp)


@console.before_request
def check_csrf() -> None:
    sessions.check_csrf()


@console.errorhandler(Exception)
def on_error(error: Exception) -> ResponseReturnValue:
    return console_failure(error, form_template=auth.FORM_PAGES.get(request.endpoint or ""))


def events_url() -> str:
    """Where a page's EventSource connects; "" when there is no live-events server (the page polls).

    In order: the URL tests put in :data:`EVENTS_URL_CONFIG`; ``console.events_url`` when set (a path on this origin
    that a proxy routes to the events server, or a URL; "off": none); else the server ``warmline serve`` runs on
    the port after the app's, on the host name this page was asked for (so a page opened as http://box:5000 follows
    http://box:5001; its cookie goes along, cookies do not depend on the port)."""
    configured = current_app.config.get(EVENTS_URL_CONFIG)
    if configured is not None:
        return str(configured)
    setting = app_parts().settings.console.events_url.strip()
    if setting:
        return "" if setting.lower() == "off" else setting
    port = current_app.config.get(EVENTS_PORT_CONFIG)
    if not port:
        return ""
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return f"{request.scheme}://{host}:{port}{EVENTS_PATH}"


@console.context_processor
def page_context() -> dict[str, Any]:
    return {
        "actor": sessions.signed_in_actor(),
        "csrf_token": sessions.csrf_token,
        "csrf_field": sessions.CSRF_FIELD,
        "events_url": events_url(),
        "poll_seconds": POLL_SECONDS,
        "away_reasons": app_parts().settings.console.away_reasons,
    }


@console.app_template_filter("iso")
def iso(moment: datetime) -> str:
    return wire.iso(moment)


@console.app_template_filter("phone")
def phone(number: str) -> str:
    """+15551230001 → +1 555 123 0001 (North American numbers, as console.js shows them; others as stored)."""
    if len(number) == 12 and number.startswith("+1") and number[1:].isdigit():
        return f"+1 {number[2:5]} {number[5:8]} {number[8:]}"
    return number


@console.app_template_filter("sentence")
def sentence(message: str) -> str:
    """A message as a sentence: the services' messages start lower-case and end without a full stop."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message[-1] in ".!?" else message + "."


def install(app: Flask, settings: Settings) -> None:
    sessions.configure(app, settings)
    app.register_blueprint(console)
