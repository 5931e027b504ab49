"""Who is signed in to the console, and the CSRF token: the console's one cookie.

The cookie is Flask's signed session (``warmline_console``, signed with ``settings.secret_key``; HttpOnly,
SameSite=Lax, Secure when the public URL is https, sent to ``/console`` only) and carries exactly two things:
``sid``, the ``AccountService`` session id (only its digest is stored, so signing out ends it everywhere), and
``csrf``, the token every state-changing console request must carry back (a form's hidden ``csrf_token``, or the
``X-CSRF-Token`` header of a fetch call). The live-events server reads the same cookie for the same ``sid``.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime, timedelta

from flask import Flask, Request, g, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin

from voice.config import Settings
from voice.domain.actor import Actor
from voice.services.accounts import SignedIn
from voice.web.errors import CsrfMismatch, CsrfMissing, NotSignedIn
from voice.web.parts import app_parts

COOKIE_NAME = "warmline_console"
COOKIE_PATH = "/console"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
#: Requests that change nothing, so carry no token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed cookie, lasting ``console.session_hours`` without a ``_permanent`` key in it: the cookie
    holds ``sid`` and ``csrf``, nothing else. Outside ``/console`` the cookie is never sent (its path), so no session
    is opened there: a webhook would otherwise build a signing serializer for nothing on every request."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith(COOKIE_PATH):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime:
        return datetime.now(UTC) + app.permanent_session_lifetime


def configure(app: Flask, settings: Settings) -> None:
    app.secret_key = settings.secret_key
    app.session_interface = ConsoleSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH=COOKIE_PATH,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.lower().startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.console.session_hours),
    )


# --- CSRF -----------------------------------------------------------------------------------------------------------


def csrf_token() -> str:
    """This browser's token (made on first use, before signing in too: the sign-in form carries it)."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Every state-changing request carries the token its page was given: missing → 400, wrong → 403."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    if not sent:
        raise CsrfMissing()
    expected = session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfMismatch()


# --- who is signed in -----------------------------------------------------------------------------------------------


def signed_in_actor() -> Actor | None:
    """Who this request's session belongs to (None: not signed in, signed out elsewhere, or expired)."""
    if "actor" not in g:
        sid = session.get("sid")
        g.actor = app_parts().accounts.actor_for_session(sid) if isinstance(sid, str) else None
    actor: Actor | None = g.actor
    return actor


def actor() -> Actor:
    """The signed-in rep, or NotSignedIn (a page redirects to the sign-in form, a fetch call gets 401)."""
    found = signed_in_actor()
    if found is None:
        raise NotSignedIn()
    return found


def start(signed_in: SignedIn) -> None:
    """A new session for ``signed_in``: a fresh cookie, and a fresh CSRF token (none from before signing in)."""
    session.clear()
    session["sid"] = signed_in.session_id
    session["csrf"] = secrets.token_urlsafe(32)
    g.actor = signed_in.actor


def end() -> None:
    """Sign out (the rep goes offline), and forget the cookie."""
    sid = session.get("sid")
    if isinstance(sid, str):
        app_parts().accounts.sign_out(sid)
    session.clear()
    g.actor = None


def client_address() -> str:
    """Who is signing in, for the per-address throttle (``proxy.trust_forwarded_headers`` does not cover
    X-Forwarded-For: behind a proxy every address is the proxy's, and the per-name limit still holds)."""
    return request.remote_addr or "unknown"
