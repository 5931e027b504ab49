"""Matching callers and reps: who takes a caller now, who waits, and which waiting caller a freed rep takes next.

Shared by every service that hands a caller on (the IVR's transfer, the queue, callbacks, hand-offs). Everything
here runs inside the caller's transaction and returns what to render plus the REST ``Action``s to run after the
commit; nothing here talks to Twilio or commits.

The rules (README "Who goes first"):
* a caller is offered to an available rep with the department's skill — best skill level first, then the
  department's strategy (longest idle, fewest calls today, round robin, or ring a group at once); never to a rep who
  already let this caller's call ring out or declined it;
* callers already in line go first: a newcomer queues behind them even when a rep is free at that instant;
* the line is ordered by ``rank_at`` = arrival minus head start (VIP, repeat caller, frustration, callback), then
  arrival: priority moves a caller ahead of those who arrived less than their head start before them, and nobody
  is starved;
* the moment a rep becomes available (a call ends, wrap-up is over, presence set to available) they are reserved
  for the first caller in line they can take, and that caller is pulled out of the queue by REST.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from crm_sync import service as crm
from crm_sync.models import (
    Interaction,
    InteractionStatus,
    Offer,
    OfferState,
    Outcome,
    Rep,
    RepState,
)
from ivr_flows import CallState, Flow
from voice.config import Settings
from voice.domain.actions import Action, PlaceCallback, PullCaller
from voice.domain.priority import DEFAULT_FRUSTRATION_PHRASES, CallerSignals, PriorityWeights, caller_priority
from voice.domain.replies import DialRep, EnqueueCaller, Reply, Voicemail

log = logging.getLogger(__name__)

#: A caller pulled by REST normally reaches /voice/connect within a second; past this the hold loop takes over.
PUSH_GRACE_SECONDS = 10
#: Time for the whisper to be spoken and answered, on top of the whisper timeout.
WHISPER_SPEECH_SECONDS = 45


@dataclass(frozen=True)
class Routed:
    """What becomes of a caller handed to a department: the reply, and the interaction's new column values."""

    reply: Reply
    values: dict[str, object]


class Dispatcher:
    def __init__(self, *, settings: Settings, clock: Callable[[], datetime]) -> None:
        self._settings = settings
        self._clock = clock
        priority = settings.routing.priority
        self._weights = PriorityWeights(
            tiers={name.casefold(): float(seconds) for name, seconds in priority.tiers.items()},
            repeat_caller=priority.repeat_caller,
            repeat_within_days=priority.repeat_within_days,
            frustrated=priority.frustrated,
            callback=priority.callback,
            **(
                {"frustration_phrases": _with_defaults(priority.frustration_phrases)}
                if priority.frustration_phrases
                else {}
            ),
        )

    @property
    def settings(self) -> Settings:
        return self._settings

    def now(self) -> datetime:
        return self._clock()

    # --- leases: how long a rep may stay reserved without an answer -------------------------------------------------

    def ring_lease(self, now: datetime) -> datetime:
        transfer = self._settings.transfer
        return now + timedelta(seconds=transfer.ring_timeout + transfer.whisper_timeout + WHISPER_SPEECH_SECONDS)

    def pull_lease(self, now: datetime) -> datetime:
        return self.ring_lease(now) + timedelta(seconds=PUSH_GRACE_SECONDS)

    def callback_lease(self, now: datetime) -> datetime:
        # Ringing the customer, their greeting, then ringing the rep.
        return self.ring_lease(now) + timedelta(seconds=self._settings.callbacks.ring_timeout + 30)

    def day_start(self, now: datetime) -> datetime:
        local = now.astimezone(ZoneInfo(self._settings.routing.timezone))
        return local.replace(hour=0, minute=0, second=0, microsecond=0)

    # --- a caller to a rep, or into line ----------------------------------------------------------------------------

    def route_caller(
        self,
        db: crm.Db,
        *,
        interaction_id: int,
        department: str,
        flow: Flow,
        say: tuple[str, ...],
        enqueued_at: datetime | None,
        rank_at: datetime | None,
        offered: bool = True,
        signals: CallerSignals | None = None,
        language: str | None = None,
    ) -> Routed:
        """Ring the best free rep with the skill, or put the caller in line (or take a message if nobody is on duty).

        ``offered``: whether any rep may have been offered this call before (those are not offered it again).
        ``signals``: what the caller's priority is computed from when they join the line for the first time.
        ``language``: the one the caller chose in the flow (default: the flow's).
        """
        now = self._clock()
        language = language or flow.language
        department_name = flow.department_name(department, language)
        already_offered = crm.offered_rep_ids(db, interaction_id) if offered else set()
        probe = crm.probe_department(db, department, exclude_rep_ids=already_offered)
        if probe.free and not probe.waiting:
            dial = self.ring_reps(
                db,
                interaction_id=interaction_id,
                department=department,
                flow=flow,
                exclude=already_offered,
                say=(*say, flow.phrase("connecting", language, department=department_name)),
                language=language,
            )
            if dial is not None:
                return Routed(dial, {"status": InteractionStatus.OFFERING, "rep_id": None})
        if not probe.on_duty:
            # Nobody on duty, or everyone on duty already let this caller's call ring out: waiting would be for
            # nothing, so say so and take a message rather than hold the caller until max_wait.
            log.warning("no rep on duty for %s; offering voicemail (interaction %s)", department, interaction_id)
            sorry = flow.phrase("nobody_can_take", language, department=department_name)
            return Routed(self.voicemail(flow, lead=(*say, sorry), language=language), {"outcome": Outcome.NO_REP})
        values: dict[str, object] = {"status": InteractionStatus.QUEUED, "rep_id": None}
        if enqueued_at is None:  # joining the line now; a caller sent back to it keeps their place
            priority = caller_priority(
                signals or CallerSignals(tier=None, days_since_last_contact=None, issue_text=None), self._weights
            )
            values.update(
                enqueued_at=now,
                rank_at=now - timedelta(seconds=priority.head_start_seconds),
                priority_seconds=int(priority.head_start_seconds),
                priority_reasons=list(priority.reasons),
            )
        elif rank_at is None:
            values["rank_at"] = enqueued_at
        queued = EnqueueCaller(
            queue_name=department,
            say=(*say, flow.phrase("hold_intro", language, configured=self._settings.queue.hold_intro)),
            language=language,
            voice=flow.voice_for(language),
        )
        return Routed(queued, values)

    def ring_reps(
        self,
        db: crm.Db,
        *,
        interaction_id: int,
        department: str,
        flow: Flow,
        exclude: set[int],
        say: tuple[str, ...],
        state: OfferState = OfferState.RINGING,
        purpose: str = "call",
        language: str | None = None,
    ) -> DialRep | None:
        """Reserve the department's best free rep (or, for ring_all, a group) and dial them, or None if none is
        free. Each reserved rep gets an offer that names them; a group shares the first offer's id."""
        now = self._clock()
        strategy = self._settings.routing.strategy_for(department)
        reps = crm.reserve_reps(
            db,
            department=department,
            now=now,
            until=self.ring_lease(now),
            strategy=strategy,
            count=self._settings.routing.ring_group_size if strategy == "ring_all" else 1,
            exclude_rep_ids=exclude,
            day_start=self.day_start(now),
        )
        if not reps:
            return None
        offer_ids: list[int] = []
        for rep in reps:
            offer_id = crm.insert_offer(
                db,
                interaction_id=interaction_id,
                rep_id=rep.id,
                state=state,
                now=now,
                group_id=offer_ids[0] if offer_ids else None,
                purpose=purpose,
            )
            crm.attach_offer(db, rep.id, offer_id)
            offer_ids.append(offer_id)
        if len(offer_ids) > 1:
            crm.set_offer_group(db, offer_ids[0], offer_ids)
        targets = tuple(zip(offer_ids, (rep.phone for rep in reps), strict=True))
        return self.dial(targets, flow, say=say, language=language)

    def dial(
        self, targets: tuple[tuple[int, str], ...], flow: Flow, *, say: tuple[str, ...], language: str | None = None
    ) -> DialRep:
        """Ring ``targets`` (offer id, rep phone) after saying ``say`` in ``language`` (default: the flow's)."""
        caller_id = self._settings.transfer.caller_id
        language = language or flow.language
        return DialRep(
            targets=targets,
            say=say,
            ring_timeout=self._settings.transfer.ring_timeout,
            caller_id=None if caller_id == "caller" else caller_id,
            language=language,
            voice=flow.voice_for(language),
        )

    def voicemail(self, flow: Flow, *, lead: tuple[str, ...], language: str | None = None) -> Voicemail:
        """Take a message after ``lead``, spoken in ``language`` (default: the flow's)."""
        language = language or flow.language
        return Voicemail(
            say=(*lead, flow.phrase("voicemail_prompt", language, configured=self._settings.fallback.voicemail_prompt)),
            max_length=self._settings.fallback.voicemail_max_length,
            language=language,
            voice=flow.voice_for(language),
            no_message=flow.phrase("no_message", language),
        )

    # --- an offer ends: free the rep, and let them take the next caller at once -------------------------------------

    def settle(self, session: Session, offer: Offer, end: crm.OfferEnd) -> list[Action]:
        """Free the rep from ``offer`` (wrap-up, away after missed offers, or available) and, if they are available
        now, reserve them for the first caller in line they can take."""
        routing = self._settings.routing
        state = crm.settle_rep(
            session,
            offer.rep_id,
            offer_id=offer.id,
            end=end,
            now=self._clock(),
            wrap_up_seconds=routing.wrap_up,
            away_after_missed=routing.missed_offers_before_away,
        )
        if state is RepState.AWAY:
            log.warning("rep %s set away after %s missed offers", offer.rep_id, routing.missed_offers_before_away)
        return self.next_caller_for(session, offer.rep_id) if state is RepState.AVAILABLE else []

    def next_caller_for(self, session: Session, rep_id: int) -> list[Action]:
        """A rep just became available: reserve them for the first caller in line they can take (push dequeue)."""
        now = self._clock()
        rep = session.get(Rep, rep_id, populate_existing=True)
        if rep is None or rep.state is not RepState.AVAILABLE:
            return []
        skills = set(rep.departments)
        overflow = [
            crm.Overflow(department, now - timedelta(seconds=rule.overflow_after))
            for department, rule in self._settings.routing.departments.items()
            if department not in skills and skills & set(rule.overflow_to)
        ]
        waiting = crm.next_in_line(session, departments=skills, overflow=overflow, rep_id=rep.id, now=now)
        if waiting is None:
            return []
        department = waiting.department or "general"
        # A rep taking another department's overflow is reserved through the skill that makes them eligible.
        via = (
            department
            if department in skills
            else next(
                target for target in self._settings.routing.for_department(department).overflow_to if target in skills
            )
        )
        if waiting.status is InteractionStatus.CALLBACK:
            return self._start_callback(session, waiting, rep_id=rep.id, via=via, now=now)
        taken = crm.reserve_rep(session, department=via, now=now, until=self.pull_lease(now), only_rep_id=rep.id)
        if taken is None:
            return []
        offer_id = self.offer_pending(session, waiting, taken.id, purpose="call")
        return [PullCaller(call_sid=waiting.call_sid, offer_id=offer_id)]

    def offer_pending(self, session: crm.Db, interaction: Interaction, rep_id: int, *, purpose: str) -> int:
        """A rep reserved for a caller who is not being dialled yet (on hold, or a callback to place)."""
        now = self._clock()
        offer_id = crm.insert_offer(
            session, interaction_id=interaction.id, rep_id=rep_id, state=OfferState.PENDING, now=now, purpose=purpose
        )
        crm.attach_offer(session, rep_id, offer_id)
        interaction.status = InteractionStatus.OFFERING
        interaction.rep_id = rep_id
        return offer_id

    def _start_callback(
        self, session: Session, interaction: Interaction, *, rep_id: int, via: str, now: datetime
    ) -> list[Action]:
        callback = crm.callback_for(session, interaction.id)
        if callback is None:  # pragma: no cover - a CALLBACK interaction always has its row
            log.error("interaction %s waits for a callback but has none", interaction.id)
            return []
        taken = crm.reserve_rep(session, department=via, now=now, until=self.callback_lease(now), only_rep_id=rep_id)
        if taken is None:
            return []
        offer_id = self.offer_pending(session, interaction, taken.id, purpose="callback")
        crm.start_callback_attempt(session, callback, offer_id=offer_id, now=now)
        return [
            PlaceCallback(
                callback_id=callback.id,
                offer_id=offer_id,
                to=callback.phone,
                from_=callback.from_number,
                timeout=self._settings.callbacks.ring_timeout,
                attempt=callback.attempts,
                detect_machines=self._settings.callbacks.detect_machines,
            )
        ]

    def callback_retry_rank(self, rank_at: datetime | None, now: datetime) -> datetime:
        """A callback whose turn came but who did not answer keeps (and strengthens) their place for the retry."""
        base = min(rank_at, now) if rank_at is not None else now
        return base - timedelta(seconds=self._weights.callback)

    def signals_from_state(self, flow_state: dict[str, Any], issue_text: str | None) -> CallerSignals:
        try:
            caller = CallState.model_validate(without_city(flow_state)).caller
        except ValueError:
            return CallerSignals(tier=None, days_since_last_contact=None, issue_text=issue_text)
        return CallerSignals(
            tier=caller.tier, days_since_last_contact=caller.days_since_last_contact, issue_text=issue_text
        )


def _with_defaults(extra: list[str]) -> tuple[str, ...]:
    return (*DEFAULT_FRUSTRATION_PHRASES, *extra)


# The caller's city is not part of the engine's state, but the whisper wants it; it rides along in the JSON.
CITY_KEY = "_caller_city"


def with_city(state: CallState, city: str | None) -> dict[str, object]:
    data: dict[str, object] = state.model_dump(mode="json")
    if city:
        data[CITY_KEY] = city
    return data


def without_city(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != CITY_KEY}


def city_of(data: dict[str, Any]) -> str | None:
    value = data.get(CITY_KEY)
    return value if isinstance(value, str) else None


def waited_seconds(interaction: Interaction, now: datetime) -> int:
    if interaction.enqueued_at is None:
        return 0
    return max(0, int((now - interaction.enqueued_at).total_seconds()))


def require_offer(session: Session, offer_id: int) -> Offer:
    offer = crm.get_offer(session, offer_id)
    if offer is None:
        raise crm.UnknownInteraction(f"offer {offer_id}")
    return offer
