"""`warmline serve` as an admin runs it: gunicorn's workers answer, one housekeeping process sweeps for them all, and
it ends with the server.

Real processes on a fresh SQLite database, looked at through /proc and the database: a rep whose wrap-up is over
becomes available only when a housekeeping pass runs, so a pass that happens (or does not) is seen in the rep's row.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import select

from crm_sync.db import Store
from crm_sync.models import Rep, RepState, utcnow
from crm_sync.queries.reps import upsert_rep

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SWEEP_INTERVAL = 0.2
WORKERS = 2
HOUSEKEEPING_MODULE = "voice.cli.housekeeping_process"
EVENTS_MODULE = "voice.cli.console_events"

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes through Linux /proc")


def children(pid: int) -> dict[int, str]:
    """The live (not zombie) child processes of ``pid``, with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, parent = stat[stat.rfind(")") + 2 :].split()[:2]
            if int(parent) == pid and state != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def wait_for(condition: Callable[[], bool], *, within: float, what: str | Callable[[], str]) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what() if callable(what) else what}")
        time.sleep(0.05)


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            connection.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return connection.recv(16).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    store: Store
    log: Path
    started: tuple[int, ...] = ()  # the server's processes once it was up (its children outlive a killed server)

    port: int = 0

    def housekeeping(self) -> list[int]:
        return [pid for pid, command in children(self.process.pid).items() if HOUSEKEEPING_MODULE in command]

    def events(self) -> list[int]:
        return [pid for pid, command in children(self.process.pid).items() if EVENTS_MODULE in command]

    def workers(self) -> list[int]:
        helpers = (HOUSEKEEPING_MODULE, EVENTS_MODULE)
        return [
            pid for pid, command in children(self.process.pid).items() if not any(name in command for name in helpers)
        ]

    def rep_state(self, name: str) -> RepState:
        with self.store.unit_of_work(read_only=True) as session:
            return session.scalars(select(Rep.state).where(Rep.name == name)).one()

    def wrap_up_over(self, name: str) -> None:
        """A rep whose after-call work ended a second ago: the next housekeeping pass makes them available."""
        with self.store.unit_of_work() as session:
            rep, _ = upsert_rep(
                session, name=name, phone_e164="+15550100077", departments=["billing"], languages=["en-US"]
            )
            rep.state = RepState.WRAP_UP
            rep.wrap_up_until = utcnow() - timedelta(seconds=1)


def free_port_pair() -> int:
    """A port whose next port is free too (the live-events process takes the port after the app's)."""
    for _ in range(50):
        with socket.socket() as probe, socket.socket() as following:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            try:
                following.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two free ports in a row")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    config = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text(encoding="utf-8"))
    config["log_level"] = "WARNING"
    config["flows"].update(directory=str(PROJECT_ROOT / "ivr_flows"), reload_interval=0, classifier="tfidf")
    config["routing"]["sweep_interval"] = SWEEP_INTERVAL
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'warmline.sqlite3'}"
    port = free_port_pair()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WARMLINE_", "TWILIO_"))}
    env.update(
        WARMLINE_CONFIG=str(tmp_path / "config.yaml"),
        WARMLINE_DATABASE_URL=url,
        TWILIO_AUTH_TOKEN="serve-test-token",
        TWILIO_API_URL="http://127.0.0.1:9",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        serve = ["serve", "--port", str(port), "--workers", str(WORKERS)]
        process = subprocess.Popen(
            [sys.executable, "-c", "from voice.cli import main; main()", *serve],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    store = Store(url)
    served = Served(process, store, log, port=port)
    try:
        wait_for(
            lambda: answers(port) and len(children(process.pid)) == WORKERS + 2,
            within=60,
            what=lambda: (
                f"{WORKERS} workers, a housekeeping and a live-events process, not {children(process.pid)}:\n"
                f"{log.read_text()}"
            ),
        )
        served.started = (process.pid, *children(process.pid))
        yield served
    finally:
        stragglers = {*served.started, process.pid, *children(process.pid)}
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in stragglers:  # what a failed test may have left behind: by pid, never by name
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        store.dispose()


def test_one_housekeeping_process_sweeps_and_no_worker_does(served: Served) -> None:
    (housekeeping,) = served.housekeeping()
    assert len(served.workers()) == WORKERS

    os.kill(housekeeping, signal.SIGSTOP)  # alive, but doing nothing: only a worker could sweep now
    try:
        served.wrap_up_over("Rep Waiting")
        time.sleep(10 * SWEEP_INTERVAL)
        assert served.rep_state("Rep Waiting") is RepState.WRAP_UP, "a worker ran a housekeeping pass"
    finally:
        os.kill(housekeeping, signal.SIGCONT)
    wait_for(
        lambda: served.rep_state("Rep Waiting") is RepState.AVAILABLE,
        within=10,
        what="the housekeeping process made the rep available",
    )
    assert served.housekeeping() == [housekeeping]  # still the one, not restarted


def test_the_housekeeping_process_stops_with_the_server(served: Served) -> None:
    (housekeeping,) = served.housekeeping()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    wait_for(lambda: not alive(housekeeping), within=10, what="the housekeeping process ended with the server")


def test_the_housekeeping_process_ends_when_the_server_is_killed(served: Served) -> None:
    """Killed outright, the server cannot stop it: it notices its parent is gone and ends by itself."""
    (housekeeping,) = served.housekeeping()
    (events,) = served.events()
    served.process.kill()
    served.process.wait(timeout=10)
    wait_for(lambda: not alive(housekeeping), within=15, what="the housekeeping process outlived a killed server")
    wait_for(lambda: not alive(events), within=15, what="the live-events process outlived a killed server")


def test_the_live_events_process_answers_on_the_next_port_and_stops_with_the_server(served: Served) -> None:
    """The console's stream is served beside the workers (no worker holds it): not signed in, it answers 401; the
    app's pages name it; it ends with the server."""
    (events,) = served.events()
    events_url = f"http://127.0.0.1:{served.port + 1}/console/events"
    wait_for(lambda: status_of(events_url) == 401, within=30, what=lambda: f"{events_url}: {served.log.read_text()}")
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    wait_for(lambda: not alive(events), within=10, what="the live-events process ended with the server")


def status_of(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None
