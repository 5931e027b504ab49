"""What the housekeeping pass looks at before it takes the write lock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from crm_sync.models import Callback, Offer, Rep, RepState
from crm_sync.queries.callbacks import stale
from crm_sync.queries.line import Overflow, anyone_to_match
from crm_sync.queries.offers import offers_of_ended_calls_query


def housekeeping_due(session: Session, *, now: datetime, overflow: Sequence[Overflow]) -> bool:
    """Whether a pass has anything to do: a reservation or wrap-up that ran out, a rep held by an ended call, a
    callback whose attempt vanished, or a free rep and a waiting caller who could be matched. Read-only, so that an
    idle pass never takes the write lock."""
    expired = exists(select(Rep.id).where(Rep.state == RepState.RESERVED, Rep.reserved_until <= now))
    wrapped = exists(select(Rep.id).where(Rep.state == RepState.WRAP_UP, Rep.wrap_up_until <= now))
    ended = exists(offers_of_ended_calls_query().with_only_columns(Offer.id))
    lost_callback = exists(select(Callback.id).where(stale()))
    due = select(or_(expired, wrapped, ended, lost_callback, anyone_to_match(now, overflow)))
    return bool(session.execute(due).scalar())
