"""Matching callers and reps: who takes a caller now, who waits, and which waiting caller a freed rep takes next.

Shared by every service that hands a caller on (the IVR's transfer, the queue, callbacks, hand-offs). Everything
here runs inside the caller's unit of work and returns what to render plus the REST ``Action``s to run after the
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
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from crm_sync.models import Interaction, InteractionStatus, Offer, OfferEnd, OfferPurpose, OfferState, Rep, RepState
from crm_sync.queries import callbacks, line, offers, reps
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
                {"frustration_phrases": (*DEFAULT_FRUSTRATION_PHRASES, *priority.frustration_phrases)}
                if priority.frustration_phrases
                else {}
            ),
        )

    @property
    def settings(self) -> Settings:
        return self._settings

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

    def route(
        self,
        session: Session,
        interaction: Interaction,
        flow: Flow,
        *,
        say: tuple[str, ...],
        signals: CallerSignals | None = None,
    ) -> Reply:
        """Ring the best free rep with the skill of the interaction's department, or put the caller in line (or
        take a message if nobody is on duty).

        ``signals``: what the caller's priority is computed from when they join the line for the first time (by
        default, what the stored call state knows).
        """
        department = interaction.routed_department
        language = interaction.language or flow.language
        department_name = flow.department_name(department, language)
        declined = offers.declined_rep_ids(session, interaction.id)
        probe = line.probe_department(session, department, exclude_rep_ids=declined)
        if probe.free and not probe.waiting:
            dial = self.ring_reps(
                session,
                interaction,
                department=department,
                flow=flow,
                exclude=declined,
                say=(*say, flow.phrase("connecting", language, department=department_name)),
            )
            if dial is not None:
                return dial
        if not probe.on_duty:
            # Nobody on duty, or everyone on duty already let this caller's call ring out: waiting would be for
            # nothing, so say so and take a message rather than hold the caller until max_wait.
            log.warning("no rep on duty for %s; offering voicemail (interaction %s)", department, interaction.id)
            interaction.no_rep()
            sorry = flow.phrase("nobody_can_take", language, department=department_name)
            return self.voicemail(flow, lead=(*say, sorry), language=language)
        if interaction.has_place_in_line:  # sent back to the line: they keep their place
            interaction.join_line(now=self._clock())
        else:
            priority = caller_priority(signals or signals_of(interaction), self._weights)
            interaction.join_line(
                now=self._clock(), head_start_seconds=priority.head_start_seconds, reasons=tuple(priority.reasons)
            )
        return EnqueueCaller(
            queue_name=department,
            say=(*say, flow.phrase("hold_intro", language, configured=self._settings.queue.hold_intro)),
            language=language,
            voice=flow.voice_for(language),
        )

    def ring_reps(
        self,
        session: Session,
        interaction: Interaction,
        *,
        department: str,
        flow: Flow,
        exclude: set[int],
        say: tuple[str, ...],
    ) -> DialRep | None:
        """Reserve the department's best free rep (or, for ring_all, a group) and dial them, or None if none is
        free. Each reserved rep gets an offer that names them; a group shares the first offer's id."""
        now = self._clock()
        strategy = self._settings.routing.strategy_for(department)
        taken = reps.free_reps(
            session,
            department=department,
            strategy=strategy,
            count=self._settings.routing.ring_group_size if strategy == "ring_all" else 1,
            exclude_rep_ids=exclude,
            day_start=self.day_start(now),
        )
        if not taken:
            return None
        for rep in taken:
            rep.reserve(now=now, until=self.ring_lease(now))
        group = [self.make_offer(session, interaction, rep, state=OfferState.RINGING, now=now) for rep in taken]
        if len(group) > 1:
            for offer in group:
                offer.group_id = group[0].id
        interaction.offer()
        return self.dial(
            tuple((offer.id, rep.phone) for offer, rep in zip(group, taken, strict=True)),
            flow,
            say=say,
            language=interaction.language,
        )

    def offer_pending(self, session: Session, interaction: Interaction, rep: Rep, *, purpose: OfferPurpose) -> Offer:
        """A rep just reserved for a caller who is not being dialled yet (on hold, or a callback to place)."""
        offer = self.make_offer(session, interaction, rep, state=OfferState.PENDING, now=self._clock(), purpose=purpose)
        interaction.offer()
        return offer

    def make_offer(
        self,
        session: Session,
        interaction: Interaction,
        rep: Rep,
        *,
        state: OfferState,
        now: datetime,
        purpose: OfferPurpose = OfferPurpose.CALL,
    ) -> Offer:
        """An offer of ``interaction`` to ``rep``, who is reserved for it (the reservation names the offer)."""
        offer = Offer(interaction_id=interaction.id, rep=rep, state=state, created_at=now, purpose=purpose)
        session.add(offer)
        session.flush()  # the offer's id, which the rep's reservation names
        rep.hold_for(offer.id)
        return offer

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

    def put_through(self, session: Session, offer: Offer, flow: Flow, *, say: tuple[str, ...]) -> DialRep | None:
        """Dial the rep held by a pending offer (a caller pulled from the line, a callback answered): None when the
        reservation lapsed or the offer was withdrawn meanwhile."""
        if not offer.live or offer.taken:
            return None
        if not offer.rep.extend_reservation(offer.id, until=self.ring_lease(self._clock())):
            return None
        offer.ring()
        offer.interaction.offer()
        return self.dial(((offer.id, offer.rep.phone),), flow, say=say, language=offer.interaction.language)

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

    def close_offer(self, session: Session, offer: Offer, *, caller_gone: bool = False) -> list[Action]:
        """The one way an offer ends: close it (``Offer.close`` says how it went), then free its rep by that."""
        end = offer.close(now=self._clock(), caller_gone=caller_gone)
        return self.free_rep(session, offer, end)

    def expire_offer(self, session: Session, offer: Offer) -> list[Action]:
        """The rep's reservation for ``offer`` ran out unanswered."""
        return self.free_rep(session, offer, offer.expire(now=self._clock()))

    def free_rep(self, session: Session, offer: Offer, end: OfferEnd) -> list[Action]:
        """Free the rep from ``offer`` (wrap-up, away after missed offers, or available) and, if they are available
        now, reserve them for the first caller in line they can take."""
        routing = self._settings.routing
        rep = reps.lock_rep(session, offer.rep_id)
        state = rep.settle(
            offer.id,
            end,
            now=self._clock(),
            wrap_up_seconds=routing.wrap_up,
            away_after_missed=routing.missed_offers_before_away,
        )
        if state is RepState.AWAY:
            log.warning("rep %s set away after %s missed offers", rep.id, routing.missed_offers_before_away)
        return self.next_caller_for(session, rep) if state is RepState.AVAILABLE else []

    def next_caller_for(self, session: Session, rep: Rep) -> list[Action]:
        """A rep just became available: reserve them for the first caller in line they can take (push dequeue)."""
        if rep.state is not RepState.AVAILABLE:
            return []
        now = self._clock()
        skills = set(rep.departments)
        overflow = [
            line.Overflow(department, tuple(rule.overflow_to), now - timedelta(seconds=rule.overflow_after))
            for department, rule in self._settings.routing.departments.items()
            if department not in skills and skills & set(rule.overflow_to)
        ]
        waiting = line.next_in_line(session, departments=skills, overflow=overflow, rep_id=rep.id, now=now)
        if waiting is None:
            return []
        if waiting.status is InteractionStatus.CALLBACK:
            return self._start_callback(session, waiting, rep, now=now)
        rep.reserve(now=now, until=self.pull_lease(now))
        offer = self.offer_pending(session, waiting, rep, purpose=OfferPurpose.CALL)
        return [PullCaller(call_sid=waiting.call_sid, offer_id=offer.id)]

    def _start_callback(self, session: Session, interaction: Interaction, rep: Rep, *, now: datetime) -> list[Action]:
        callback = callbacks.callback_for(session, interaction.id)
        if callback is None:  # pragma: no cover - a CALLBACK interaction always has its row
            log.error("interaction %s waits for a callback but has none", interaction.id)
            return []
        rep.reserve(now=now, until=self.callback_lease(now))
        offer = self.offer_pending(session, interaction, rep, purpose=OfferPurpose.CALLBACK)
        callback.start_attempt(offer.id)
        return [
            PlaceCallback(
                callback_id=callback.id,
                offer_id=offer.id,
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


def signals_of(interaction: Interaction) -> CallerSignals:
    """What the caller's priority is computed from, as the stored call state knows it."""
    try:
        caller = CallState.model_validate(interaction.flow_state).caller
    except ValueError:
        return CallerSignals(tier=None, days_since_last_contact=None, issue_text=interaction.issue_text)
    return CallerSignals(
        tier=caller.tier, days_since_last_contact=caller.days_since_last_contact, issue_text=interaction.issue_text
    )
