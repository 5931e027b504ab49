"""The call service: what happens at each step of a call, as one unit of work per webhook.

Views hand it parsed webhook facts and render whatever ``Reply`` it returns. It reads the CRM through
``crm_sync.queries``, changes it only through the models' lifecycle methods, runs the pure IVR engine, hands callers
to reps through the ``Dispatcher``, and never calls Twilio on the response path: REST actions (pulling a waiting
caller out of the queue for a freed rep) are handed to the action sink *after* the transaction commits.

The queue's own webhooks (hold loop, callbacks) live in ``voice.services.queue``; voicemail in
``voice.services.voicemail``; presence in ``voice.services.presence``, the housekeeping pass in
``voice.services.housekeeping``; rep-to-rep hand-offs in ``voice.services.handoffs``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as SqlAlchemyTimeout
from sqlalchemy.orm import Session

from crm_sync.models import Handoff, HandoffState, Interaction, InteractionStatus, OfferPurpose, Outcome
from crm_sync.phones import caller_e164, mask_phone
from crm_sync.queries import customers, handoffs, interactions, offers, reps
from ivr_flows import (
    CallerFacts,
    CallState,
    DigitsPressed,
    Flow,
    NoInput,
    SpeechHeard,
    Step,
    Transfer,
    TransferEnded,
    TransferNode,
    start_call,
)
from voice.domain.actions import Action, EndCall, EndedCall
from voice.domain.priority import CallerSignals
from voice.domain.replies import Acknowledge, Bridge, Fallback, FlowReply, Goodbye, JoinConference, Reply, Whisper
from voice.domain.whisper import WhisperFacts, compose_whisper
from voice.services.context import Service

log = logging.getLogger(__name__)

FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


@dataclass(frozen=True)
class IncomingCall:
    call_sid: str
    from_number: str
    to_number: str
    caller_city: str | None = None


@dataclass(frozen=True)
class CallerInput:
    speech: str | None
    speech_confidence: float | None
    digits: str | None


@dataclass(frozen=True)
class _Answer:
    """Where a caller's answer takes the flow, worked out from the call as it was stored (``seen``): the next state
    and step, or None when the flow had already handed the caller on (a late or repeated Gather)."""

    seen: tuple[InteractionStatus, str, dict[str, object]]
    flow: Flow
    next: tuple[CallState, Step] | None


@dataclass(frozen=True)
class _Start:
    """Who is calling and what the flow says first."""

    caller_number: str
    called_number: str
    flow: Flow
    customer_id: int | None
    state: CallState
    step: Step


class CallService(Service):
    # --- the IVR ---------------------------------------------------------------------------------------------------

    def incoming(self, call: IncomingCall) -> Reply:
        # One unit of work, the lookup in it. On SQLite the writers' lock is then held for the lookup and the flow's
        # first step too (about half of the ~0.5 ms it is held); reading them first in a read-only unit of work, as
        # the gather does, measured no faster, so the simpler shape stays (bench/RESULTS.md).
        with self._store.unit_of_work() as session:
            return self._open(session, call, self._start(session, call))

    def _start(self, session: Session, call: IncomingCall) -> _Start:
        number = caller_e164(call.from_number, default_region=self._settings.default_region)
        called = caller_e164(call.to_number, default_region=self._settings.default_region)
        flow = self._flows.for_number(called)
        now = self._clock()
        caller = customers.look_up_caller(session, number, call_sid=call.call_sid)
        customer = caller.customer
        facts = _caller_facts(customer, now=now, last_call_at=caller.last_call_from_number, city=call.caller_city)
        state, step = start_call(flow, facts, now=now, classifier=self._flows.classifier_for(flow))
        return _Start(number, called, flow, customer.id if customer else None, state, step)

    def _open(self, session: Session, call: IncomingCall, start: _Start) -> Reply:
        created = interactions.open_interaction(
            session,
            call_sid=call.call_sid,
            caller_number=start.caller_number,
            called_number=start.called_number,
            customer_id=start.customer_id,
            flow_name=start.flow.name,
            flow_version=start.flow.version,
            flow_state=start.state.model_dump(mode="json"),
            now=self._clock(),
        )
        if log.isEnabledFor(logging.INFO):  # masking costs a regex: only when the line is written
            log.info(
                "call %s from %s (%s) on flow %s@%s",
                call.call_sid,
                mask_phone(start.caller_number),
                "known" if start.customer_id else "new",
                start.flow.name,
                start.flow.version,
            )
        if created is not None and not isinstance(start.step.action, Transfer):
            return FlowReply(start.step)  # the usual first step: a question; the INSERT said it all
        # A retried Voice URL (same CallSid) starts over on the same interaction; or the flow transfers at once.
        interaction = interactions.require_interaction(session, call.call_sid, for_update=True)
        return self._after_step(session, interaction, start.flow, start.state, start.step)

    def caller_input(self, call_sid: str, heard: CallerInput) -> Reply:
        answer: _Answer | None = None
        if self._store.single_writer:
            # The flow engine and the classifier run before the write transaction (see ``incoming``), on the call as
            # stored; under the lock that answer stands only if the call has not moved on meanwhile (a duplicated
            # Gather, a hang-up), otherwise it is worked out again on what is there now. PostgreSQL locks only
            # this call's row: one read under the lock is cheaper than two round trips.
            with self._store.unit_of_work(read_only=True) as session:
                seen = interactions.flow_position(session, call_sid)
                answer = self._answer(seen, heard) if seen is not None else None
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            interaction = interactions.require_interaction(session, call_sid, for_update=True)
            if answer is None or answer.seen != _snapshot(interaction):
                answer = self._answer(interaction, heard)
            if answer.next is None:
                # A late or duplicated Gather callback after the caller was already handed on.
                reply, actions = self._resume(session, interaction, answer.flow)
            else:
                state, step = answer.next
                reply = self._after_step(session, interaction, answer.flow, state, step)
        self._after_commit(actions)
        return reply

    def _answer(self, position: Interaction | interactions.FlowPosition, heard: CallerInput) -> _Answer:
        """Where the caller's answer takes the flow (pure: the flow engine, no database)."""
        flow = self._flows.version(position.flow_version, name=position.flow_name)
        seen = _snapshot(position)
        state = CallState.model_validate(position.flow_state)
        if state.finished:
            return _Answer(seen, flow, None)
        event: SpeechHeard | DigitsPressed | NoInput
        if heard.digits:
            event = DigitsPressed(digits=heard.digits)
        elif heard.speech and heard.speech.strip():
            event = SpeechHeard(text=heard.speech, confidence=heard.speech_confidence)
        else:
            event = NoInput()
        return _Answer(seen, flow, self._advance(flow, state, event))

    def _after_step(
        self, session: Session, interaction: Interaction, flow: Flow, state: CallState, step: Step
    ) -> Reply:
        """Store what the caller said and where the flow is, then hand the caller on or render the step."""
        record_state(interaction, state)
        if not isinstance(step.action, Transfer):
            return FlowReply(step)
        interaction.route_to(step.action.department, confidence=state.confidence)
        signals = CallerSignals(
            tier=state.caller.tier,
            days_since_last_contact=state.caller.days_since_last_contact,
            issue_text=state.issue_text,
        )
        return self._dispatch.route(session, interaction, flow, say=step.say, signals=signals)

    def _resume(self, session: Session, interaction: Interaction, flow: Flow) -> tuple[Reply, list[Action]]:
        """Twilio is fetching a Gather action again for a call the flow already handed on (its earlier answer was
        lost): the call is executing this request now, so whatever it was doing before is over. Hand it on again."""
        if interaction.ended:
            return Goodbye(say=(), language=flow.language, voice=flow.voice), []
        actions: list[Action] = []
        for offer in offers.live_offers(session, interaction.id):
            actions.extend(self._dispatch.close_offer(session, offer, caller_gone=True))
        return self.reroute(session, interaction, flow, say=()), actions

    def reroute(self, session: Session, interaction: Interaction, flow: Flow, *, say: tuple[str, ...]) -> Reply:
        """The caller is back with Warmline (nobody took them, a hand-off failed, a pull came too late): the next
        rep, or back in line keeping their place."""
        interaction.return_to_flow()
        return self._dispatch.route(session, interaction, flow, say=say)

    # --- the rep's side: whisper, accept, the end of the Dial -------------------------------------------------------

    def whisper(self, offer_id: int, *, rep_call_sid: str | None) -> Reply:
        """The rep answered: tell them who is calling and why, and ask them to press 1."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            offer = offers.require_offer(session, offer_id)
            interaction = offer.interaction
            flow = self._flow_of(interaction)
            if interaction.ended or not offer.ringing:
                return Goodbye(say=("Sorry, the caller has already hung up.",), language=flow.language)
            now = self._clock()
            offer.whisper_heard(rep_call_sid, now=now)
            # Ring-all: this rep answered first. Twilio hangs up the others' phones; free them now.
            for other in offers.offers_in_group(session, offer):
                if other.id != offer.id and other.ringing:
                    actions.extend(self._dispatch.close_offer(session, other, caller_gone=True))
            summary = self.whisper_text(
                session, interaction, flow, now=now, callback=offer.purpose == OfferPurpose.CALLBACK
            )
            interaction.whispered(summary)
            reply = Whisper(
                offer_id=offer.id,
                summary=summary,
                timeout=self._settings.transfer.whisper_timeout,
                language=flow.language,
                voice=flow.voice,
            )
        self._after_commit(actions)
        return reply

    def whisper_text(
        self,
        session: Session,
        interaction: Interaction,
        flow: Flow,
        *,
        now: datetime,
        callback: bool = False,
        department: str | None = None,
        handoff_from: str | None = None,
        handoff_note: str | None = None,
    ) -> str:
        """The summary a rep hears before taking the call (``handoff_*``: a colleague is handing it over)."""
        customer = interaction.customer
        past = customers.last_contact(
            session,
            customer_id=customer.id if customer else None,
            caller_number=interaction.caller_number,
            before_interaction_id=interaction.id,
        )
        return compose_whisper(
            WhisperFacts(
                customer_name=customer.name if customer else None,
                tier=customer.tier if customer else None,
                caller_number=interaction.caller_number,
                caller_city=caller_city(interaction),
                department_name=flow.department_name(department or interaction.routed_department),
                issue_text=interaction.issue_text,
                last_contact_when=past.when if past else None,
                last_contact_department=flow.department_name(past.department) if past and past.department else None,
                last_contact_words=past.issue_text if past else None,
                waited_seconds=0 if handoff_from else interaction.waited_seconds(now),
                callback=callback,
                priority_reasons=tuple(interaction.priority_reasons or ()),
                handoff_from=handoff_from,
                handoff_note=handoff_note,
            ),
            now=now,
        )

    def whisper_answer(self, offer_id: int, digits: str | None) -> Reply:
        with self._store.unit_of_work() as session:
            offer = offers.require_offer(session, offer_id)
            interaction = offer.interaction
            now = self._clock()
            if interaction.ended:
                return Goodbye(say=("Sorry, the caller has already hung up.",))
            if (digits or "").strip() != "1" or not offer.ringing:
                offer.decline(now=now)
                return Goodbye(say=("OK, passing the call on.",))
            if not reps.lock_rep(session, offer.rep_id).take_call(offer.id, now=now):
                # The reservation ran out before the key press: the caller is already being offered elsewhere.
                offer.withdraw(now=now)
                return Goodbye(say=("Sorry, that call has already been passed on.",))
            offer.accept()
            interaction.connect(offer.rep_id, now=now, callback=offer.purpose == OfferPurpose.CALLBACK)
            return Bridge()

    def dial_ended(self, offer_id: int) -> Reply:
        """The caller's <Dial> is over: either a finished conversation, or an offer nobody took (try the next rep).

        Whether the rep accepted is read from our own record of the whisper, not from DialCallStatus, whose value
        for a whisper that hangs up differs between carriers.
        """
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            leader = offers.require_offer(session, offer_id)
            interaction = leader.interaction
            flow = self._flow_of(interaction)
            moving = self._handoff_moving(session, interaction, flow)
            if moving is not None:
                return moving
            group = offers.offers_in_group(session, leader)
            talked = any(offer.taken for offer in group)
            for offer in group:
                actions.extend(self._dispatch.close_offer(session, offer))
            if talked and not interaction.ended:
                reply = self.after_conversation(interaction, flow)
            elif talked or interaction.ended:
                reply = _goodbye(flow, interaction.language)
            else:
                # Next rep, or back in line: a caller who queued before keeps their place (rank_at is kept).
                sorry = flow.phrase("find_another_rep", interaction.language)
                reply = self.reroute(session, interaction, flow, say=(sorry,))
        self._after_commit(actions)
        return reply

    def _handoff_moving(self, session: Session, interaction: Interaction, flow: Flow) -> JoinConference | None:
        """The Dial ended because a rep-to-rep hand-off moved the rep's leg into a conference: the caller follows
        (the rep's offer stays live; voice.services.handoffs frees the rep when they leave the conference)."""
        if interaction.ended:
            return None
        handoff = handoffs.active_handoff(session, interaction.id)
        if handoff is None or handoff.state is not HandoffState.MOVING:
            return None
        language = interaction.language or flow.language
        return JoinConference.leg(
            "caller",
            handoff_id=handoff.id,
            room=handoff.conference,
            say=flow.phrase("hold_for_transfer", language),
            language=language,
            voice=flow.voice_for(language),
        )

    def after_conversation(self, interaction: Interaction, flow: Flow) -> Reply:
        """The rep hung up first and the caller is still there: the flow's transfer `after` exit (a survey)."""
        state = CallState.model_validate(interaction.flow_state)
        if state.finished and isinstance(flow.nodes.get(state.node), TransferNode):
            state, step = self._advance(flow, state, TransferEnded())
            record_state(interaction, state)
            return FlowReply(step)
        return _goodbye(flow, interaction.language)

    def connect(self, offer_id: int) -> Reply:
        """A queued caller pulled by REST (or after Leave): dial the rep reserved for them."""
        with self._store.unit_of_work() as session:
            offer = offers.require_offer(session, offer_id)
            interaction = offer.interaction
            flow = self._flow_of(interaction)
            if interaction.ended:
                return Goodbye(say=(), language=flow.language)  # the caller hung up as the pull reached them
            language = interaction.language or flow.language
            dial = self._dispatch.put_through(
                session, offer, flow, say=(flow.phrase("connecting_after_wait", language),)
            )
            # None: the offer was withdrawn meanwhile; back in line.
            return dial or self.reroute(session, interaction, flow, say=())

    # --- the end of a call -----------------------------------------------------------------------------------------

    def fallback(self, *, call_sid: str | None, called: str | None, cause: BaseException | None = None) -> Fallback:
        """What a caller hears when a webhook of their call failed (``cause``): config.yaml's fallback, in their
        language.

        The language is the one the call runs in when the store can still tell (a caller who chose Spanish hears
        the apology in Spanish), else the language of the flow that answers the number. Reads only, and not at
        all when the store could not hand out or keep a connection: that read would only wait for the same fault
        while Twilio's webhook timeout runs.
        """
        settings = self._settings.fallback
        flow, language = self._flow_and_language(call_sid=call_sid if store_may_answer(cause) else None, called=called)
        return Fallback(
            apology=flow.phrase("apology", language, configured=settings.apology),
            number=settings.number or None,
            voicemail_prompt=flow.phrase("voicemail_prompt", language, configured=settings.voicemail_prompt),
            voicemail_max_length=settings.voicemail_max_length,
            language=language,
            voice=flow.voice_for(language),
            no_message=flow.phrase("no_message", language),
        )

    def _flow_and_language(self, *, call_sid: str | None, called: str | None) -> tuple[Flow, str]:
        speech = None
        if call_sid:
            try:
                with self._store.unit_of_work(read_only=True) as session:
                    speech = interactions.call_speech(session, call_sid)
            except SQLAlchemyError:  # the store may be what failed: the number's flow still knows its language
                log.warning("fallback for %s: the call's language could not be read", call_sid, exc_info=True)
        if speech is not None:
            flow = self._flows.version(speech.flow_version, name=speech.flow_name)
            return flow, speech.language or flow.language
        flow = self._flows.for_number(called) if called else self._flows.current()
        return flow, flow.language

    def call_status(
        self,
        call_sid: str,
        *,
        call_status: str,
        duration_seconds: int | None,
        caller: str | None = None,
        called: str | None = None,
    ) -> Reply:
        """Status callback: close the interaction once, whatever order and however often callbacks arrive.

        A final status for a call we never recorded (its first webhook came while the store was down) records it
        from what the callback carries (``caller``, ``called``), so every call Twilio tells us about ends as one
        interaction with an outcome."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            interaction = interactions.find_interaction(session, call_sid, for_update=True)
            if interaction is None:
                if call_status in FINAL_CALL_STATUSES and caller is not None:
                    self._record_unseen(session, call_sid, call_status, duration_seconds, caller, called)
                else:
                    log.warning("status %s for unknown call %s", call_status, call_sid)
                return Acknowledge()
            if call_status not in FINAL_CALL_STATUSES or interaction.status is InteractionStatus.CALLBACK:
                # A caller waiting for a callback has hung up on purpose: their interaction goes on without them.
                interaction.note_call_status(call_status)
                return Acknowledge()
            actions.extend(
                self.end_interaction(
                    session,
                    interaction,
                    outcome=interaction.outcome_when_call_ends(call_status),
                    call_status=call_status,
                    duration=duration_seconds,
                )
            )
        self._after_commit(actions)
        return Acknowledge()

    def record_unrecorded(self, ended: Sequence[EndedCall]) -> int:
        """Record the calls Twilio says are over that the store has no interaction for (every webhook of theirs,
        the final status callback included, failed); returns how many. Each goes the way of its final status
        callback (:meth:`call_status`), one transaction each, so one that fails leaves the others recorded."""
        with self._store.unit_of_work(read_only=True) as session:
            known = interactions.recorded_call_sids(session, [call.call_sid for call in ended])
        missing = [call for call in ended if call.call_sid not in known]
        for call in missing:
            self.call_status(
                call.call_sid,
                call_status=call.status,
                duration_seconds=call.duration,
                caller=call.caller,
                called=call.called,
            )
        return len(missing)

    def _record_unseen(
        self,
        session: Session,
        call_sid: str,
        call_status: str,
        duration: int | None,
        caller: str,
        called: str | None,
    ) -> None:
        number = caller_e164(caller, default_region=self._settings.default_region)
        our_number = caller_e164(called, default_region=self._settings.default_region) if called else None
        flow = self._flows.for_number(our_number) if our_number else self._flows.current()
        session.add(
            Interaction.heard_of_only_at_its_end(
                call_sid=call_sid,
                caller_number=number,
                called_number=our_number,
                call_status=call_status,
                duration_seconds=duration,
                flow_name=flow.name,
                flow_version=flow.version,
                now=self._clock(),
            )
        )
        log.warning(
            "call %s (%s) recorded from its final status: nothing else of it reached the store", call_sid, call_status
        )

    def end_interaction(
        self,
        session: Session,
        interaction: Interaction,
        *,
        outcome: Outcome,
        call_status: str | None,
        duration: int | None,
    ) -> list[Action]:
        """Close the interaction and free whoever was tied to it (a rep ringing or talking)."""
        now = self._clock()
        interaction.close(outcome=outcome, call_status=call_status, duration_seconds=duration, now=now)
        actions: list[Action] = []
        # A rep-to-rep transfer under way cannot finish without the caller. The conference's own participant-leave
        # says the same, but status callbacks arrive in any order: when the target rep's call ends first, the
        # hand-off must already read "cancelled", not "the target rep failed to take it".
        handoff = handoffs.active_handoff(session, interaction.id)
        if handoff is not None:
            actions.extend(cancel_handoff_without_caller(handoff, now=now))
        for offer in offers.live_offers(session, interaction.id):
            actions.extend(self._dispatch.close_offer(session, offer, caller_gone=True))
        return actions

    def interaction_summary(self, call_sid: str) -> dict[str, object]:
        """The interaction as the CRM recorded it, for people (the simulator prints it)."""
        with self._store.unit_of_work(read_only=True) as session:
            record = interactions.require_interaction(session, call_sid)
            return {
                "caller": mask_phone(record.caller_number),
                "customer": record.customer.name if record.customer else None,
                "issue": record.issue_text,
                "captured by": record.capture_method,
                "department": record.department,
                "confidence": record.confidence,
                "rep": record.rep.name if record.rep else None,
                "whisper": record.summary,
                "outcome": record.outcome.value if record.outcome else None,
                "hold seconds": record.hold_seconds,
                "priority": ", ".join(record.priority_reasons or ()) or None,
                "survey": record.survey or None,
                "flow": f"{record.flow_name}@{record.flow_version}",
            }


def record_state(interaction: Interaction, state: CallState) -> None:
    """Store the engine's state of the call and what it learnt from the caller."""
    interaction.record_flow(
        state.model_dump(mode="json"),
        issue_text=state.issue_text,
        capture_method=state.capture,
        speech_confidence=state.speech_confidence,
        language=state.language,
        survey=state.survey,
    )


def caller_city(interaction: Interaction) -> str | None:
    """Where the caller is calling from, as the carrier told us when the call came in."""
    try:
        return CallState.model_validate(interaction.flow_state).caller.city
    except ValueError:
        return None


def cancel_handoff_without_caller(handoff: Handoff, *, now: datetime) -> list[Action]:
    """The caller hung up during a hand-off: it is cancelled, and a target rep still ringing stops ringing."""
    handoff.cancel("the caller hung up during the transfer", now=now)
    return [EndCall(call_sid=handoff.to_call_sid)] if handoff.to_call_sid and handoff.to_joined_at is None else []


def store_may_answer(cause: BaseException | None) -> bool:
    """Whether one more quick read of the store is worth trying after ``cause`` broke a webhook.

    Not after the pool ran out of connections (the read would queue for pool_timeout) or a connection was lost;
    yes after anything else, a missing table or a bug included: those fail fast or do not touch the read.
    """
    if isinstance(cause, SqlAlchemyTimeout):
        return False
    return not (isinstance(cause, DBAPIError) and cause.connection_invalidated)


def _snapshot(
    position: Interaction | interactions.FlowPosition,
) -> tuple[InteractionStatus, str, dict[str, object]]:
    """What an answer was worked out from: the call has not moved on while this is unchanged."""
    return position.status, position.flow_version, position.flow_state


def _caller_facts(
    customer: customers.CallerView | None, *, now: datetime, last_call_at: datetime | None, city: str | None
) -> CallerFacts:
    """What the flow may ask about the caller. ``last_call_at``: the number's previous call, for one the CRM does
    not know (a known customer's comes with the record, across all their numbers)."""
    if customer is None:
        return CallerFacts(known=False, days_since_last_contact=_days_since(last_call_at, now), city=city)
    custom = {str(key): str(value) for key, value in customer.custom_fields.items()}
    return CallerFacts(
        known=True,
        first_name=customer.first_name or None,
        tier=customer.tier,
        language=custom.get("language"),
        open_case=customer.has_open_task,
        days_since_last_contact=_days_since(customer.last_contact_at, now),
        custom=custom,
        city=city,
    )


def _days_since(moment: datetime | None, now: datetime) -> int | None:
    # Clamped: another worker's call may have started a moment "after" this worker's now.
    return max(0, (now - moment).days) if moment else None


def _goodbye(flow: Flow, language: str | None) -> Goodbye:
    """The flow's goodbye, said in the caller's language with that language's voice."""
    language = language or flow.language
    return Goodbye(say=(flow.say_goodbye(language),), language=language, voice=flow.voice_for(language))
