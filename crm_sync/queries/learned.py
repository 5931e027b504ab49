"""Learned examples (the reps' corrections routing learns from), by flow and by corrected call."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from crm_sync.models import LearnedExample

#: A flow's learned examples as of one moment: how many rows, how many changes in all, the highest id. Any
#: teaching, correcting again, withdrawing or removing changes it (each row counts its own changes).
Revision = tuple[int, int | None, int | None]


def revisions(session: Session) -> dict[str, Revision]:
    """Every flow's :data:`Revision`: one small aggregate, cheap enough for each worker's flow reload poll."""
    rows = session.execute(
        select(
            LearnedExample.flow_name,
            func.count(LearnedExample.id),
            func.sum(LearnedExample.changes),
            func.max(LearnedExample.id),
        ).group_by(LearnedExample.flow_name)
    ).all()
    return {name: (count, changed, highest) for name, count, changed, highest in rows}


def for_flow(session: Session, flow_name: str, *, removed: bool = True) -> Sequence[LearnedExample]:
    """The flow's learned examples, oldest first, with who taught them; ``removed=False`` leaves the removed out."""
    query = (
        select(LearnedExample)
        .options(joinedload(LearnedExample.taught_by))
        .where(LearnedExample.flow_name == flow_name)
        .order_by(LearnedExample.id)
    )
    if not removed:
        query = query.where(LearnedExample.removed_at.is_(None))
    return session.scalars(query).all()


def for_interaction(session: Session, interaction_id: int, *, for_update: bool = False) -> LearnedExample | None:
    query = select(LearnedExample).where(LearnedExample.interaction_id == interaction_id)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)
