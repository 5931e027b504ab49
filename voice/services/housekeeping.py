"""The housekeeping pass that keeps presence and the line honest, run every ``routing.sweep_interval`` seconds:

* a reservation nobody answered in time is released (a lost Dial action, a crashed worker), counting as a missed
  offer; after ``routing.missed_offers_before_away`` in a row the rep is set away;
* a rep whose wrap-up time is over becomes available and is given the first caller in line at once;
* a rep still "on a call" whose call has ended in our records (the Dial action was lost) is settled;
* calls nothing was heard about for ``routing.check_calls_after`` seconds are checked with Twilio (``CheckCall``):
  a status callback lost in a database outage or with a killed worker leaves a call open and its rep held, and the
  check closes it with what Twilio says (the reps are freed by that);
* every ``routing.check_calls_after`` seconds Twilio is asked for the inbound calls that began since the last such
  look (and one interval before it: a call may begin before and end after) and are over (``FindUnrecordedCalls``):
  a call whose every webhook failed, the final status callback included (a database outage shorter than the call),
  is recorded from Twilio's account of it. Twilio does not retry status callbacks: without this look such a call
  would be missing from the records for good;
* a callback whose ring attempt vanished without a status callback counts as unanswered;
* any free rep who could take someone in line (a push that was lost, a department overflowing after its delay) is
  matched at once.

Every step is a guarded transition on a locked row, so several processes sweeping at the same time cannot double
anything; a pass first looks (read-only) and only takes the write lock when there is something to do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from crm_sync.db import Store
from crm_sync.models import OfferPurpose
from crm_sync.queries import callbacks, housekeeping, interactions, line, offers, reps
from voice.domain.actions import Action, CheckCall, FindUnrecordedCalls
from voice.services.context import Service, ServiceContext
from voice.services.queue import QueueService

log = logging.getLogger(__name__)

#: How far back a housekeeping process's first look for unrecorded calls goes.
UNRECORDED_LOOK_BACK = timedelta(minutes=15)


class Housekeeper(Service):
    """The pass described in the module docstring."""

    def __init__(self, context: ServiceContext, *, queue: QueueService) -> None:
        super().__init__(context)
        self._queue = queue
        self._check_calls_after = timedelta(seconds=context.settings.routing.check_calls_after)
        # Calls already asked about recently (per process): CheckCall at most every check interval per call.
        self._checked: dict[str, datetime] = {}
        # When this process last asked Twilio for its list of calls (at first: when it started, without asking).
        self._listed_at = self._clock()
        self._listed_before = False

    def _overflow_rules(self, now: datetime) -> list[line.Overflow]:
        return [
            line.Overflow(department, tuple(rule.overflow_to), now - timedelta(seconds=rule.overflow_after))
            for department, rule in self._settings.routing.departments.items()
            if rule.overflow_to
        ]

    def sweep(self) -> list[Action]:
        """One pass; returns the REST actions it started (already handed to the sink)."""
        now = self._clock()
        with self._store.unit_of_work(read_only=True) as session:
            due = housekeeping.housekeeping_due(session, now=now, overflow=self._overflow_rules(now))
            quiet = interactions.quiet_calls(session, quiet_since=now - self._check_calls_after)
        actions: list[Action] = self._check_quiet_calls(quiet, now)
        actions.extend(self._find_unrecorded_calls(now))
        if due:
            with self._store.unit_of_work() as session:
                actions.extend(self._release_expired(session, now))
                for rep in reps.wrap_ups_over(session, now=now):
                    if rep.end_wrap_up(now=now):
                        actions.extend(self._dispatch.next_caller_for(session, rep))
                for offer in offers.offers_of_ended_calls(session):
                    # The Dial action about it never came: a taken call ended as talked, anything else withdrawn.
                    actions.extend(self._dispatch.close_offer(session, offer, caller_gone=True))
                for callback in callbacks.stale_callbacks(session):
                    actions.extend(self._queue.missed_callback(session, callback, result="no status"))
                for rep in reps.available_reps(session):
                    actions.extend(self._dispatch.next_caller_for(session, rep))
        self._after_commit(actions)
        return actions

    def _release_expired(self, session: Session, now: datetime) -> list[Action]:
        actions: list[Action] = []
        for rep in reps.expired_reservations(session, now=now):
            offer = offers.find_offer(session, rep.current_offer_id)
            if offer is None:
                if rep.expire_orphan_reservation(now=now):
                    actions.extend(self._dispatch.next_caller_for(session, rep))
                continue
            log.warning("reservation of rep %s for offer %s expired unanswered", rep.id, offer.id)
            interaction = offer.interaction
            if (
                offer.pending
                and offer.purpose == OfferPurpose.CALL
                and not any(other.id != offer.id for other in offers.live_offers(session, interaction.id))
            ):
                # The pull never reached the caller, who is still on hold: back in line, place kept.
                interaction.back_in_line()
            actions.extend(self._dispatch.expire_offer(session, offer))
        return actions

    def _find_unrecorded_calls(self, now: datetime) -> list[Action]:
        if now - self._listed_at < self._check_calls_after:
            return []
        # The first look of a process goes back further than one interval: a housekeeping process restarted during
        # an outage must not lose the calls of the minutes before it. (Not at once: a process that only lives for
        # seconds, a benchmark's, has nothing to look for yet.)
        since = self._listed_at - (self._check_calls_after if self._listed_before else UNRECORDED_LOOK_BACK)
        self._listed_at, self._listed_before = now, True
        return [FindUnrecordedCalls(started_after=since)]

    def _check_quiet_calls(self, call_sids: Iterable[str], now: datetime) -> list[Action]:
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
