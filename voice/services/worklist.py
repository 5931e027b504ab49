"""The reps' work queue: callbacks nobody answered, voicemails to return, follow-ups (``Task``s).

A rep sees the open tasks of their departments that nobody else has claimed, and their own; a supervisor sees
every open task. Claim one, call the customer back from the console (Warmline places the call: the customer hears
who is calling back, the rep hears a whisper, as with any callback), then close it with a note. A call back from
a task is placed once, with that rep: it is never queued or retried, and its result goes on the task.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from crm_sync.errors import InvalidInput, Refused, UnknownInteraction
from crm_sync.models import (
    Callback,
    Interaction,
    OfferPurpose,
    Task,
    TaskState,
)
from crm_sync.queries import reps
from ivr_flows import CallerFacts, start_call
from voice.domain.actions import Action, PlaceCallback
from voice.domain.actor import Actor
from voice.domain.errors import Forbidden
from voice.services.audit import audit
from voice.services.context import Service

MAX_NOTE = 2000


class TaskRefused(Refused):
    """Not this rep's task, or not possible in its state."""


class NotYourTask(TaskRefused, Forbidden):
    """The task is not in this rep's work queue (another department's, or someone else is working on it)."""


@dataclass(frozen=True)
class WorkItem:
    id: int
    kind: str  # voicemail | callback | follow-up
    open: bool
    customer_id: int | None
    customer: str
    phone: str | None
    department: str | None
    note: str
    created_at: datetime
    due_at: datetime | None
    overdue: bool
    claimed_by: str | None
    claimed_by_me: bool
    call_sid: str | None
    recording_url: str | None
    transcript: str | None
    close_note: str | None
    closed_at: datetime | None


class WorkService(Service):
    def work_queue(self, actor: Actor) -> list[WorkItem]:
        """Open tasks this actor may work, most urgent first (overdue and due first, then oldest)."""
        with self._store.unit_of_work(read_only=True) as session:
            query = select(Task).where(Task.state == TaskState.OPEN)
            if not actor.supervisor:
                departments = reps.lock_rep(session, actor.rep_id).departments
                query = query.where(
                    or_(Task.department.in_(departments), Task.department.is_(None)),
                    or_(Task.claimed_by_rep_id.is_(None), Task.claimed_by_rep_id == actor.rep_id),
                )
            tasks = session.scalars(query.order_by(Task.due_at.asc().nulls_last(), Task.created_at, Task.id)).all()
            return [self._item(task, actor) for task in tasks]

    def item(self, actor: Actor, task_id: int) -> WorkItem:
        with self._store.unit_of_work(read_only=True) as session:
            return self._item(self._visible(session, actor, task_id), actor)

    def claim(self, actor: Actor, task_id: int) -> WorkItem:
        with self._store.unit_of_work() as session:
            task = self._visible(session, actor, task_id, lock=True)
            if task.claimed_by_rep_id not in (None, actor.rep_id) and not actor.supervisor:
                raise TaskRefused("someone else is working on this task")
            task.claim(actor.rep_id, now=self._clock())
            audit(session, actor, "task claimed", f"task:{task.id}")
            return self._item(task, actor)

    def release(self, actor: Actor, task_id: int) -> WorkItem:
        with self._store.unit_of_work() as session:
            task = self._mine(session, actor, task_id)
            task.release()
            audit(session, actor, "task released", f"task:{task.id}")
            return self._item(task, actor)

    def close(self, actor: Actor, task_id: int, *, note: str) -> WorkItem:
        if len(note) > MAX_NOTE:
            raise InvalidInput(f"note: at most {MAX_NOTE} characters")
        if not note.strip():
            raise InvalidInput("note: say what was done")
        with self._store.unit_of_work() as session:
            task = self._mine(session, actor, task_id, unclaimed_ok=True)
            task.close(by_rep_id=actor.rep_id, note=note, now=self._clock())
            audit(session, actor, "task closed", f"task:{task.id}", note=note.strip()[:200])
            return self._item(task, actor)

    def call_back(self, actor: Actor, task_id: int) -> str:
        """Call the task's customer now, with this rep: Warmline rings the customer, says who is calling back, then
        whispers the rep and connects them. Returns the new call's id (its interaction's key)."""
        actions: list[Action] = []
        now = self._clock()
        with self._store.unit_of_work() as session:
            task = self._mine(session, actor, task_id, unclaimed_ok=True)
            phone, our_number = self._numbers(session, task)
            rep = reps.lock_rep(session, actor.rep_id)
            rep.reserve_to_call_out(now=now, until=self._dispatch.callback_lease(now))
            if task.claimed_by_rep_id is None:
                task.claim(actor.rep_id, now=now)
            flow = self._flows.current()
            start, _ = start_call(
                flow,
                CallerFacts(known=task.customer_id is not None),
                now=now,
                classifier=self._flows.classifier_for(flow),
            )
            interaction = Interaction.call_out(
                key=f"task-{task.id}-{uuid.uuid4().hex[:12]}",
                to=phone,
                from_=our_number,
                customer_id=task.customer_id,
                department=task.department,
                flow_name=flow.name,
                flow_version=flow.version,
                flow_state=start.model_dump(mode="json"),
                now=now,
            )
            session.add(interaction)
            session.flush()
            callback = Callback(
                interaction_id=interaction.id, phone=phone, from_number=our_number, requested_at=now, task_id=task.id
            )
            session.add(callback)
            offer = self._dispatch.offer_pending(session, interaction, rep, purpose=OfferPurpose.CALLBACK)
            callback.start_attempt(offer.id)
            audit(session, actor, "customer called back", f"task:{task.id}", call=interaction.call_sid)
            actions.append(
                PlaceCallback(
                    callback_id=callback.id,
                    offer_id=offer.id,
                    to=phone,
                    from_=our_number,
                    timeout=self._settings.callbacks.ring_timeout,
                    attempt=callback.attempts,
                    detect_machines=self._settings.callbacks.detect_machines,
                )
            )
            call_sid = interaction.call_sid
        self._after_commit(actions)
        return call_sid

    # --- helpers ---------------------------------------------------------------------------------------------------

    def _numbers(self, session: Session, task: Task) -> tuple[str, str]:
        """Whom to ring (the customer's number, else the number that called) and from which of our numbers."""
        original = task.interaction
        phone = task.customer.phone if task.customer is not None else (original.caller_number if original else "")
        if not phone.startswith("+"):
            raise TaskRefused("this task has no number to call back")
        our_number = (original.called_number if original else None) or self._settings.transfer.caller_id
        if not our_number or not our_number.startswith("+"):
            raise TaskRefused("no number of ours to call from: set transfer.caller_id in config.yaml")
        return phone, our_number

    def _visible(self, session: Session, actor: Actor, task_id: int, *, lock: bool = False) -> Task:
        task = session.get(Task, task_id, with_for_update=lock)
        if task is None:
            raise UnknownInteraction(f"task {task_id}")
        if actor.supervisor:
            return task
        departments = reps.lock_rep(session, actor.rep_id).departments
        mine = task.claimed_by_rep_id in (None, actor.rep_id)
        if not mine or (task.department is not None and task.department not in departments):
            raise NotYourTask("this task is not in your work queue")
        return task

    def _mine(self, session: Session, actor: Actor, task_id: int, *, unclaimed_ok: bool = False) -> Task:
        task = self._visible(session, actor, task_id, lock=True)
        if task.claimed_by_rep_id == actor.rep_id or actor.supervisor:
            return task
        if unclaimed_ok and task.claimed_by_rep_id is None:
            return task
        raise TaskRefused("claim the task first")

    def _item(self, task: Task, actor: Actor) -> WorkItem:
        customer = task.customer
        interaction = task.interaction
        now = self._clock()
        return WorkItem(
            id=task.id,
            kind=task.kind,
            open=task.open,
            customer_id=task.customer_id,
            customer=customer.name if customer else (interaction.caller_number if interaction else "unknown caller"),
            phone=customer.phone if customer else (interaction.caller_number if interaction else None),
            department=task.department,
            note=task.note,
            created_at=task.created_at,
            due_at=task.due_at,
            overdue=task.open and task.due_at is not None and task.due_at < now,
            claimed_by=task.claimed_by.name if task.claimed_by else None,
            claimed_by_me=task.claimed_by_rep_id == actor.rep_id,
            call_sid=interaction.call_sid if interaction else None,
            recording_url=interaction.recording_url if interaction else None,
            transcript=interaction.transcript if interaction else None,
            close_note=task.close_note,
            closed_at=task.closed_at,
        )
