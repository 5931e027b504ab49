"""What the live-events stream sends for a change to the floor (``wire.floor_changes``) and how a console applies it
(``wire.apply_floor_changes``, as console.js does): on floors built by ``wire.floor_json`` from the service's own
dataclasses, through a JSON round trip as on the wire."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from voice.services.floor import DepartmentFigures, Floor, RepOnFloor
from voice.web.console import wire

AT = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
STATES = ("available", "reserved", "on_call", "wrap_up", "away", "offline")


def department(key: str, *, waiting: int = 0, longest: int = 0) -> DepartmentFigures:
    return DepartmentFigures(key, key.title(), waiting, longest, 3, 5, 40, 2, 0.9, 210)


def rep(rep_id: int, state: str = "available", *, since: datetime = AT, at: datetime = AT) -> RepOnFloor:
    on_call = state in ("reserved", "on_call")
    return RepOnFloor(
        id=rep_id,
        name=f"Rep {rep_id:03d}",
        state=state,
        away_reason="lunch" if state == "away" else None,
        since=since,
        seconds_in_state=int((at - since).total_seconds()),
        after_call=None,
        departments=("billing", "general"),
        call_sid=f"CA{rep_id:032d}" if on_call else None,
        caller="Jane Doe" if on_call else None,
        call_department="billing" if on_call else None,
    )


def busy_floor(reps: int = 140, at: datetime = AT) -> Floor:
    return Floor(
        at=at,
        departments=(department("billing", waiting=2, longest=40), department("general"), department("sales")),
        reps=tuple(rep(rep_id, STATES[rep_id % len(STATES)], at=at) for rep_id in range(1, reps + 1)),
    )


def later(floor: Floor, seconds: int) -> Floor:
    """The same floor read ``seconds`` later: only the clock moved."""
    at = floor.at + timedelta(seconds=seconds)
    return Floor(
        at=at,
        departments=tuple(
            dataclasses.replace(row, longest_wait_seconds=row.longest_wait_seconds + seconds) if row.waiting else row
            for row in floor.departments
        ),
        reps=tuple(dataclasses.replace(row, seconds_in_state=row.seconds_in_state + seconds) for row in floor.reps),
    )


def moved(floor: Floor, rep_id: int, state: str) -> Floor:
    """``floor`` with one rep in another state since its ``at``."""
    return dataclasses.replace(
        floor,
        reps=tuple(rep(row.id, state, since=floor.at, at=floor.at) if row.id == rep_id else row for row in floor.reps),
    )


def on_the_wire(data: Any) -> Any:
    return json.loads(json.dumps(data, separators=(",", ":")))


def without_self_ticking(floor: wire.JSON) -> wire.JSON:
    return {**floor, "reps": [{**row, "seconds_in_state": None} for row in floor["reps"]]}


def round_trip(previous: wire.JSON, current: wire.JSON) -> tuple[wire.JSON, wire.JSON]:
    """The changes as a console receives them, and the floor it makes of them."""
    changes = on_the_wire(wire.floor_changes(previous, current))
    return changes, wire.apply_floor_changes(on_the_wire(previous), changes)


@pytest.mark.parametrize("callers", [True, False])
def test_one_rep_changing_state_sends_that_row_and_the_floors_own_fields(callers: bool) -> None:
    before = busy_floor()
    after = moved(later(before, 5), 7, "on_call")
    previous, current = wire.floor_json(before, callers=callers), wire.floor_json(after, callers=callers)
    changes, applied = round_trip(previous, current)
    assert changes["fields"] == {"at": wire.iso(after.at)}
    assert [row["id"] for row in changes["reps"]["changed"]] == [7]
    assert changes["reps"].keys() == {"changed"}  # nobody removed, the order as it was
    # The one department with callers waiting goes too: its wait counts up to the floor's `at`, which moved.
    assert [row["department"] for row in changes["departments"]["changed"]] == ["billing"]
    assert without_self_ticking(applied) == without_self_ticking(current)
    assert applied["reps"][6] == current["reps"][6]  # the changed row whole, its time in state included
    # A rep's console does not see other reps' callers, in a change any more than in a whole floor.
    assert (changes["reps"]["changed"][0]["caller"] is None) is not callers
    whole = len(json.dumps(current, separators=(",", ":")))
    assert len(json.dumps(changes, separators=(",", ":"))) * 20 < whole


def test_the_clock_alone_changes_no_row_but_a_waiting_departments() -> None:
    before = busy_floor(20)
    after = later(before, 30)
    previous, current = wire.floor_json(before, callers=True), wire.floor_json(after, callers=True)
    changes, applied = round_trip(previous, current)
    assert "reps" not in changes
    assert [row["department"] for row in changes["departments"]["changed"]] == ["billing"]
    # Every wait on the page counts from the new `at`: the floor applied shows the same as the one read.
    assert applied["departments"] == current["departments"] and applied["at"] == current["at"]
    assert without_self_ticking(applied) == without_self_ticking(current)
    assert applied["reps"] == previous["reps"]  # the page ticks times in state from `since`


def test_reps_that_come_and_go_and_a_new_order() -> None:
    before = busy_floor(10)
    reps = list(before.reps)
    joined = rep(11, "available")
    after = dataclasses.replace(before, reps=(reps[3], *reps[:3], joined, *reps[5:]))  # 5 left, 4 first, 11 in
    previous, current = wire.floor_json(before, callers=True), wire.floor_json(after, callers=True)
    changes, applied = round_trip(previous, current)
    assert [row["id"] for row in changes["reps"]["changed"]] == [11]
    assert changes["reps"]["removed"] == [5]
    assert changes["reps"]["order"] == [row.id for row in after.reps]
    assert applied == current


def test_the_order_is_left_out_when_applying_the_rest_gives_it() -> None:
    before = busy_floor(6)
    after = dataclasses.replace(before, reps=(*before.reps[1:], rep(7)))  # the first left, one came last
    changes, applied = round_trip(wire.floor_json(before, callers=True), wire.floor_json(after, callers=True))
    assert changes["reps"] == {"changed": [wire.floor_json(after, callers=True)["reps"][-1]], "removed": [1]}
    assert applied == wire.floor_json(after, callers=True)


def test_nothing_changed_is_the_floors_fields_alone() -> None:
    floor = wire.floor_json(dataclasses.replace(busy_floor(5), departments=(department("general"),)), callers=True)
    assert wire.floor_changes(floor, floor) == {"fields": {"at": floor["at"]}}


def test_changes_that_do_not_fit_the_floor_are_refused() -> None:
    before, after = busy_floor(4), busy_floor(5)
    changes = wire.floor_changes(wire.floor_json(before, callers=True), wire.floor_json(after, callers=True))
    changes["reps"]["order"] = [1, 2, 3, 4, 99]
    with pytest.raises(KeyError):
        wire.apply_floor_changes(wire.floor_json(before, callers=True), changes)


def test_random_floors_apply_to_the_floor_they_were_made_from() -> None:
    """Many random steps of a floor: reps joining, leaving, changing state, reordered; departments' queues moving.
    Each step's changes, applied to what the console has, give the floor read (but the times in state it ticks)."""
    chance = random.Random(17)
    floor = busy_floor(30)
    console = wire.floor_json(floor, callers=False)
    next_id = 31
    for _ in range(300):
        reps = list(floor.reps)
        for _ in range(chance.randint(0, 3)):
            action = chance.random()
            if action < 0.5 and reps:
                index = chance.randrange(len(reps))
                reps[index] = rep(reps[index].id, chance.choice(STATES), since=floor.at, at=floor.at)
            elif action < 0.7:
                reps.insert(chance.randint(0, len(reps)), rep(next_id, chance.choice(STATES)))
                next_id += 1
            elif action < 0.85 and reps:
                reps.pop(chance.randrange(len(reps)))
            elif len(reps) > 1:
                reps.insert(chance.randrange(len(reps)), reps.pop(chance.randrange(len(reps))))
        departments = tuple(
            department(row.department, waiting=chance.randint(0, 2), longest=chance.randint(0, 90))
            if chance.random() < 0.3
            else row
            for row in floor.departments
        )
        floor = later(Floor(at=floor.at, departments=departments, reps=tuple(reps)), chance.randint(0, 3))
        current = wire.floor_json(floor, callers=False)
        changes = on_the_wire(wire.floor_changes(console, current))
        console = wire.apply_floor_changes(console, changes)
        assert without_self_ticking(console) == without_self_ticking(current)
        assert console["departments"] == current["departments"]
