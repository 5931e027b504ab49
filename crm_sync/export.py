"""Export of the interaction log (one record per call) as JSON or CSV, for admins and external CRMs.

Records are written as they are read, so the output never exists twice in memory (once as records, once as text).
Phone numbers are NOT masked here: the export is CRM data for admins, and a masked number is useless to the systems
it is fed into. Masking is for logs (crm_sync.phones.mask_phone), which are read by many more people.

Field conventions, the same in both formats so that consumers can switch formats without surprises:

* times are ISO 8601 in UTC with a ``Z`` suffix (``2025-03-04T15:06:07Z``, fractional seconds when there are any);
* enums (status, outcome) are their stored string values;
* a missing value is ``null`` in JSON and an empty cell in CSV;
* the few list-like fields are one readable string, so both formats stay flat: ``survey`` is
  ``question=key; question=key`` in the flow's order, ``handoffs`` lists the rep-to-rep transfers in order as
  ``From Rep -> To Rep (completed)`` or ``From Rep -> department (failed: why)``, each followed by the first rep's
  note when there is one (``note: "…"``), joined by ``; ``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Literal, TextIO

from sqlalchemy.orm import Session

from crm_sync.db import Store
from crm_sync.models import Handoff, Interaction
from crm_sync.queries.handoffs import handoffs_of_interactions
from crm_sync.queries.interactions import iter_interactions

__all__ = ["EXPORT_FIELDS", "ExportFormat", "export_interactions", "interaction_record"]

ExportFormat = Literal["json", "csv"]

#: The columns of an export, in order. Consumers (and the CSV header) rely on these names: add, never rename.
EXPORT_FIELDS: tuple[str, ...] = (
    "call_sid",
    "caller_number",
    "customer_name",
    "customer_phone",
    "started_at",
    "answered_at",
    "ended_at",
    "duration_seconds",
    "hold_seconds",
    "issue_text",
    "capture_method",
    "department",
    "confidence",
    "rep_name",
    "summary",
    "outcome",
    "status",
    "flow_name",
    "flow_version",
    "recording_url",
    "called_number",
    "language",
    "transcript",
    "survey",
    "handoffs",
    "disposition",
    "wrap_up_notes",
    "corrected_department",
    "wrapped_up_at",
)

_BATCH = 500  # interactions whose hand-offs are read together

Scalar = str | int | float | None


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _survey(answers: dict[str, object] | None) -> str | None:
    return "; ".join(f"{question}={key}" for question, key in answers.items()) if answers else None


def _handoff(handoff: Handoff) -> str:
    target = handoff.to_rep.name if handoff.to_rep is not None else handoff.to_department or "?"
    outcome = handoff.state.value + (f": {handoff.failure}" if handoff.failure else "")
    note = " ".join(handoff.note.split())
    return f"{handoff.from_rep.name} -> {target} ({outcome})" + (f' note: "{note}"' if note else "")


def interaction_record(interaction: Interaction, handoffs: Sequence[Handoff] = ()) -> dict[str, Scalar]:
    """One interaction as a flat record of JSON-ready scalars, keyed by EXPORT_FIELDS in order. ``handoffs``: its
    rep-to-rep transfers, oldest first (the export reads them in batches, see ``export_interactions``)."""
    customer = interaction.customer
    return {
        "call_sid": interaction.call_sid,
        "caller_number": interaction.caller_number,
        "customer_name": customer.name if customer is not None else None,
        "customer_phone": customer.phone if customer is not None else None,
        "started_at": _iso(interaction.started_at),
        "answered_at": _iso(interaction.answered_at),
        "ended_at": _iso(interaction.ended_at),
        "duration_seconds": interaction.duration_seconds,
        "hold_seconds": interaction.hold_seconds,
        "issue_text": interaction.issue_text,
        "capture_method": interaction.capture_method,
        "department": interaction.department,
        "confidence": interaction.confidence,
        "rep_name": interaction.rep.name if interaction.rep is not None else None,
        "summary": interaction.summary,
        "outcome": interaction.outcome.value if interaction.outcome is not None else None,
        "status": interaction.status.value,
        "flow_name": interaction.flow_name,
        "flow_version": interaction.flow_version,
        "recording_url": interaction.recording_url,
        "called_number": interaction.called_number,
        "language": interaction.language,
        "transcript": interaction.transcript,
        "survey": _survey(interaction.survey),
        "handoffs": "; ".join(_handoff(handoff) for handoff in handoffs) or None,
        "disposition": interaction.disposition,
        "wrap_up_notes": interaction.wrap_up_notes,
        "corrected_department": interaction.corrected_department,
        "wrapped_up_at": _iso(interaction.wrapped_up_at),
    }


def export_interactions(store: Store, out: TextIO, *, fmt: ExportFormat) -> int:
    """Write every interaction, oldest first, to ``out`` as ``fmt``; returns how many were written.

    JSON is one pretty-printed list of objects (UTF-8 text, non-ASCII kept as is); CSV is a header plus one row per
    interaction. ``out`` should be opened with ``encoding="utf-8"`` (and ``newline=""`` for CSV, as the csv module
    asks). The read runs in one unit of work, so the export is one consistent snapshot.
    """
    if fmt not in ("json", "csv"):
        raise ValueError(f"unknown export format {fmt!r}: expected 'json' or 'csv'")
    with store.unit_of_work(read_only=True) as session:
        records = _records(session, iter_interactions(session))
        return _write_json(records, out) if fmt == "json" else _write_csv(records, out)


def _records(session: Session, interactions: Iterable[Interaction]) -> Iterator[dict[str, Scalar]]:
    """Records in the order given, each with its hand-offs: read per batch of interactions, not per interaction."""
    stream = iter(interactions)
    while batch := list(islice(stream, _BATCH)):
        handoffs = handoffs_of_interactions(session, [interaction.id for interaction in batch])
        for interaction in batch:
            yield interaction_record(interaction, handoffs.get(interaction.id, ()))


def _write_json(records: Iterator[dict[str, Scalar]], out: TextIO) -> int:
    """Stream ``json.dump(list, indent=2, ensure_ascii=False)``'s exact output, one object at a time."""
    count = 0
    for record in records:
        out.write("[\n  " if count == 0 else ",\n  ")
        # Indent only at "\n": json leaves U+2028 and friends unescaped with ensure_ascii=False, and those must not
        # be treated as line breaks (str.splitlines / textwrap.indent would insert spaces into the string).
        out.write(json.dumps(record, ensure_ascii=False, indent=2).replace("\n", "\n  "))
        count += 1
    out.write("\n]\n" if count else "[]\n")
    return count


def _write_csv(records: Iterator[dict[str, Scalar]], out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)  # None is written as an empty cell
    writer.writeheader()
    count = 0
    for record in records:
        writer.writerow(record)
        count += 1
    return count
