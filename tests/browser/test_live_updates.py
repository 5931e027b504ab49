"""How the console's live panels follow the floor: the latency from a change's commit to the screen showing it,
the polling fallback when the live-events stream cannot be reached, and the page's client for that stream.

The live-events server (``voice/live``, ``warmline serve``'s events process, ``GET /console/events``) runs here
in process on a loopback port of its own, on the test's own store (SQLite's data_version, PostgreSQL's NOTIFY).
The latencies measured are written to ``.artifacts/latency-*.json``; the figures quoted: ``bench/console_latency.py``.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from bench.console_latency import OBSERVE_ROWS  # what the page records: the same in the bench and here
from crm_sync.models import RepState
from crm_sync.queries.reps import find_rep
from tests.browser.conftest import LIVE, SCREENSHOTS, Console, make_supervisor, parts, sqlite_only
from tests.conftest import PhoneSystem, add_available_reps
from voice.emulator import RepScript, Speech
from voice.live.feeds import feed_for
from voice.live.server import LiveEvents, ServerThread, fingerprint
from voice.web.console.app import EVENTS_URL_CONFIG, POLL_SECONDS

#: What a supervisor's floor page shows of each rep, and what a fresh read of /console/state says it should.
ON_SCREEN_AND_FRESH = """async () => {
    const headers = { Accept: "application/json" };
    const answer = await fetch("/console/state", { credentials: "same-origin", headers });
    const fresh = (await answer.json()).floor.data;
    const rows = Array.from(document.querySelectorAll("#floor-reps tr[data-rep-id]")).map((row) => ({
        id: Number(row.dataset.repId),
        name: row.querySelector("th").textContent,
        state: row.dataset.state,
        call: row.querySelector('[data-cell="call"]').textContent,
    }));
    return { fresh, rows, kept: window.warmline.state.floor };
}"""

#: Changes measured (the issue asks for at least 30), one per rep, committed this far apart.
EVENTS = 32
SPACING_SECONDS = 0.15
ALICE, JANE = "+15550100001", "+15551230001"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def measure(page: Page, system: PhoneSystem, rep_ids: list[int]) -> list[float]:
    """Commit one presence change per rep, ``SPACING_SECONDS`` apart; the milliseconds from each commit to the
    floor page showing it."""
    page.evaluate(OBSERVE_ROWS)
    presence = parts(system).presence
    committed: dict[int, float] = {}
    for rep_id in rep_ids:
        presence.set_presence_of(rep_id, RepState.AWAY, reason="break")
        committed[rep_id] = time.time() * 1000  # the unit of work has committed when this returns
        page.wait_for_timeout(SPACING_SECONDS * 1000)
    page.wait_for_function(
        "(expected) => new Set(window.seen.filter((s) => s.state === 'away').map((s) => s.rep)).size >= expected",
        arg=len(rep_ids),
        timeout=LIVE,
    )
    seen: list[dict[str, Any]] = page.evaluate("window.seen")
    shown = {entry["rep"]: entry["at"] for entry in seen if entry["state"] == "away"}
    return [shown[rep_id] - committed[rep_id] for rep_id in rep_ids]


def backend(system: PhoneSystem) -> str:
    return system.store.engine.url.get_backend_name()


def report(name: str, latencies: list[float], mode: str) -> dict[str, Any]:
    figures = {
        "mode": mode,
        "events": len(latencies),
        "p50_ms": round(statistics.median(latencies)),
        "p99_ms": round(percentile(latencies, 0.99)),
        "max_ms": round(max(latencies)),
        "min_ms": round(min(latencies)),
    }
    SCREENSHOTS.parent.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS.parent / f"latency-{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nlive-update latency ({name}): {figures}")
    return figures


def test_the_floor_follows_changes_with_polling_every_two_seconds(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    """No live-events server (``console.events_url: off``): the page polls /console/state every ``POLL_SECONDS``."""
    system = phone_system_factory()
    make_supervisor(system, "Carmen Ortiz")
    rep_ids = add_available_reps(system.store, EVENTS)
    page = console_factory(system).sign_in("Carmen Ortiz")
    page.goto("/console/floor")
    expect(page.locator("#floor-reps tr")).to_have_count(EVENTS + 3)
    assert page.evaluate("window.warmline.mode()") == "polling"
    latencies = measure(page, system, rep_ids)
    figures = report(f"polling-{backend(system)}", latencies, "polling")
    # Polling shows a change at the next poll: never later than one interval and the request's own time.
    assert figures["p99_ms"] < POLL_SECONDS * 1000 + 1500, figures
    assert min(latencies) >= 0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@sqlite_only
def test_a_stream_that_cannot_be_reached_falls_back_to_polling(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system = phone_system_factory()
    system.app.config[EVENTS_URL_CONFIG] = f"http://127.0.0.1:{closed_port()}/console/events"
    console = console_factory(system)
    page = console.sign_in("Bob Chen")
    page.wait_for_function("window.warmline.mode() === 'polling'", timeout=LIVE)
    with system.store.unit_of_work() as session:
        alice = find_rep(session, "Alice Rivera").id
    parts(system).presence.set_presence_of(alice, RepState.AWAY, reason="lunch")
    expect(page.locator("#team-list li", has_text="Alice Rivera")).to_contain_text("Away · lunch", timeout=LIVE)


@pytest.fixture
def live_events(phone_system_factory: Callable[..., PhoneSystem]) -> Iterator[tuple[PhoneSystem, LiveEvents]]:
    """A phone system whose pages follow the real live-events server (in process, on a loopback port of its own:
    another origin, as beside ``warmline serve``)."""
    system = phone_system_factory()
    events = LiveEvents(parts(system), feed_for(system.store.url))
    server = ServerThread(events).start()
    system.app.config[EVENTS_URL_CONFIG] = server.url
    yield system, events
    server.stop()


def test_the_page_follows_the_live_events_stream(
    live_events: tuple[PhoneSystem, LiveEvents], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system, events = live_events
    make_supervisor(system, "Carmen Ortiz")
    rep_ids = add_available_reps(system.store, EVENTS)
    page = console_factory(system).sign_in("Carmen Ortiz")
    page.goto("/console/floor")
    page.wait_for_function("window.warmline.mode() === 'stream'", timeout=LIVE)
    assert events.subscribers >= 1
    whole_version = page.evaluate("window.warmline.floorVersion()")
    latencies = measure(page, system, rep_ids)
    figures = report(f"stream-{backend(system)}", latencies, "stream (live-events server)")
    assert page.evaluate("window.warmline.mode()") == "stream"  # never fell back
    # The changes came as changes (the floor's version moved on from the whole one), each applied to the version
    # it named, and what the page made of them is what a fresh read of the whole floor says, row by row on screen.
    assert page.evaluate("window.warmline.floorVersion()") != whole_version
    assert page.evaluate("window.warmline.floorResyncs()") == 0
    seen = page.evaluate(ON_SCREEN_AND_FRESH)
    fresh = seen["fresh"]
    assert fingerprint(seen["kept"]) == fingerprint(fresh)
    assert [(row["id"], row["name"], row["state"]) for row in seen["rows"]] == [
        (rep["id"], rep["name"], rep["state"]) for rep in fresh["reps"]
    ]
    for row, rep in zip(seen["rows"], fresh["reps"], strict=True):
        assert (row["call"] == "—") if rep["call_sid"] is None else (rep["caller"] in row["call"]), (row, rep)
    # A commit is heard within a look at data_version (SQLite, 0.25 s) or at once (NOTIFY), then read and sent
    # within the rate limit: well inside one polling interval, which is the point of the stream.
    assert figures["p50_ms"] < POLL_SECONDS * 1000, figures


@sqlite_only
def test_the_supervisor_sees_a_call_move_live_on_the_stream(
    live_events: tuple[PhoneSystem, LiveEvents], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system, _events = live_events
    make_supervisor(system, "Carmen Ortiz")
    page = console_factory(system).sign_in("Carmen Ortiz")
    page.goto("/console/floor")
    page.wait_for_function("window.warmline.mode() === 'stream'", timeout=LIVE)
    system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=None, answer_after=1))
    caller = system.call(JANE, Speech("I was charged twice on my bill"), talk_seconds=None)
    alice = page.locator("#floor-reps tr", has=page.get_by_role("rowheader", name="Alice Rivera"))
    expect(alice).to_contain_text("On a call", timeout=LIVE)
    expect(alice).to_contain_text("Jane Doe", timeout=LIVE)
    caller.hang_up()  # no wrap-up time here: she is free again at once
    expect(alice).to_have_attribute("data-state", "available", timeout=LIVE)
    assert page.evaluate("window.warmline.mode()") == "stream"
    # Every change came down the stream, none from polling /console/state.
    assert page.evaluate("window.warmline.renders.length") > 0


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@sqlite_only
def test_a_floor_change_for_another_version_is_not_shown_and_the_page_reads_the_whole_floor_again(
    live_events: tuple[PhoneSystem, LiveEvents], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    """The server never sends one (a console gets every change in order), so a stream is played to the page here:
    its whole floor, then a change from a version the page does not have, that would show Alice offline. The page
    leaves its floor as it was, polls once and opens a new stream, which the real server answers."""
    system, _events = live_events
    make_supervisor(system, "Carmen Ortiz")
    page = console_factory(system).sign_in("Carmen Ortiz")
    page.goto("/console/floor")
    page.wait_for_function("window.warmline.mode() === 'stream'", timeout=LIVE)
    state = page.evaluate(
        "async () => (await fetch('/console/state', { headers: { Accept: 'application/json' } })).json()"
    )
    with system.store.unit_of_work() as session:
        alice = find_rep(session, "Alice Rivera").id
    offline = next({**row, "state": "offline"} for row in state["floor"]["data"]["reps"] if row["id"] == alice)
    played = 10**9  # a version the server's numbering does not come near
    stream = "".join(
        [
            sse("floor", {"event": "floor", "reason": "connect", "sent_at": state["sent_at"], "version": played,
                          **state["floor"]}),
            *(sse(name, {"event": name, "reason": "connect", "sent_at": state["sent_at"], **state[name]})
              for name in ("me", "screen", "work")),
            sse("floor-changes", {"event": "floor-changes", "reason": "change", "sent_at": state["sent_at"],
                                  "detected_at": state["floor"]["detected_at"], "base": played + 1,
                                  "version": played + 2,
                                  "data": {"fields": {"at": state["floor"]["data"]["at"]},
                                           "reps": {"changed": [offline]}}}),
        ]
    )  # fmt: skip
    opened: list[str] = []

    def play_first_stream(route: Route) -> None:
        opened.append(route.request.url)
        if len(opened) > 1:
            route.continue_()
            return
        origin = route.request.headers.get("origin", system.url)
        route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream", "Access-Control-Allow-Origin": origin,
                     "Access-Control-Allow-Credentials": "true"},
            body=stream,
        )  # fmt: skip

    page.route(str(system.app.config[EVENTS_URL_CONFIG]), play_first_stream)
    page.reload()
    page.wait_for_function("window.warmline.floorResyncs() === 1", timeout=LIVE)
    page.wait_for_function(
        "(played) => window.warmline.mode() === 'stream' && ![null, played].includes(window.warmline.floorVersion())",
        arg=played,
        timeout=LIVE,
    )
    assert len(opened) == 2
    alice_row = page.locator("#floor-reps tr", has=page.get_by_role("rowheader", name="Alice Rivera"))
    expect(alice_row).to_have_attribute("data-state", "available")
    shown = page.evaluate("window.warmline.state.floor")
    assert next(row for row in shown["reps"] if row["id"] == alice)["state"] == "available"
    assert page.evaluate("window.warmline.floorResyncs()") == 1


def test_a_stream_that_stops_falls_back_to_polling(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    """The live-events server goes away under an open page: the browser's retries fail, and within the grace
    period the page polls, showing changes made meanwhile."""
    system = phone_system_factory()
    server = ServerThread(LiveEvents(parts(system), feed_for(system.store.url))).start()
    system.app.config[EVENTS_URL_CONFIG] = server.url
    page = console_factory(system).sign_in("Bob Chen")
    page.wait_for_function("window.warmline.mode() === 'stream'", timeout=LIVE)
    server.stop()
    with system.store.unit_of_work() as session:
        alice = find_rep(session, "Alice Rivera").id
    parts(system).presence.set_presence_of(alice, RepState.AWAY, reason="training")
    page.wait_for_function("window.warmline.mode() === 'polling'", timeout=LIVE)
    expect(page.locator("#team-list li", has_text="Alice Rivera")).to_contain_text("Away · training", timeout=LIVE)
