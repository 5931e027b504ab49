"""Warmline's Twilio-facing Flask app."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from voice.config import load_settings
from voice.logs import configure_logging
from voice.web.signature import WebhookRequest


def create_app(
    test_config: dict[str, Any] | None = None, *, background: bool = True, housekeeping: bool = True
) -> Flask:
    """Build the app. ``test_config`` overrides settings (flaskr style): tests pass a database URL, token, …
    ``background=False``: no flow watcher or housekeeping thread (one-shot CLI commands).
    ``housekeeping=False``: no housekeeping thread, another process sweeps (``warmline serve``'s workers).

    The database schema is not migrated here (several gunicorn workers would race to do it): ``warmline serve`` and
    ``make run`` apply migrations before the workers start.
    """
    # Imported here, not at the top: this package's __init__ runs whenever any voice.* module is imported (the
    # emulator for `warmline call`, a CLI command that never builds the app), and they must not pay for all of it.
    from voice.bootstrap import assemble
    from voice.web import api, bound_bodies, errors, health, webhooks
    from voice.web.console import app as console

    settings = load_settings(test_config)
    configure_logging(settings.log_level)
    app = Flask(__name__, instance_path=str(settings.instance_path))
    app.request_class = WebhookRequest
    bound_bodies(app)
    app.extensions["warmline"] = assemble(app, settings, background=background, housekeeping=housekeeping)
    if settings.proxy.trust_forwarded_headers:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1, x_port=1)  # type: ignore[method-assign]
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    console.install(app, settings)
    errors.install(app)
    return app
