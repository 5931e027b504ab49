"""Rep-to-rep hand-offs of a call (the interaction keeps every one)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, joinedload

from crm_sync.errors import UnknownInteraction
from crm_sync.models import ACTIVE_HANDOFF_STATES, Handoff


def active_handoff(session: Session, interaction_id: int) -> Handoff | None:
    """The hand-off of this call still under way (moving, dialing or consulting), if any; locked."""
    return session.scalars(
        select(Handoff)
        .where(
            Handoff.interaction_id == interaction_id,
            or_(*(Handoff.state == state for state in ACTIVE_HANDOFF_STATES)),
        )
        .order_by(Handoff.id.desc())
        .limit(1)
        .with_for_update()
    ).one_or_none()


def require_handoff(session: Session, handoff_id: int) -> Handoff:
    """The hand-off, locked."""
    handoff = session.scalars(select(Handoff).where(Handoff.id == handoff_id).with_for_update()).one_or_none()
    if handoff is None:
        raise UnknownInteraction(f"hand-off {handoff_id}")
    return handoff


def handoffs_of(session: Session, interaction_id: int) -> Sequence[Handoff]:
    return session.scalars(select(Handoff).where(Handoff.interaction_id == interaction_id).order_by(Handoff.id)).all()


def handoffs_of_interactions(session: Session, interaction_ids: Sequence[int]) -> dict[int, list[Handoff]]:
    """The hand-offs of many interactions (with both reps loaded), oldest first per interaction."""
    found: dict[int, list[Handoff]] = {}
    if not interaction_ids:
        return found
    query = (
        select(Handoff)
        .where(Handoff.interaction_id.in_(list(interaction_ids)))
        .options(joinedload(Handoff.from_rep), joinedload(Handoff.to_rep))
        .order_by(Handoff.interaction_id, Handoff.id)
    )
    for handoff in session.scalars(query).unique():
        found.setdefault(handoff.interaction_id, []).append(handoff)
    return found
