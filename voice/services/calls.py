"""The call service: what happens at each step of a call, as one database transaction per webhook.

Views hand it parsed webhook facts and render whatever ``Reply`` it returns. It reads and writes the CRM only
through ``crm_sync.service``, runs the pure IVR engine, hands callers to reps through the ``Dispatcher``, and never
calls Twilio on the response path: REST actions (pulling a waiting caller out of the queue for a freed rep) are
handed to the action sink *after* the transaction commits.

The queue's own webhooks (hold loop, callbacks) live in ``voice.services.queue``; presence and housekeeping in
``voice.services.presence``; rep-to-rep hand-offs in ``voice.services.handoffs``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as SqlAlchemyTimeout
from sqlalchemy.orm import Session

from crm_sync import service as crm
from crm_sync.models import (
    CallbackState,
    Handoff,
    HandoffState,
    Interaction,
    InteractionStatus,
    Offer,
    OfferState,
    Outcome,
)
from crm_sync.phones import caller_e164, mask_phone
from ivr_flows import (
    CallerFacts,
    CallState,
    DigitsPressed,
    Flow,
    NoInput,
    Recorded,
    SpeechHeard,
    Step,
    Transfer,
    TransferEnded,
    TransferNode,
    VoicemailNode,
    advance,
    start_call,
)
from voice.domain.actions import Action, EndCall
from voice.domain.priority import CallerSignals
from voice.domain.replies import (
    Acknowledge,
    Bridge,
    Fallback,
    FlowReply,
    Goodbye,
    JoinConference,
    Reply,
    Whisper,
)
from voice.domain.whisper import WhisperFacts, compose_whisper
from voice.services.context import Service, ServiceContext
from voice.services.dispatch import (
    city_of,
    require_offer,
    waited_seconds,
    with_city,
    without_city,
)

if TYPE_CHECKING:  # the speech stack (numpy, pocketsphinx) loads only when a voicemail is transcribed
    from voice.adapters.recordings import VoicemailTranscript

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
class VoicemailJob:
    """A recording to transcribe after the webhook answered (with the flow whose words the recogniser expects)."""

    call_sid: str
    recording_url: str
    flow: Flow


@dataclass(frozen=True)
class _Decision:
    """What a caller's answer does: the flow's next state, step and stored state; None when the flow had already
    handed the caller on (a late or repeated Gather)."""

    flow: Flow
    answer: tuple[CallState, Step, dict[str, object]] | None


class CallService(Service):
    def __init__(
        self, context: ServiceContext, *, transcribe: Callable[[VoicemailJob], None] = lambda _job: None
    ) -> None:
        super().__init__(context)
        # Called after commit for each voicemail; the app transcribes it in the background.
        self._transcribe = transcribe

    # --- the IVR ---------------------------------------------------------------------------------------------------

    def incoming(self, call: IncomingCall) -> Reply:
        number = caller_e164(call.from_number, default_region=self._settings.default_region)
        called = caller_e164(call.to_number, default_region=self._settings.default_region)
        flow = self._flows.for_number(called)
        now = self._clock()
        with self._store.connection() as connection:
            # Who is calling and what the flow says first are worked out before the write transaction: on SQLite
            # it holds the one writer lock every worker queues on, so it should hold it for the INSERT only.
            customer = crm.caller_view(connection, number, call_sid=call.call_sid)
            last_call = None if customer else crm.last_call_from(connection, number, other_than=call.call_sid)
            state, step = start_call(
                flow,
                _caller_facts(customer, now=now, last_call_at=last_call),
                now=now,
                classifier=self._flows.classifier_for(flow),
            )
            flow_state = with_city(state, call.caller_city)
            with self._store.writing(connection) as session:
                row, created = crm.insert_interaction(
                    session,
                    call_sid=call.call_sid,
                    caller_number=number,
                    customer_id=customer.id if customer else None,
                    flow_name=flow.name,
                    flow_version=flow.version,
                    flow_state=flow_state,
                    now=now,
                    called_number=called,
                )
                if log.isEnabledFor(logging.INFO):  # masking costs a regex: only when the line is written
                    log.info(
                        "call %s from %s (%s) on flow %s@%s",
                        call.call_sid,
                        mask_phone(number),
                        "known" if customer else "new",
                        flow.name,
                        flow.version,
                    )
                # A retried Voice URL (same CallSid) starts over on the same interaction.
                return self._after_step(session, row, flow, state, step, flow_state=None if created else flow_state)

    def caller_input(self, call_sid: str, heard: CallerInput) -> Reply:
        actions: list[Action] = []
        with self._store.connection() as connection:
            # On SQLite the flow engine and the classifier run before the write transaction (see ``incoming`` for
            # why), on the call as last stored; under the lock that decision stands only if the call has not moved
            # on meanwhile (a duplicated Gather, a hang-up), otherwise it is taken again on what is there now.
            # PostgreSQL locks only this call's row: one read under the lock is cheaper than two round trips.
            seen = crm.call_row(connection, call_sid) if self._store.single_writer else None
            decided = self._decide(seen, heard) if seen is not None else None
            with self._store.writing(connection) as session:
                row = crm.call_row(session, call_sid, for_update=True)
                if row is None:
                    raise crm.UnknownInteraction(call_sid)
                if decided is None or row != seen:
                    decided = self._decide(row, heard)
                if decided.answer is None:
                    # A late or duplicated Gather callback after the caller was already handed on.
                    reply, actions = self._resume(session, row, decided.flow)
                else:
                    state, step, flow_state = decided.answer
                    reply = self._after_step(session, row, decided.flow, state, step, flow_state=flow_state)
        self._after_commit(actions)
        return reply

    def _decide(self, row: crm.CallRow, heard: CallerInput) -> _Decision:
        """Where the caller's answer takes the flow (pure: the flow engine, no database)."""
        flow = self._flows.version(row.flow_version, name=row.flow_name)
        state = CallState.model_validate(without_city(row.flow_state))
        if state.finished:
            return _Decision(flow, None)
        event: SpeechHeard | DigitsPressed | NoInput
        if heard.digits:
            event = DigitsPressed(digits=heard.digits)
        elif heard.speech and heard.speech.strip():
            event = SpeechHeard(text=heard.speech, confidence=heard.speech_confidence)
        else:
            event = NoInput()
        state, step = advance(flow, state, event, now=self._clock(), classifier=self._flows.classifier_for(flow))
        return _Decision(flow, (state, step, with_city(state, city_of(row.flow_state))))

    def _after_step(
        self,
        session: crm.Db,
        call: crm.CallRow,
        flow: Flow,
        state: CallState,
        step: Step,
        *,
        flow_state: dict[str, object] | None,
    ) -> Reply:
        """Store what the caller said and where the flow is (one UPDATE), then hand on or render the step."""
        values: dict[str, object] = {}
        if flow_state is not None:
            values.update(
                flow_state=flow_state,
                issue_text=state.issue_text,
                capture_method=state.capture,
                speech_confidence=state.speech_confidence,
            )
            # Only when there is something: a JSON column costs encoding on every gather.
            if state.language:
                values["language"] = state.language
            if state.survey:
                values["survey"] = dict(state.survey)
        reply: Reply
        if isinstance(step.action, Transfer):
            values.update(department=step.action.department, confidence=state.confidence)
            routed = self._dispatch.route_caller(
                session,
                interaction_id=call.id,
                department=step.action.department,
                flow=flow,
                say=step.say,
                enqueued_at=call.enqueued_at,
                rank_at=call.rank_at,
                offered=call.offered,
                signals=CallerSignals(
                    tier=state.caller.tier,
                    days_since_last_contact=state.caller.days_since_last_contact,
                    issue_text=state.issue_text,
                ),
                language=state.language,
            )
            values.update(routed.values)
            reply = routed.reply
        else:
            reply = FlowReply(step)
        if values:
            crm.update_interaction(session, call.id, **values)
        return reply

    def _resume(self, db: crm.Db, call: crm.CallRow, flow: Flow) -> tuple[Reply, list[Action]]:
        """Twilio is fetching a Gather action again for a call the flow already handed on (its earlier answer was
        lost): the call is executing this request now, so whatever it was doing before is over. Hand it on again."""
        if call.status is InteractionStatus.ENDED:
            return Goodbye(say=(), language=flow.language, voice=flow.voice), []
        actions: list[Action] = []
        # Rare path: an ORM session joined to the same transaction.
        with crm.orm_session(db) as session:
            for offer in crm.live_offers(session, call.id):
                if offer.state is not OfferState.ACCEPTED:
                    offer.state = OfferState.CANCELLED
                actions.extend(self._end_offer(session, offer))
            session.flush()
        routed = self._dispatch.route_caller(
            db,
            interaction_id=call.id,
            department=call.department or "general",
            flow=flow,
            say=(),
            enqueued_at=call.enqueued_at,
            rank_at=call.rank_at,
            signals=self._dispatch.signals_from_state(call.flow_state, None),
            language=_language_of(call.flow_state),
        )
        crm.update_interaction(db, call.id, **routed.values)
        return routed.reply, actions

    def reroute(self, session: Session, interaction: Interaction, flow: Flow, *, say: tuple[str, ...]) -> Reply:
        """Hand a caller held as an ORM object to the next rep or back into line (they keep their place)."""
        session.flush()
        routed = self._dispatch.route_caller(
            session,
            interaction_id=interaction.id,
            department=interaction.department or "general",
            flow=flow,
            say=say,
            enqueued_at=interaction.enqueued_at,
            rank_at=interaction.rank_at,
            signals=self._dispatch.signals_from_state(interaction.flow_state, interaction.issue_text),
            language=interaction.language,
        )
        crm.update_interaction(session, interaction.id, **routed.values)
        session.expire(interaction)
        return routed.reply

    # --- the rep's side: whisper, accept, the end of the Dial -------------------------------------------------------

    def whisper(self, offer_id: int, *, rep_call_sid: str | None) -> Reply:
        """The rep answered: tell them who is calling and why, and ask them to press 1."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            offer = require_offer(session, offer_id)
            interaction = offer.interaction
            flow = self._flow_of(interaction)
            if interaction.status is InteractionStatus.ENDED or offer.state is not OfferState.RINGING:
                return Goodbye(say=("Sorry, the caller has already hung up.",), language=flow.language)
            now = self._clock()
            offer.whispered_at = now
            offer.rep_call_sid = rep_call_sid
            if offer.group_id is not None:
                # Ring-all: this rep answered first. Twilio hangs up the others' phones; free them now.
                for other in crm.offers_in_group(session, offer.group_id):
                    if other.id != offer.id and other.state is OfferState.RINGING:
                        other.state = OfferState.CANCELLED
                        other.ended_at = now
                        session.flush()
                        actions.extend(self._dispatch.settle(session, other, crm.OfferEnd.CANCELLED))
            summary = self.whisper_text(session, interaction, flow, now=now, callback=offer.purpose == "callback")
            interaction.summary = summary
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
        past = crm.last_contact(
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
                caller_city=city_of(interaction.flow_state),
                department_name=flow.department_name(department or interaction.department or "general"),
                issue_text=interaction.issue_text,
                last_contact_when=past.when if past else None,
                last_contact_topic=_topic(flow, past),
                waited_seconds=0 if handoff_from else waited_seconds(interaction, now),
                callback=callback,
                priority_reasons=tuple(interaction.priority_reasons or ()),
                handoff_from=handoff_from,
                handoff_note=handoff_note,
            ),
            now=now,
        )

    def whisper_answer(self, offer_id: int, digits: str | None) -> Reply:
        with self._store.unit_of_work() as session:
            offer = require_offer(session, offer_id)
            interaction = offer.interaction
            now = self._clock()
            if interaction.status is InteractionStatus.ENDED:
                return Goodbye(say=("Sorry, the caller has already hung up.",))
            if (digits or "").strip() != "1" or offer.state is not OfferState.RINGING:
                if offer.state is OfferState.RINGING:
                    offer.state = OfferState.DECLINED
                    offer.ended_at = now
                return Goodbye(say=("OK, passing the call on.",))
            if not crm.mark_rep_on_call(session, offer.rep_id, offer_id=offer.id, now=now):
                # The reservation ran out before the key press: the caller is already being offered elsewhere.
                offer.state = OfferState.CANCELLED
                offer.ended_at = now
                return Goodbye(say=("Sorry, that call has already been passed on.",))
            offer.state = OfferState.ACCEPTED
            interaction.status = InteractionStatus.CONNECTED
            interaction.rep_id = offer.rep_id
            interaction.answered_at = interaction.answered_at or now
            if offer.purpose == "callback":
                # hold_seconds stays what the caller spent on hold before choosing the callback.
                interaction.outcome = Outcome.CALLBACK
                callback = crm.callback_for(session, interaction.id)
                if callback is not None:
                    callback.state = CallbackState.CONNECTED
            else:
                interaction.outcome = Outcome.ANSWERED
                interaction.hold_seconds = waited_seconds(interaction, now)
            return Bridge()

    def dial_ended(self, offer_id: int) -> Reply:
        """The caller's <Dial> is over: either a finished conversation, or an offer nobody took (try the next rep).

        Whether the rep accepted is read from our own record of the whisper, not from DialCallStatus, whose value
        for a whisper that hangs up differs between carriers.
        """
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            leader = require_offer(session, offer_id)
            interaction = leader.interaction
            flow = self._flow_of(interaction)
            moving = self._handoff_moving(session, interaction, flow)
            if moving is not None:
                return moving
            offers = crm.offers_in_group(session, leader.group_id) if leader.group_id is not None else [leader]
            accepted = [offer for offer in offers if offer.state in (OfferState.ACCEPTED, OfferState.ENDED)]
            for offer in offers:
                actions.extend(self._end_offer(session, offer))
            if accepted and interaction.status is not InteractionStatus.ENDED:
                reply = self.after_conversation(interaction, flow)
            elif accepted or interaction.status is InteractionStatus.ENDED:
                reply = _goodbye(flow, interaction.language)
            else:
                # Next rep, or back in line: a caller who queued before keeps their place (rank_at is kept).
                interaction.status = InteractionStatus.IN_FLOW
                sorry = flow.phrase("find_another_rep", interaction.language)
                reply = self.reroute(session, interaction, flow, say=(sorry,))
        self._after_commit(actions)
        return reply

    def _handoff_moving(self, session: Session, interaction: Interaction, flow: Flow) -> JoinConference | None:
        """The Dial ended because a rep-to-rep hand-off moved the rep's leg into a conference: the caller follows
        (the rep's offer stays live; voice.services.handoffs frees the rep when they leave the conference)."""
        if interaction.status is InteractionStatus.ENDED:
            return None
        handoff = crm.active_handoff(session, interaction.id)
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

    def _end_offer(self, session: Session, offer: Offer) -> list[Action]:
        """Close one offer of a finished Dial and settle its rep by how it went."""
        now = self._clock()
        end: crm.OfferEnd
        if offer.state in (OfferState.ACCEPTED, OfferState.ENDED):
            offer.state, end = OfferState.ENDED, crm.OfferEnd.TALKED
        elif offer.state in (OfferState.RINGING, OfferState.PENDING):
            # Rang out, or heard the whisper and pressed nothing: a missed offer.
            offer.state, end = OfferState.DECLINED, crm.OfferEnd.MISSED
        elif offer.state is OfferState.DECLINED:
            end = crm.OfferEnd.DECLINED
        else:
            end = crm.OfferEnd.CANCELLED
        offer.ended_at = offer.ended_at or now
        session.flush()
        return self._dispatch.settle(session, offer, end)

    def after_conversation(self, interaction: Interaction, flow: Flow) -> Reply:
        """The rep hung up first and the caller is still there: the flow's transfer `after` exit (a survey)."""
        state = CallState.model_validate(without_city(interaction.flow_state))
        if state.finished and isinstance(flow.nodes.get(state.node), TransferNode):
            state, step = advance(
                flow, state, TransferEnded(), now=self._clock(), classifier=self._flows.classifier_for(flow)
            )
            interaction.flow_state = with_city(state, city_of(interaction.flow_state))
            return FlowReply(step)
        return _goodbye(flow, interaction.language)

    def connect(self, offer_id: int) -> Reply:
        """A queued caller pulled by REST (or after Leave): dial the rep reserved for them."""
        with self._store.unit_of_work() as session:
            offer = require_offer(session, offer_id)
            interaction = offer.interaction
            flow = self._flow_of(interaction)
            now = self._clock()
            if interaction.status is InteractionStatus.ENDED:
                return Goodbye(say=(), language=flow.language)  # the caller hung up as the pull reached them
            if offer.state in (OfferState.PENDING, OfferState.RINGING) and crm.extend_reservation(
                session, offer.rep_id, offer_id=offer.id, until=self._dispatch.ring_lease(now)
            ):
                offer.state = OfferState.RINGING
                interaction.status = InteractionStatus.OFFERING
                interaction.rep_id = offer.rep_id
                language = interaction.language or flow.language
                return self._dispatch.dial(
                    ((offer.id, offer.rep.phone),),
                    flow,
                    say=(flow.phrase("connecting_after_wait", language),),
                    language=language,
                )
            # The offer was withdrawn meanwhile: back in line.
            interaction.status = InteractionStatus.IN_FLOW
            return self.reroute(session, interaction, flow, say=())

    # --- voicemail -------------------------------------------------------------------------------------------------

    def voicemail_saved(self, call_sid: str, *, recording_url: str, duration_seconds: int) -> Reply:
        """File the message on the customer's record with a follow-up task, now; transcribe it in the background.

        The task and the recording link are committed before any transcription is tried, so a failing engine or
        download can only leave the transcript empty (with the reason), never lose the message.
        """
        with self._store.unit_of_work() as session:
            interaction = crm.require_interaction(session, call_sid, for_update=True)
            flow = self._flow_of(interaction)
            interaction.recording_url = recording_url
            interaction.outcome = Outcome.VOICEMAIL
            caller = interaction.customer.name if interaction.customer else mask_phone(interaction.caller_number)
            about = f" about {flow.department_name(interaction.department)}" if interaction.department else ""
            crm.file_task(
                session,
                interaction=interaction,
                kind="voicemail",
                note=f"Return the voicemail from {caller}{about} ({duration_seconds} s): {recording_url}",
            )
            log.info("voicemail of %ss on %s filed", duration_seconds, call_sid)
            language = interaction.language or flow.language
            reply: Reply = Goodbye(
                say=(flow.phrase("message_taken", language),), language=language, voice=flow.voice_for(language)
            )
            state = CallState.model_validate(without_city(interaction.flow_state))
            if not state.finished and isinstance(flow.nodes.get(state.node), VoicemailNode):
                # The flow asked for this message (a `voicemail` node): it says what comes next.
                recorded = Recorded(recording_url=recording_url, duration_seconds=duration_seconds)
                state, step = advance(
                    flow, state, recorded, now=self._clock(), classifier=self._flows.classifier_for(flow)
                )
                interaction.flow_state = with_city(state, city_of(interaction.flow_state))
                if not isinstance(step.action, Transfer):
                    reply = FlowReply(step)
        if recording_url:
            self._transcribe(VoicemailJob(call_sid=call_sid, recording_url=recording_url, flow=flow))
        return reply

    def store_transcript(self, call_sid: str, transcript: VoicemailTranscript) -> None:
        with self._store.unit_of_work() as session:
            crm.record_transcript(
                session,
                call_sid,
                text=transcript.text,
                engine=transcript.engine,
                confidence=transcript.confidence,
                error=transcript.error,
            )

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
                with self._store.reading() as db:
                    speech = crm.call_speech(db, call_sid)
            except SQLAlchemyError:  # the store may be what failed: the number's flow still knows its language
                log.warning("fallback for %s: the call's language could not be read", call_sid, exc_info=True)
        if speech is not None:
            flow = self._flows.version(speech.flow_version, name=speech.flow_name)
            return flow, speech.language or flow.language
        flow = self._flows.for_number(called) if called else self._flows.current()
        return flow, flow.language

    def call_status(self, call_sid: str, *, call_status: str, duration_seconds: int | None) -> Reply:
        """Status callback: close the interaction once, whatever order and however often callbacks arrive."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            interaction = crm.get_interaction(session, call_sid, for_update=True)
            if interaction is None:
                log.warning("status %s for unknown call %s", call_status, call_sid)
                return Acknowledge()
            if call_status not in FINAL_CALL_STATUSES or interaction.status is InteractionStatus.CALLBACK:
                # A caller waiting for a callback has hung up on purpose: their interaction goes on without them.
                if interaction.status is not InteractionStatus.ENDED:
                    interaction.last_call_status = call_status
                return Acknowledge()
            actions.extend(
                self.end_interaction(
                    session,
                    interaction,
                    outcome=_outcome_at_end(interaction, call_status),
                    call_status=call_status,
                    duration=duration_seconds,
                )
            )
        self._after_commit(actions)
        return Acknowledge()

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
        crm.close_interaction(
            session,
            interaction,
            outcome=outcome,
            call_status=call_status,
            duration_seconds=duration,
            now=self._clock(),
        )
        actions: list[Action] = []
        # A rep-to-rep transfer under way cannot finish without the caller. The conference's own participant-leave
        # says the same, but status callbacks arrive in any order: when the target rep's call ends first, the
        # hand-off must already read "cancelled", not "the target rep failed to take it".
        handoff = crm.active_handoff(session, interaction.id)
        if handoff is not None:
            actions.extend(cancel_handoff_without_caller(handoff, now=self._clock()))
        for offer in crm.live_offers(session, interaction.id):
            if offer.state is not OfferState.ACCEPTED:
                offer.state = OfferState.CANCELLED
            actions.extend(self._end_offer(session, offer))
        return actions

    def interaction_summary(self, call_sid: str) -> dict[str, object]:
        """The interaction as the CRM recorded it, for people (the simulator prints it)."""
        with self._store.unit_of_work() as session:
            record = crm.require_interaction(session, call_sid)
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


def cancel_handoff_without_caller(handoff: Handoff, *, now: datetime) -> list[Action]:
    """The caller hung up during a hand-off: it is cancelled, and a target rep still ringing stops ringing."""
    crm.cancel_handoff(handoff, reason="the caller hung up during the transfer", now=now)
    return [EndCall(call_sid=handoff.to_call_sid)] if handoff.to_call_sid and handoff.to_joined_at is None else []


def store_may_answer(cause: BaseException | None) -> bool:
    """Whether one more quick read of the store is worth trying after ``cause`` broke a webhook.

    Not after the pool ran out of connections (the read would queue for pool_timeout) or a connection was lost;
    yes after anything else, a missing table or a bug included: those fail fast or do not touch the read.
    """
    if isinstance(cause, SqlAlchemyTimeout):
        return False
    return not (isinstance(cause, DBAPIError) and cause.connection_invalidated)


def _caller_facts(
    customer: crm.CallerView | None, *, now: datetime, last_call_at: datetime | None = None
) -> CallerFacts:
    """What the flow may ask about the caller. ``last_call_at``: the number's previous call, for one the CRM does
    not know (a known customer's comes with the record, across all their numbers)."""
    if customer is None:
        return CallerFacts(known=False, days_since_last_contact=_days_since(last_call_at, now))
    custom = {str(key): str(value) for key, value in customer.custom_fields.items()}
    since = _days_since(customer.last_contact_at, now)
    return CallerFacts(
        known=True,
        first_name=customer.first_name or None,
        tier=customer.tier,
        language=custom.get("language"),
        open_case=customer.has_open_task,
        days_since_last_contact=since,
        custom=custom,
    )


def _days_since(moment: datetime | None, now: datetime) -> int | None:
    # Clamped: another worker's call may have started a moment "after" this worker's now.
    return max(0, (now - moment).days) if moment else None


def _outcome_at_end(interaction: Interaction, call_status: str) -> Outcome:
    if interaction.outcome is not None:
        return interaction.outcome
    if interaction.answered_at is not None:
        return Outcome.ANSWERED
    if call_status in ("failed", "busy", "no-answer", "canceled") and interaction.status is InteractionStatus.IN_FLOW:
        return Outcome.FAILED
    return Outcome.ABANDONED


def _topic(flow: Flow, past: crm.PastContact | None) -> str | None:
    if past is None:
        return None
    if past.issue_text:
        words = past.issue_text.split()
        return " ".join(words[:12]) + ("…" if len(words) > 12 else "")
    return flow.department_name(past.department) if past.department else None


def _goodbye(flow: Flow, language: str | None) -> Goodbye:
    """The flow's goodbye, said in the caller's language with that language's voice."""
    language = language or flow.language
    return Goodbye(say=(flow.say_goodbye(language),), language=language, voice=flow.voice_for(language))


def _language_of(flow_state: Mapping[str, object]) -> str | None:
    """The language the caller chose, from a stored call state (None: the flow's default)."""
    language = flow_state.get("language")
    return language if isinstance(language, str) and language else None
