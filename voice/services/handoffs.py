"""Rep-to-rep warm transfer: the caller moves into a conference, the target rep hears a whisper with the first
rep's note, the reps speak while the caller holds, the first rep leaves, and the caller is with the new rep.

How it goes on Twilio (every REST request after the commit, on the background pool):

1. The first rep (A) asks for it (JSON API). We reserve the target rep (B: a named colleague, or the best free rep
   of a department) and redirect A's own leg (the ``<Number>`` leg of the caller's ``<Dial>``, whose CallSid the
   whisper request gave us) to ``/voice/handoff/rep-joins``: A joins the conference.
2. Redirecting the child leg ends the caller's ``<Dial>``: Twilio requests its action, ``/voice/dial-ended``, which
   sees the hand-off and puts the caller into the same conference. The caller never starts it, so until a rep is
   there they hear hold music, never silence.
3. The conference reports the caller joining (``/voice/handoff/events``): we hold the caller (hold music) and ring
   B with ``/voice/handoff/whisper`` (who, why, A's note, "press 1").
4. B presses 1 and joins: A and B speak; the caller holds. When A leaves, the caller comes off hold with B.

Failures: B declines or does not answer → the caller comes off hold, back with A (who is told); when A then hangs
up, the caller goes on to the flow's goodbye (or survey), never left alone in the conference. A hangs up before B
joined → the caller keeps holding, and is with B as soon as B joins; if B then fails too, the caller is sent back
to the department's line (or the next free rep), never left alone. The caller hangs up → the conference ends for
everyone, B's ringing is cancelled, both reps are freed. Every step is a method of ``Handoff``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from crm_sync.models import (
    Handoff,
    HandoffState,
    Interaction,
    InteractionStatus,
    Offer,
    OfferPurpose,
    OfferState,
    Rep,
    RepState,
)
from crm_sync.queries import handoffs, interactions, offers, reps
from ivr_flows import Flow
from voice.domain.actions import (
    Action,
    AnnounceToParticipant,
    DialHandoffTarget,
    HandoffStep,
    HoldParticipant,
    RedirectHandoffLeg,
)
from voice.domain.errors import HandoffRefused, NotYourHandoff
from voice.domain.replies import (
    Acknowledge,
    AfterHandoff,
    Announcement,
    Goodbye,
    HandoffWhisper,
    HoldMusic,
    JoinConference,
    Reply,
)
from voice.services.calls import FINAL_CALL_STATUSES, CallService, cancel_handoff_without_caller
from voice.services.context import Service, ServiceContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandoffView:
    id: int
    state: str
    to_rep: str | None
    to_department: str | None
    failure: str | None


def handoff_view(handoff: Handoff) -> HandoffView:
    return HandoffView(
        id=handoff.id,
        state=handoff.state.value,
        to_rep=handoff.to_rep.name if handoff.to_rep else None,
        to_department=handoff.to_department,
        failure=handoff.failure,
    )


class HandoffService(Service):
    def __init__(self, context: ServiceContext, *, calls: CallService) -> None:
        super().__init__(context)
        self._calls = calls

    # --- 1. the first rep asks ----------------------------------------------------------------------------------------

    def start(
        self, *, rep_id: int, call_sid: str, to_department: str | None, to_rep: str | None, note: str
    ) -> HandoffView:
        if bool(to_department) == bool(to_rep):
            raise HandoffRefused("name either a department or a rep to transfer to")
        with self._store.unit_of_work() as session:
            interaction = interactions.require_interaction(session, call_sid, for_update=True)
            current = self._current_offer(session, interaction, rep_id)
            if handoffs.active_handoff(session, interaction.id) is not None:
                raise HandoffRefused("this call is already being transferred")
            flow = self._flow_of(interaction)
            target, department = self._reserve_target(session, interaction, flow, rep_id, to_department, to_rep)
            handoff = Handoff(
                interaction_id=interaction.id,
                from_rep_id=rep_id,
                to_rep=target,
                to_department=department,
                note=note.strip()[:1000],
                state=HandoffState.MOVING,
                conference=f"handoff-{uuid.uuid4().hex[:16]}",
                caller_call_sid=interaction.live_call_sid or interaction.call_sid,
                from_call_sid=current.rep_call_sid,
                created_at=self._clock(),
            )
            session.add(handoff)
            # The caller stays connected with the first rep meanwhile: the interaction itself does not change.
            offer = self._dispatch.make_offer(
                session, interaction, target, state=OfferState.PENDING, now=self._clock(), purpose=OfferPurpose.HANDOFF
            )
            handoff.to_offer_id = offer.id
            session.flush()
            view = handoff_view(handoff)
            move = RedirectHandoffLeg(current.rep_call_sid or "", handoff.id, HandoffStep.JOIN_CONFERENCE)
            log.info("hand-off %s of interaction %s to %s started", handoff.id, interaction.id, view.to_rep)
        self._after_commit([move])
        return view

    def _current_offer(self, session: Session, interaction: Interaction, rep_id: int) -> Offer:
        if interaction.rep_id != rep_id:
            raise NotYourHandoff("only the rep talking with the caller can transfer this call")
        if interaction.status is not InteractionStatus.CONNECTED:
            raise HandoffRefused("this call is not connected any more")
        offer = next(
            (
                offer
                for offer in offers.live_offers(session, interaction.id)
                if offer.rep_id == rep_id and offer.state is OfferState.ACCEPTED
            ),
            None,
        )
        if offer is None or not offer.rep_call_sid:
            raise HandoffRefused("your leg of this call is not known, so it cannot be moved")
        return offer

    def _reserve_target(
        self,
        session: Session,
        interaction: Interaction,
        flow: Flow,
        rep_id: int,
        to_department: str | None,
        to_rep: str | None,
    ) -> tuple[Rep, str]:
        now = self._clock()
        until = self._dispatch.ring_lease(now)
        if to_rep:
            rep = reps.lock_rep(session, reps.find_rep(session, to_rep).id)
            if rep.id == rep_id:
                raise HandoffRefused("you cannot transfer a call to yourself")
            if rep.state is not RepState.AVAILABLE:
                raise HandoffRefused(f"{rep.name} is not available ({rep.state.value})")
            rep.reserve(now=now, until=until)
            return rep, to_department or interaction.routed_department
        assert to_department is not None
        if to_department not in flow.departments:
            raise HandoffRefused(f"there is no department {to_department!r}")
        free = reps.free_reps(
            session,
            department=to_department,
            strategy=self._settings.routing.strategy_for(to_department),
            exclude_rep_ids={rep_id},
            day_start=self._dispatch.day_start(now),
        )
        if not free:
            raise HandoffRefused(f"nobody in {flow.department_name(to_department)} is free right now")
        free[0].reserve(now=now, until=until)
        return free[0], to_department

    # --- 2. the legs join ---------------------------------------------------------------------------------------------

    def rep_joins(self, handoff_id: int) -> Reply:
        """The first rep's leg, redirected: into the conference (it starts it; the rep may leave without ending it)."""
        with self._store.unit_of_work() as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            flow = self._flow_of(handoff.interaction)
            if handoff.state not in (HandoffState.MOVING, HandoffState.DIALING):
                return Goodbye(say=("This transfer is over.",), language=flow.language)
            return JoinConference.leg(
                "from",
                handoff_id=handoff.id,
                room=handoff.conference,
                say=f"Calling {handoff.target_name}. The caller will hold while you two speak.",
                language=flow.language,
                voice=flow.voice,
            )

    def hold_music(self) -> Reply:
        queue = self._settings.queue
        return HoldMusic(music_url=queue.hold_music_url, pause_seconds=queue.hold_interval)

    # --- 3. conference events -----------------------------------------------------------------------------------------

    def conference_event(self, handoff_id: int, *, event: str, call_sid: str, conference_sid: str | None) -> Reply:
        """The conference's status callback: who joined or left decides the hand-off's next step."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            now = self._clock()
            handoff.conference_known_as(conference_sid)
            leg = handoff.leg(call_sid)
            if event == "participant-join":
                actions.extend(self._joined(session, handoff, leg, now))
            elif event == "participant-leave":
                actions.extend(self._left(session, handoff, leg, now))
        self._after_commit(actions)
        return Acknowledge()

    def _joined(self, session: Session, handoff: Handoff, leg: str | None, now: datetime) -> list[Action]:
        if leg == "from":
            handoff.first_rep_joined(now=now)
            return []
        if leg == "to":
            handoff.target_joined(now=now)
            return self._maybe_complete(session, handoff, now)
        if leg != "caller" or not handoff.caller_joined(now=now):
            return []
        # The caller is holding in the conference: ring the target rep now.
        offer = offers.find_offer(session, handoff.to_offer_id)
        target = handoff.to_rep
        if offer is None or target is None or not offer.pending:
            return self._fail(session, handoff, "the target rep was no longer held", now)
        offer.ring()
        target.extend_reservation(offer.id, until=self._dispatch.ring_lease(now))
        return [
            HoldParticipant(conference=handoff.room, call_sid=handoff.caller_call_sid, hold=True),
            DialHandoffTarget(
                handoff_id=handoff.id,
                offer_id=offer.id,
                to=target.phone,
                from_=handoff.interaction.called_number or self._settings.transfer.caller_id,
                timeout=self._settings.transfer.ring_timeout,
            ),
        ]

    def _left(self, session: Session, handoff: Handoff, leg: str | None, now: datetime) -> list[Action]:
        actions: list[Action] = []
        if leg == "from":
            handoff.first_rep_left(now=now)
            actions.extend(self._release_first_rep(session, handoff))
            actions.extend(self._maybe_complete(session, handoff, now))
            if handoff.state is HandoffState.FAILED and not handoff.interaction.ended:
                # The target did not take the call, the caller was back with the first rep, and now the first
                # rep hung up: the conversation is over; the caller must not stay alone in the conference.
                actions.append(RedirectHandoffLeg(handoff.caller_call_sid, handoff.id, HandoffStep.AFTER_CONVERSATION))
        elif leg == "caller" and handoff.active:
            actions.extend(cancel_handoff_without_caller(handoff, now=now))
        elif leg == "to" and handoff.state is HandoffState.CONSULTING:
            # The target rep hung up while the reps were speaking: the caller stays with the first rep.
            actions.extend(self._fail(session, handoff, f"{handoff.target_name} hung up", now))
        elif leg == "to" and handoff.state is HandoffState.COMPLETED:
            # The new rep ended the call and the caller is alone in the conference: the flow's goodbye (or survey).
            actions.append(RedirectHandoffLeg(handoff.caller_call_sid, handoff.id, HandoffStep.AFTER_CONVERSATION))
        return actions

    def _maybe_complete(self, session: Session, handoff: Handoff, now: datetime) -> list[Action]:
        """The target rep is in: the hand-off is complete once the first rep has left (or never came)."""
        if not handoff.try_complete(now=now):
            return []
        if handoff.to_rep_id is not None:
            handoff.interaction.hand_to(handoff.to_rep_id)
        log.info(
            "hand-off %s complete: interaction %s is with rep %s", handoff.id, handoff.interaction_id, handoff.to_rep_id
        )
        actions: list[Action] = [HoldParticipant(conference=handoff.room, call_sid=handoff.caller_call_sid, hold=False)]
        actions.extend(self._release_first_rep(session, handoff))
        return actions

    def _release_first_rep(self, session: Session, handoff: Handoff) -> list[Action]:
        """The first rep is out of the call: wrap-up, then their next caller."""
        for offer in offers.live_offers(session, handoff.interaction_id):
            if offer.rep_id == handoff.from_rep_id and offer.id != handoff.to_offer_id:
                return self._dispatch.close_offer(session, offer)
        return []

    def _fail(self, session: Session, handoff: Handoff, reason: str, now: datetime) -> list[Action]:
        """The target did not take the call: the caller back with the first rep, or on to someone else if that rep
        already left."""
        handoff.fail(reason, now=now)
        log.warning("hand-off %s failed: %s", handoff.id, reason)
        actions: list[Action] = []
        offer = offers.find_offer(session, handoff.to_offer_id)
        if offer is not None:
            # Declined, rang out, or hung up while consulting: the target rep is free again either way.
            actions.extend(self._dispatch.close_offer(session, offer))
        if handoff.first_rep_in_conference:
            actions.append(HoldParticipant(conference=handoff.room, call_sid=handoff.caller_call_sid, hold=False))
            if handoff.from_call_sid:
                actions.append(
                    AnnounceToParticipant(
                        conference=handoff.room,
                        call_sid=handoff.from_call_sid,
                        handoff_id=handoff.id,
                        message=_back_with_you(handoff),
                    )
                )
        elif handoff.caller_joined_at is not None:
            # Nobody left to talk to: take the caller out of the conference and find them someone else.
            actions.append(RedirectHandoffLeg(handoff.caller_call_sid, handoff.id, HandoffStep.FIND_SOMEONE_ELSE))
        return actions

    # --- 4. the target rep --------------------------------------------------------------------------------------------

    def whisper(self, handoff_id: int, *, call_sid: str) -> Reply:
        """The target rep answered: who is calling, why, and the first rep's note; press 1 to join."""
        with self._store.unit_of_work() as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            interaction = handoff.interaction
            flow = self._flow_of(interaction)
            offer = offers.find_offer(session, handoff.to_offer_id)
            if handoff.state is not HandoffState.DIALING or offer is None or not offer.ringing:
                return Goodbye(say=("Sorry, this transfer is over.",), language=flow.language)
            now = self._clock()
            handoff.target_answered(call_sid)
            offer.whisper_heard(call_sid, now=now)
            summary = self._calls.whisper_text(
                session,
                interaction,
                flow,
                now=now,
                department=handoff.to_department,
                handoff_from=handoff.from_rep.name,
                handoff_note=handoff.note,
            )
            return HandoffWhisper(
                handoff_id=handoff.id,
                summary=summary,
                timeout=self._settings.transfer.whisper_timeout,
                language=flow.language,
                voice=flow.voice,
            )

    def whisper_answer(self, handoff_id: int, *, digits: str | None) -> Reply:
        with self._store.unit_of_work() as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            flow = self._flow_of(handoff.interaction)
            offer = offers.find_offer(session, handoff.to_offer_id)
            now = self._clock()
            if handoff.state is not HandoffState.DIALING or offer is None or not offer.ringing:
                return Goodbye(say=("Sorry, this transfer is over.",), language=flow.language)
            if (digits or "").strip() != "1":
                offer.decline(now=now)
                return Goodbye(say=("OK, the caller stays with your colleague.",), language=flow.language)
            if not reps.lock_rep(session, offer.rep_id).take_call(offer.id, now=now):
                offer.withdraw(now=now)
                return Goodbye(say=("Sorry, this transfer has already ended.",), language=flow.language)
            offer.accept()
            return JoinConference.leg(
                "to",
                handoff_id=handoff.id,
                room=handoff.conference,
                say=f"Joining {handoff.from_rep.name}. The caller is on hold.",
                language=flow.language,
                voice=flow.voice,
            )

    def target_status(self, handoff_id: int, *, call_sid: str, call_status: str) -> Reply:
        """Status of the call to the target rep: ended before they joined → the hand-off failed; after → released."""
        if call_status not in FINAL_CALL_STATUSES:
            return Acknowledge()
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            now = self._clock()
            offer = offers.find_offer(session, handoff.to_offer_id)
            if handoff.state in (HandoffState.MOVING, HandoffState.DIALING):
                why = "declined" if offer is not None and offer.state is OfferState.DECLINED else call_status
                actions.extend(self._fail(session, handoff, f"{handoff.target_name}: {why}", now))
            elif offer is not None and offer.live:
                # The target rep's own call is over (the hand-off finished earlier, or was cancelled).
                actions.extend(self._dispatch.close_offer(session, offer, caller_gone=True))
        self._after_commit(actions)
        return Acknowledge()

    def target_unreachable(self, handoff_id: int, *, reason: str) -> None:
        """Twilio refused to ring the target rep (REST error)."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            if handoff.state is HandoffState.DIALING:
                why = f"could not ring {handoff.target_name}: {reason}"
                actions.extend(self._fail(session, handoff, why, self._clock()))
        self._after_commit(actions)

    def move_failed(self, handoff_id: int, *, reason: str) -> None:
        """The first rep's leg could not be moved into the conference (it had just ended): nothing moved."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            if handoff.state is HandoffState.MOVING and handoff.caller_joined_at is None:
                actions.extend(self._fail(session, handoff, f"could not move the call: {reason}", self._clock()))
        self._after_commit(actions)

    # --- the ends of the legs -----------------------------------------------------------------------------------------

    def rep_left(self, handoff_id: int) -> Reply:
        """A rep's conference Dial is over: their part is done."""
        return Goodbye(say=())

    def caller_left(self, handoff_id: int) -> Reply:
        """The caller's conference Dial is over while they are still on the line: they go on to what follows the
        conversation. Twilio also asks this when we redirected the caller's leg (and then ignores the answer), so it
        decides nothing itself."""
        return AfterHandoff(handoff_id)

    def after_conversation(self, handoff_id: int) -> Reply:
        with self._store.unit_of_work() as session:
            interaction = handoffs.require_handoff(session, handoff_id).interaction
            flow = self._flow_of(interaction)
            if interaction.ended:
                return Goodbye(say=(), language=flow.language)
            return self._calls.after_conversation(interaction, flow)

    def fallback(self, handoff_id: int) -> Reply:
        """The hand-off failed with nobody left in the conference: the caller goes to the next rep or back in line."""
        with self._store.unit_of_work() as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            interaction = handoff.interaction
            flow = self._flow_of(interaction)
            if interaction.ended:
                return Goodbye(say=(), language=flow.language)
            interaction.hand_back_to(handoff.to_department or interaction.routed_department)
            sorry = flow.phrase("find_someone_after_handoff", interaction.language)
            return self._calls.reroute(session, interaction, flow, say=(sorry,))

    def announcement(self, handoff_id: int) -> Reply:
        with self._store.unit_of_work() as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            flow = self._flow_of(handoff.interaction)
            return Announcement(text=_back_with_you(handoff), language=flow.language, voice=flow.voice)

    def status_of(self, handoff_id: int, *, rep_id: int) -> HandoffView:
        with self._store.unit_of_work(read_only=True) as session:
            handoff = handoffs.require_handoff(session, handoff_id)
            if rep_id not in (handoff.from_rep_id, handoff.to_rep_id):
                raise NotYourHandoff("this transfer is not yours")
            return handoff_view(handoff)


def _back_with_you(handoff: Handoff) -> str:
    return f"{handoff.target_name} could not take the call. The caller is back with you."
