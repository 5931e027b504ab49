"""Console accounts: signing in (a password, or a one-time link an admin hands out), sessions, signing out.

Passwords are hashed with Argon2id (argon2-cffi, the algorithm OWASP puts first); a session is a random id whose
SHA-256 is stored (``ConsoleSession``), so signing out ends it everywhere and a copy of the database holds no usable
session. Failed sign-ins are counted per name and per address in the database, so the limit holds across workers
and hosts; past it, sign-in is paused for the rest of the window, with the same answer whether the name exists or
not (nothing tells a guesser which names are reps).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from crm_sync.errors import InvalidInput, Refused, UnknownRep
from crm_sync.models import ConsoleSession, LoginLink, LoginThrottle, Rep, RepState
from crm_sync.queries import reps
from voice.domain.actor import Actor
from voice.services.audit import audit
from voice.services.context import Service

log = logging.getLogger(__name__)

#: How long a sign-in link works (issue 17: "a one-time URL, valid 15 minutes").
LINK_MINUTES = 15
#: The window failed sign-ins are counted in.
THROTTLE_WINDOW = timedelta(minutes=15)
#: A session's last-seen time is written at most this often (a console polls; a write per poll is waste).
TOUCH_EVERY = timedelta(minutes=1)
MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()


class SignInRefused(Refused):
    """Wrong name or password, a used or expired link: said the same way whatever the reason."""


class TooManyAttempts(Refused):
    """Sign-in is paused for this name or address."""

    def __init__(self, retry_after_seconds: int) -> None:
        minutes = max(1, -(-retry_after_seconds // 60))
        super().__init__(f"too many failed sign-ins: try again in {minutes} minute{'s' if minutes != 1 else ''}")
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class SignedIn:
    #: Goes into the signed session cookie; only its digest is stored.
    session_id: str
    actor: Actor
    #: The rep has no password yet (signed in with a link): the console offers to set one.
    needs_password: bool


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def actor_of(rep: Rep) -> Actor:
    return Actor(rep_id=rep.id, name=rep.name, supervisor=rep.is_supervisor)


class AccountService(Service):
    # --- signing in ------------------------------------------------------------------------------------------------

    def issue_login_link(self, rep_name: str) -> str:
        """A one-time sign-in token for ``rep_name`` (the CLI prints it as a URL); only its digest is kept."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._store.unit_of_work() as session:
            rep = reps.find_rep(session, rep_name)
            session.add(
                LoginLink(
                    token_hash=_digest(token),
                    rep_id=rep.id,
                    created_at=now,
                    expires_at=now + timedelta(minutes=LINK_MINUTES),
                )
            )
            audit(session, None, "sign-in link issued", f"rep:{rep.id}")
        return token

    def sign_in_with_link(self, token: str, *, address: str) -> SignedIn:
        now = self._clock()
        with self._store.unit_of_work() as session:
            link = session.get(LoginLink, _digest(token), with_for_update=True) if token else None
            if link is None or not link.use(now=now):
                log.warning("sign-in link refused (from %s)", address)
                raise SignInRefused("this sign-in link has expired or was used already: ask for a new one")
            return self._start_session(session, reps.lock_rep(session, link.rep_id), now, how="link")

    def sign_in_with_password(self, name: str, password: str, *, address: str) -> SignedIn:
        now = self._clock()
        keys = (f"name:{name.strip().lower()}", f"address:{address}")
        limits = (self._settings.console.max_failed_sign_ins, 3 * self._settings.console.max_failed_sign_ins)
        signed_in: SignedIn | None = None
        with self._store.unit_of_work() as session:
            self._refuse_if_throttled(session, keys, limits, now)
            try:
                rep: Rep | None = reps.find_rep(session, name)
            except UnknownRep:
                rep = None
            if rep is not None and _password_matches(rep.password_hash, password):
                if _hasher.check_needs_rehash(rep.password_hash or ""):
                    rep.set_password_hash(_hasher.hash(password))
                session.execute(delete(LoginThrottle).where(LoginThrottle.key == keys[0]))
                signed_in = self._start_session(session, rep, now, how="password")
            else:
                self._count_failure(session, keys, now)  # committed with the unit of work, though we refuse
        if signed_in is None:
            log.warning("failed sign-in for %r from %s", name[:60], address)
            raise SignInRefused("that name and password do not match")
        return signed_in

    def _start_session(self, session: Session, rep: Rep, now: datetime, *, how: str) -> SignedIn:
        # The rep's sessions that ran out are gone for good now (nothing else needs to sweep them).
        session.execute(delete(ConsoleSession).where(ConsoleSession.rep_id == rep.id, ConsoleSession.expires_at <= now))
        session_id = secrets.token_urlsafe(32)
        session.add(
            ConsoleSession(
                id_hash=_digest(session_id),
                rep_id=rep.id,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(hours=self._settings.console.session_hours),
            )
        )
        actor = actor_of(rep)
        audit(session, actor, "signed in", f"rep:{rep.id}", method=how)
        return SignedIn(session_id=session_id, actor=actor, needs_password=rep.password_hash is None)

    def _refuse_if_throttled(
        self, session: Session, keys: tuple[str, ...], limits: tuple[int, ...], now: datetime
    ) -> None:
        for key, limit in zip(keys, limits, strict=True):
            throttle = session.get(LoginThrottle, key)
            if throttle is None or now - throttle.window_started_at >= THROTTLE_WINDOW:
                continue
            if throttle.failures >= limit:
                left = THROTTLE_WINDOW - (now - throttle.window_started_at)
                raise TooManyAttempts(int(left.total_seconds()))

    def _count_failure(self, session: Session, keys: tuple[str, ...], now: datetime) -> None:
        for key in keys:
            throttle = session.get(LoginThrottle, key, with_for_update=True)
            if throttle is None:
                session.add(LoginThrottle(key=key, window_started_at=now, failures=1))
            elif now - throttle.window_started_at >= THROTTLE_WINDOW:
                throttle.window_started_at, throttle.failures = now, 1
            else:
                throttle.failures += 1

    # --- sessions --------------------------------------------------------------------------------------------------

    def actor_for_session(self, session_id: str) -> Actor | None:
        """Who a session cookie belongs to, or None when it ended or expired."""
        if not session_id:
            return None
        now = self._clock()
        with self._store.unit_of_work(read_only=True) as session:
            found = session.get(ConsoleSession, _digest(session_id))
            if found is None or not found.valid_at(now):
                return None
            actor = actor_of(found.rep)
            stale = now - found.last_seen_at >= TOUCH_EVERY
        if stale:
            with self._store.unit_of_work() as session:
                touched = session.get(ConsoleSession, _digest(session_id))
                if touched is not None:
                    touched.last_seen_at = now
        return actor

    def actor_for_token(self, token: str) -> Actor | None:
        """Who a reps' API token (``warmline reps token``) belongs to: a credential apart from console sessions."""
        if not token:
            return None
        with self._store.unit_of_work(read_only=True) as session:
            rep = reps.rep_by_token_digest(session, _digest(token))
            return actor_of(rep) if rep is not None else None

    def sign_out(self, session_id: str) -> None:
        """End the session; the rep goes offline (after the current call, if they are on one)."""
        with self._store.unit_of_work() as session:
            found = session.get(ConsoleSession, _digest(session_id))
            if found is None:
                return
            rep = reps.lock_rep(session, found.rep_id)
            session.delete(found)
            rep.choose_presence(RepState.OFFLINE, now=self._clock())
            audit(session, actor_of(rep), "signed out", f"rep:{rep.id}")

    def end_sessions_of(self, rep_id: int) -> int:
        """Sign a rep out everywhere (a password change, or an admin's reset). Returns how many sessions ended."""
        with self._store.unit_of_work() as session:
            ended = session.scalars(
                delete(ConsoleSession).where(ConsoleSession.rep_id == rep_id).returning(ConsoleSession.id_hash)
            ).all()
            return len(ended)

    def expire_old(self) -> int:
        """Delete expired sessions and used or expired links (the housekeeping pass calls this)."""
        now = self._clock()
        with self._store.unit_of_work() as session:
            sessions = session.scalars(
                delete(ConsoleSession).where(ConsoleSession.expires_at <= now).returning(ConsoleSession.id_hash)
            ).all()
            links = session.scalars(
                delete(LoginLink).where(LoginLink.expires_at <= now).returning(LoginLink.token_hash)
            ).all()
            return len(sessions) + len(links)

    # --- passwords -------------------------------------------------------------------------------------------------

    def set_password(self, actor: Actor, *, current: str | None, new: str) -> None:
        """A rep sets their own password. The current one is asked for when there is one."""
        problem = _weak(new, actor.name)
        if problem:
            raise InvalidInput(problem)
        with self._store.unit_of_work() as session:
            rep = reps.lock_rep(session, actor.rep_id)
            if rep.password_hash is not None and not _password_matches(rep.password_hash, current or ""):
                raise Refused("the current password is not right")
            rep.set_password_hash(_hasher.hash(new))
            audit(session, actor, "password set", f"rep:{rep.id}")

    def sessions_of(self, rep_id: int) -> int:
        with self._store.unit_of_work(read_only=True) as session:
            return len(session.scalars(select(ConsoleSession.id_hash).where(ConsoleSession.rep_id == rep_id)).all())


def _password_matches(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        # Spend the same time as a real check, so a name without a password does not answer faster.
        _hasher.hash(password or "-")
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _weak(password: str, name: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if password.strip().lower() in {name.strip().lower(), *name.lower().split()}:
        return "a password must not be your name"
    if len(set(password)) < 4:
        return "a password needs more than a few different characters"
    return None
