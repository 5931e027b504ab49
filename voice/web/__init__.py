"""The HTTP edge: the only code that imports Flask or twilio.twiml (webhooks, the reps' API, health).

Every request body is bounded before anything reads it (:func:`bound_bodies`). Twilio's webhooks are form posts of
about 30 fields, a few KB at most (a long ``SpeechResult`` included); the reps' API takes JSON bodies under 2 KB.
A body over the limit is refused with 413 as soon as its headers are in: never parsed, never signature-checked,
and an unsigned request learns nothing more.
"""

from flask import Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

BODY_LIMITS = {
    # The whole body: a larger Content-Length is refused unread; a chunked body is cut off where it passes this.
    "MAX_CONTENT_LENGTH": 64 * 1024,
    # One text field of a multipart body (Twilio never sends multipart; werkzeug's default is 500 KB).
    "MAX_FORM_MEMORY_SIZE": 16 * 1024,
    # Parts of a multipart body (werkzeug's default is 1,000).
    "MAX_FORM_PARTS": 200,
}


def bound_bodies(app: Flask) -> None:
    """Apply ``BODY_LIMITS`` to ``app``, and refuse an announced oversized body before any other work: werkzeug
    enforces the limit only when something reads the body, and some routes never do (an unknown path, a GET)."""
    app.config.update(BODY_LIMITS)
    app.before_request(_refuse_oversized_bodies)


def _refuse_oversized_bodies() -> None:
    length = request.content_length
    if length is not None and length > current_app.config["MAX_CONTENT_LENGTH"]:
        raise RequestEntityTooLarge()
