"""The reps' corrections, read from the store for the flow library (``crm_sync.models.LearnedExample``).

Never fatal, never in the way: routing learns on top of the flow's own examples, so when the store cannot be read
(a fresh database before ``warmline db upgrade``, an outage) the library keeps the classifiers it has and tries again
at its next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from crm_sync.db import Store
from crm_sync.models import LearnedExample
from crm_sync.queries import learned
from crm_sync.queries.learned import Revision
from ivr_flows.learning import Correction

log = logging.getLogger(__name__)


def as_correction(row: LearnedExample) -> Correction:
    """What the guard (``ivr_flows.learning.admit``) knows of a learned example: people by their rep id."""
    return Correction(
        key=row.id,
        words=row.text,
        detected=row.detected_department,
        department=row.department,
        taught_by=f"rep {row.taught_by_rep_id}",
        supervisor=row.taught_by_supervisor,
        taught_at=row.taught_at,
    )


@dataclass(frozen=True)
class LearnedChanges:
    """Every flow's revision now, and the corrections (not removed) of the flows whose revision changed."""

    revisions: Mapping[str, Revision]
    corrections: Mapping[str, tuple[Correction, ...]]


class LearnedExamples:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._readable: bool | None = None

    def changes(self, known: Mapping[str, Revision]) -> LearnedChanges | None:
        """What changed since the revisions in ``known``; None when the store cannot be read now."""
        try:
            with self._store.unit_of_work(read_only=True) as session:
                revisions = learned.revisions(session)
                changed = {name for name in {*revisions, *known} if revisions.get(name) != known.get(name)}
                corrections = {
                    name: tuple(as_correction(row) for row in learned.for_flow(session, name, removed=False))
                    for name in sorted(changed)
                }
        except SQLAlchemyError as exc:
            # Loud once when it was readable before (an outage); quiet for a store never set up (a fresh install).
            if self._readable:
                log.warning("learned examples not readable, routing keeps what it learned: %s", exc.__class__.__name__)
            elif self._readable is None:
                log.info("learned examples not readable (is the database migrated?): %s", exc.__class__.__name__)
            self._readable = False
            return None
        if self._readable is False:
            log.info("learned examples readable again")
        self._readable = True
        return LearnedChanges(revisions=revisions, corrections=corrections)

    def corrections(self, flow_name: str) -> Sequence[Correction] | None:
        """The flow's corrections (not removed); None when the store cannot be read."""
        found = self.changes({})
        return None if found is None else found.corrections.get(flow_name, ())
