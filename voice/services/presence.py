"""Reps' presence as people set it (``warmline reps status``, the reps' JSON API), and the reps' API tokens.

Presence also changes by calls (reserved, on a call, wrap-up: ``voice.services.calls`` and
``voice.services.dispatch``) and by time (``voice.services.housekeeping``). Every change is a method of ``Rep``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session

from crm_sync.errors import InvalidInput, PresenceRefused
from crm_sync.models import Rep, RepState
from crm_sync.queries import reps
from voice.domain.actions import Action
from voice.domain.actor import Actor
from voice.domain.errors import Forbidden
from voice.services.audit import audit
from voice.services.context import Service


@dataclass(frozen=True)
class RepView:
    id: int
    name: str
    phone: str
    state: str
    departments: tuple[str, ...]
    #: Away or offline asked for during a call, taken when it ends.
    after_call: str | None = None
    role: str = "rep"
    away_reason: str | None = None


@dataclass(frozen=True)
class PresenceChange:
    rep: RepView
    #: False when the change waits for the rep's current call to end.
    immediate: bool
    #: How many waiting callers the rep was given at once (0 or 1).
    pulled: int


class NotYourPresence(PresenceRefused, Forbidden):
    """A rep tried to set another rep's presence."""


def rep_view(rep: Rep) -> RepView:
    return RepView(
        id=rep.id,
        name=rep.name,
        phone=rep.phone,
        state=rep.state.value,
        departments=tuple(rep.departments),
        after_call=rep.after_call_state.value if rep.after_call_state else None,
        role=rep.role,
        away_reason=rep.away_reason,
    )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class PresenceService(Service):
    def set_presence(self, rep_name: str, state: RepState, *, reason: str | None = None) -> PresenceChange:
        """Change a rep's presence (an admin at the command line); a rep who becomes available immediately takes the
        first caller they can."""
        with self._store.unit_of_work() as session:
            rep = reps.lock_rep(session, reps.find_rep(session, rep_name).id)
            change, actions = self._set(session, rep, state, reason=reason, actor=None)
        self._after_commit(actions)
        return change

    def set_presence_of(
        self, rep_id: int, state: RepState, *, reason: str | None = None, actor: Actor | None = None
    ) -> PresenceChange:
        """A rep sets their own presence, or a supervisor sets a rep's (``actor``: who, for the audit trail)."""
        if actor is not None and not actor.may_act_for(rep_id):
            raise NotYourPresence("only a supervisor can set another rep's presence")
        with self._store.unit_of_work() as session:
            change, actions = self._set(session, reps.lock_rep(session, rep_id), state, reason=reason, actor=actor)
        self._after_commit(actions)
        return change

    def _set(
        self, session: Session, rep: Rep, state: RepState, *, reason: str | None, actor: Actor | None
    ) -> tuple[PresenceChange, list[Action]]:
        reasons = self._settings.console.away_reasons
        if state is RepState.AWAY and reason is not None and reason not in reasons:
            raise InvalidInput(f"reason: {reason!r} is not one of {', '.join(reasons)}")
        immediate = rep.choose_presence(state, now=self._clock(), reason=reason)
        audit(session, actor, "presence set", f"rep:{rep.id}", state=state.value, reason=reason, immediate=immediate)
        actions = self._dispatch.next_caller_for(session, rep)
        return PresenceChange(rep=rep_view(rep), immediate=immediate, pulled=len(actions)), actions

    def roster(self) -> list[RepView]:
        with self._store.unit_of_work(read_only=True) as session:
            return [rep_view(rep) for rep in reps.list_reps(session)]

    def issue_token(self, rep_name: str) -> str:
        """A new API token for the rep console (replacing any earlier one). Shown once; only its digest is kept."""
        token = secrets.token_urlsafe(32)
        with self._store.unit_of_work() as session:
            reps.find_rep(session, rep_name).api_token_hash = token_digest(token)
        return token

    def rep_for_token(self, token: str) -> RepView | None:
        if not token:
            return None
        with self._store.unit_of_work(read_only=True) as session:
            rep = reps.rep_by_token_digest(session, token_digest(token))
            return rep_view(rep) if rep is not None else None

    def rep(self, rep_id: int) -> RepView:
        with self._store.unit_of_work(read_only=True) as session:
            return rep_view(reps.lock_rep(session, rep_id))
