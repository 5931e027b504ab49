"""The transactional outbox's write side: a row per configured CRM for every change a CRM must hear of, written by
the flush that writes the change, so both commit together or not at all.

It hangs on the Store's write sessions (``before_flush``), so the services that end calls, save wrap-ups, store
transcripts and file tasks need not know about CRMs. It runs on every flush of every webhook: it only looks at what
the flush is about to write (the session's new and changed objects), and reads nothing from the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from crm_sync.models import Interaction, InteractionStatus, OutboxMessage, Task, utcnow

#: Interaction fields a CRM's copy of an ended call shows, by the reason a change of them is announced with.
_CALL_FIELDS: dict[str, str] = {
    "status": "call ended",
    "wrapped_up_at": "wrap-up",
    "disposition": "wrap-up",
    "wrap_up_notes": "wrap-up",
    "corrected_department": "wrap-up",
    "transcript": "transcript",
    "transcript_error": "transcript",
    "duration_seconds": "call details",
    "recording_url": "call details",
}
_TASK_FIELDS: dict[str, str] = {"state": "task closed", "note": "task updated", "close_note": "task closed"}


class OutboxWriter:
    """``before_flush`` listener: announces ended calls, their wrap-up/transcript changes and tasks to ``targets``."""

    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = tuple(targets)

    def __call__(self, session: Session, _flush_context: Any, _instances: Any) -> None:
        announcements: list[OutboxMessage] = []
        now = None
        for instance in session.new:
            kind = type(instance)
            if kind is Interaction and instance.status is InteractionStatus.ENDED:
                now = now or utcnow()
                announcements += self._call(instance, "call ended", now)
            elif kind is Task and instance.interaction_id is not None:
                now = now or utcnow()
                announcements += self._task(instance, "task filed", now)
        for instance in session.dirty:
            kind = type(instance)
            if kind is Interaction:
                if instance.status is not InteractionStatus.ENDED:
                    continue
                reason = _changed(instance, _CALL_FIELDS)
                if reason is not None:
                    now = now or utcnow()
                    announcements += self._call(instance, reason, now)
            elif kind is Task and instance.interaction_id is not None:
                reason = _changed(instance, _TASK_FIELDS)
                if reason is not None:
                    now = now or utcnow()
                    announcements += self._task(instance, reason, now)
        if announcements:
            session.add_all(announcements)

    def _call(self, interaction: Interaction, reason: str, now: Any) -> list[OutboxMessage]:
        return [OutboxMessage.announce_call(interaction, target=t, reason=reason, now=now) for t in self.targets]

    def _task(self, task: Task, reason: str, now: Any) -> list[OutboxMessage]:
        return [OutboxMessage.announce_task(task, target=t, reason=reason, now=now) for t in self.targets]


def _changed(instance: Any, fields: dict[str, str]) -> str | None:
    """The reason for the first watched field this flush really changes (set to another value), else None.

    ``committed_state`` lists the attributes set since the row was loaded: usually none of the watched ones, so the
    history (which compares values) is looked at only for those."""
    state = inspect(instance)
    touched = state.committed_state.keys() & fields.keys()
    if not touched:
        return None
    attributes = state.attrs
    for name, reason in fields.items():
        if name in touched and attributes[name].history.has_changes():
            return reason
    return None
