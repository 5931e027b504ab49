"""Offers: each attempt to give a call to a rep, so "who already declined this caller" is a query."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from crm_sync.errors import UnknownInteraction
from crm_sync.models import LIVE_OFFER_STATES, Interaction, InteractionStatus, Offer, OfferPurpose, OfferState, Rep

_LIVE = or_(*(Offer.state == state for state in LIVE_OFFER_STATES))


def require_offer(session: Session, offer_id: int) -> Offer:
    offer = session.get(Offer, offer_id)
    if offer is None:
        raise UnknownInteraction(f"offer {offer_id}")
    return offer


def find_offer(session: Session, offer_id: int | None) -> Offer | None:
    return session.get(Offer, offer_id) if offer_id is not None else None


def open_offer(session: Session, interaction_id: int) -> Offer | None:
    """The interaction's offer still in play (pending, ringing or accepted), if any; hand-offs' aside."""
    return session.scalars(
        select(Offer)
        .where(Offer.interaction_id == interaction_id, _LIVE, Offer.purpose != OfferPurpose.HANDOFF)
        .order_by(Offer.id.desc())
        .limit(1)
    ).one_or_none()


def live_offers(session: Session, interaction_id: int) -> Sequence[Offer]:
    """Every offer of the interaction still holding a rep (a ring-all group has several; a hand-off has two)."""
    return session.scalars(select(Offer).where(Offer.interaction_id == interaction_id, _LIVE).order_by(Offer.id)).all()


def offers_in_group(session: Session, leader: Offer) -> Sequence[Offer]:
    """The offers rung together with ``leader`` (ring-all), or just ``leader``."""
    if leader.group_id is None:
        return [leader]
    return session.scalars(select(Offer).where(Offer.group_id == leader.group_id).order_by(Offer.id)).all()


_DECLINED = select(Offer.rep_id).where(
    Offer.interaction_id == bindparam("interaction_id"), Offer.state == OfferState.DECLINED
)


def declined_rep_ids(session: Session, interaction_id: int) -> set[int]:
    """Reps who declined this caller or let their call ring out: they are not offered this caller again. An offer
    withdrawn (the caller hung up, another rep of a ring group answered, a callback went unanswered) does not
    count."""
    rows = session.connection().execute(_DECLINED, {"interaction_id": interaction_id})
    return {rep_id for (rep_id,) in rows}


def offers_of_ended_calls(session: Session) -> Sequence[Offer]:
    """Offers still holding a rep although the interaction is closed (the Dial action about them was lost)."""
    return session.scalars(offers_of_ended_calls_query()).unique().all()


def offers_of_ended_calls_query() -> Select[Offer]:
    return (
        select(Offer)
        .join(Interaction, Interaction.id == Offer.interaction_id)
        .join(Rep, and_(Rep.id == Offer.rep_id, Rep.current_offer_id == Offer.id))
        .where(Interaction.status == InteractionStatus.ENDED, _LIVE)
    )
