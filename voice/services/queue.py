"""The line, told honestly: the hold loop, its announcements and key choices, leaving the queue, and callbacks.

A caller nobody can take at once waits in the department's Twilio queue (``<Enqueue>``). Each turn of its waitUrl
loop lands in ``QueueService.hold``: at the start and then every ``queue.announce_interval`` seconds it tells the
caller their place and an estimated wait computed from the reps actually on duty and the department's recent handle
times (``voice.domain.wait_estimate``, not Twilio's ``AvgQueueTime``), rounded up the way people speak; between
announcements, hold music. When the estimate is long the caller may press 1 for a callback and keep their place:
they hang up, their interaction waits as a ``callback`` in the same line, and when their turn comes with a rep free
we ring them (``PlaceCallback``), say who is calling back, and whisper-connect the rep. Unanswered callbacks are
retried, then filed as a follow-up task.

The push, not this loop, is what connects callers: the moment a rep frees up the dispatcher pulls the first caller
in line by REST. The loop only takes over if that REST request was lost (``PUSH_GRACE_SECONDS``).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from crm_sync.models import (
    Callback,
    CallbackState,
    Interaction,
    InteractionStatus,
    OfferPurpose,
    Outcome,
    RepState,
    Task,
)
from crm_sync.queries import callbacks, interactions, line, offers, reps
from ivr_flows import CallState, Flow, fill_queue_message, queue_message
from voice.domain.actions import Action
from voice.domain.replies import Acknowledge, Goodbye, HoldLoop, LeaveQueue, Reply
from voice.domain.wait_estimate import RepLoad, estimate_wait, spoken_wait
from voice.services.calls import FINAL_CALL_STATUSES, CallService
from voice.services.context import Service, ServiceContext
from voice.services.dispatch import PUSH_GRACE_SECONDS

log = logging.getLogger(__name__)

#: ``AnsweredBy`` values (answering machine detection) that mean nobody is there to talk to: machine_start,
#: machine_end_beep/_silence/_other and fax. "unknown" (often a quiet "hello") is treated as a person.
MACHINE_ANSWERS = ("machine_", "fax")

#: A department's own handle times are used once it has this many recent answered calls.
MIN_HANDLE_SAMPLES = 5


class QueueService(Service):
    def __init__(self, context: ServiceContext, *, calls: CallService) -> None:
        super().__init__(context)
        self._calls = calls

    # --- the hold loop ---------------------------------------------------------------------------------------------

    def hold(self, call_sid: str, *, queue_seconds: int) -> Reply:
        """One turn of the waitUrl loop: maybe an announcement and a key offer, then hold music."""
        with self._store.unit_of_work() as session:
            # No row lock here: the loop runs every few seconds for every waiting caller, and a lock held by it
            # would make a freed rep's push (which skips locked callers) pass this caller over.
            interaction = interactions.require_interaction(session, call_sid)
            flow = self._flow_of(interaction)
            now = self._clock()
            offer = offers.open_offer(session, interaction.id)
            if offer is not None and offer.pending:
                if (now - offer.created_at).total_seconds() >= PUSH_GRACE_SECONDS:
                    return LeaveQueue()  # the REST pull did not arrive; connect through the Enqueue action
                return self._music(flow)  # being pulled right now: no announcement over the connection
            department = interaction.routed_department
            if interaction.status is InteractionStatus.QUEUED:
                declined = offers.declined_rep_ids(session, interaction.id)
                probe = line.probe_department(session, department, exclude_rep_ids=declined)
                # Look before locking: normally nobody is free (a freed rep pulls the caller by push), and a lock
                # taken on every turn of the loop would make that push skip this caller.
                if probe.free and self._reserve_for_queued(session, interaction, declined=declined):
                    return LeaveQueue()
                if not probe.on_duty:
                    # Everyone went off duty (or already let this caller ring out) while they waited: do not hold
                    # them for nobody, as a caller arriving now would not be.
                    interaction.leave_line_for("voicemail")
                    language = interaction.language or flow.language
                    return LeaveQueue(
                        say=(
                            flow.phrase("nobody_left", language, department=flow.department_name(department, language)),
                        ),
                        language=language,
                        voice=flow.voice_for(language),
                    )
            if not self._announcement_due(interaction, now):
                return self._music(flow)
            return self._announce(session, interaction, flow, now=now, waited=queue_seconds)

    def _announcement_due(self, interaction: Interaction, now: datetime) -> bool:
        if interaction.announced_at is None:
            return True
        return (now - interaction.announced_at).total_seconds() >= self._settings.queue.announce_interval

    def _music(
        self, flow: Flow, *, announcement: str | None = None, choice: str | None = None, language: str | None = None
    ) -> HoldLoop:
        queue = self._settings.queue
        language = language or flow.language
        return HoldLoop(
            announcement=announcement,
            choice_prompt=choice,
            music_url=queue.hold_music_url,
            pause_seconds=queue.hold_interval,
            language=language,
            voice=flow.voice_for(language),
        )

    def _announce(
        self, session: Session, interaction: Interaction, flow: Flow, *, now: datetime, waited: int
    ) -> HoldLoop:
        department = interaction.routed_department
        position = line.line_position(session, interaction)
        estimate = self.estimate(session, department, position=position, now=now)
        interaction.announced(now=now, wait_seconds=estimate)
        language = interaction.language or flow.language
        announcement = self._position_message(interaction, flow, position=position, estimate=estimate)
        choice = None
        queue = self._settings.queue
        long_wait = waited >= queue.max_wait or waited + (estimate or 0) >= queue.max_wait
        if long_wait:
            choice = flow.phrase(
                "long_wait_offer" if _can_call_back(interaction) else "long_wait_message_only", language
            )
        elif _can_call_back(interaction) and estimate is not None and estimate >= queue.callback_offer_after:
            choice = flow.phrase("callback_offer", language)
        return self._music(flow, announcement=announcement, choice=choice, language=language)

    def _position_message(self, interaction: Interaction, flow: Flow, *, position: int, estimate: float | None) -> str:
        """The flow's transfer `queue_message` when it has one, else config.yaml's hold message."""
        template = None
        if estimate is not None:
            try:
                template = queue_message(flow, CallState.model_validate(interaction.flow_state))
            except ValueError:
                template = None
        language = interaction.language or flow.language
        said = spoken_wait(estimate, language)
        if template is None:
            queue = self._settings.queue
            key = "hold_message" if estimate is not None else "hold_message_no_estimate"
            configured = getattr(queue, key).replace("{position}", "{queue_position}")
            department = flow.department_name(interaction.routed_department, language)
            return flow.phrase(
                key,
                language,
                configured=configured,
                queue_position=str(position),
                estimated_wait=said,
                department=department,
            )
        return fill_queue_message(template, estimated_wait=said, queue_position=position)

    def estimate(self, session: Session, department: str, *, position: int, now: datetime) -> float | None:
        """Expected seconds until the caller at ``position`` is answered, from the reps on duty now."""
        loads: list[RepLoad] = []
        for rep in reps.staffed_reps(session, department):
            if rep.state is RepState.AVAILABLE:
                loads.append(RepLoad(busy_for=None, free_in=0.0))
            elif rep.state is RepState.WRAP_UP and rep.wrap_up_until is not None:
                loads.append(RepLoad(busy_for=None, free_in=max(0.0, (rep.wrap_up_until - now).total_seconds())))
            else:
                loads.append(RepLoad(busy_for=max(0.0, (now - rep.state_changed_at).total_seconds())))
        return estimate_wait(
            position=position, reps=loads, mean_handle_seconds=self.mean_handle_seconds(session, department)
        )

    def mean_handle_seconds(self, session: Session, department: str) -> float:
        """Talk time of the department's recent calls plus wrap-up: how long a rep is away per call."""
        talks = line.recent_talk_seconds(session, department)
        if len(talks) >= MIN_HANDLE_SAMPLES:
            talk = sum(talks) / len(talks)
        else:
            talk = float(self._settings.queue.default_handle_time)
        return max(1.0, talk + self._settings.routing.wrap_up)

    def _reserve_for_queued(self, session: Session, interaction: Interaction, *, declined: set[int]) -> bool:
        """Safety net for a missed push, when a rep is free: the head of the line takes them itself.

        Only the head tries, so the hold loop never lets a later caller overtake; a rep who turned the head down
        is pulled to the next caller by the push when they were released.
        """
        department = interaction.routed_department
        if line.line_position(session, interaction) != 1 or not line.lock_queued_interaction(session, interaction.id):
            return False  # not the head, or a push is handing this caller a rep right now
        now = self._clock()
        free = reps.free_reps(
            session,
            department=department,
            strategy=self._settings.routing.strategy_for(department),
            exclude_rep_ids=declined,
            day_start=self._dispatch.day_start(now),
        )
        if not free:
            return False
        free[0].reserve(now=now, until=self._dispatch.pull_lease(now))
        self._dispatch.offer_pending(session, interaction, free[0], purpose=OfferPurpose.CALL)
        return True

    def hold_choice(self, call_sid: str, *, digits: str | None) -> Reply:
        """The caller pressed a key during an announcement: 1 for a callback, 2 for voicemail (when offered)."""
        with self._store.unit_of_work() as session:
            interaction = interactions.require_interaction(session, call_sid, for_update=True)
            flow = self._flow_of(interaction)
            now = self._clock()
            key = (digits or "").strip()
            language = interaction.language or flow.language
            if interaction.status is not InteractionStatus.QUEUED:
                return self._music(flow)  # a rep is being connected: nothing to choose any more
            if key == "1" and _can_call_back(interaction):
                if callbacks.callback_for(session, interaction.id) is None:  # asking twice keeps the first request
                    callback = Callback(
                        interaction_id=interaction.id,
                        phone=interaction.caller_number,
                        from_number=interaction.called_number or "",
                        requested_at=now,
                    )
                    session.add(callback)
                interaction.leave_line_for("callback")
                ending = _last_digits(interaction.caller_number)
                return LeaveQueue(
                    say=(flow.phrase("callback_booked", language, number_ending=ending),),
                    language=language,
                    voice=flow.voice_for(language),
                )
            if key == "2":
                interaction.leave_line_for("voicemail")
                return LeaveQueue()
            return self._music(flow, announcement=flow.phrase("key_not_understood", language), language=language)

    def queue_exit(self, call_sid: str, *, result: str, queue_seconds: int) -> Reply:
        """The Enqueue action: the caller left the line (Leave), hung up, or the queue failed."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            interaction = interactions.require_interaction(session, call_sid, for_update=True)
            flow = self._flow_of(interaction)
            reply: Reply = Acknowledge()
            if result in ("bridged", "redirected"):
                pass  # the call already went on elsewhere (a pull, a hand-off)
            elif interaction.leave_reason == "callback":
                # Whether they heard the goodbye (leave) or hung up on it (hangup): they asked to be called back.
                interaction.wait_for_callback(held_seconds=queue_seconds)
                log.info("interaction %s now waits for a callback", interaction.id)
                if result == "leave":
                    reply = Goodbye(say=(), language=flow.language, voice=flow.voice)
            elif result == "hangup":
                actions.extend(
                    self._calls.end_interaction(
                        session, interaction, outcome=Outcome.ABANDONED, call_status="completed", duration=None
                    )
                )
            else:
                reply = self._after_leaving(session, interaction, flow, result=result)
        self._after_commit(actions)
        return reply

    def _after_leaving(self, session: Session, interaction: Interaction, flow: Flow, *, result: str) -> Reply:
        offer = offers.open_offer(session, interaction.id)
        if result == "leave" and offer is not None and offer.pending:
            language = interaction.language or flow.language
            say = (flow.phrase("connecting_after_wait", language),)
            dial = self._dispatch.put_through(session, offer, flow, say=say)
            if dial is not None:
                return dial
        if result == "leave" and interaction.leave_reason is None and self._settings.fallback.number:
            # Nothing here asked the caller to leave: the hold loop kept failing (voice.web.errors, Leg.QUEUE_HOLD).
            # Something is broken mid-call: the fallback number, as for any other failure.
            log.error(
                "caller %s left the queue after the hold loop failed; dialling the fallback number",
                interaction.call_sid,
            )
            interaction.no_rep()
            return self._calls.fallback(call_sid=interaction.call_sid, called=interaction.called_number)
        # Chose voicemail, max wait reached, nobody on duty any more, or Twilio's queue failed (queue-full, error):
        # do not strand the caller.
        if interaction.leave_reason != "voicemail":
            log.warning("caller %s left the queue (%s) without a rep", interaction.call_sid, result)
        interaction.no_rep()
        language = interaction.language or flow.language
        return self._dispatch.voicemail(flow, lead=(flow.phrase("sorry_to_keep_you", language),), language=language)

    # --- callbacks ------------------------------------------------------------------------------------------------

    def callback_answered(
        self, callback_id: int, *, call_sid: str, answered_by: str | None = None, attempt: int | None = None
    ) -> Reply:
        """The customer picked up our callback: say who is calling, then ring the rep reserved for them.

        ``answered_by``: what answering machine detection heard, when it was asked for. A voicemail box or a fax
        is an unanswered attempt (tried again later, keeping the caller's place): no rep is rung for a recording.
        ``attempt``: which attempt's call this is; only a machine's answer is checked against it (a person who
        picks up is served, whichever attempt reached them).
        """
        if answered_by is not None and answered_by.startswith(MACHINE_ANSWERS):
            return self._machine_answered(callback_id, call_sid=call_sid, answered_by=answered_by, attempt=attempt)
        with self._store.unit_of_work() as session:
            callback = callbacks.require_callback(session, callback_id)
            interaction = callback.interaction
            flow = self._flow_of(interaction)
            callback.answered(call_sid)
            interaction.carried_by(call_sid)
            language = interaction.language or flow.language
            department = flow.department_name(interaction.routed_department, language)
            customer = interaction.customer
            if customer is not None and customer.first_name:
                greeting = flow.phrase(
                    "callback_greeting_known", language, first_name=customer.first_name, department=department
                )
            else:
                greeting = flow.phrase("callback_greeting", language, department=department)
            offer = offers.find_offer(session, callback.offer_id)
            if offer is not None and offer.pending:
                say = (greeting, flow.phrase("callback_connecting", language))
                dial = self._dispatch.put_through(session, offer, flow, say=say)
                if dial is not None:
                    return dial
            # The rep held for this callback is gone (the reservation ran out): find another, or queue them.
            return self._calls.reroute(session, interaction, flow, say=(greeting,))

    def _machine_answered(self, callback_id: int, *, call_sid: str, answered_by: str, attempt: int | None) -> Reply:
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            callback = callbacks.require_callback(session, callback_id)
            flow = self._flow_of(callback.interaction)
            language = callback.interaction.language or flow.language
            if callback.calling and callback.is_attempt(call_sid, attempt):
                log.info("callback %s reached a machine (%s)", callback_id, answered_by)
                actions = self.missed_callback(session, callback, result=answered_by)
        self._after_commit(actions)
        if answered_by == "fax":
            return Goodbye(say=(), language=language, voice=flow.voice_for(language))
        # Said over the greeting (detection answers before the beep): a courtesy, not a message to rely on.
        note = flow.phrase("callback_machine_note", language)
        return Goodbye(say=(note,), language=language, voice=flow.voice_for(language))

    def callback_status(
        self, callback_id: int, *, call_sid: str, call_status: str, duration: int | None, attempt: int | None = None
    ) -> Reply:
        """Status of a callback we placed: unanswered → try again later (keeping the place), or file a task."""
        if call_status not in FINAL_CALL_STATUSES:
            return Acknowledge()
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            callback = callbacks.require_callback(session, callback_id)
            if not callback.is_attempt(call_sid, attempt):
                return Acknowledge()  # about an earlier attempt, already settled
            interaction = callback.interaction
            if callback.calling:
                actions.extend(self.missed_callback(session, callback, result=call_status))
            elif callback.state is CallbackState.CONNECTED and not interaction.ended:
                callback.done(now=self._clock())
                outcome = Outcome.CALLBACK if interaction.answered_at is not None else Outcome.ABANDONED
                actions.extend(
                    self._calls.end_interaction(
                        session, interaction, outcome=outcome, call_status=call_status, duration=duration
                    )
                )
        self._after_commit(actions)
        return Acknowledge()

    def callback_failed(self, callback_id: int, *, reason: str) -> None:
        """Twilio refused to place the callback (REST error): count it as an unanswered attempt."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            callback = callbacks.require_callback(session, callback_id)
            if callback.calling and callback.call_sid is None:
                actions.extend(self.missed_callback(session, callback, result=f"error: {reason}"))
        self._after_commit(actions)

    def missed_callback(self, session: Session, callback: Callback, *, result: str) -> list[Action]:
        """An attempt went unanswered: retry later keeping the caller's place, or, out of retries, file a task."""
        interaction = callback.interaction
        now = self._clock()
        actions: list[Action] = []
        for offer in offers.live_offers(session, interaction.id):
            actions.extend(self._dispatch.close_offer(session, offer, caller_gone=True))
        if callback.task_id is not None:
            # A rep called back from their work queue: no retries, nothing queued; the task says what happened.
            callback.missed(result, now=now, retry_at=None)
            task = session.get(Task, callback.task_id)
            if task is not None:
                task.add_to_note(f"Called back {now:%Y-%m-%d %H:%M} UTC: not reached ({result}).")
            actions.extend(
                self._calls.end_interaction(
                    session, interaction, outcome=Outcome.CALLBACK_MISSED, call_status=result, duration=None
                )
            )
            return actions
        settings = self._settings.callbacks
        if callback.attempts <= settings.retries:
            callback.missed(result, now=now, retry_at=now + timedelta(seconds=settings.retry_after))
            interaction.retry_callback(rank_at=self._dispatch.callback_retry_rank(interaction.rank_at, now))
            log.info("callback %s unanswered (%s); retrying after %ss", callback.id, result, settings.retry_after)
            return actions
        callback.missed(result, now=now, retry_at=None)
        flow = self._flow_of(interaction)
        who = interaction.customer.name if interaction.customer else f"the caller ending {_last_digits(callback.phone)}"
        note = (
            f"Call back {who} about {flow.department_name(interaction.routed_department)}: "
            f"{callback.attempts} callback attempts went unanswered (last: {result}). Number: {callback.phone}"
        )
        session.add(Task.file(interaction, kind="callback", note=note, now=now, due_at=now))
        actions.extend(
            self._calls.end_interaction(
                session, interaction, outcome=Outcome.CALLBACK_MISSED, call_status=result, duration=None
            )
        )
        return actions

    def pull_failed(self, offer_id: int, *, call_gone: bool) -> None:
        """The REST redirect pulling a queued caller failed. ``call_gone``: Twilio says the call is over (the caller
        hung up and the queue's own callbacks were lost) — close it and give the rep the next caller."""
        if not call_gone:
            return  # a passing REST failure: the hold loop connects the caller after the grace period
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            interaction = offers.require_offer(session, offer_id).interaction
            if not interaction.ended:
                actions.extend(
                    self._calls.end_interaction(
                        session, interaction, outcome=Outcome.ABANDONED, call_status="completed", duration=None
                    )
                )
        self._after_commit(actions)


def _can_call_back(interaction: Interaction) -> bool:
    """Only a real number can be called back (not "anonymous", a withheld number or a SIP address)."""
    return bool(re.fullmatch(r"\+\d{8,15}", interaction.caller_number)) and bool(interaction.called_number)


def _last_digits(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    return " ".join(digits[-4:])
