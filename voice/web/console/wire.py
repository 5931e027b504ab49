"""The console's data as JSON: the one place the services' views (the floor, a rep's own state, the screen-pop, work
items, customers, hand-offs) become JSON objects. The console's pages and ``/console/state``, the reps' JSON API and
the live-events server all send what these functions build, so a page renders one shape whichever way it came.

Shapes: each dataclass becomes an object with its field names (``dataclasses.asdict``: tuples become lists, nested
dataclasses objects); every datetime is ISO 8601 in UTC with a ``Z``. The live-updates protocol wraps the four
pieces a console follows — ``floor``, ``me``, ``screen``, ``work`` — each as ``{"detected_at": …, "data": …}``
(:func:`piece`), all four in one object (:func:`snapshot`) as ``GET /console/state`` answers and the events server's
``/console/events/snapshot`` does, or one per message on the stream (``event: floor`` …, its data the piece plus
``event``, ``reason`` and ``sent_at``).

On the stream the floor is sent whole once, when the console connects (``event: floor``, its data also carrying
the floor's ``version``), and from then on as what changed (``event: floor-changes``: ``base``, the version it
applies to, ``version``, the one it makes, and as ``data`` :func:`floor_changes`' object), since the whole floor is
large and a change mostly moves one rep. A page applies a change only to the version it names; any other is a
console that missed something, which asks for the whole floor again rather than show a wrong one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from voice.domain.actor import Actor
from voice.services.customers import CustomerRecord, CustomerSummary
from voice.services.floor import Floor, RepOnFloor, ScreenPop
from voice.services.handoffs import HandoffView
from voice.services.presence import RepView
from voice.services.worklist import WorkItem
from voice.services.wrapup import WrapUp

JSON = dict[str, Any]
#: The pieces a console follows, in the order a full set is sent.
PIECES = ("floor", "me", "screen", "work")
#: Fields of a rep's row on the floor that say whose caller it is: left out of the floor a rep (not a supervisor)
#: is sent. Their own caller is on their ``screen``.
CALLER_FIELDS = ("caller", "call_sid")
#: The stream's message for a change to the floor (the whole floor is ``floor``, the first piece of :data:`PIECES`).
FLOOR_CHANGES = "floor-changes"
#: The floor's lists of rows, each with the field that tells its rows apart: what :func:`floor_changes` compares.
FLOOR_ROWS = {"departments": "department", "reps": "id"}
#: Fields of a row that its own other fields already tell (a rep's time in state: from ``since``; the page ticks it):
#: a row whose only change is there is not sent again. A department's ``longest_wait_seconds`` is not one: it counts
#: up to the floor's ``at``, which every change moves, so a department whose wait moved goes with it (they are few).
SELF_TICKING_FIELDS = frozenset({"seconds_in_state"})


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC, with a ``Z`` (a naive datetime is taken as UTC, as the store keeps them)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def plain(value: Any) -> Any:
    """``value`` as JSON values: dataclasses as objects, tuples as lists, datetimes as :func:`iso` strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


# --- the four pieces a console follows ------------------------------------------------------------------------------


def floor_json(floor: Floor, *, callers: bool) -> JSON:
    """The floor; ``callers=False`` (a rep's console): who is on other reps' calls left out, names and presence
    kept (the transfer directory needs them)."""
    whole: JSON = plain(floor)
    return whole if callers else without_callers(whole)


def without_callers(whole: JSON) -> JSON:
    """A supervisor's floor (``floor_json(callers=True)``) as a rep's console is sent it: who the callers are left
    out. Cheaper than building it again from the floor (``plain`` is most of a reading's cost)."""
    return {**whole, "reps": [{**row, **dict.fromkeys(CALLER_FIELDS)} for row in whole["reps"]]}


def floor_changes(previous: JSON, current: JSON) -> JSON:
    """What turns the floor ``previous`` (:func:`floor_json`) into ``current``, for :func:`apply_floor_changes`:

    ``{"fields": {"at": …}, "reps": {"changed": [row, …], "removed": [id, …], "order": [id, …]}, "departments": …}``

    ``fields``: the floor's own fields (all but its rows; always there). Per list of rows (:data:`FLOOR_ROWS`), only
    what is not empty: the rows that are new or changed (whole: each carries its key), the keys of the rows that
    went, and the order of all keys when the rows' order is not the one applying the rest gives (the kept rows as
    they were, new ones after them). Rows are lists rather than objects keyed by id: JSON keys are strings, rep ids
    numbers. A row that changed only in :data:`SELF_TICKING_FIELDS` is left out, so applying gives ``current`` but
    for those fields of rows that did not change otherwise."""
    changes: JSON = {"fields": {name: value for name, value in current.items() if name not in FLOOR_ROWS}}
    for name, key in FLOOR_ROWS.items():
        before = {row[key]: row for row in previous[name]}
        now_keys = [row[key] for row in current[name]]
        still_there = set(now_keys)
        rows: JSON = {}
        if changed := [row for row in current[name] if _row_changed(before.get(row[key]), row)]:
            rows["changed"] = changed
        if removed := [row_key for row_key in before if row_key not in still_there]:
            rows["removed"] = removed
        kept_in_place = [row_key for row_key in before if row_key in still_there]
        if kept_in_place + [row_key for row_key in now_keys if row_key not in before] != now_keys:
            rows["order"] = now_keys
        if rows:
            changes[name] = rows
    return changes


def _row_changed(before: JSON | None, after: JSON) -> bool:
    if before is None:
        return True
    if before.keys() != after.keys():
        return True
    return any(before[name] != value for name, value in after.items() if name not in SELF_TICKING_FIELDS)


def apply_floor_changes(floor: JSON, changes: JSON) -> JSON:
    """The floor :func:`floor_changes` made ``changes`` for, from the floor it made them from (as the page does it,
    in console.js). Raises KeyError for changes that do not fit ``floor`` (an order naming a row it does not have)."""
    applied: JSON = dict(changes["fields"])
    for name, key in FLOOR_ROWS.items():
        rows = changes.get(name, {})
        removed = set(rows.get("removed", ()))
        # A dict keeps the kept rows in place and puts new ones last: the order the builder compares with.
        by_key = {row[key]: row for row in floor[name] if row[key] not in removed}
        for row in rows.get("changed", ()):
            by_key[row[key]] = row
        applied[name] = [by_key[row_key] for row_key in rows["order"]] if "order" in rows else list(by_key.values())
    return applied


def floor_for(actor: Actor, floor: Floor) -> JSON:
    return floor_json(floor, callers=actor.supervisor)


def me_json(actor: Actor, row: RepOnFloor | None, at: datetime, screen: ScreenPop | None) -> JSON | None:
    """The rep's own presence: state and since when (``at``: when it was read), what they chose for after the call,
    the away reason, and the end of their wrap-up time."""
    if row is None:
        return None
    wrap_up_until = screen.wrap_up_until if screen is not None and screen.stage == "wrap-up" else None
    return {
        "rep_id": actor.rep_id,
        "name": row.name,
        "supervisor": actor.supervisor,
        "state": row.state,
        "since": iso(row.since),
        "at": iso(at),
        "seconds_in_state": row.seconds_in_state,
        "after_call": row.after_call,
        "away_reason": row.away_reason,
        "wrap_up_until": iso(wrap_up_until) if wrap_up_until is not None else None,
        "departments": list(row.departments),
    }


def row_of(floor: Floor, rep_id: int) -> RepOnFloor | None:
    return next((row for row in floor.reps if row.id == rep_id), None)


def screen_json(screen: ScreenPop | None) -> JSON | None:
    return plain(screen) if screen is not None else None


def work_counts(items: Iterable[WorkItem]) -> JSON:
    """The work queue's open items and how many of them are overdue (the console's badge)."""
    listed = list(items)
    return {"open": len(listed), "overdue": sum(1 for item in listed if item.overdue)}


def piece(data: Any, detected_at: datetime | None) -> JSON:
    return {"detected_at": iso(detected_at) if detected_at is not None else None, "data": data}


def snapshot(pieces: Mapping[str, JSON], *, sent_at: datetime, snapshot_id: str | None = None) -> JSON:
    """The four pieces as one object (``pieces``: name → :func:`piece`)."""
    return {"id": snapshot_id, "sent_at": iso(sent_at), **{name: pieces[name] for name in PIECES}}


def console_state(
    actor: Actor, floor: Floor, screen: ScreenPop | None, work: Sequence[WorkItem], *, sent_at: datetime
) -> JSON:
    """What ``GET /console/state`` answers: the four pieces, each detected when the floor was read."""
    at = floor.at
    return snapshot(
        {
            "floor": piece(floor_for(actor, floor), at),
            "me": piece(me_json(actor, row_of(floor, actor.rep_id), at, screen), at),
            "screen": piece(screen_json(screen), at),
            "work": piece(work_counts(work), at),
        },
        sent_at=sent_at,
    )


# --- everything else the console and the API answer with ------------------------------------------------------------


def rep_json(rep: RepView) -> JSON:
    return {
        "id": rep.id,
        "name": rep.name,
        "state": rep.state,
        "after_call": rep.after_call,
        "away_reason": rep.away_reason,
        "role": rep.role,
        "departments": list(rep.departments),
    }


def handoff_json(handoff: HandoffView) -> JSON:
    return {
        "id": handoff.id,
        "state": handoff.state,
        "to_rep": handoff.to_rep,
        "to_department": handoff.to_department,
        "failure": handoff.failure,
    }


def wrap_up_json(wrap_up: WrapUp) -> JSON:
    result: JSON = plain(wrap_up)
    return result


def work_item_json(item: WorkItem) -> JSON:
    result: JSON = plain(item)
    return result


def customer_summary_json(customer: CustomerSummary) -> JSON:
    result: JSON = plain(customer)
    return result


def customer_json(record: CustomerRecord) -> JSON:
    result: JSON = plain(record)
    return result
