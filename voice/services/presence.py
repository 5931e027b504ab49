"""Reps' presence and the housekeeping that keeps it honest.

Presence changes come from three places: people (``warmline reps status``, the rep console's JSON API), calls
(reserved, on a call, wrap-up: set by ``voice.services.calls`` and ``voice.services.dispatch``), and time
(``Housekeeper.sweep``, run every ``routing.sweep_interval`` seconds in each app process):

* a reservation nobody answered in time is released (a lost Dial action, a crashed worker), counting as a missed
  offer; after ``routing.missed_offers_before_away`` in a row the rep is set away;
* a rep whose wrap-up time is over becomes available and is given the first caller in line at once;
* a rep still "on a call" whose call has ended in our records (the Dial action was lost) is settled;
* calls that have lasted suspiciously long are checked with Twilio (``CheckCall``), in case the status callback that
  would have closed them was lost;
* a callback whose ring attempt vanished without a status callback counts as unanswered;
* any free rep who could take someone in line (a push that was lost, a department overflowing after its delay) is
  matched at once.

Every step is a guarded update, so several processes sweeping at the same time cannot double anything; a sweep
first looks (read-only) and only takes the write lock when there is something to do.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from crm_sync import service as crm
from crm_sync.db import Store
from crm_sync.models import (
    LIVE_OFFER_STATES,
    InteractionStatus,
    OfferState,
    Rep,
    RepState,
)
from voice.domain.actions import Action, CheckCall
from voice.services.context import Service, ServiceContext
from voice.services.queue import QueueService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepView:
    id: int
    name: str
    phone: str
    state: str
    departments: tuple[str, ...]
    #: Away or offline asked for during a call, taken when it ends.
    after_call: str | None = None


@dataclass(frozen=True)
class PresenceChange:
    rep: RepView
    #: False when the change waits for the rep's current call to end.
    immediate: bool
    #: How many waiting callers the rep was given at once (0 or 1).
    pulled: int


def rep_view(rep: Rep) -> RepView:
    return RepView(
        id=rep.id,
        name=rep.name,
        phone=rep.phone,
        state=rep.state.value,
        departments=tuple(rep.departments),
        after_call=rep.after_call_state.value if rep.after_call_state else None,
    )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class PresenceService(Service):

    def set_presence(self, rep_name: str, state: RepState) -> PresenceChange:
        """Change a rep's presence; a rep who becomes available immediately takes the first caller they can."""
        with self._store.unit_of_work() as session:
            change, actions = self._set(session, crm.find_rep(session, rep_name), state)
        self._after_commit(actions)
        return change

    def set_presence_of(self, rep_id: int, state: RepState) -> PresenceChange:
        with self._store.unit_of_work() as session:
            rep = session.get(Rep, rep_id, with_for_update=True)
            if rep is None:
                raise crm.UnknownRep(f"rep {rep_id}")
            change, actions = self._set(session, rep, state)
        self._after_commit(actions)
        return change

    def _set(self, session: Session, rep: Rep, state: RepState) -> tuple[PresenceChange, list[Action]]:
        immediate = crm.set_rep_presence(session, rep, state, now=self._clock())
        session.flush()
        actions = self._dispatch.next_caller_for(session, rep.id) if rep.state is RepState.AVAILABLE else []
        return PresenceChange(rep=rep_view(rep), immediate=immediate, pulled=len(actions)), actions

    def roster(self) -> list[RepView]:
        with self._store.unit_of_work() as session:
            return [rep_view(rep) for rep in crm.list_reps(session)]

    def issue_token(self, rep_name: str) -> str:
        """A new API token for the rep console (replacing any earlier one). Shown once; only its digest is kept."""
        token = secrets.token_urlsafe(32)
        with self._store.unit_of_work() as session:
            rep = crm.find_rep(session, rep_name)
            rep.api_token_hash = token_digest(token)
        return token

    def rep_for_token(self, token: str) -> RepView | None:
        if not token:
            return None
        with self._store.unit_of_work() as session:
            rep = crm.rep_by_token_digest(session, token_digest(token))
            return rep_view(rep) if rep is not None else None

    def rep(self, rep_id: int) -> RepView:
        with self._store.unit_of_work() as session:
            rep = session.get(Rep, rep_id)
            if rep is None:
                raise crm.UnknownRep(f"rep {rep_id}")
            return rep_view(rep)


class Housekeeper(Service):
    """The sweep described in the module docstring."""

    def __init__(self, context: ServiceContext, *, queue: QueueService) -> None:
        super().__init__(context)
        self._queue = queue
        self._check_calls_after = timedelta(seconds=context.settings.routing.check_calls_after)
        # Calls already asked about recently (per process): CheckCall at most every check interval per call.
        self._checked: dict[str, datetime] = {}

    def _overflow_rules(self, now: datetime) -> list[crm.OverflowRule]:
        routing = self._dispatch.settings.routing
        return [
            crm.OverflowRule(department, tuple(rule.overflow_to), now - timedelta(seconds=rule.overflow_after))
            for department, rule in routing.departments.items()
            if rule.overflow_to
        ]

    def sweep(self) -> list[Action]:
        """One pass; returns the REST actions it started (already handed to the sink)."""
        now = self._clock()
        overflow = self._overflow_rules(now)
        with self._store.reading() as db:
            due = crm.housekeeping_due(db, now=now, overflow=overflow)
            long_calls = crm.long_running_calls(db, answered_before=now - self._check_calls_after)
        actions: list[Action] = self._check_long_calls(long_calls, now)
        if due:
            with self._store.unit_of_work() as session:
                actions.extend(self._release_expired(session, now))
                for rep_id in crm.end_wrap_ups(session, now=now):
                    actions.extend(self._dispatch.next_caller_for(session, rep_id))
                actions.extend(self._settle_ended_calls(session))
                for callback in crm.stale_callbacks(session):
                    actions.extend(self._queue.missed_callback(session, callback, result="no status"))
                for rep_id in crm.available_rep_ids(session):
                    actions.extend(self._dispatch.next_caller_for(session, rep_id))
        self._after_commit(actions)
        return actions

    def _release_expired(self, session: Session, now: datetime) -> list[Action]:
        actions: list[Action] = []
        for expired in crm.expired_reservations(session, now=now):
            offer = crm.get_offer(session, expired.offer_id) if expired.offer_id is not None else None
            if offer is None:
                if crm.release_orphan_reservation(session, expired.rep_id, now=now):
                    actions.extend(self._dispatch.next_caller_for(session, expired.rep_id))
                continue
            log.warning("reservation of rep %s for offer %s expired unanswered", expired.rep_id, offer.id)
            interaction = offer.interaction
            was_pending = offer.state is OfferState.PENDING
            if offer.state in LIVE_OFFER_STATES and offer.state is not OfferState.ACCEPTED:
                offer.state = OfferState.DECLINED
                offer.ended_at = now
            if (
                was_pending
                and offer.purpose == "call"
                and interaction.status is InteractionStatus.OFFERING
                and not any(other.id != offer.id for other in crm.live_offers(session, interaction.id))
            ):
                # The pull never reached the caller, who is still on hold: back in line, place kept.
                interaction.status = InteractionStatus.QUEUED
                interaction.rep_id = None
            session.flush()
            actions.extend(self._dispatch.settle(session, offer, crm.OfferEnd.MISSED))
        return actions

    def _settle_ended_calls(self, session: Session) -> list[Action]:
        """Reps held by an offer whose call our records already closed (the Dial action never came)."""
        actions: list[Action] = []
        for offer in crm.offers_of_ended_calls(session):
            offer.state = OfferState.ENDED if offer.state is OfferState.ACCEPTED else OfferState.CANCELLED
            offer.ended_at = offer.ended_at or self._clock()
            session.flush()
            end = crm.OfferEnd.TALKED if offer.state is OfferState.ENDED else crm.OfferEnd.CANCELLED
            actions.extend(self._dispatch.settle(session, offer, end))
        return actions

    def _check_long_calls(self, call_sids: Iterable[str], now: datetime) -> list[Action]:
        actions: list[Action] = []
        for call_sid in call_sids:
            last = self._checked.get(call_sid)
            if last is None or now - last >= self._check_calls_after:
                self._checked[call_sid] = now
                actions.append(CheckCall(call_sid=call_sid))
        if len(self._checked) > 10_000:
            self._checked.clear()
        return actions


class SweepThread:
    """Runs ``Housekeeper.sweep`` every few seconds in the background of one app process, and checkpoints the
    store's SQLite WAL after each pass when the store leaves that to it (``Store.background_checkpoints``)."""

    def __init__(self, housekeeper: Housekeeper, *, interval: float, store: Store | None = None) -> None:
        self._housekeeper = housekeeper
        self._interval = interval
        self._store = store if store is not None and store.background_checkpoints else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warmline-sweep", daemon=True)

    def start(self) -> SweepThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.run_once()

    def run_once(self) -> tuple[int, int, int] | None:
        """One pass: the sweep, then the checkpoint (if any: its SQLite figures). Failures are logged, not raised:
        the next pass may well succeed (a locked database, a restart)."""
        try:
            self._housekeeper.sweep()
        except Exception:
            log.exception("housekeeping sweep failed")
        if self._store is None:
            return None
        try:
            return self._store.checkpoint()
        except Exception:
            log.exception("WAL checkpoint failed")
            return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
