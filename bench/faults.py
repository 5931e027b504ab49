"""Fault harness: whole emulated calls into `warmline serve` while its store or its workers fail (issue 16).

Each fault gets a fresh server, as `warmline serve` runs it (2 gunicorn workers and the housekeeping process), on a
fresh database with 10 available reps and ``fallback.number`` set. Several
emulator processes (``voice.emulator``, real HTTP, real time) place 200 calls between them at a steady pace; every
rep answers, hears the whisper, accepts and talks for a few seconds. The server's Twilio REST requests (pulling a
caller out of line, checking a quiet call, listing calls) go to a router in this process that hands each to the
emulator that knows the call (a list is the union of all of theirs), as Twilio's one API would.

Faults, each FAULT_AT seconds into the stream of calls:

* ``pg-outage``: the PostgreSQL database refuses connections and its open ones are cut for 10 s
  (``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``: the server keeps running for everyone else);
* ``sqlite-readonly``: the SQLite database, its WAL and its shared-memory file are made unwritable for 10 s
  (``chattr +i``: the harness and the server run as root, whom file modes do not stop);
* ``sqlite-lock``: another program holds SQLite's write lock (``BEGIN IMMEDIATE``) for 35 s;
* ``broken-flow-kill``: the default flow's file is made invalid, a worker is killed with SIGKILL (gunicorn starts a
  new one, which must boot with the flow broken), and the flow is mended 10 s later.

After the last call ended, the harness waits for the housekeeping process to reconcile (it asks the emulators'
REST API about quiet calls and lists ended ones, ``routing.check_calls_after`` = 30 s) and counts, per fault:
calls without an interaction, interactions never closed, reps still reserved or on a call 2 minutes after the last
call ended, stranded callers (a call that never finished, or whose caller heard Twilio's "application error"),
answers other than HTTP 200, webhooks slower than 15 s (Twilio's timeout), and server processes that died of a
signal other than the harness's own SIGKILL. Every target is 0. Run with ``make bench-faults``:

    .venv/bin/python bench/faults.py                                  # every fault
    .venv/bin/python bench/faults.py --fault sqlite-readonly --calls 100
    .venv/bin/python bench/faults.py --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from bench.webhook import _warmline_command, serve_port, server_environment  # noqa: E402

FAULTS = ("pg-outage", "sqlite-readonly", "sqlite-lock", "broken-flow-kill")
ACCOUNT_SID = "AC" + "fa" * 16
AUTH_TOKEN = "faults-auth-token-0123456789abcdef"
COMPANY_NUMBER = "+15550009999"
FALLBACK_NUMBER = "+15550199999"
REPS = tuple(f"+1555010{index:04d}" for index in range(1, 11))
ISSUES = ("I was charged twice", "the app keeps crashing", "I want to upgrade my plan", "I have a question")
#: Seconds into the stream of calls when the fault starts, and how long it lasts (the lock: 35 s).
FAULT_AT, FAULT_FOR, LOCK_FOR = 15.0, 10.0, 35.0
#: Twilio's webhook timeout: an answer slower than this is no answer for the caller.
TWILIO_TIMEOUT = 15.0
#: How long reconciliation has after the last call ended, and when reps count as stuck.
SETTLE_SECONDS = 120.0
DEFAULT_POSTGRES_URL = os.environ.get(
    "WARMLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


class FaultsError(RuntimeError):
    """The harness itself could not run (not a finding)."""


# --- the emulators, each in a process of its own -----------------------------------------------------------------


@dataclass(frozen=True)
class CallPlan:
    at: float  # seconds after the stream starts
    caller: str
    issue: str


@dataclass
class CallOutcome:
    sid: str
    finished: bool
    errors: list[str]
    fell_back: bool


@dataclass
class EmulatorReport:
    calls: list[CallOutcome] = field(default_factory=list)
    #: (path, seconds, HTTP status; 0 when no answer came at all) of every webhook the calls sent.
    webhooks: list[tuple[str, float, int]] = field(default_factory=list)


def run_emulator(
    server_url: str,
    plans: Sequence[CallPlan],
    start_at: float,
    rest_urls: Any,
    reports: Any,
    stop: Any,
) -> None:
    """One emulator process: place ``plans`` from ``start_at`` (epoch seconds), report every call and webhook, then
    keep answering REST requests until ``stop`` is set (reconciliation asks about calls long over)."""
    from voice.emulator import CallerScript, RepScript, Speech, TwilioEmulator

    webhooks: list[tuple[str, float, int]] = []
    lock = threading.Lock()
    send = requests.Session.send

    def timed_send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        # Times the emulator's webhook requests from here, without touching the emulator's code.
        started = time.monotonic()
        status = 0
        try:
            response = send(session, request, **kwargs)
            status = response.status_code
            return response
        finally:
            url = str(request.url or "")
            if url.startswith(server_url):
                with lock:
                    webhooks.append((url[len(server_url) :].split("?")[0], time.monotonic() - started, status))

    requests.Session.send = timed_send  # type: ignore[method-assign,assignment]
    emulator = TwilioEmulator(
        public_url=server_url, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, time_scale=1.0, queue_poll_interval=0.5
    ).start()
    rest_urls.put(emulator.rest_url)
    for rep in REPS:
        emulator.register_rep(rep, RepScript.accepts(talk_seconds=2.0, answer_after=0.3))
    calls = []
    for plan in plans:
        time.sleep(max(0.0, start_at + plan.at - time.time()))
        script = CallerScript([Speech(plan.issue)], talk_seconds=3.0, hang_up_in_queue_after=45.0)
        calls.append(emulator.place_call(plan.caller, COMPANY_NUMBER, script, status_callback="/voice/status"))
    deadline = time.monotonic() + 180
    for call in calls:
        call.wait_finished(timeout=max(0.1, deadline - time.monotonic()))
    report = EmulatorReport()
    for call in calls:
        dialled = [entry.text for entry in call.transcript if entry.verb == "Dial"]
        report.calls.append(
            CallOutcome(
                sid=call.sid,
                finished=call.finished,
                errors=[str(error) for error in call.errors],
                fell_back=any(FALLBACK_NUMBER in text for text in dialled),
            )
        )
    with lock:
        report.webhooks = list(webhooks)
    reports.put(json.dumps(asdict(report)))
    stop.wait()
    emulator.close()


# --- the REST router: one Twilio API in front of several emulators ------------------------------------------------


class RestRouter:
    """Hands each REST request to the emulator that knows its call (the first that does not answer 404); a list of
    calls is the union of every emulator's."""

    def __init__(self) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                return None

        self.emulators: list[str] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        path = request.full_path.rstrip("?")
        answers: list[requests.Response] = []
        for base in list(self.emulators):
            answer = requests.request(
                request.method,
                base + path,
                data=request.get_data(),
                headers={key: value for key, value in request.headers.items() if key.lower() != "host"},
                timeout=10,
            )
            answers.append(answer)
            if request.method == "GET" and re.search(r"/Calls\.json$", request.path):
                continue  # a list: ask them all
            if answer.status_code != 404:
                break
        if not answers:
            return Response("no emulator yet", status=503)(environ, start_response)
        if request.method == "GET" and re.search(r"/Calls\.json$", request.path):
            merged = answers[0].json()
            merged["calls"] = [call for answer in answers for call in answer.json().get("calls", [])]
            merged["page_size"] = max(50, len(merged["calls"]))
            body = json.dumps(merged)
            return Response(body, status=200, content_type="application/json")(environ, start_response)
        last = answers[-1]
        kind = last.headers.get("Content-Type", "application/json")
        return Response(last.content, status=last.status_code, content_type=kind)(environ, start_response)

    def close(self) -> None:
        self._server.shutdown()


# --- the server under test ---------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FaultsError(f"server exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            with suppress(requests.RequestException):
                if (
                    requests.get(f"{self.url}/healthz", timeout=2).status_code in (200, 503)
                    and len(self.workers()) >= 2
                ):
                    return
            time.sleep(0.2)
        raise FaultsError(f"server not ready after {timeout:.0f} s:\n{self.log_text()[-3000:]}")

    def workers(self) -> list[int]:
        """gunicorn's workers: the master's children forked from it (same command line; the housekeeping process
        has its own)."""
        master = self.process.pid
        try:
            master_command = Path(f"/proc/{master}/cmdline").read_bytes()
        except OSError:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with suppress(OSError):
                stat = (entry / "stat").read_text()
                parent = int(stat[stat.rfind(")") + 2 :].split()[1])
                if parent == master and (entry / "cmdline").read_bytes() == master_command:
                    found.append(int(entry.name))
        return found

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def start_server(workdir: Path, config: Path, database_url: str, rest_url: str) -> Server:
    port = serve_port()
    public_url = f"http://127.0.0.1:{port}"
    env = server_environment(
        config=config,
        database_url=database_url,
        public_url=public_url,
        auth_token=AUTH_TOKEN,
        account_sid=ACCOUNT_SID,
        rest_url=rest_url,
    )
    env.update(HOME=str(workdir), WARMLINE_SECRET_KEY=secrets.token_hex(16))
    log_path = workdir / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        _warmline_command("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"),
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(process, port, log_path, log)
    server.wait_ready()
    return server


# --- databases and configuration ---------------------------------------------------------------------------------


def seed(url: str) -> None:
    from crm_sync.db import Store
    from crm_sync.models import RepState, utcnow
    from crm_sync.queries.reps import upsert_rep

    store = Store(url)
    try:
        store.upgrade()
        with store.unit_of_work() as session:
            for index, phone in enumerate(REPS, start=1):
                departments = ["billing", "technical_support", "sales", "account", "general"]
                rep, _ = upsert_rep(
                    session, name=f"Rep {index}", phone_e164=phone, departments=departments, languages=["en-US"]
                )
                rep.choose_presence(RepState.AVAILABLE, now=utcnow())
    finally:
        store.dispose()


@contextmanager
def database(fault: str, workdir: Path, postgres_url: str) -> Iterator[str]:
    """A fresh database for one fault: PostgreSQL for the outage, SQLite (owned by nobody) for the others."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if fault != "pg-outage":
        data = workdir / "data"
        data.mkdir()
        url = f"sqlite:///{data / 'warmline.sqlite3'}"
        seed(url)
        yield url
        return
    name = f"warmline_faults_{secrets.token_hex(5)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        seed(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def write_config(workdir: Path) -> tuple[Path, Path]:
    """config.yaml as shipped, with the fallback number, a reconciliation check after 30 s (its least), the flows
    copied where the harness may break them, and reloading on (a mended flow goes back into service)."""
    data: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text(encoding="utf-8")) or {}
    flows_dir = workdir / "flows"
    shutil.copytree(PROJECT_ROOT / "ivr_flows", flows_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    data["log_level"] = "WARNING"
    data["flows"] = {**(data.get("flows") or {}), "directory": str(flows_dir), "classifier": "tfidf"}
    data["fallback"] = {**(data.get("fallback") or {}), "number": FALLBACK_NUMBER}
    data["routing"] = {**(data.get("routing") or {}), "check_calls_after": 30, "wrap_up": 0}
    data["instance_path"] = str(workdir / "instance")  # the serving note and the like, where nobody may write
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path, flows_dir


# --- the faults --------------------------------------------------------------------------------------------------


def inject(fault: str, *, database_url: str, flows_dir: Path, server: Server, postgres_url: str) -> Callable[[], None]:
    """Start ``fault`` now; returns what ends it (called when its time is over)."""
    if fault == "pg-outage":
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = make_url(database_url).database
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )

        def reconnect() -> None:
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            admin.dispose()

        return reconnect
    if fault == "sqlite-readonly":
        database_file = Path(database_url.removeprefix("sqlite:///"))
        files = [str(path) for path in (database_file, Path(f"{database_file}-wal"), Path(f"{database_file}-shm"))]
        # Immutable rather than chmod: the server runs as root here, and root writes a file whatever its mode says.
        # An immutable file refuses root too: no write, no open for writing, no truncation, no unlinking.
        subprocess.run(["chattr", "+i", *files], check=True)

        def writable() -> None:
            subprocess.run(["chattr", "-i", *files], check=True)

        return writable
    if fault == "sqlite-lock":
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")

        def release() -> None:
            holder.execute("ROLLBACK")
            holder.close()

        return release
    if fault == "broken-flow-kill":
        main = flows_dir / "main.yaml"
        good = main.read_text(encoding="utf-8")
        main.write_text("start: nowhere\nnodes: [this is not a flow\n", encoding="utf-8")
        time.sleep(2)  # the reload watcher sees it first; then a worker dies and its replacement boots with it broken
        workers = server.workers()
        if not workers:
            raise FaultsError("no gunicorn worker to kill")
        os.kill(workers[0], signal.SIGKILL)
        log(f"killed worker {workers[0]} (SIGKILL) with the default flow broken")

        def mend() -> None:
            main.write_text(good, encoding="utf-8")

        return mend
    raise FaultsError(f"unknown fault {fault}")


# --- one run -----------------------------------------------------------------------------------------------------


@dataclass
class FaultResult:
    fault: str
    database: str
    calls: int
    fell_back: int
    without_interaction: int
    never_closed: int
    reps_stuck: int
    stranded: int
    not_200: int
    slower_than_15s: int
    slowest_webhook_s: float
    workers_died: list[str]
    settled_after_s: float | None

    @property
    def clean(self) -> bool:
        return not (
            self.without_interaction
            or self.never_closed
            or self.reps_stuck
            or self.stranded
            or self.not_200
            or self.slower_than_15s
            or self.workers_died
        )


def count_store(database_url: str, sids: Sequence[str]) -> tuple[int, int, int]:
    """(calls without an interaction, interactions not ended, reps reserved or on a call)."""
    from sqlalchemy import select

    from crm_sync.db import Store
    from crm_sync.models import Interaction, InteractionStatus, Rep, RepState

    store = Store(database_url)
    try:
        with store.unit_of_work(read_only=True) as session:
            rows = session.execute(
                select(Interaction.call_sid, Interaction.status).where(Interaction.call_sid.in_(list(sids)))
            ).all()
            stuck = session.scalars(select(Rep.id).where(Rep.state.in_([RepState.ON_CALL, RepState.RESERVED]))).all()
    finally:
        store.dispose()
    recorded = {sid for sid, _ in rows}
    open_ = sum(1 for _, status in rows if status is not InteractionStatus.ENDED)
    return len(set(sids) - recorded), open_, len(stuck)


def run_fault(fault: str, *, calls: int, emulators: int, duration: float, postgres_url: str) -> FaultResult:
    workdir = Path(tempfile.mkdtemp(prefix=f"warmline-faults-{fault}-"))
    config, flows_dir = write_config(workdir)
    router = RestRouter()
    context = multiprocessing.get_context("spawn")
    rest_urls, reports, stop = context.Queue(), context.Queue(), context.Event()
    processes = []
    try:
        with database(fault, workdir, postgres_url) as database_url:
            server = start_server(workdir, config, database_url, router.url)
            try:
                pace = duration / calls
                plans = [
                    CallPlan(index * pace, f"+1555300{index:04d}", ISSUES[index % len(ISSUES)])
                    for index in range(calls)
                ]
                start_at = time.time() + 5  # the emulators' own start-up is done by then
                for number in range(emulators):
                    process = context.Process(
                        target=run_emulator,
                        args=(server.url, plans[number::emulators], start_at, rest_urls, reports, stop),
                    )
                    process.start()
                    processes.append(process)
                router.emulators = [rest_urls.get(timeout=60) for _ in range(emulators)]
                time.sleep(max(0.0, start_at + FAULT_AT - time.time()))
                log(f"{fault}: fault begins")
                end_fault = inject(
                    fault, database_url=database_url, flows_dir=flows_dir, server=server, postgres_url=postgres_url
                )
                time.sleep(LOCK_FOR if fault == "sqlite-lock" else FAULT_FOR)
                end_fault()
                log(f"{fault}: fault over")
                found = [EmulatorReport(**json.loads(reports.get(timeout=400))) for _ in range(emulators)]
                last_call_done = time.monotonic()
                outcomes = [CallOutcome(**outcome) for report in found for outcome in report.calls]  # type: ignore[arg-type]
                webhooks = [
                    (str(path), float(took), int(status)) for report in found for path, took, status in report.webhooks
                ]
                sids = [outcome.sid for outcome in outcomes]
                settled_after = None
                while time.monotonic() - last_call_done < SETTLE_SECONDS:
                    missing, open_, stuck = count_store(database_url, sids)
                    if not (missing or open_ or stuck):
                        settled_after = time.monotonic() - last_call_done
                        break
                    time.sleep(3)
                missing, open_, stuck = count_store(database_url, sids)
                log_text = server.log_text()
            finally:
                stop.set()
                server.stop()
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=20)
        router.close()
    died = re.findall(r"Worker \(pid:\d+\) was sent (SIG\w+)", log_text)
    died += ["WORKER TIMEOUT"] * log_text.count("WORKER TIMEOUT")
    died += ["failed to boot"] * log_text.count("Worker failed to boot")
    killed_on_purpose = ["SIGKILL"] if fault == "broken-flow-kill" else []
    for expected in killed_on_purpose:
        if expected in died:
            died.remove(expected)
    shutil.rmtree(workdir, ignore_errors=True)
    return FaultResult(
        fault=fault,
        database="PostgreSQL" if fault == "pg-outage" else "SQLite",
        calls=len(outcomes),
        fell_back=sum(1 for outcome in outcomes if outcome.fell_back),
        without_interaction=missing,
        never_closed=open_,
        reps_stuck=stuck,
        stranded=sum(1 for outcome in outcomes if not outcome.finished or outcome.errors),
        not_200=sum(1 for _, _, status in webhooks if status != 200),
        slower_than_15s=sum(1 for _, seconds, _ in webhooks if seconds > TWILIO_TIMEOUT),
        slowest_webhook_s=round(max((seconds for _, seconds, _ in webhooks), default=0.0), 2),
        workers_died=died,
        settled_after_s=None if settled_after is None else round(settled_after, 1),
    )


def _probe_writer(path: str, mmap_size: int, seconds: float) -> None:
    """A process writing and reading a WAL database as fast as it can (errors are expected and ignored)."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    connection.execute(f"PRAGMA mmap_size={mmap_size}")
    end = time.monotonic() + seconds
    number = 0
    while time.monotonic() < end:
        with suppress(sqlite3.Error):
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO probe VALUES (?)", (number,))
            connection.execute("COMMIT")
        with suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        with suppress(sqlite3.Error):
            connection.execute("SELECT count(*) FROM probe").fetchone()
        number += 1


def probe_sigbus(trials: int) -> dict[int, list[str]]:
    """Which of two processes writing to a WAL database die, and how, when its three files are made immutable for
    2 s, with SQLite's mmap off (0) and at Warmline's 256 MB: whether the mmap is what a SIGBUS comes from."""
    context = multiprocessing.get_context("fork")
    ends: dict[int, list[str]] = {}
    for mmap_size in (0, 268_435_456):
        ends[mmap_size] = []
        for _ in range(trials):
            with tempfile.TemporaryDirectory() as directory:
                path = str(Path(directory) / "probe.sqlite3")
                setup = sqlite3.connect(path, isolation_level=None)
                setup.execute("PRAGMA journal_mode=WAL")
                setup.execute("CREATE TABLE probe (x INTEGER)")
                writers = [context.Process(target=_probe_writer, args=(path, mmap_size, 5.0)) for _ in range(2)]
                for writer in writers:
                    writer.start()
                time.sleep(1.5)
                files = [path, f"{path}-wal", f"{path}-shm"]
                subprocess.run(["chattr", "+i", *files], check=True)
                time.sleep(2)
                subprocess.run(["chattr", "-i", *files], check=True)
                for writer in writers:
                    writer.join()
                    code = writer.exitcode or 0
                    ends[mmap_size].append(signal.Signals(-code).name if code < 0 else f"exit {code}")
                setup.close()
    return ends


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def format_table(results: Sequence[FaultResult]) -> str:
    head = (
        "| fault | store | calls | fell back | without interaction | never closed | reps stuck at 2 min | stranded | "
        "not HTTP 200 | > 15 s | slowest (s) | server processes died | settled after (s) |"
    )
    rows = [head, "|" + "---|" * 13]
    for r in results:
        rows.append(
            f"| {r.fault} | {r.database} | {r.calls} | {r.fell_back} | {r.without_interaction} | {r.never_closed} | "
            f"{r.reps_stuck} | {r.stranded} | {r.not_200} | {r.slower_than_15s} | {r.slowest_webhook_s} | "
            f"{', '.join(r.workers_died) or 0} | {r.settled_after_s if r.settled_after_s is not None else 'no'} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", choices=[*FAULTS, "all"], default="all")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--emulators", type=int, default=3, help="emulator processes placing the calls (default 3)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds over which the calls are placed")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="an admin URL (for pg-outage)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--sigbus-probe",
        type=int,
        metavar="TRIALS",
        help="only this: two writers, their files made immutable for 2 s, TRIALS times each with mmap off and on",
    )
    args = parser.parse_args(argv)
    if args.sigbus_probe:
        for mmap_size, ends in probe_sigbus(args.sigbus_probe).items():
            print(f"mmap_size={mmap_size}: {ends.count('SIGBUS')} of {len(ends)} writers died of SIGBUS ({ends})")
        return 0
    if os.geteuid() != 0 and args.fault in ("all", "sqlite-readonly"):
        raise SystemExit("sqlite-readonly needs root (chattr +i)")
    faults = FAULTS if args.fault == "all" else (args.fault,)
    results = []
    for fault in faults:
        log(f"{fault}: {args.calls} calls from {args.emulators} emulators over {args.duration:.0f} s")
        results.append(
            run_fault(
                fault,
                calls=args.calls,
                emulators=args.emulators,
                duration=args.duration,
                postgres_url=args.postgres_url,
            )
        )
        log(f"{fault}: {results[-1]}")
    print(json.dumps([asdict(r) for r in results], indent=2) if args.json else format_table(results))
    return 0 if all(r.clean for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
