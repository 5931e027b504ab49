"""What the console shows: the floor (every rep, every department's line and today's figures) and, for one rep,
the call in front of them (the screen-pop, from the moment it is offered until the wrap-up is saved).

Read-only: each view is one read-only unit of work, so a console never takes SQLite's write lock.

Today's figures, per department, in ``routing.timezone``'s day:
* answered: calls a rep took; abandoned: callers who hung up waiting (``abandoned``);
* service level at 20 s: of the answered and abandoned calls, the share answered within 20 s of joining the line
  (a call answered without waiting counts as within) — abandoned calls count against it, as Erlang C does;
* average handle time: talk time (answer to hang-up) plus the after-call work the rep actually took (wrap-up saved,
  else ``routing.wrap_up``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_sync.models import (
    WAITING_STATUSES,
    Customer,
    Interaction,
    Offer,
    Outcome,
    Rep,
    RepState,
    Task,
    TaskState,
)
from crm_sync.queries import interactions, reps
from ivr_flows import Flow
from voice.domain.actor import Actor
from voice.services.context import Service
from voice.services.wrapup import WrapUpRefused, last_call_taken, took_the_call

#: The service level's threshold (the industry's common 80/20 target is measured at 20 s).
SERVICE_LEVEL_SECONDS = 20
#: Past calls shown on a screen-pop.
HISTORY_SHOWN = 5


@dataclass(frozen=True)
class DepartmentFigures:
    department: str
    name: str
    waiting: int
    longest_wait_seconds: int
    reps_available: int
    reps_on_duty: int
    answered_today: int
    abandoned_today: int
    #: Share of today's answered and abandoned calls answered within 20 s (None: no calls yet).
    service_level: float | None
    average_handle_seconds: int | None


@dataclass(frozen=True)
class RepOnFloor:
    id: int
    name: str
    state: str
    away_reason: str | None
    since: datetime
    seconds_in_state: int
    after_call: str | None
    departments: tuple[str, ...]
    #: The call they are ringing for or talking on: who (name, or a masked number) and about what.
    call_sid: str | None
    caller: str | None
    call_department: str | None


@dataclass(frozen=True)
class Floor:
    at: datetime
    departments: tuple[DepartmentFigures, ...]
    reps: tuple[RepOnFloor, ...]


@dataclass(frozen=True)
class PastCall:
    call_sid: str
    when: datetime
    department: str | None
    outcome: str | None
    disposition: str | None
    notes: str | None
    rep: str | None


@dataclass(frozen=True)
class OpenTask:
    id: int
    kind: str
    note: str
    due_at: datetime | None


@dataclass(frozen=True)
class ScreenPop:
    """The call in front of a rep: offered (ringing, whisper), on the line, or in wrap-up."""

    call_sid: str
    #: "offered" | "talking" | "wrap-up"; a call looked up by its id that is not in front of the actor: "ended", or
    #: "in progress" (another rep's, seen by a supervisor).
    stage: str
    customer_id: int | None
    caller: str  # the customer's name, or the number (masked) for a caller the CRM does not know
    caller_number: str
    tier: str | None
    issue: str | None
    department: str | None
    department_name: str | None
    confidence: float | None
    summary: str | None
    waited_seconds: int
    history: tuple[PastCall, ...]
    open_tasks: tuple[OpenTask, ...]
    disposition: str | None
    notes: str | None
    corrected_department: str | None
    dispositions: tuple[str, ...]
    departments: tuple[tuple[str, str], ...]  # (id, spoken name), for "Wrong department?" and transfers
    wrap_up_until: datetime | None


class FloorService(Service):
    def floor(self) -> Floor:
        now = self._clock()
        flow = self._flows.current()
        day_start = self._dispatch.day_start(now)
        with self._store.unit_of_work(read_only=True) as session:
            rows = tuple(self._reps_on_floor(session, now))
            departments = tuple(
                self._figures(session, flow, department, now, day_start) for department in flow.departments
            )
        return Floor(at=now, departments=departments, reps=rows)

    def _reps_on_floor(self, session: Session, now: datetime) -> list[RepOnFloor]:
        return [
            RepOnFloor(
                id=rep.id,
                name=rep.name,
                state=rep.state.value,
                away_reason=rep.away_reason,
                since=rep.state_changed_at,
                seconds_in_state=max(0, int((now - rep.state_changed_at).total_seconds())),
                after_call=rep.after_call_state.value if rep.after_call_state else None,
                departments=rep.departments,
                call_sid=rep.call.call_sid if rep.call else None,
                caller=rep.call.caller if rep.call else None,
                call_department=rep.call.department if rep.call else None,
            )
            for rep in reps.reps_on_the_floor(session)
        ]

    def _figures(
        self, session: Session, flow: Flow, department: str, now: datetime, day_start: datetime
    ) -> DepartmentFigures:
        waiting_rows = session.execute(
            select(Interaction.enqueued_at).where(
                Interaction.department == department, Interaction.status.in_(WAITING_STATUSES)
            )
        ).all()
        longest = max(
            (int((now - enqueued).total_seconds()) for (enqueued,) in waiting_rows if enqueued is not None), default=0
        )
        staffed = reps.staffed_reps(session, department)
        today = session.execute(
            select(
                Interaction.outcome,
                Interaction.hold_seconds,
                Interaction.answered_at,
                Interaction.ended_at,
                Interaction.wrapped_up_at,
            ).where(
                Interaction.department == department,
                Interaction.ended_at.is_not(None),
                Interaction.ended_at >= day_start,
                Interaction.outcome.in_([Outcome.ANSWERED, Outcome.CALLBACK, Outcome.ABANDONED]),
            )
        ).all()
        answered = [row for row in today if row.outcome in (Outcome.ANSWERED, Outcome.CALLBACK)]
        abandoned = [row for row in today if row.outcome is Outcome.ABANDONED]
        within = sum(1 for row in answered if (row.hold_seconds or 0) <= SERVICE_LEVEL_SECONDS)
        offered = len(answered) + len(abandoned)
        handle: list[float] = []
        for row in answered:
            if row.answered_at is None or row.ended_at is None:
                continue
            talk = (row.ended_at - row.answered_at).total_seconds()
            after = (
                (row.wrapped_up_at - row.ended_at).total_seconds()
                if row.wrapped_up_at is not None and row.wrapped_up_at >= row.ended_at
                else self._settings.routing.wrap_up
            )
            handle.append(max(0.0, talk) + max(0.0, min(after, 3600)))
        return DepartmentFigures(
            department=department,
            name=flow.department_name(department),
            waiting=len(waiting_rows),
            longest_wait_seconds=longest,
            reps_available=sum(1 for rep in staffed if rep.state is RepState.AVAILABLE),
            reps_on_duty=len(staffed),
            answered_today=len(answered),
            abandoned_today=len(abandoned),
            service_level=within / offered if offered else None,
            average_handle_seconds=round(sum(handle) / len(handle)) if handle else None,
        )

    # --- one rep's screen ------------------------------------------------------------------------------------------

    def screen_for(self, actor: Actor, rep_id: int | None = None) -> ScreenPop | None:
        """The call in front of ``rep_id`` (default: the actor; another rep's only for a supervisor)."""
        rep_id = rep_id if rep_id is not None else actor.rep_id
        if not actor.may_act_for(rep_id):
            return None
        now = self._clock()
        with self._store.unit_of_work(read_only=True) as session:
            rep = session.get(Rep, rep_id)
            if rep is None:
                return None
            interaction, stage = _call_in_front_of(session, rep)
            if interaction is None:
                return None
            return self._screen(session, interaction, stage, rep, now)

    def screen_of_call(self, actor: Actor, call_sid: str) -> ScreenPop:
        """One call's record as its screen-pop showed it (to wrap it up later): only for the rep it is offered to or
        who took it, or a supervisor."""
        now = self._clock()
        with self._store.unit_of_work(read_only=True) as session:
            interaction = interactions.require_interaction(session, call_sid)
            rep = session.get(Rep, actor.rep_id)
            assert rep is not None  # the actor's session names an existing rep
            in_front, stage = _call_in_front_of(session, rep)
            offered_to_them = in_front is not None and in_front.id == interaction.id
            if not (actor.supervisor or offered_to_them or took_the_call(session, interaction, actor.rep_id)):
                raise WrapUpRefused("this call is not one you took")
            if not offered_to_them:
                stage = "ended" if interaction.ended else "in progress"
            return self._screen(session, interaction, stage, rep, now)

    def _screen(self, session: Session, interaction: Interaction, stage: str, rep: Rep, now: datetime) -> ScreenPop:
        flow = self._flow_of(interaction)
        customer = interaction.customer
        history = session.scalars(
            select(Interaction)
            .where(
                Interaction.customer_id == customer.id
                if customer is not None
                else Interaction.caller_number == interaction.caller_number,
                Interaction.id != interaction.id,
            )
            .order_by(Interaction.started_at.desc())
            .limit(HISTORY_SHOWN)
        ).all()
        tasks = (
            session.scalars(
                select(Task)
                .where(Task.customer_id == customer.id, Task.state == TaskState.OPEN)
                .order_by(Task.due_at.asc().nulls_last(), Task.id)
            ).all()
            if customer is not None
            else []
        )
        department = interaction.department
        return ScreenPop(
            call_sid=interaction.call_sid,
            stage=stage,
            customer_id=customer.id if customer else None,
            caller=_caller_label(interaction),
            caller_number=interaction.caller_number,
            tier=customer.tier if customer else None,
            issue=interaction.issue_text,
            department=department,
            department_name=flow.department_name(department) if department else None,
            confidence=interaction.confidence,
            summary=interaction.summary,
            waited_seconds=interaction.hold_seconds
            if interaction.ended or interaction.answered_at
            else interaction.waited_seconds(now),
            history=tuple(
                PastCall(
                    call_sid=past.call_sid,
                    when=past.started_at,
                    department=flow.department_name(past.department) if past.department else None,
                    outcome=past.outcome.value if past.outcome else past.status.value,
                    disposition=past.disposition,
                    notes=past.wrap_up_notes,
                    rep=past.rep.name if past.rep else None,
                )
                for past in history
            ),
            open_tasks=tuple(OpenTask(task.id, task.kind, task.note, task.due_at) for task in tasks),
            disposition=interaction.disposition,
            notes=interaction.wrap_up_notes,
            corrected_department=interaction.corrected_department,
            dispositions=tuple(self._settings.console.dispositions_for(interaction.corrected_department or department)),
            departments=tuple((key, flow.department_name(key)) for key in flow.departments),
            wrap_up_until=rep.wrap_up_until if stage == "wrap-up" else None,
        )


def _call_in_front_of(session: Session, rep: Rep) -> tuple[Interaction | None, str]:
    """The call a rep is offered or talking on; in wrap-up (or just after), the last call they took."""
    if rep.current_offer_id is not None:
        offer = session.get(Offer, rep.current_offer_id)
        if offer is not None:
            return offer.interaction, "talking" if rep.state is RepState.ON_CALL else "offered"
    if rep.state is RepState.WRAP_UP:
        # The call they took last, ended or handed on to a colleague (it goes on without them).
        last = last_call_taken(session, rep.id)
        return (session.get(Interaction, last) if last is not None else None), "wrap-up"
    return None, ""


def _caller_label(interaction: Interaction) -> str:
    """The customer's name, or the number for a caller the CRM does not know (unmasked: this is the CRM's own screen,
    for the people who call them back; logs are where numbers are masked)."""
    customer: Customer | None = interaction.customer
    return customer.name if customer is not None else interaction.caller_number
