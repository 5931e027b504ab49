"""The call service: what happens at each step of a call, as one database transaction per webhook.

Views hand it parsed webhook facts and render whatever ``Reply`` it returns. It reads and writes the CRM only
through ``crm_sync.service``, runs the pure IVR engine, reserves reps atomically, and never calls Twilio on the
response path: when a freed rep should pull a waiting caller out of the queue, the REST redirect is handed to the
background runner *after* the transaction commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from crm_sync import service as crm
from crm_sync.db import Store
from crm_sync.models import Interaction, InteractionStatus, Offer, OfferState, Outcome, Rep, RepState, utcnow
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
from voice.config import Settings
from voice.flow_library import FlowLibrary
from voice.replies import (
    Acknowledge,
    Bridge,
    DialRep,
    EnqueueCaller,
    FlowReply,
    Goodbye,
    HoldLoop,
    LeaveQueue,
    Reply,
    Voicemail,
    Whisper,
)
from voice.whisper import WhisperFacts, compose_whisper

if TYPE_CHECKING:  # the speech stack (numpy, pocketsphinx) loads only when a voicemail is transcribed
    from voice.recordings import VoicemailTranscript

log = logging.getLogger(__name__)

FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# A pulled caller's REST redirect normally lands within a second; past this the hold loop takes over (REST failed).
PUSH_GRACE_SECONDS = 10


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
class Pull:
    """A queued caller to redirect (REST) to ``/voice/connect`` because a rep was reserved for them."""

    call_sid: str
    offer_id: int


@dataclass(frozen=True)
class VoicemailJob:
    """A recording to transcribe after the webhook answered (with the flow whose words the recogniser expects)."""

    call_sid: str
    recording_url: str
    flow: Flow


@dataclass(frozen=True)
class RepView:
    name: str
    phone: str
    state: str
    departments: tuple[str, ...]


class CallService:
    def __init__(
        self,
        *,
        store: Store,
        flows: FlowLibrary,
        settings: Settings,
        pull_caller: Callable[[Pull], None],
        transcribe: Callable[[VoicemailJob], None] = lambda _job: None,
    ) -> None:
        self._store = store
        self._flows = flows
        self._settings = settings
        # Called after commit for each caller to pull out of a queue; the app runs it in the background.
        self._pull_caller = pull_caller
        # Called after commit for each voicemail; the app transcribes it in the background.
        self._transcribe = transcribe
        #: What time the flow's `hours` nodes see (tests set a fixed one).
        self.clock: Callable[[], datetime] = utcnow

    # --- the IVR ---------------------------------------------------------------------------------------------------

    def incoming(self, call: IncomingCall) -> Reply:
        number = caller_e164(call.from_number, default_region=self._settings.default_region)
        flow = self._flows.for_number(caller_e164(call.to_number, default_region=self._settings.default_region))
        now = self.clock()
        with self._store.transaction() as session:
            customer = crm.caller_view(session, number)
            state, step = start_call(flow, _caller_facts(customer, now=now), now=now)
            flow_state = _with_city(state, call.caller_city)
            row, created = crm.insert_interaction(
                session,
                call_sid=call.call_sid,
                caller_number=number,
                customer_id=customer.id if customer else None,
                flow_name=flow.name,
                flow_version=flow.version,
                flow_state=flow_state,
                now=utcnow(),
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
        with self._store.transaction() as session:
            row = crm.call_row(session, call_sid, for_update=True)
            if row is None:
                raise crm.UnknownInteraction(call_sid)
            flow = self._flows.version(row.flow_version, name=row.flow_name)
            state = CallState.model_validate(_without_city(row.flow_state))
            if state.finished:
                # A late or duplicated Gather callback after the caller was already handed on.
                return self._resume(session, row, flow)
            event: SpeechHeard | DigitsPressed | NoInput
            if heard.digits:
                event = DigitsPressed(digits=heard.digits)
            elif heard.speech and heard.speech.strip():
                event = SpeechHeard(text=heard.speech, confidence=heard.speech_confidence)
            else:
                event = NoInput()
            state, step = advance(flow, state, event, now=self.clock())
            flow_state = _with_city(state, _city(row.flow_state))
            return self._after_step(session, row, flow, state, step, flow_state=flow_state)

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
        if isinstance(step.action, Transfer):
            values.update(department=step.action.department, confidence=state.confidence)
            reply, transfer_values = self._transfer(
                session, call.id, step.action.department, call.enqueued_at, flow, say=step.say, offered=call.offered
            )
            values.update(transfer_values)
        else:
            reply = FlowReply(step)
        if values:
            crm.update_interaction(session, call.id, **values)
        return reply

    def _resume(self, db: crm.Db, call: crm.CallRow, flow: Flow) -> Reply:
        """Twilio is fetching a Gather action again for a call the flow already handed on (its earlier answer was
        lost): the call is executing this request now, so whatever it was doing before is over. Hand it on again."""
        if call.status is InteractionStatus.ENDED:
            return Goodbye(say=(), language=flow.language, voice=flow.voice)
        # Rare path: an ORM session joined to the same transaction.
        with Session(bind=db) if isinstance(db, Connection) else nullcontext(db) as session:
            offer = crm.open_offer(session, call.id)
            if offer is not None:
                offer.state = OfferState.CANCELLED
                offer.ended_at = utcnow()
                crm.release_rep(session, offer.rep_id, now=utcnow())
            session.flush()
        reply, values = self._transfer(db, call.id, call.department or "general", call.enqueued_at, flow, say=())
        crm.update_interaction(db, call.id, **values)
        return reply

    # --- handing the caller to a rep -------------------------------------------------------------------------------

    def _transfer(
        self,
        session: crm.Db,
        interaction_id: int,
        department: str,
        enqueued_at: datetime | None,
        flow: Flow,
        *,
        say: tuple[str, ...],
        offered: bool = True,
    ) -> tuple[Reply, dict[str, object]]:
        """Reserve the longest-idle rep with the skill, or queue the caller. Callers already waiting go first.

        ``offered``: whether any rep may have been offered this call before (those are not offered it again).
        Returns the reply and the interaction's new column values, for the caller to write in its one UPDATE.
        """
        now = utcnow()
        rep: crm.RepRow | None = None
        already_offered = crm.offered_rep_ids(session, interaction_id) if offered else set()
        probe = crm.probe_department(session, department, exclude_rep_ids=already_offered)
        if probe.free and not probe.waiting:
            rep = crm.reserve_rep(session, department=department, exclude_rep_ids=already_offered, now=now)
        if rep is not None:
            offer_id = crm.insert_offer(
                session, interaction_id=interaction_id, rep_id=rep.id, state=OfferState.RINGING, now=now
            )
            connecting = f"Connecting you to {flow.department_name(department)}."
            reply = self._dial(offer_id, rep.phone, flow, say=(*say, connecting))
            return reply, {"status": InteractionStatus.OFFERING, "rep_id": rep.id}
        if not probe.on_duty:
            # Nobody on duty, or everyone on duty already let this caller's call ring out: waiting would be for
            # nothing, so say so and take a message rather than hold the caller until max_wait.
            log.warning("no rep on duty for %s; offering voicemail (interaction %s)", department, interaction_id)
            sorry = f"Nobody from {flow.department_name(department)} can take your call right now."
            return self._voicemail(flow, lead=(*say, sorry)), {"outcome": Outcome.NO_REP}
        queued = EnqueueCaller(
            queue_name=department,
            say=(*say, self._settings.queue.hold_intro),
            language=flow.language,
            voice=flow.voice,
        )
        return queued, {"status": InteractionStatus.QUEUED, "rep_id": None, "enqueued_at": enqueued_at or now}

    def _transfer_orm(self, session: Session, interaction: Interaction, flow: Flow, *, say: tuple[str, ...]) -> Reply:
        """``_transfer`` for the paths that hold the interaction as an ORM object (rarer webhooks)."""
        session.flush()
        reply, values = self._transfer(
            session, interaction.id, interaction.department or "general", interaction.enqueued_at, flow, say=say
        )
        crm.update_interaction(session, interaction.id, **values)
        session.expire(interaction)
        return reply

    def _dial(self, offer_id: int, rep_phone: str, flow: Flow, *, say: tuple[str, ...]) -> DialRep:
        caller_id = self._settings.transfer.caller_id
        return DialRep(
            offer_id=offer_id,
            rep_phone=rep_phone,
            say=say,
            ring_timeout=self._settings.transfer.ring_timeout,
            caller_id=None if caller_id == "caller" else caller_id,
            language=flow.language,
            voice=flow.voice,
        )

    def _voicemail(self, flow: Flow, *, lead: tuple[str, ...]) -> Voicemail:
        return Voicemail(
            say=(*lead, self._settings.fallback.voicemail_prompt),
            max_length=self._settings.fallback.voicemail_max_length,
            language=flow.language,
            voice=flow.voice,
        )

    def whisper(self, offer_id: int) -> Reply:
        """The rep answered: tell them who is calling and why, and ask them to press 1."""
        with self._store.unit_of_work() as session:
            offer = _require_offer(session, offer_id)
            interaction = offer.interaction
            flow = self._flows.version(interaction.flow_version, name=interaction.flow_name)
            if interaction.status is InteractionStatus.ENDED or offer.state is not OfferState.RINGING:
                return Goodbye(say=("Sorry, the caller has already hung up.",), language=flow.language)
            now = utcnow()
            customer = interaction.customer
            past = crm.last_contact(session, customer.id, before_interaction_id=interaction.id) if customer else None
            summary = compose_whisper(
                WhisperFacts(
                    customer_name=customer.name if customer else None,
                    tier=customer.tier if customer else None,
                    caller_number=interaction.caller_number,
                    caller_city=_city(interaction.flow_state),
                    department_name=flow.department_name(interaction.department or "general"),
                    issue_text=interaction.issue_text,
                    last_contact_when=past.when if past else None,
                    last_contact_topic=_topic(flow, past),
                    waited_seconds=_waited(interaction, now),
                ),
                now=now,
            )
            interaction.summary = summary
            return Whisper(
                offer_id=offer.id,
                summary=summary,
                timeout=self._settings.transfer.whisper_timeout,
                language=flow.language,
                voice=flow.voice,
            )

    def whisper_answer(self, offer_id: int, digits: str | None) -> Reply:
        with self._store.unit_of_work() as session:
            offer = _require_offer(session, offer_id)
            interaction = offer.interaction
            now = utcnow()
            if interaction.status is InteractionStatus.ENDED:
                return Goodbye(say=("Sorry, the caller has already hung up.",))
            if (digits or "").strip() != "1" or offer.state is not OfferState.RINGING:
                offer.state = OfferState.DECLINED
                offer.ended_at = now
                return Goodbye(say=("OK, passing the call on.",))
            offer.state = OfferState.ACCEPTED
            crm.mark_rep_on_call(session, offer.rep_id, now=now)
            interaction.status = InteractionStatus.CONNECTED
            interaction.rep_id = offer.rep_id
            interaction.answered_at = now
            interaction.outcome = Outcome.ANSWERED
            interaction.hold_seconds = _waited(interaction, now)
            return Bridge()

    def dial_ended(self, offer_id: int) -> Reply:
        """The caller's <Dial> is over: either a finished conversation, or an offer nobody took (try the next rep).

        Whether the rep accepted is read from our own record of the whisper, not from DialCallStatus, whose value
        for a whisper that hangs up differs between carriers.
        """
        pulls: list[Pull] = []
        with self._store.unit_of_work() as session:
            offer = _require_offer(session, offer_id)
            interaction = offer.interaction
            flow = self._flows.version(interaction.flow_version, name=interaction.flow_name)
            now = utcnow()
            accepted = offer.state in (OfferState.ACCEPTED, OfferState.ENDED)
            if offer.state in (OfferState.RINGING, OfferState.PENDING):
                offer.state = OfferState.DECLINED
            if offer.ended_at is None:
                offer.ended_at = now
            if accepted:
                offer.state = OfferState.ENDED
            if crm.release_rep(session, offer.rep_id, now=now):
                pulls.extend(self._pull_for_freed_rep(session, offer.rep_id))
            if accepted and interaction.status is not InteractionStatus.ENDED:
                reply = self._after_conversation(interaction, flow)
            elif accepted or interaction.status is InteractionStatus.ENDED:
                reply = Goodbye(
                    say=(f"Thanks for calling {flow.company}. Goodbye.",), language=flow.language, voice=flow.voice
                )
            else:
                # Next rep, or back in line: a caller who queued before keeps their place (enqueued_at is kept).
                interaction.status = InteractionStatus.IN_FLOW
                reply = self._transfer_orm(session, interaction, flow, say=("Let me find someone else for you.",))
        self._after_commit(pulls)
        return reply

    def _after_conversation(self, interaction: Interaction, flow: Flow) -> Reply:
        """The rep hung up first and the caller is still there: the flow's transfer `after` exit (a survey)."""
        state = CallState.model_validate(_without_city(interaction.flow_state))
        if state.finished and isinstance(flow.nodes.get(state.node), TransferNode):
            state, step = advance(flow, state, TransferEnded(), now=self.clock())
            interaction.flow_state = _with_city(state, _city(interaction.flow_state))
            return FlowReply(step)
        return Goodbye(say=(f"Thanks for calling {flow.company}. Goodbye.",), language=flow.language, voice=flow.voice)

    # --- the queue -------------------------------------------------------------------------------------------------

    def hold(self, call_sid: str, *, queue_seconds: int) -> Reply:
        """One turn of the waitUrl loop. Leaves the queue when a rep is reserved for this caller, or at max wait."""
        with self._store.unit_of_work() as session:
            # No row lock here: the loop runs every few seconds for every waiting caller, and a lock held by it
            # would make a freed rep's push (which skips locked callers) pass this caller over.
            interaction = crm.require_interaction(session, call_sid)
            flow = self._flows.version(interaction.flow_version, name=interaction.flow_name)
            now = utcnow()
            offer = crm.open_offer(session, interaction.id)
            if offer is not None and offer.state is OfferState.PENDING:
                if (now - offer.created_at).total_seconds() >= PUSH_GRACE_SECONDS:
                    return LeaveQueue()  # the REST pull did not arrive; connect through the Enqueue action
            elif interaction.status is InteractionStatus.QUEUED and self._reserve_for_queued(session, interaction):
                return LeaveQueue()
            if queue_seconds >= self._settings.queue.max_wait and offer is None:
                return LeaveQueue()
            position = crm.queue_position(session, interaction)
            return HoldLoop(
                message=self._settings.queue.hold_message.format(position=position),
                music_url=self._settings.queue.hold_music_url,
                pause_seconds=self._settings.queue.hold_interval,
                language=flow.language,
                voice=flow.voice,
            )

    def _reserve_for_queued(self, session: Session, interaction: Interaction) -> bool:
        """Safety net for a missed push: the head of the line takes a free rep itself.

        Only the head tries, so the hold loop never lets a later caller overtake; a rep who turned the head down
        is pulled to the next caller by the push when they were released.
        """
        department = interaction.department or "general"
        declined = crm.offered_rep_ids(session, interaction.id)
        # Look before locking: normally nobody is free (a freed rep pulls the caller by push), and a lock taken on
        # every turn of the loop would make that push skip this caller.
        if not crm.free_rep_exists(session, department=department, exclude_rep_ids=declined):
            return False
        if crm.queue_position(session, interaction) != 1:
            return False
        if not crm.lock_queued_interaction(session, interaction.id):
            return False  # a push is handing this caller a rep right now
        rep = crm.reserve_rep(session, department=department, exclude_rep_ids=declined, now=utcnow())
        if rep is None:
            return False
        self._offer_pending(session, interaction, rep)
        return True

    def queue_exit(self, call_sid: str, *, result: str, queue_seconds: int) -> Reply:
        """The Enqueue action: the caller left the line (Leave), hung up, or the queue failed."""
        pulls: list[Pull] = []
        with self._store.unit_of_work() as session:
            interaction = crm.require_interaction(session, call_sid, for_update=True)
            flow = self._flows.version(interaction.flow_version, name=interaction.flow_name)
            now = utcnow()
            if result == "hangup":
                pulls.extend(
                    self._end(
                        session, interaction, outcome=Outcome.ABANDONED, call_status="completed", duration=None, now=now
                    )
                )
                reply: Reply = Acknowledge()
            elif result in ("bridged", "redirected"):
                reply = Acknowledge()  # the call already went on elsewhere
            else:
                offer = crm.open_offer(session, interaction.id)
                if result == "leave" and offer is not None and offer.state is OfferState.PENDING:
                    offer.state = OfferState.RINGING
                    interaction.status = InteractionStatus.OFFERING
                    interaction.rep_id = offer.rep_id
                    reply = self._dial(
                        offer.id, offer.rep.phone, flow, say=("Thanks for waiting. Connecting you now.",)
                    )
                else:
                    # Max wait reached, or Twilio's queue failed (queue-full, error): do not strand the caller.
                    interaction.outcome = Outcome.NO_REP
                    reply = self._voicemail(flow, lead=("Sorry to keep you waiting.",))
        self._after_commit(pulls)
        return reply

    def connect(self, offer_id: int) -> Reply:
        """A queued caller pulled by REST (or after Leave): dial the rep reserved for them."""
        with self._store.unit_of_work() as session:
            offer = _require_offer(session, offer_id)
            interaction = offer.interaction
            flow = self._flows.version(interaction.flow_version, name=interaction.flow_name)
            if offer.state in (OfferState.PENDING, OfferState.RINGING):
                offer.state = OfferState.RINGING
                interaction.status = InteractionStatus.OFFERING
                interaction.rep_id = offer.rep_id
                return self._dial(offer.id, offer.rep.phone, flow, say=("Thanks for waiting. Connecting you now.",))
            # The offer was withdrawn meanwhile: back in line.
            interaction.status = InteractionStatus.IN_FLOW
            return self._transfer_orm(session, interaction, flow, say=())

    def _offer_pending(self, session: Session, interaction: Interaction, rep: crm.RepRow) -> int:
        offer_id = crm.insert_offer(
            session, interaction_id=interaction.id, rep_id=rep.id, state=OfferState.PENDING, now=utcnow()
        )
        interaction.status = InteractionStatus.OFFERING
        interaction.rep_id = rep.id
        return offer_id

    def _pull_for_freed_rep(self, session: Session, rep_id: int) -> list[Pull]:
        """A rep just became available: reserve them for the longest-waiting caller they can take."""
        rep = session.get(Rep, rep_id, populate_existing=True)
        if rep is None or rep.state is not RepState.AVAILABLE:
            return []
        waiting = crm.next_waiting_caller_for(session, rep)
        if waiting is None:
            return []
        taken = crm.reserve_rep(
            session, department=waiting.department or "general", exclude_rep_ids=(), now=utcnow(), only_rep_id=rep.id
        )
        if taken is None:
            return []
        offer_id = self._offer_pending(session, waiting, taken)
        return [Pull(call_sid=waiting.call_sid, offer_id=offer_id)]

    # --- presence, end of call -------------------------------------------------------------------------------------

    def set_presence(self, rep_name: str, state: RepState) -> list[Pull]:
        """Change a rep's presence; a rep who becomes available immediately pulls the next waiting caller."""
        with self._store.unit_of_work() as session:
            rep = crm.find_rep(session, rep_name)
            crm.set_rep_presence(session, rep, state, now=utcnow())
            session.flush()
            pulls = self._pull_for_freed_rep(session, rep.id) if state is RepState.AVAILABLE else []
        self._after_commit(pulls)
        return pulls

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
                "survey": record.survey or None,
                "flow": f"{record.flow_name}@{record.flow_version}",
            }

    def rep_roster(self) -> list[RepView]:
        with self._store.unit_of_work() as session:
            return [
                RepView(name=rep.name, phone=rep.phone, state=rep.state.value, departments=tuple(rep.departments))
                for rep in crm.list_reps(session)
            ]

    def voicemail_saved(self, call_sid: str, *, recording_url: str, duration_seconds: int) -> Reply:
        """File the message on the customer's record with a follow-up task, now; transcribe it in the background.

        The task and the recording link are committed before any transcription is tried, so a failing engine or
        download can only leave the transcript empty (with the reason), never lose the message.
        """
        with self._store.unit_of_work() as session:
            interaction = crm.require_interaction(session, call_sid, for_update=True)
            flow = self._flows.version(interaction.flow_version, name=interaction.flow_name)
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
            reply: Reply = Goodbye(
                say=("Thanks, we've got your message and will call you back. Goodbye.",),
                language=flow.language,
                voice=flow.voice,
            )
            state = CallState.model_validate(_without_city(interaction.flow_state))
            if not state.finished and isinstance(flow.nodes.get(state.node), VoicemailNode):
                # The flow asked for this message (a `voicemail` node): it says what comes next.
                recorded = Recorded(recording_url=recording_url, duration_seconds=duration_seconds)
                state, step = advance(flow, state, recorded, now=self.clock())
                interaction.flow_state = _with_city(state, _city(interaction.flow_state))
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

    def call_status(self, call_sid: str, *, call_status: str, duration_seconds: int | None) -> Reply:
        """Status callback: close the interaction once, whatever order and however often callbacks arrive."""
        pulls: list[Pull] = []
        with self._store.unit_of_work() as session:
            interaction = crm.get_interaction(session, call_sid, for_update=True)
            if interaction is None:
                log.warning("status %s for unknown call %s", call_status, call_sid)
                return Acknowledge()
            if call_status not in FINAL_CALL_STATUSES:
                if interaction.status is not InteractionStatus.ENDED:
                    interaction.last_call_status = call_status
                return Acknowledge()
            outcome = _outcome_at_end(interaction, call_status)
            pulls.extend(
                self._end(
                    session,
                    interaction,
                    outcome=outcome,
                    call_status=call_status,
                    duration=duration_seconds,
                    now=utcnow(),
                )
            )
        self._after_commit(pulls)
        return Acknowledge()

    def _end(
        self,
        session: Session,
        interaction: Interaction,
        *,
        outcome: Outcome,
        call_status: str,
        duration: int | None,
        now: datetime,
    ) -> list[Pull]:
        """Close the interaction and free whoever was tied to it (a rep ringing or talking)."""
        crm.close_interaction(
            session, interaction, outcome=outcome, call_status=call_status, duration_seconds=duration, now=now
        )
        pulls: list[Pull] = []
        offer = crm.open_offer(session, interaction.id)
        if offer is not None:
            offer.state = OfferState.ENDED if offer.state is OfferState.ACCEPTED else OfferState.CANCELLED
            offer.ended_at = offer.ended_at or now
            if crm.release_rep(session, offer.rep_id, now=now):
                pulls.extend(self._pull_for_freed_rep(session, offer.rep_id))
        return pulls

    def _after_commit(self, pulls: list[Pull]) -> None:
        for pull in pulls:
            self._pull_caller(pull)


def _caller_facts(customer: crm.CallerView | None, *, now: datetime) -> CallerFacts:
    if customer is None:
        return CallerFacts(known=False)
    custom = {str(key): str(value) for key, value in customer.custom_fields.items()}
    since = (now - customer.last_contact_at).days if customer.last_contact_at else None
    return CallerFacts(
        known=True,
        first_name=customer.first_name or None,
        tier=customer.tier,
        language=custom.get("language"),
        open_case=customer.has_open_task,
        days_since_last_contact=since,
        custom=custom,
    )


def _outcome_at_end(interaction: Interaction, call_status: str) -> Outcome:
    if interaction.outcome is not None:
        return interaction.outcome
    if interaction.answered_at is not None:
        return Outcome.ANSWERED
    if call_status in ("failed", "busy", "no-answer", "canceled") and interaction.status is InteractionStatus.IN_FLOW:
        return Outcome.FAILED
    return Outcome.ABANDONED


def _require_offer(session: Session, offer_id: int) -> Offer:
    offer = crm.get_offer(session, offer_id)
    if offer is None:
        raise crm.UnknownInteraction(f"offer {offer_id}")
    return offer


def _waited(interaction: Interaction, now: datetime) -> int:
    if interaction.enqueued_at is None:
        return 0
    return max(0, int((now - interaction.enqueued_at).total_seconds()))


def _topic(flow: Flow, past: crm.PastContact | None) -> str | None:
    if past is None:
        return None
    if past.issue_text:
        words = past.issue_text.split()
        return " ".join(words[:12]) + ("…" if len(words) > 12 else "")
    return flow.department_name(past.department) if past.department else None


# The caller's city is not part of the engine's state, but the whisper wants it; it rides along in the JSON.
_CITY_KEY = "_caller_city"


def _with_city(state: CallState, city: str | None) -> dict[str, object]:
    data: dict[str, object] = state.model_dump(mode="json")
    if city:
        data[_CITY_KEY] = city
    return data


def _without_city(data: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in data.items() if key != _CITY_KEY}


def _city(data: dict[str, object]) -> str | None:
    value = data.get(_CITY_KEY)
    return value if isinstance(value, str) else None
