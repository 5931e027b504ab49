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

Failures: B declines or does not answer → the caller comes off hold, back with A (who is told). A hangs up before B
joined → the caller keeps holding, and is with B as soon as B joins; if B then fails too, the caller is sent back
to the department's line (or the next free rep), never left alone. The caller hangs up → the conference ends for
everyone, B's ringing is cancelled, both reps are freed. Every step is recorded on the ``Handoff`` row.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from crm_sync import service as crm
from crm_sync.models import (
    Handoff,
    HandoffState,
    Interaction,
    InteractionStatus,
    Offer,
    OfferState,
    Rep,
)
from ivr_flows import Flow
from voice.domain.actions import (
    Action,
    AnnounceToParticipant,
    DialHandoffTarget,
    HoldParticipant,
    RedirectCall,
)
from voice.domain.replies import Acknowledge, Announcement, Goodbye, HandoffWhisper, HoldMusic, JoinConference, Reply
from voice.services.calls import FINAL_CALL_STATUSES, CallService, cancel_handoff_without_caller
from voice.services.context import Service, ServiceContext

log = logging.getLogger(__name__)


class HandoffRefused(Exception):
    """The transfer cannot start (not the rep's call, nobody free, already being transferred); says why."""


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
            interaction = crm.get_interaction(session, call_sid, for_update=True)
            if interaction is None:
                raise crm.UnknownInteraction(call_sid)
            current = self._current_offer(session, interaction, rep_id)
            if crm.active_handoff(session, interaction.id) is not None:
                raise HandoffRefused("this call is already being transferred")
            flow = self._flow_of(interaction)
            target, department = self._reserve_target(session, interaction, flow, rep_id, to_department, to_rep)
            now = self._clock()
            handoff = Handoff(
                interaction_id=interaction.id,
                from_rep_id=rep_id,
                to_rep_id=target.id,
                to_department=department,
                note=note.strip()[:1000],
                state=HandoffState.MOVING,
                conference=f"handoff-{uuid.uuid4().hex[:16]}",
                caller_call_sid=interaction.live_call_sid or interaction.call_sid,
                from_call_sid=current.rep_call_sid,
                created_at=now,
            )
            session.add(handoff)
            session.flush()
            offer_id = crm.insert_offer(
                session,
                interaction_id=interaction.id,
                rep_id=target.id,
                state=OfferState.PENDING,
                now=now,
                purpose="handoff",
            )
            crm.attach_offer(session, target.id, offer_id)
            handoff.to_offer_id = offer_id
            session.flush()
            view = handoff_view(handoff)
            move = RedirectCall(
                call_sid=current.rep_call_sid or "", endpoint="voice.handoff_rep_joins", params={"handoff": handoff.id}
            )
            log.info("hand-off %s of interaction %s to %s started", handoff.id, interaction.id, view.to_rep)
        self._after_commit([move])
        return view

    def _current_offer(self, session: Session, interaction: Interaction, rep_id: int) -> Offer:
        if interaction.status is not InteractionStatus.CONNECTED or interaction.rep_id != rep_id:
            raise HandoffRefused("only the rep talking with the caller can transfer this call")
        offer = next(
            (
                offer
                for offer in crm.live_offers(session, interaction.id)
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
            rep = crm.find_rep(session, to_rep)
            if rep.id == rep_id:
                raise HandoffRefused("you cannot transfer a call to yourself")
            if crm.reserve_named_rep(session, rep.id, now=now, until=until) is None:
                raise HandoffRefused(f"{rep.name} is not available ({rep.state.value})")
            session.refresh(rep)
            department = to_department or interaction.department or "general"
            return rep, department
        assert to_department is not None
        if to_department not in flow.departments:
            raise HandoffRefused(f"there is no department {to_department!r}")
        taken = crm.reserve_rep(
            session,
            department=to_department,
            now=now,
            until=until,
            strategy=self._settings.routing.strategy_for(to_department),
            exclude_rep_ids={rep_id},
            day_start=self._dispatch.day_start(now),
        )
        if taken is None:
            raise HandoffRefused(f"nobody in {flow.department_name(to_department)} is free right now")
        picked = session.get(Rep, taken.id, populate_existing=True)
        assert picked is not None
        return picked, to_department

    # --- 2. the legs join ---------------------------------------------------------------------------------------------

    def rep_joins(self, handoff_id: int) -> Reply:
        """The first rep's leg, redirected: into the conference (it starts it; the rep may leave without ending it)."""
        with self._store.unit_of_work() as session:
            handoff = self._require(session, handoff_id)
            flow = self._flow_of(handoff.interaction)
            if handoff.state not in (HandoffState.MOVING, HandoffState.DIALING):
                return Goodbye(say=("This transfer is over.",), language=flow.language)
            target = handoff.to_rep.name if handoff.to_rep else "your colleague"
            return JoinConference.leg(
                "from",
                handoff_id=handoff.id,
                room=handoff.conference,
                say=f"Calling {target}. The caller will hold while you two speak.",
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
            handoff = self._require(session, handoff_id)
            now = self._clock()
            if conference_sid and not handoff.conference_sid:
                handoff.conference_sid = conference_sid
            leg = self._leg(handoff, call_sid)
            if event == "participant-join":
                actions.extend(self._joined(session, handoff, leg, now))
            elif event == "participant-leave":
                actions.extend(self._left(session, handoff, leg, now))
        self._after_commit(actions)
        return Acknowledge()

    @staticmethod
    def _leg(handoff: Handoff, call_sid: str) -> str | None:
        if call_sid == handoff.caller_call_sid:
            return "caller"
        if call_sid and call_sid == handoff.from_call_sid:
            return "from"
        if call_sid and call_sid == handoff.to_call_sid:
            return "to"
        return None

    def _joined(self, session: Session, handoff: Handoff, leg: str | None, now: datetime) -> list[Action]:
        if leg == "from":
            handoff.from_joined_at = handoff.from_joined_at or now
            return []
        if leg == "to":
            handoff.to_joined_at = handoff.to_joined_at or now
            return self._maybe_complete(session, handoff, now)
        if leg != "caller" or handoff.caller_joined_at is not None:
            return []
        handoff.caller_joined_at = now
        if handoff.state is not HandoffState.MOVING:
            return []
        handoff.state = HandoffState.DIALING
        interaction = handoff.interaction
        offer = crm.get_offer(session, handoff.to_offer_id) if handoff.to_offer_id else None
        target = handoff.to_rep
        if offer is None or target is None or offer.state is not OfferState.PENDING:
            return self._fail(session, handoff, "the target rep was no longer held", now)
        offer.state = OfferState.RINGING
        crm.extend_reservation(session, target.id, offer_id=offer.id, until=self._dispatch.ring_lease(now))
        return [
            HoldParticipant(conference=self._conference(handoff), call_sid=handoff.caller_call_sid, hold=True),
            DialHandoffTarget(
                handoff_id=handoff.id,
                offer_id=offer.id,
                to=target.phone,
                from_=interaction.called_number or self._settings.transfer.caller_id,
                timeout=self._settings.transfer.ring_timeout,
            ),
        ]

    def _left(self, session: Session, handoff: Handoff, leg: str | None, now: datetime) -> list[Action]:
        actions: list[Action] = []
        if leg == "from":
            handoff.from_left_at = handoff.from_left_at or now
            actions.extend(self._release_from_rep(session, handoff))
            actions.extend(self._maybe_complete(session, handoff, now))
        elif leg == "caller" and handoff.state in (HandoffState.MOVING, HandoffState.DIALING, HandoffState.CONSULTING):
            actions.extend(cancel_handoff_without_caller(handoff, now=now))
        elif leg == "to" and handoff.state is HandoffState.CONSULTING:
            # The target rep hung up while the reps were speaking: the caller stays with the first rep.
            actions.extend(self._fail(session, handoff, f"{self._to_name(handoff)} hung up", now))
        elif leg == "to" and handoff.state is HandoffState.COMPLETED:
            # The new rep ended the call and the caller is alone in the conference: the flow's goodbye (or survey).
            actions.append(RedirectCall(handoff.caller_call_sid, "voice.handoff_after", {"handoff": handoff.id}))
        return actions

    def _maybe_complete(self, session: Session, handoff: Handoff, now: datetime) -> list[Action]:
        """The target rep is in: the hand-off is complete once the first rep has left (or never came)."""
        if handoff.to_joined_at is None or handoff.state not in (HandoffState.DIALING, HandoffState.CONSULTING):
            return []
        first_rep_gone = handoff.from_left_at is not None or handoff.from_joined_at is None
        if not first_rep_gone:
            handoff.state = HandoffState.CONSULTING
            return []
        handoff.state = HandoffState.COMPLETED
        handoff.ended_at = now
        interaction = handoff.interaction
        interaction.rep_id = handoff.to_rep_id
        log.info("hand-off %s complete: interaction %s is with rep %s", handoff.id, interaction.id, handoff.to_rep_id)
        actions: list[Action] = [
            HoldParticipant(conference=self._conference(handoff), call_sid=handoff.caller_call_sid, hold=False)
        ]
        actions.extend(self._release_from_rep(session, handoff))
        return actions

    def _release_from_rep(self, session: Session, handoff: Handoff) -> list[Action]:
        """The first rep is out of the call: wrap-up, then their next caller."""
        for offer in crm.live_offers(session, handoff.interaction_id):
            if offer.rep_id == handoff.from_rep_id and offer.id != handoff.to_offer_id:
                offer.state = OfferState.ENDED
                offer.ended_at = self._clock()
                session.flush()
                return self._dispatch.settle(session, offer, crm.OfferEnd.TALKED)
        return []

    def _fail(self, session: Session, handoff: Handoff, reason: str, now: datetime) -> list[Action]:
        """The target did not take the call: the caller back with the first rep, or back in line if they left."""
        handoff.state = HandoffState.FAILED
        handoff.ended_at = now
        handoff.failure = reason[:200]
        log.warning("hand-off %s failed: %s", handoff.id, reason)
        actions: list[Action] = []
        offer = crm.get_offer(session, handoff.to_offer_id) if handoff.to_offer_id else None
        if offer is not None and offer.state in (OfferState.PENDING, OfferState.RINGING, OfferState.ACCEPTED):
            talked = offer.state is OfferState.ACCEPTED
            offer.state = OfferState.ENDED if talked else OfferState.DECLINED
            offer.ended_at = now
            session.flush()
            end = crm.OfferEnd.TALKED if talked else crm.OfferEnd.MISSED
            actions.extend(self._dispatch.settle(session, offer, end))
        conference = self._conference(handoff)
        if handoff.from_left_at is None and handoff.from_joined_at is not None:
            actions.append(HoldParticipant(conference=conference, call_sid=handoff.caller_call_sid, hold=False))
            if handoff.from_call_sid:
                actions.append(
                    AnnounceToParticipant(
                        conference=conference,
                        call_sid=handoff.from_call_sid,
                        handoff_id=handoff.id,
                        message=f"{self._to_name(handoff)} could not take the call. The caller is back with you.",
                    )
                )
        elif handoff.caller_joined_at is not None:
            # Nobody left to talk to: take the caller out of the conference and find them someone else.
            actions.append(RedirectCall(handoff.caller_call_sid, "voice.handoff_fallback", {"handoff": handoff.id}))
        return actions

    @staticmethod
    def _conference(handoff: Handoff) -> str:
        return handoff.conference_sid or handoff.conference

    @staticmethod
    def _to_name(handoff: Handoff) -> str:
        return handoff.to_rep.name if handoff.to_rep else "your colleague"

    # --- 4. the target rep --------------------------------------------------------------------------------------------

    def whisper(self, handoff_id: int, *, call_sid: str) -> Reply:
        """The target rep answered: who is calling, why, and the first rep's note; press 1 to join."""
        with self._store.unit_of_work() as session:
            handoff = self._require(session, handoff_id)
            interaction = handoff.interaction
            flow = self._flow_of(interaction)
            offer = crm.get_offer(session, handoff.to_offer_id) if handoff.to_offer_id else None
            if handoff.state is not HandoffState.DIALING or offer is None or offer.state is not OfferState.RINGING:
                return Goodbye(say=("Sorry, this transfer is over.",), language=flow.language)
            now = self._clock()
            handoff.to_call_sid = call_sid
            offer.rep_call_sid = call_sid
            offer.whispered_at = now
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
            handoff = self._require(session, handoff_id)
            flow = self._flow_of(handoff.interaction)
            offer = crm.get_offer(session, handoff.to_offer_id) if handoff.to_offer_id else None
            now = self._clock()
            if handoff.state is not HandoffState.DIALING or offer is None or offer.state is not OfferState.RINGING:
                return Goodbye(say=("Sorry, this transfer is over.",), language=flow.language)
            if (digits or "").strip() != "1":
                offer.state = OfferState.DECLINED
                offer.ended_at = now
                return Goodbye(say=("OK, the caller stays with your colleague.",), language=flow.language)
            if not crm.mark_rep_on_call(session, offer.rep_id, offer_id=offer.id, now=now):
                offer.state = OfferState.CANCELLED
                return Goodbye(say=("Sorry, this transfer has already ended.",), language=flow.language)
            offer.state = OfferState.ACCEPTED
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
            handoff = self._require(session, handoff_id)
            now = self._clock()
            offer = crm.get_offer(session, handoff.to_offer_id) if handoff.to_offer_id else None
            if handoff.state in (HandoffState.MOVING, HandoffState.DIALING):
                why = "declined" if offer is not None and offer.state is OfferState.DECLINED else call_status
                actions.extend(self._fail(session, handoff, f"{self._to_name(handoff)}: {why}", now))
            elif offer is not None and offer.state in (OfferState.ACCEPTED, OfferState.RINGING, OfferState.PENDING):
                # The target rep's own call is over (the hand-off finished earlier, or was cancelled).
                talked = offer.state is OfferState.ACCEPTED
                offer.state = OfferState.ENDED if talked else OfferState.CANCELLED
                offer.ended_at = now
                session.flush()
                end = crm.OfferEnd.TALKED if talked else crm.OfferEnd.CANCELLED
                actions.extend(self._dispatch.settle(session, offer, end))
        self._after_commit(actions)
        return Acknowledge()

    def target_unreachable(self, handoff_id: int, *, reason: str) -> None:
        """Twilio refused to ring the target rep (REST error)."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            handoff = self._require(session, handoff_id)
            if handoff.state is HandoffState.DIALING:
                why = f"could not ring {self._to_name(handoff)}: {reason}"
                actions.extend(self._fail(session, handoff, why, self._clock()))
        self._after_commit(actions)

    def move_failed(self, handoff_id: int, *, reason: str) -> None:
        """The first rep's leg could not be moved into the conference (it had just ended): nothing moved."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            handoff = self._require(session, handoff_id)
            if handoff.state is HandoffState.MOVING and handoff.caller_joined_at is None:
                actions.extend(self._fail(session, handoff, f"could not move the call: {reason}", self._clock()))
        self._after_commit(actions)

    # --- the ends of the legs -----------------------------------------------------------------------------------------

    def rep_left(self, handoff_id: int) -> Reply:
        """A rep's conference Dial is over: their part is done."""
        return Goodbye(say=())

    def caller_left(self, handoff_id: int) -> Reply:
        """The caller's conference Dial is over while they are still on the line (the conference ended)."""
        return self.after_conversation(handoff_id)

    def after_conversation(self, handoff_id: int) -> Reply:
        with self._store.unit_of_work() as session:
            handoff = self._require(session, handoff_id)
            interaction = handoff.interaction
            flow = self._flow_of(interaction)
            if interaction.status is InteractionStatus.ENDED:
                return Goodbye(say=(), language=flow.language)
            return self._calls.after_conversation(interaction, flow)

    def fallback(self, handoff_id: int) -> Reply:
        """The hand-off failed with nobody left in the conference: the caller goes to the next rep or back in line."""
        with self._store.unit_of_work() as session:
            handoff = self._require(session, handoff_id)
            interaction = handoff.interaction
            flow = self._flow_of(interaction)
            if interaction.status is InteractionStatus.ENDED:
                return Goodbye(say=(), language=flow.language)
            interaction.status = InteractionStatus.IN_FLOW
            interaction.department = handoff.to_department or interaction.department
            sorry = flow.phrase("find_someone_after_handoff", interaction.language)
            return self._calls.reroute(session, interaction, flow, say=(sorry,))

    def announcement(self, handoff_id: int) -> Reply:
        with self._store.unit_of_work() as session:
            handoff = self._require(session, handoff_id)
            flow = self._flow_of(handoff.interaction)
            text = f"{self._to_name(handoff)} could not take the call. The caller is back with you."
            return Announcement(text=text, language=flow.language, voice=flow.voice)

    def status_of(self, handoff_id: int, *, rep_id: int) -> HandoffView:
        with self._store.unit_of_work() as session:
            handoff = self._require(session, handoff_id)
            if rep_id not in (handoff.from_rep_id, handoff.to_rep_id):
                raise HandoffRefused("this transfer is not yours")
            return handoff_view(handoff)

    @staticmethod
    def _require(session: Session, handoff_id: int) -> Handoff:
        handoff = crm.get_handoff(session, handoff_id, for_update=True)
        if handoff is None:
            raise crm.UnknownInteraction(f"hand-off {handoff_id}")
        return handoff
