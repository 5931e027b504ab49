"""The console's live-events server over real HTTP on loopback, against the app's own store on SQLite and
PostgreSQL: who may follow the stream (the console's signed cookie, roles, origins), what it sends (every piece on
connecting, then each piece that changed; the floor whole on connecting, then as what changed, each change naming
the version it applies to), one reading of the state per change whatever the number of consoles, heartbeats, and a
stream ended when its session is."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from crm_sync.models import RepState
from crm_sync.queries.reps import find_rep
from tests.conftest import PhoneSystem, add_available_reps
from tests.live.sse import ConsoleFloor, Event, Stream, VersionMismatch, sign_in
from voice.bootstrap import Warmline
from voice.live.feeds import feed_for
from voice.live.server import LiveEvents, ServerThread, Tuning, fingerprint
from voice.web.console import wire
from voice.web.console.sessions import COOKIE_NAME
from voice.web.console.wire import PIECES

FAST = Tuning(heartbeat_seconds=0.5, retry_ms=500, rate=20.0, burst=2)


def parts(system: PhoneSystem) -> Warmline:
    warmline: Warmline = system.app.extensions["warmline"]
    return warmline


def rep_id(system: PhoneSystem, name: str) -> int:
    with system.store.unit_of_work() as session:
        return find_rep(session, name).id


def make_supervisor(system: PhoneSystem, name: str) -> None:
    with system.store.unit_of_work() as session:
        find_rep(session, name).role = "supervisor"


class Live:
    def __init__(self, system: PhoneSystem, tuning: Tuning = FAST) -> None:
        self.system = system
        self.events = LiveEvents(parts(system), feed_for(system.store.url), tuning=tuning)
        self.server = ServerThread(self.events).start()
        self.url = self.server.url
        self.streams: list[Stream] = []

    def cookie(self, name: str) -> str:
        return sign_in(self.system.url, parts(self.system).accounts.issue_login_link(name))

    def open(self, name: str, **options: str) -> Stream:
        return self.open_with(self.cookie(name), **options)

    def open_with(self, cookie: str, **options: str) -> Stream:
        stream = Stream.open(self.url, cookie, origin=options.get("origin", self.system.url))
        self.streams.append(stream)
        return stream

    def state(self, cookie: str) -> dict[str, Any]:
        """A fresh full read: what ``GET /console/state`` answers this console now (the polling fallback's)."""
        answer = requests.get(f"{self.system.url}/console/state", cookies={COOKIE_NAME: cookie}, timeout=10)
        answer.raise_for_status()
        state: dict[str, Any] = answer.json()
        return state

    def close(self) -> None:
        for stream in self.streams:
            stream.close()
        self.server.stop()


@pytest.fixture
def live(phone_system_factory: Callable[..., PhoneSystem]) -> Iterator[Live]:
    system = phone_system_factory()
    make_supervisor(system, "Alice Rivera")
    opened = Live(system)
    yield opened
    opened.close()


def row_of(floor: dict[str, Any], rep: int) -> dict[str, Any]:
    row: dict[str, Any] = next(row for row in floor["reps"] if row["id"] == rep)
    return row


def first_paint(stream: Stream) -> dict[str, dict[str, object]]:
    return {event.name: event.data for event in (stream.until(lambda _e: True) for _ in PIECES)}


def following(stream: Stream) -> ConsoleFloor:
    """The console's floor from its first paint on (which must start with the whole floor)."""
    console = ConsoleFloor(stream)
    first = stream.next()
    assert first is not None and first.name == "floor" and isinstance(first.data["version"], int), first
    console.take(first)
    for _ in PIECES[1:]:
        assert stream.next() is not None
    return console


def state_of(floor: dict[str, Any], rep: int) -> str:
    return str(row_of(floor, rep)["state"])


def test_a_console_gets_every_piece_on_connecting_then_each_change_as_it_commits(live: Live) -> None:
    stream = live.open("Alice Rivera")
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    pieces = first_paint(stream)
    assert sorted(pieces) == sorted(PIECES)
    assert all(piece["reason"] == "connect" and piece["detected_at"] for piece in pieces.values())
    assert stream.retry_ms == FAST.retry_ms
    console = ConsoleFloor(stream)
    console.take(Event("floor", pieces["floor"], 0.0))
    bob = rep_id(live.system, "Bob Chen")
    parts(live.system).presence.set_presence_of(bob, RepState.AWAY, reason="lunch")
    changed = console.until(lambda floor: state_of(floor, bob) == "away")
    assert row_of(changed, bob)["away_reason"] == "lunch"
    assert console.sizes[-1][0] == wire.FLOOR_CHANGES


def test_a_rep_sees_the_floor_without_other_reps_callers_and_their_own_presence(live: Live) -> None:
    stream = live.open("Bob Chen")
    pieces = first_paint(stream)
    me = pieces["me"]["data"]
    assert isinstance(me, dict) and me["name"] == "Bob Chen" and me["supervisor"] is False
    floor = pieces["floor"]["data"]
    assert isinstance(floor, dict)
    assert all(row["caller"] is None and row["call_sid"] is None for row in floor["reps"])
    parts(live.system).presence.set_presence_of(rep_id(live.system, "Bob Chen"), RepState.AWAY, reason="break")
    mine = stream.until(lambda event: event.name == "me" and event.data["data"]["state"] == "away")
    assert mine.data["data"]["away_reason"] == "break"


def test_only_a_signed_in_console_from_an_allowed_origin_may_follow(live: Live) -> None:
    cookie = live.cookie("Bob Chen")
    assert requests.get(live.url, timeout=5).status_code == 401
    assert (
        requests.get(live.url, headers={"Cookie": f"warmline_console={cookie[:-4]}AAAA"}, timeout=5).status_code == 401
    )
    foreign = Stream.open(live.url, cookie, origin="https://evil.example")
    assert foreign.response.status_code == 403
    # Same host name, another port (the app's page): allowed, with credentials.
    stream = Stream.open(live.url, cookie, origin=live.system.url)
    live.streams.append(stream)
    assert stream.response.headers["Access-Control-Allow-Origin"] == live.system.url
    assert stream.response.headers["Access-Control-Allow-Credentials"] == "true"
    preflight = requests.options(live.url, headers={"Origin": live.system.url}, timeout=5)
    assert preflight.headers["Access-Control-Allow-Origin"] == live.system.url


def test_many_consoles_cost_one_reading_per_change(live: Live) -> None:
    streams = [live.open(name) for name in ("Alice Rivera", "Bob Chen") for _ in range(10)]
    consoles = [following(stream) for stream in streams]
    time.sleep(0.5)  # the readings the sign-ins' own commits caused are over
    before = live.events.readings
    bob = rep_id(live.system, "Bob Chen")
    parts(live.system).presence.set_presence_of(bob, RepState.AWAY, reason="training")
    for console in consoles:
        console.until(lambda floor: state_of(floor, bob) == "away")
    time.sleep(0.5)  # a late second reading would show here
    # One change: one reading (two at most, when the commit was heard twice), never one per console.
    assert 1 <= live.events.readings - before <= 2, live.events.readings - before
    assert live.events.subscribers == len(streams)


def test_an_idle_stream_gets_heartbeats_and_ends_when_its_session_does(live: Live) -> None:
    cookie = live.cookie("Bob Chen")
    stream = Stream.open(live.url, cookie, origin=live.system.url)
    live.streams.append(stream)
    first_paint(stream)
    deadline = time.monotonic() + 5
    while not stream.comments and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "heartbeat" in stream.comments
    # Signed out (the service the sign-out button calls), the session is over wherever it was open.
    parts(live.system).accounts.sign_out(live.events.session_id(cookie))
    assert stream.until(lambda event: event.name == "signed-out").data["event"] == "signed-out"
    assert stream.next() is None  # and the stream ends


def same_floor(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """The same floor but for what moves with the clock alone (the page ticks it)."""
    return fingerprint(one) == fingerprint(other)


@pytest.mark.parametrize("name", ["Alice Rivera", "Bob Chen"])  # a supervisor's floor, a rep's
def test_a_change_to_one_rep_is_sent_as_that_change_and_the_console_has_the_floor_read(live: Live, name: str) -> None:
    reps = add_available_reps(live.system.store, 60, departments=("general", "billing"))
    cookie = live.cookie(name)
    console = following(live.open_with(cookie))
    whole = console.sizes[0][1]
    time.sleep(0.5)  # the readings the sign-in's own commits caused are over
    parts(live.system).presence.set_presence_of(reps[30], RepState.AWAY, reason="training")
    floor = console.until(lambda floor: state_of(floor, reps[30]) == "away")
    event, size = console.sizes[-1]
    assert event == wire.FLOOR_CHANGES
    assert size * 10 < whole, (size, whole)
    fresh = live.state(cookie)["floor"]["data"]
    assert same_floor(floor, fresh), (floor, fresh)
    if name == "Bob Chen":  # a rep's console: other reps' callers never come, whole or changed
        assert all(row["caller"] is None for row in floor["reps"])


def test_a_console_joining_later_gets_the_latest_floor_whole(live: Live) -> None:
    make_supervisor(live.system, "Carmen Ortiz")
    alice, carmen = live.cookie("Alice Rivera"), live.cookie("Carmen Ortiz")
    first = following(live.open_with(alice))
    bob = rep_id(live.system, "Bob Chen")
    presence = parts(live.system).presence
    presence.set_presence_of(bob, RepState.AWAY, reason="lunch")
    first.until(lambda floor: state_of(floor, bob) == "away")
    presence.set_presence_of(bob, RepState.AVAILABLE)
    followed = first.until(lambda floor: state_of(floor, bob) == "available")
    time.sleep(0.5)  # nothing more to come
    # Another console of the same person (same scope), and another supervisor's (same floor, a scope of its own).
    for cookie in (alice, carmen):
        joiner = following(live.open_with(cookie))
        assert joiner.sizes[0][0] == "floor"
        assert joiner.version == first.version
        assert joiner.floor is not None and same_floor(joiner.floor, followed)
        assert same_floor(joiner.floor, live.state(cookie)["floor"]["data"])
    # ...and from there on both follow the same versions.
    presence.set_presence_of(bob, RepState.AWAY, reason="training")
    moved_there = joiner.until(lambda floor: state_of(floor, bob) == "away")
    assert same_floor(moved_there, first.until(lambda floor: state_of(floor, bob) == "away"))
    assert joiner.version == first.version


def test_each_change_names_the_version_before_it_and_a_console_that_missed_one_starts_again(live: Live) -> None:
    cookie = live.cookie("Alice Rivera")
    stream = live.open_with(cookie)
    console = following(stream)
    bob, alice = rep_id(live.system, "Bob Chen"), rep_id(live.system, "Alice Rivera")
    presence = parts(live.system).presence
    presence.set_presence_of(bob, RepState.AWAY, reason="lunch")
    while True:  # every change applies to the version before it, up to the one that moves Bob
        event = stream.next()
        assert event is not None
        if event.name == wire.FLOOR_CHANGES and bob in [
            row["id"] for row in event.data["data"].get("reps", {}).get("changed", [])
        ]:
            missed = event
            break
        console.take(event)
    assert missed.data["base"] == console.version and missed.data["version"] != console.version
    # This console loses that change (as one would that missed a message): the next does not apply to its floor.
    presence.set_presence_of(alice, RepState.AWAY, reason="meeting")
    following_change = stream.until(lambda event: event.name == wire.FLOOR_CHANGES)
    assert following_change.data["base"] == missed.data["version"]
    with pytest.raises(VersionMismatch):
        console.take(following_change)
    # What console.js does then: a new stream, which starts with the whole floor, as a fresh read has it.
    again = following(live.open_with(cookie))
    assert again.version == following_change.data["version"]
    assert again.floor is not None and same_floor(again.floor, live.state(cookie)["floor"]["data"])
    assert (state_of(again.floor, bob), state_of(again.floor, alice)) == ("away", "away")


def test_supervisors_and_reps_follow_floors_of_their_own(live: Live) -> None:
    supervisor, rep = following(live.open("Alice Rivera")), following(live.open("Bob Chen"))
    assert supervisor.version != rep.version
    assert live.events.floors.keys() == {True, False}
    bob = rep_id(live.system, "Bob Chen")
    parts(live.system).presence.set_presence_of(bob, RepState.AWAY, reason="lunch")
    supervisor.until(lambda floor: state_of(floor, bob) == "away")
    rep.until(lambda floor: state_of(floor, bob) == "away")
    for stream in live.streams:
        stream.close()
    deadline = time.monotonic() + 5
    while live.events.floors and time.monotonic() < deadline:  # nobody follows either floor: none kept
        time.sleep(0.05)
    assert not live.events.floors and not live.events.scopes
