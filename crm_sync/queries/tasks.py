"""Follow-up tasks on customers' records (voicemails to return, callbacks nobody answered)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_sync.models import Task


def tasks_for_interaction(session: Session, interaction_id: int) -> Sequence[Task]:
    return session.scalars(select(Task).where(Task.interaction_id == interaction_id).order_by(Task.id)).all()
