"""Signing in and out of the console: name and password, a one-time link (``warmline reps login-link NAME``),
setting a password, signing out (the rep goes offline). The rules — Argon2id, links used once within 15 minutes,
failed sign-ins throttled per name and per address — are ``AccountService``'s."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from voice.domain.errors import InvalidInput
from voice.web.console import sessions
from voice.web.parts import app_parts

bp = Blueprint("auth", __name__)

#: The forms a refusal shows again, with the reason (``voice.web.errors.console_failure``).
FORM_PAGES = {
    "console.auth.sign_in_post": "console/sign_in.html",
    "console.auth.link_post": "console/link.html",
    "console.auth.password_post": "console/password.html",
}


def _next_page(raw: str | None) -> str:
    """Where to go after signing in: a console page of ours only (never another site: an open redirect)."""
    target = urlsplit(raw or "")
    if target.scheme or target.netloc or not target.path.startswith("/console") or target.path.startswith("//"):
        return url_for("console.pages.home")
    return target.path + (f"?{target.query}" if target.query else "")


@bp.get("/sign-in")
def sign_in() -> ResponseReturnValue:
    return render_template("console/sign_in.html", form=request.args)


@bp.post("/sign-in")
def sign_in_post() -> ResponseReturnValue:
    form, accounts = request.form, app_parts().accounts
    address = sessions.client_address()
    sessions.start(accounts.sign_in_with_password(form.get("name", ""), form.get("password", ""), address=address))
    return redirect(_next_page(form.get("next")), 303)


@bp.get("/link/<token>")
def link(token: str) -> ResponseReturnValue:
    # Opening the link signs nobody in (mail scanners and link previews open links); the button below does.
    return render_template("console/link.html", token=token, form={})


@bp.post("/link/<token>")
def link_post(token: str) -> ResponseReturnValue:
    signed_in = app_parts().accounts.sign_in_with_link(token, address=sessions.client_address())
    sessions.start(signed_in)
    # A rep without a password is offered to set one (next time, name and password will do).
    first_time = signed_in.needs_password
    return redirect(url_for("console.auth.password", first="1") if first_time else url_for("console.pages.home"), 303)


@bp.get("/password")
def password() -> ResponseReturnValue:
    sessions.actor()
    return render_template("console/password.html", form=request.args)


@bp.post("/password")
def password_post() -> ResponseReturnValue:
    form = request.form
    if form.get("new", "") != form.get("confirm", ""):
        raise InvalidInput("the two new passwords are not the same")
    app_parts().accounts.set_password(sessions.actor(), current=form.get("current") or None, new=form.get("new", ""))
    return redirect(url_for("console.pages.home", notice="password-saved"), 303)


@bp.post("/sign-out")
def sign_out() -> ResponseReturnValue:
    sessions.end()
    return redirect(url_for("console.auth.sign_in", notice="signed-out"), 303)
