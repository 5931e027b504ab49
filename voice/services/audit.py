"""The audit trail: every change a person makes, with who made it (``crm_sync.models.AuditEvent``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from crm_sync.models import AuditEvent
from voice.domain.actor import Actor


def audit(session: Session, actor: Actor | None, action: str, subject: str, **details: Any) -> None:
    """Record ``action`` on ``subject`` by ``actor`` (None: an admin at the command line), in the same unit of work
    as the change itself: the trail never misses a change, nor records one that was rolled back."""
    session.add(
        AuditEvent(actor_rep_id=actor.rep_id if actor else None, action=action, subject=subject, details=details)
    )
