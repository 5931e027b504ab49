"""Wrap-up: the rep's record of a call (a disposition, notes, and "Wrong department?"), saved from the console or
``POST /api/calls/{CallSid}/wrap-up``, during the call, in wrap-up time, or days later.

Who may: the rep who took the call, or any supervisor. Saving during wrap-up time ends it: the rep is available
(and offered the next caller) at once. A correction keeps what the flow detected (``department``, ``confidence``)
next to what was right (``corrected_department``): routing learns from the pair (a ``LearnedExample``, saved in
the same transaction; see ``ivr_flows.learning`` for which ones it uses).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_sync.db import again_after_deadlock
from crm_sync.errors import InvalidInput
from crm_sync.models import Interaction, LearnedExample, Offer, OfferState, RepState
from crm_sync.queries import interactions, learned, reps
from voice.domain.actions import Action
from voice.domain.actor import Actor
from voice.domain.errors import Forbidden
from voice.services.audit import audit
from voice.services.context import Service

#: Longest wrap-up notes kept (a rep's notes, not a transcript).
MAX_NOTES = 5000


class WrapUpRefused(Forbidden):
    """Not this rep's call."""


@dataclass(frozen=True)
class WrapUp:
    call_sid: str
    disposition: str | None
    notes: str | None
    detected_department: str | None
    corrected_department: str | None
    #: The rep was in wrap-up for this call and is available again now.
    wrap_up_ended: bool


class WrapUpService(Service):
    def save(
        self,
        actor: Actor,
        call_sid: str,
        *,
        disposition: str | None = None,
        notes: str | None = None,
        department: str | None = None,
    ) -> WrapUp:
        """Record the wrap-up (each field given replaces what was there; None leaves it)."""
        if notes is not None and len(notes) > MAX_NOTES:
            raise InvalidInput(f"notes: at most {MAX_NOTES} characters")
        result, actions = again_after_deadlock(
            lambda: self._record(actor, call_sid, disposition=disposition, notes=notes, department=department)
        )
        self._after_commit(actions)
        return result

    def _record(
        self, actor: Actor, call_sid: str, *, disposition: str | None, notes: str | None, department: str | None
    ) -> tuple[WrapUp, list[Action]]:
        """One try at the wrap-up's transaction (see :meth:`save`)."""
        actions: list[Action] = []
        with self._store.unit_of_work() as session:
            interaction = interactions.require_interaction(session, call_sid, for_update=True)
            if not actor.supervisor and not took_the_call(session, interaction, actor.rep_id):
                raise WrapUpRefused("only the rep who took this call, or a supervisor, can wrap it up")
            flow = self._flow_of(interaction)
            department_of_call = interaction.corrected_department or interaction.routed_department
            if disposition is not None and disposition != "":
                allowed = self._settings.console.dispositions_for(department_of_call)
                if disposition not in allowed:
                    raise InvalidInput(f"disposition: {disposition!r} is not one of {', '.join(allowed)}")
            if department is not None and department not in flow.departments:
                raise InvalidInput(f"department: {department!r} is not one of {', '.join(flow.departments)}")
            corrected_before = interaction.corrected_department
            interaction.wrap_up(
                by_rep_id=actor.rep_id, disposition=disposition, notes=notes, department=department, now=self._clock()
            )
            if interaction.corrected_department != corrected_before:
                self._teach(session, interaction, actor)
            audit(
                session,
                actor,
                "wrap-up saved",
                f"interaction:{call_sid}",
                disposition=interaction.disposition,
                corrected_department=interaction.corrected_department,
                notes_length=len(interaction.wrap_up_notes or ""),
            )
            ended = False
            rep = reps.lock_rep(session, actor.rep_id)
            if rep.state is RepState.WRAP_UP and last_call_taken(session, rep.id) == interaction.id:
                # Saving ends the wrap-up time: back to available, and the first caller in line.
                rep.choose_presence(RepState.AVAILABLE, now=self._clock())
                actions = self._dispatch.next_caller_for(session, rep)
                ended = True
            result = WrapUp(
                call_sid=interaction.call_sid,
                disposition=interaction.disposition,
                notes=interaction.wrap_up_notes,
                detected_department=interaction.department,
                corrected_department=interaction.corrected_department,
                wrap_up_ended=ended,
            )
        return result, actions

    def _teach(self, session: Session, interaction: Interaction, actor: Actor) -> None:
        """Routing learns from the correction (``ivr_flows.learning`` decides whether it uses it): in the same
        transaction as the wrap-up, so every worker's flow library sees it at its next reload poll. A correction
        taken back is marked withdrawn, never deleted; a call with no words to learn from teaches nothing."""
        now = self._clock()
        existing = learned.for_interaction(session, interaction.id, for_update=True)
        corrected = interaction.corrected_department
        if corrected is None:
            if existing is not None:
                existing.withdraw(by=actor.name, now=now)
        elif existing is not None:
            existing.relearn(department=corrected, by_rep_id=actor.rep_id, supervisor=actor.supervisor, now=now)
        elif interaction.issue_text and interaction.issue_text.strip():
            session.add(
                LearnedExample.teach(
                    interaction,
                    text=interaction.issue_text.strip(),
                    department=corrected,
                    by_rep_id=actor.rep_id,
                    supervisor=actor.supervisor,
                    now=now,
                )
            )


def last_call_taken(session: Session, rep_id: int) -> int | None:
    """The interaction id of the last call the rep talked on: the one their wrap-up time is for, whether it ended
    or they handed the caller on to a colleague (it goes on without them)."""
    return session.scalar(
        select(Offer.interaction_id)
        .where(Offer.rep_id == rep_id, Offer.state.in_([OfferState.ACCEPTED, OfferState.ENDED]))
        .order_by(Offer.id.desc())
        .limit(1)
    )


def took_the_call(session: Session, interaction: Interaction, rep_id: int) -> bool:
    """The rep talked with the caller on this call (now, or before a transfer handed it on)."""
    if interaction.rep_id == rep_id:
        return True
    taken = session.scalar(
        select(Offer.id)
        .where(
            Offer.interaction_id == interaction.id,
            Offer.rep_id == rep_id,
            Offer.state.in_([OfferState.ACCEPTED, OfferState.ENDED]),
        )
        .limit(1)
    )
    return taken is not None
