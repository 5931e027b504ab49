"""The console's live-events server over real HTTP on loopback, against the app's own store on SQLite and
PostgreSQL: who may follow the stream (the console's signed cookie, roles, origins), what it sends (every piece on
connecting, then each piece that changed), one reading of the state per change whatever the number of consoles,
heartbeats, and a stream ended when its session is."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from crm_sync.models import RepState
from crm_sync.queries.reps import find_rep
from tests.conftest import PhoneSystem
from tests.live.sse import Event, Stream, sign_in
from voice.bootstrap import Warmline
from voice.live.feeds import feed_for
from voice.live.server import LiveEvents, ServerThread, Tuning
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
        stream = Stream.open(self.url, self.cookie(name), origin=options.get("origin", self.system.url))
        self.streams.append(stream)
        return stream

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


def row_of(event: Event, rep: int) -> dict[str, Any]:
    floor = event.data["data"]
    assert isinstance(floor, dict)
    row: dict[str, Any] = next(row for row in floor["reps"] if row["id"] == rep)
    return row


def first_paint(stream: Stream) -> dict[str, dict[str, object]]:
    return {event.name: event.data for event in (stream.until(lambda _e: True) for _ in PIECES)}


def test_a_console_gets_every_piece_on_connecting_then_each_change_as_it_commits(live: Live) -> None:
    stream = live.open("Alice Rivera")
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    pieces = first_paint(stream)
    assert sorted(pieces) == sorted(PIECES)
    assert all(piece["reason"] == "connect" and piece["detected_at"] for piece in pieces.values())
    assert stream.retry_ms == FAST.retry_ms
    bob = rep_id(live.system, "Bob Chen")
    parts(live.system).presence.set_presence_of(bob, RepState.AWAY, reason="lunch")
    changed = stream.until(lambda event: event.name == "floor" and row_of(event, bob)["state"] == "away")
    assert (row_of(changed, bob)["away_reason"], changed.data["reason"]) == ("lunch", "change")


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
    for stream in streams:
        first_paint(stream)
    time.sleep(0.5)  # the readings the sign-ins' own commits caused are over
    before = live.events.readings
    bob = rep_id(live.system, "Bob Chen")
    parts(live.system).presence.set_presence_of(bob, RepState.AWAY, reason="training")
    for stream in streams:
        stream.until(lambda event: event.name == "floor" and row_of(event, bob)["state"] == "away")
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
