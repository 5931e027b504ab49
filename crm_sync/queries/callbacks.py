"""Callbacks: callers who chose "call me back" and keep a virtual place in line."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crm_sync.errors import UnknownInteraction
from crm_sync.models import LIVE_OFFER_STATES, Callback, CallbackState, Offer


def callback_for(session: Session, interaction_id: int) -> Callback | None:
    return session.scalars(select(Callback).where(Callback.interaction_id == interaction_id)).one_or_none()


def require_callback(session: Session, callback_id: int) -> Callback:
    """The callback, locked."""
    callback = session.scalars(select(Callback).where(Callback.id == callback_id).with_for_update()).one_or_none()
    if callback is None:
        raise UnknownInteraction(f"callback {callback_id}")
    return callback


def stale() -> ColumnElement[bool]:
    """Callbacks still "ringing the customer" whose rep reservation is gone: the status callback about that attempt
    was lost (the reservation expired meanwhile)."""
    live_offer_ids = select(Offer.id).where(or_(*(Offer.state == state for state in LIVE_OFFER_STATES)))
    return and_(
        Callback.state == CallbackState.CALLING,
        or_(Callback.offer_id.is_(None), Callback.offer_id.not_in(live_offer_ids)),
    )


def stale_callbacks(session: Session) -> Sequence[Callback]:
    """See :func:`stale`; locked."""
    return session.scalars(select(Callback).where(stale()).with_for_update(skip_locked=True)).all()
