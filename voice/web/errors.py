"""What a failure at the HTTP edge answers, by kind of error and by who asked: the one place that decides.

Webhooks (Twilio). Until a request's signature has checked out, whatever goes wrong is answered 413 (a body over
``voice.web.BODY_LIMITS``) or 403 and nothing else: fallback TwiML would tell a stranger the fallback number. A
signed request that fails gets 200 and the safe TwiML for the leg its route answers for (:class:`Leg`, declared
when the route is registered): a 500 would make Twilio say "an application error has occurred" and hang up.

The reps' JSON API: ``{"error": {"code": ..., "message": ...}}`` with the status of the error's kind
(:data:`API_ERRORS`), werkzeug's own HTTP errors (unknown path, wrong method, too large) in the same shape, and a
500 only for what nobody raised on purpose (logged with its traceback).

The rep console (:data:`CONSOLE_ERRORS`): the same kinds and statuses, plus its own — not signed in (a page
redirects to the sign-in form), a missing or wrong CSRF token (400, 403), a refused or throttled sign-in (401, 429
with Retry-After). Its fetch calls get the API's JSON shape; a page gets a readable page, and a form that was
refused comes back as itself with the reason above it.
"""

from __future__ import annotations

import enum
import logging

from flask import Flask, Response, current_app, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from voice.domain.errors import Forbidden, InvalidInput, NotFound, Refused, WarmlineError
from voice.domain.replies import Acknowledge, Fallback, Goodbye, HoldMusic, HoldThrough, LeaveQueue, Reply
from voice.services.accounts import SignInRefused, TooManyAttempts
from voice.web.parts import app_parts
from voice.web.signature import SignatureRejected, is_signed
from voice.web.twiml import respond

log = logging.getLogger(__name__)

API_PREFIX = "/api"
CONSOLE_PREFIX = "/console"
#: Failed turns of a hold loop in a row before the caller leaves the line for the fallback number.
MAX_HOLD_FAILURES = 3


class Leg(enum.Enum):
    """Whose call a webhook answers for, which decides what is safe to answer when it fails."""

    #: The caller's own call: the apology, then the fallback number (or a voicemail when there is none).
    CALLER = "caller"
    #: A rep's leg (whisper, hand-off): hang up the rep; the fallback number must never be dialled from their phone.
    REP = "rep"
    #: The caller's ``<Dial>`` to a rep is over (its action). If they were bridged, a conversation already happened:
    #: a failure says goodbye (the Dial action's own ``DialBridged`` tells, no store needed) rather than apologise
    #: and dial the fallback number after the caller was helped; otherwise, as ``CALLER``.
    CALLER_AFTER_DIAL = "caller after dial"
    #: A queue's waitUrl and its key choice, where only queue-safe verbs are allowed: the caller keeps holding and the
    #: loop is tried again (the store may be back in seconds); after ``MAX_HOLD_FAILURES`` in a row, ``<Leave/>``
    #: hands the caller to the Enqueue action, which goes to the fallback number (``voice.services.queue``).
    QUEUE_HOLD = "queue hold"
    #: A conference's wait/hold music (Say, Play, Pause, Redirect only): the music again, fetched again after.
    CONFERENCE_HOLD = "conference hold"
    #: Status callbacks and announcements to a participant: nothing to say to anyone; acknowledge.
    STATUS = "status"


class Unauthorized(WarmlineError):
    """The reps' API: no token, or not a rep's token."""

    def __init__(self) -> None:
        super().__init__("send 'Authorization: Bearer <token>' with your rep token (warmline reps token NAME)")


class NotSignedIn(WarmlineError):
    """The console: no session, or one that ended (signed out, expired)."""

    def __init__(self) -> None:
        super().__init__("sign in to the console first")


class CsrfMissing(WarmlineError):
    """A state-changing console request without its CSRF token."""

    def __init__(self) -> None:
        super().__init__("this request carries no CSRF token: reload the page and try again")


class CsrfMismatch(WarmlineError):
    """A state-changing console request whose CSRF token is not this browser's (a forged request, or a page from
    before signing in again)."""

    def __init__(self) -> None:
        super().__init__("this request's CSRF token is not right: reload the page and try again")


# --- webhooks -------------------------------------------------------------------------------------------------------


def webhook_failure(error: Exception, leg: Leg) -> Response:
    """The answer to a webhook that raised ``error``; ``leg``: the one its route answers for."""
    if not is_signed(request):
        return _refusal(error)
    if isinstance(error, WarmlineError):  # raised on purpose: its message says it all
        log.error("webhook %s: %s: %s; answering with fallback TwiML", request.path, type(error).__name__, error)
    else:
        log.exception("webhook %s failed; answering with fallback TwiML", request.path)
    return respond(_safe_reply(leg, error))


def _refusal(error: Exception) -> Response:
    """An unsigned (or not yet checked) request: 413 or 403, the same words whatever the route."""
    if isinstance(error, RequestEntityTooLarge):
        log.warning("refused %s %s: the body is over the limit", request.method, request.path)
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return _text(f"Request too large: bodies are limited to {limit} bytes\n", 413)
    if not isinstance(error, SignatureRejected):
        log.warning("refused %s %s before its signature checked out: %r", request.method, request.path, error)
    return _text("Forbidden: invalid X-Twilio-Signature\n", 403)


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, content_type="text/plain; charset=utf-8")


def _safe_reply(leg: Leg, error: Exception) -> Reply:
    match leg:
        case Leg.REP:
            return Goodbye(say=("Sorry, this call cannot be connected.",))
        case Leg.QUEUE_HOLD:
            earlier = request.args.get("failures", "")
            failures = (int(earlier) if earlier.isdigit() else 0) + 1
            return LeaveQueue() if failures >= MAX_HOLD_FAILURES else HoldThrough(failures=failures)
        case Leg.CONFERENCE_HOLD:
            return HoldMusic(music_url="", pause_seconds=10)
        case Leg.STATUS:
            return Acknowledge()
        case Leg.CALLER_AFTER_DIAL if request.form.get("DialBridged") == "true":
            return Goodbye(say=("Thank you for calling. Goodbye.",))
        case Leg.CALLER | Leg.CALLER_AFTER_DIAL:
            return _caller_fallback(error)


def _caller_fallback(error: Exception) -> Fallback:
    """config.yaml's fallback in the caller's language; exactly as configured if even that cannot be worked out."""
    parts = app_parts()
    try:
        form = request.form
        return parts.calls.fallback(call_sid=form.get("CallSid"), called=form.get("To"), cause=error)
    except Exception:  # the last resort must not fail: the caller would hear Twilio's "application error"
        log.exception("fallback for %s could not be localised; using config.yaml's text", request.path)
    settings = parts.settings.fallback
    return Fallback(
        apology=settings.apology,
        number=settings.number or None,
        voicemail_prompt=settings.voicemail_prompt,
        voicemail_max_length=settings.voicemail_max_length,
    )


# --- the reps' JSON API ---------------------------------------------------------------------------------------------

#: (kind, HTTP status, error code), the first that matches wins; anything else is a 500.
API_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (Unauthorized, 401, "unauthorized"),
    (InvalidInput, 400, "invalid"),
    (NotFound, 404, "not_found"),
    (Forbidden, 403, "forbidden"),
    (Refused, 409, "refused"),
    (RequestEntityTooLarge, 413, "too_large"),
)


def api_failure(error: Exception) -> ResponseReturnValue:
    """The JSON answer to an API request that raised ``error``."""
    for kind, status, code in API_ERRORS:
        if isinstance(error, kind):
            return _api_error(status, code, _api_message(error), error)
    if isinstance(error, HTTPException) and error.code is not None and error.code < 500:
        return _api_error(error.code, error.name.lower().replace(" ", "_"), error.description or error.name, error)
    log.exception("API request %s %s failed", request.method, request.path)
    return _api_error(500, "internal", "something went wrong on our side", error)


def _api_message(error: Exception) -> str:
    if isinstance(error, NotFound):
        return f"not found: {error}"
    if isinstance(error, RequestEntityTooLarge):
        return f"the body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"
    return str(error)


def _api_error(status: int, code: str, message: str, error: Exception) -> ResponseReturnValue:
    headers: dict[str, str] = {}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="warmline"'
    if isinstance(error, TooManyAttempts):
        headers["Retry-After"] = str(error.retry_after_seconds)
    if isinstance(error, HTTPException):  # e.g. a 405's Allow; not its HTML content type
        headers.update((name, value) for name, value in error.get_headers() if name.lower() != "content-type")
    return jsonify({"error": {"code": code, "message": message}}), status, headers


# --- the rep console ------------------------------------------------------------------------------------------------

#: (kind, HTTP status, error code), the first that matches wins; anything else is a 500.
CONSOLE_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (NotSignedIn, 401, "unauthorized"),
    (CsrfMissing, 400, "csrf_missing"),
    (CsrfMismatch, 403, "csrf_mismatch"),
    (TooManyAttempts, 429, "too_many_attempts"),
    (SignInRefused, 401, "sign_in_refused"),
    (InvalidInput, 400, "invalid"),
    (NotFound, 404, "not_found"),
    (Forbidden, 403, "forbidden"),
    (Refused, 409, "refused"),
    (RequestEntityTooLarge, 413, "too_large"),
)

#: Page titles for the statuses a console page can answer with.
_PAGE_TITLES = {
    400: "That did not work",
    401: "Sign in again",
    403: "Not yours to open",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible right now",
    413: "Too large",
    429: "Too many attempts",
    500: "Something went wrong on our side",
}


def console_failure(error: Exception, *, form_template: str | None = None) -> ResponseReturnValue:
    """The answer to a console request that raised ``error``. ``form_template``: the page of the form this request
    posted, shown again with the reason (a refused sign-in, a weak password)."""
    status, code, message = _console_kind(error)
    if _wants_json():
        return _api_error(status, code, message, error)
    if isinstance(error, NotSignedIn) and request.method == "GET":
        return redirect(url_for("console.auth.sign_in", next=request.full_path.rstrip("?")))
    headers = {"Retry-After": str(error.retry_after_seconds)} if isinstance(error, TooManyAttempts) else {}
    if form_template is not None and status < 500:
        return render_template(form_template, error=message, form=request.form), status, headers
    title = _PAGE_TITLES.get(status, "That did not work")
    return render_template("console/error.html", title=title, message=message, status=status), status, headers


def _console_kind(error: Exception) -> tuple[int, str, str]:
    for kind, status, code in CONSOLE_ERRORS:
        if isinstance(error, kind):
            return status, code, _api_message(error)
    if isinstance(error, HTTPException) and error.code is not None and error.code < 500:
        return error.code, error.name.lower().replace(" ", "_"), error.description or error.name
    log.exception("console request %s %s failed", request.method, request.path)
    return 500, "internal", "something went wrong on our side; it has been logged"


def _wants_json() -> bool:
    """A fetch call (it asks for JSON, or sends it) rather than a browser opening a page or posting a form."""
    if request.is_json:
        return True
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def _under(prefix: str) -> bool:
    return request.path == prefix or request.path.startswith(prefix + "/")


def http_failure(error: HTTPException) -> ResponseReturnValue:
    """werkzeug's own errors raised before any route matched (unknown path, wrong method): JSON under /api, as
    every other API answer; the console's page under /console; werkzeug's page elsewhere."""
    if _under(API_PREFIX):
        return api_failure(error)
    if _under(CONSOLE_PREFIX):
        return console_failure(error)
    return error


def install(app: Flask) -> None:
    """App-wide handling: only errors no blueprint saw (a request that matched no route) reach it."""
    app.register_error_handler(HTTPException, http_failure)
