"""The benchmark's floor: a bare Flask app answering every webhook POST with one constant TwiML document.

No signature check, no database, no flow engine, no TwiML building: what is left is gunicorn + Werkzeug + Flask
routing + writing ~0.9 KB of XML, i.e. the least any Flask webhook can cost. ``bench/webhook.py`` serves it with the
same gunicorn settings as the real app and drives it with the same requests (same paths, same signed bodies).

    gunicorn -w 2 -k gthread --threads 4 'bench.floor_app:create_app()'

``create_app(checked=True)`` is a second reference, not the issue's floor: the same constant answer after the two
things every Twilio webhook has to do before any work of its own, reading the form and checking X-Twilio-Signature
with twilio's RequestValidator (against WARMLINE_PUBLIC_URL with TWILIO_AUTH_TOKEN, as the app does). It shows how
much of the gap to the floor is the price of merely accepting a request (``bench/webhook.py --floor checked``).

``create_app(checked=True, minimal=True)`` (``--floor minimal``) is a third: also the least CRM work a call can
cost, written as leanly as Python allows (stdlib ``sqlite3``, one connection per worker, WAL, no ORM): the
incoming step looks the caller up by phone (an indexed SELECT), the gather step records the call (one INSERT and
its commit) — one write per call where Warmline makes two or three. It bounds from above what any Flask
implementation of the issue's requirements could reach against the bare floor, on the same machine.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from flask import Flask, Response, abort, g, request
from twilio.request_validator import RequestValidator

# Shaped and sized like Warmline's answer to /voice/incoming (a greeting, then a speech Gather with hints).
TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response>'
    '<Say language="en-US" voice="Polly.Joanna">Thanks for calling Acme.</Say>'
    '<Gather action="https://warmline.example.com/voice/gather" hints="Acme, invoice, password, outage, billing, '
    "technical support, sales, account services, customer service, I was charged twice, I need a refund, when is my "
    "payment due, the app isn't working, my internet is down, the website keeps crashing, the service is really "
    "slow, how much does it cost, can I get a demo, what plans do you offer, I forgot my password, my account is "
    'locked, cancel my account, operator, I have a general question, what are your opening hours" '
    'input="speech dtmf" language="en-US" method="POST" numDigits="1" speechTimeout="auto" timeout="5">'
    '<Say language="en-US" voice="Polly.Joanna">In a few words, what are you calling about?</Say></Gather>'
    '<Redirect method="POST">https://warmline.example.com/voice/gather</Redirect></Response>'
)
TWIML_BYTES = TWIML.encode("utf-8")

# The paths the load generator posts to; all are rules of the one endpoint below.
PATHS = ("/voice/incoming", "/voice/gather", "/voice/status")


def constant_twiml() -> Response:
    return Response(TWIML_BYTES, status=200, mimetype="text/xml")


def _floor_database() -> sqlite3.Connection:
    """A connection to the minimal floor's own SQLite file (made and seeded by whoever connects first)."""
    connection = sqlite3.connect(os.environ["WARMLINE_FLOOR_DB"], timeout=30, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("CREATE TABLE IF NOT EXISTS customers (phone TEXT PRIMARY KEY, first_name TEXT)")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, call_sid TEXT, caller TEXT, said TEXT, at REAL)"
    )
    connection.execute("CREATE INDEX IF NOT EXISTS calls_by_sid ON calls (call_sid)")
    connection.executemany(
        "INSERT OR IGNORE INTO customers VALUES (?, ?)", ((f"+1555{n:07d}", f"Caller {n}") for n in range(2000))
    )
    connection.execute("COMMIT")
    return connection


def create_app(*, checked: bool = False, minimal: bool = False) -> Flask:
    app = Flask(__name__)
    for path in PATHS:
        app.add_url_rule(path, endpoint="twiml", view_func=constant_twiml, methods=["POST"])
    if minimal:
        # One connection per thread: a sqlite3 connection refuses other threads, and gthread workers have several.
        connections = threading.local()

        @app.before_request
        def least_crm_work() -> None:
            database = getattr(connections, "database", None)
            if database is None:
                database = connections.database = _floor_database()
            form = request.form
            if request.path == "/voice/incoming":
                g.known = database.execute(
                    "SELECT first_name FROM customers WHERE phone = ?", (form.get("From", ""),)
                ).fetchone()
            else:
                database.execute(
                    "INSERT INTO calls (call_sid, caller, said, at) VALUES (?, ?, ?, ?)",
                    (form.get("CallSid"), form.get("From"), form.get("SpeechResult"), time.time()),
                )

    if checked:
        validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
        public_url = os.environ["WARMLINE_PUBLIC_URL"].rstrip("/")

        @app.before_request
        def check_signature() -> None:
            signature = request.headers.get("X-Twilio-Signature", "")
            if not validator.validate(public_url + request.path, request.form, signature):
                abort(403)

    return app
