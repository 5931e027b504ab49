"""Webhook benchmark: ``/voice/incoming`` + the gather step under concurrent emulated calls, against its floor.

Two real server processes run side by side (the idle one costs nothing) with the same gunicorn settings, and are
loaded one after the other by the same load generator, with the same concurrency and the same requests:

* the floor: ``bench/floor_app.py``, a bare Flask endpoint answering every POST with one constant TwiML document,
  under gunicorn configured as ``warmline serve`` configures it (workers, worker class, an access log line per
  request on stdout);
* Warmline: ``voice:create_app()`` as its ``warmline serve`` runs it (gunicorn, and whatever else serve starts, such
  as the housekeeping process), on a fresh, migrated and seeded database (SQLite in a temp dir by default, or a
  fresh PostgreSQL database with ``--database-url``), every request signed like Twilio signs it, log level WARNING,
  ``TWILIO_API_URL`` pointing at a loopback port nobody listens on (REST must never be on the response path).

``--baseline REF`` adds a third server: the app of another commit (``git worktree`` of REF in a temp dir, the same
venv, that tree first on the path), run by that tree's own ``warmline serve`` on a database of its own, migrated
and seeded by that tree's own commands (``db upgrade``, ``crm import customers``, ``reps import``). It is measured in
the same rounds as the current tree (the two take turns going first), and the report gives both apps' ratios to the
floor and their ratio to each other.

``--rate N`` measures an open loop instead: calls arrive at N a second (Poisson, seeded: every server gets the same
schedule), each request on a connection of its own, sent when due whatever the server is doing, so a stall shows as
the latency of every request that arrives during it (a closed loop would send less meanwhile, and hide it). It
reports p50/p99/p99.9/max per server (and per round) and how many requests were sent more than 1 ms late (the load
generator falling behind: visible, not silently measured). ``--steps incoming`` is its default. ``--trace DIR``
adds bench/tail_probe.py to every process of the servers and explains what the requests slower than 5 ms waited for
(GC pauses, the writers' lock, housekeeping passes, WAL checkpoints, flow reload polls, a backlog).

An emulated call is a signed ``POST /voice/incoming`` followed by a signed ``POST /voice/gather`` carrying a
``SpeechResult``, as Twilio sends them; each of the concurrent lines places one call after another
(``--steps incoming``: ``/voice/incoming`` alone, the endpoint the issue's target names; both steps are the
stricter default). Request bytes and signatures are computed before the timed window. Every response must be HTTP
200 with a TwiML ``<Response>`` of the expected shape (the app answers its own errors with fallback TwiML and status
200, so that is checked too), and the servers must log no error while serving; any failure makes the run invalid
and the exit status 1.

Throughput counts the requests that complete inside the window (``--duration`` seconds after ``--warmup``; with
``--calls N`` the window closes when the N calls started after the warm-up are done); latencies are those of the
same requests, from writing the request to reading the whole answer. The result is printed as the ratio against
the floor measured in the same run (house rule: no absolute thresholds); ``--rounds N`` alternates floor and app
N times and reports the median round, which keeps a busy machine from skewing one side only. The CPU columns
(from /proc) say where the cores went: the servers' CPU per request does not depend on the load generator.

    .venv/bin/python bench/webhook.py                          # SQLite, 50 lines, 10 s after a 2 s warm-up
    .venv/bin/python bench/webhook.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/warmline_bench
    .venv/bin/python bench/webhook.py --rounds 3 --worker-class gthread --threads 4 --json
    .venv/bin/python bench/webhook.py --rounds 3 --app minimal    # the least a call-recording webhook gets
    .venv/bin/python bench/webhook.py --steps incoming --rounds 3 --baseline b9da9e1   # against another commit
    .venv/bin/python bench/webhook.py --rate 500 --rounds 3 --baseline b9da9e1 --trace /tmp/tail   # open loop
    .venv/bin/python bench/profile_webhook.py                  # where a request's time goes (WSGI, cProfile)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import math
import os
import platform
import random
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:  # run as a script (`python bench/webhook.py`): make the project importable
    sys.path.insert(0, str(PROJECT_ROOT))

from bench.consoles import ConsoleCrowd, sign_in_consoles  # noqa: E402
from bench.consoles import summary as consoles_summary  # noqa: E402
from bench.tail_probe import TRACE_DIR_VARIABLE, TRACE_NAME_VARIABLE, explain, format_explanation  # noqa: E402

if TYPE_CHECKING:
    import aiohttp

APP_SPEC = "voice:create_app()"
FLOOR_SPEC = "bench.floor_app:create_app()"
# A tree's own `warmline` command, whichever tree is first on the path (the console script names this tree's).
RUN_WARMLINE_CLI = "from voice.cli import main; sys.argv[0] = 'warmline'; main()"
CHECKED_FLOOR_SPEC = "bench.floor_app:create_app(checked=True)"
MINIMAL_FLOOR_SPEC = "bench.floor_app:create_app(checked=True, minimal=True)"
#: The reference floors, by the name ``--floor`` and ``--app`` give them.
REFERENCE_SPECS = {"checked": CHECKED_FLOOR_SPEC, "minimal": MINIMAL_FLOOR_SPEC}
TARGET_RATIO = 0.60
#: An open-loop request sent later than this after it was due counts as a late send (the client fell behind).
LATE_SEND_MS = 1.0

Step = Literal["incoming", "gather", "status"]
STEPS: tuple[Step, ...] = ("incoming", "gather", "status")
PATHS: dict[Step, str] = {"incoming": "/voice/incoming", "gather": "/voice/gather", "status": "/voice/status"}

# What each step must answer with (a TwiML verb directly under <Response>), per target; () : any TwiML <Response>
# (the status callback's answer is empty).
FLOOR_EXPECTS: dict[Step, tuple[str, ...]] = {"incoming": ("Gather",), "gather": ("Gather",), "status": ()}
APP_EXPECTS: dict[Step, tuple[str, ...]] = {"incoming": ("Gather",), "gather": ("Dial", "Enqueue"), "status": ()}

# What callers say at the gather step (one per department of the sample flow, billing most often).
CALLER_PHRASES = (
    "I was charged twice on my card",
    "I was charged twice on my card",
    "there's a charge on my statement I don't recognize",
    "my internet has been down since this morning",
    "I forgot my password and now my account is locked",
    "how much does the business plan cost",
    "I'd like to speak to a person please",
)
CITIES = ("SPRINGFIELD", "PORTLAND", "AUSTIN", "BOSTON", "DENVER")
OUR_NUMBER = "+15550009999"
N_CUSTOMERS = 20
N_REPS = 6
KNOWN_CALLER_SHARE = 0.5
FLOOR_POOL_CALLS = 500  # the floor ignores signatures and CallSids: it cycles through this many


class BenchError(RuntimeError):
    """The benchmark could not be set up or run (a server did not start, the database is not reachable, ...)."""


# --- configuration ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    concurrency: int = 50
    duration: float = 10.0  # seconds measured (when ``calls`` is None)
    warmup: float = 2.0
    calls: int | None = None  # measure exactly this many calls instead of a duration
    max_seconds: float = 120.0  # hard bound on one target's load phase
    max_calls: int = 200_000  # hard bound on the signed calls prepared for the app
    workers: int = 2
    # What `warmline serve` runs by default (sync workers; see voice/cli.py), so the figure is the deployment's.
    worker_class: Literal["gthread", "sync"] = "sync"
    threads: int = 4
    keepalive: bool = True
    client: Literal["raw", "aiohttp"] = "raw"  # the load generator's HTTP client
    database_url: str | None = None  # None: a fresh SQLite file in a temp dir
    request_timeout: float = 30.0
    startup_timeout: float = 30.0
    target: float = TARGET_RATIO
    seed: int = 7
    rounds: int = 1  # measure floor then app this many times, alternating; the median ratio is reported
    log_dir: str | None = None  # keep the servers' logs here (default: a temp dir, removed)
    # "bare": the issue's floor (constant TwiML); "checked": the same after reading the form and checking the
    # signature, the least any Twilio webhook must do (an analysis aid, see bench/floor_app.py)
    # "minimal": also the least CRM work of a call (a lookup, one INSERT), see bench/floor_app.py
    floor: Literal["bare", "checked", "minimal"] = "bare"
    # "both": each emulated call posts /voice/incoming then the gather (the default, and the stricter reading of
    # the target); "incoming": only /voice/incoming, the endpoint the issue's target names; "call": both, then the
    # call's final status callback (completed), the webhook that ends the interaction and, with a CRM configured,
    # writes the CRM outbox's rows
    steps: Literal["both", "incoming", "call"] = "both"
    # What takes the app's place: Warmline (the target's subject), or one of the reference floors, to measure how far
    # the least a signed webhook must do ("checked") or the least a call-recording one must do ("minimal") gets
    # against the bare floor under the very same load (an analysis aid; only Warmline is judged)
    app: Literal["warmline", "checked", "minimal"] = "warmline"
    # Open loop: calls arrive at this rate (Poisson, seeded) whatever the answers; None: the closed loop above
    rate: float | None = None
    # A git ref whose app is served beside the current tree's and measured in the same rounds
    baseline: str | None = None
    # Keep per-request records of the client and the servers here and explain the slow requests (bench/tail_probe.py)
    trace_dir: str | None = None
    # Rep consoles holding the live-events stream open (bench/consoles.py): the app is measured in every round with
    # this many open and with none, the same load, and the two compared
    consoles: int = 0

    def posted(self, call: EmulatedCall) -> tuple[PreparedRequest, ...]:
        """The requests each emulated call posts under these settings."""
        if self.steps == "call":
            return (call.incoming, call.gather, call.status)
        return (call.incoming, call.gather) if self.steps == "both" else (call.incoming,)

    @property
    def last_step(self) -> Step:
        """The step that completes a call (what ``calls/s`` counts)."""
        return {"both": "gather", "call": "status"}.get(self.steps, "incoming")  # type: ignore[return-value]

    def describe_server(self) -> str:
        kind = f"gthread x {self.threads} threads" if self.worker_class == "gthread" else "sync"
        return f"gunicorn, {self.workers} workers, {kind}"


# --- emulated calls --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedRequest:
    step: Step
    path: str
    body: bytes
    headers: Mapping[str, str]
    wire: bytes  # the whole HTTP/1.1 request (line, headers, body), for the raw client


@dataclass(frozen=True)
class EmulatedCall:
    incoming: PreparedRequest
    gather: PreparedRequest
    status: PreparedRequest  # the call's final status callback (posted with --steps call)

    def requests(self) -> tuple[PreparedRequest, PreparedRequest]:
        return (self.incoming, self.gather)


def _signed(
    step: Step, params: dict[str, str], *, base_url: str, sign: Callable[[str, dict[str, str]], str]
) -> PreparedRequest:
    from urllib.parse import urlencode, urlsplit

    path = PATHS[step]
    body = urlencode(params).encode("ascii")
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        "X-Twilio-Signature": sign(base_url + path, params),
    }
    head = [f"POST {path} HTTP/1.1", f"Host: {urlsplit(base_url).netloc}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    return PreparedRequest(step=step, path=path, body=body, headers=headers, wire=wire)


def build_calls(
    count: int,
    *,
    base_url: str,
    auth_token: str,
    account_sid: str,
    known_numbers: Sequence[str],
    rng: random.Random,
) -> list[EmulatedCall]:
    """``count`` calls, each signed as Twilio signs (X-Twilio-Signature over base_url + path + the form)."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(auth_token)

    def sign(url: str, params: dict[str, str]) -> str:
        signature: str = validator.compute_signature(url, params)
        return signature

    calls = []
    for _ in range(count):
        call_sid = "CA" + uuid.uuid4().hex
        if known_numbers and rng.random() < KNOWN_CALLER_SHARE:
            caller = rng.choice(known_numbers)
        else:
            caller = f"+1555{rng.randrange(8_000_000, 10_000_000):07d}"  # nobody in the CRM has these
        city = rng.choice(CITIES)
        common = {
            "AccountSid": account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call_sid,
            "Direction": "inbound",
            "From": caller,
            "Caller": caller,
            "FromCity": city,
            "FromState": "CA",
            "FromCountry": "US",
            "To": OUR_NUMBER,
            "Called": OUR_NUMBER,
            "ToCountry": "US",
        }
        incoming = _signed("incoming", {**common, "CallStatus": "ringing"}, base_url=base_url, sign=sign)
        gather_form = {
            **common,
            "CallStatus": "in-progress",
            "SpeechResult": rng.choice(CALLER_PHRASES),
            "Confidence": f"{rng.uniform(0.75, 0.97):.8f}",
            "Language": "en-US",
        }
        status_form = {**common, "CallStatus": "completed", "CallDuration": str(rng.randrange(30, 600))}
        calls.append(
            EmulatedCall(
                incoming,
                _signed("gather", gather_form, base_url=base_url, sign=sign),
                _signed("status", status_form, base_url=base_url, sign=sign),
            )
        )
    return calls


# --- response checks -------------------------------------------------------------------------------------------------


def check_twiml(
    status: int, body: bytes, *, expects: Sequence[str], fallback_marker: str | None
) -> tuple[str | None, str]:
    """(why this answer is a failure or None, what it answered with: the expected verb found, or its verbs)."""
    if status != 200:
        return f"HTTP {status}", f"HTTP {status}"
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "not XML", "not XML"
    if root.tag != "Response":
        return f"root element <{root.tag}>, not a TwiML <Response>", root.tag
    verbs = [child.tag for child in root]
    if fallback_marker and any(fallback_marker in (say.text or "") for say in root.iter("Say")):
        return "fallback TwiML (the app hit an error and apologised)", "Fallback"
    found = next((verb for verb in expects if verb in verbs), None)
    if not expects:
        return None, "+".join(verbs) or "Response"
    if found is None:
        shape = "+".join(verbs) or "empty"
        return f"unexpected reply <Response>{shape} (expected one of {', '.join(expects)})", shape
    return None, found


# --- CPU accounting --------------------------------------------------------------------------------------------------


def cpu_seconds(root_pid: int, *, database_marker: str | None = None) -> tuple[float, float]:
    """User+system CPU seconds so far of (a process and its direct children -- gunicorn's master and workers,
    the PostgreSQL backends whose process title names ``database_marker``). Linux /proc; zeros elsewhere."""
    ticks = os.sysconf("SC_CLK_TCK")
    server = database = 0
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()
            pid, ppid, used = int(entry.name), int(fields[1]), int(fields[11]) + int(fields[12])
            if pid == root_pid or ppid == root_pid:
                server += used
            elif database_marker and database_marker in (entry / "cmdline").read_bytes().decode("utf-8", "replace"):
                database += used
        except (OSError, IndexError, ValueError):
            continue
    return server / ticks, database / ticks


# --- HTTP clients ----------------------------------------------------------------------------------------------------


class Sender(Protocol):
    """Posts prepared requests for one line (emulated phone line) of the load; returns (status, body)."""

    async def send(self, request: PreparedRequest) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class RawHttpSender:
    """One HTTP/1.1 connection per line, writing pre-built request bytes and reading just enough HTTP to get the
    status and body (Content-Length, chunked, or until close). A fraction of aiohttp's CPU per request, which
    matters on 2 cores shared with the servers: whatever the client burns, the floor cannot use."""

    def __init__(self, host: str, port: int, *, keepalive: bool, timeout: float) -> None:
        self.host, self.port, self.keepalive, self.timeout = host, port, keepalive, timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: PreparedRequest) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(request)
        except BaseException:
            await self.close()  # the connection is in an unknown state
            raise

    async def _exchange(self, request: PreparedRequest) -> tuple[int, bytes]:
        for _attempt in range(2):
            reused = self._writer is not None
            if self._reader is None or self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._reader, self._writer
            try:
                writer.write(request.wire)
                head = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                await self.close()
                nothing_read = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                if reused and nothing_read:
                    continue  # the server had closed this idle keep-alive connection: retry once on a new one
                raise
            status, length, chunked, close = _parse_response_head(head)
            if chunked:
                body = await _read_chunked(reader)
            elif length is not None:
                body = await reader.readexactly(length)
            else:
                body, close = await reader.read(), True
            if close or not self.keepalive:
                await self.close()
            return status, body
        raise ConnectionError("the server closed two connections in a row before answering")

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()


def _parse_response_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, Content-Length or None, chunked?, connection closes?) of an HTTP/1.x response head."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    status = int(rest[:3])
    length: int | None = None
    chunked = False
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            close = value == b"close" or (close and value != b"keep-alive")
    return status, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


class AiohttpSender:
    """The same through aiohttp (one shared session, a connection pool as large as the number of lines)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(self, request: PreparedRequest) -> tuple[int, bytes]:
        async with self.session.post(request.path, data=request.body, headers=request.headers) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        pass  # the session is closed by whoever opened it


# --- the load generator ----------------------------------------------------------------------------------------------


@dataclass
class _Load:
    """Everything one load phase records (single event loop: no locks needed)."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    failure_examples: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # gather step answers
    next_call: int = 0
    measured_claimed: int = 0
    pool_exhausted: bool = False

    def fail(self, step: Step, reason: str, detail: str = "") -> None:
        key = f"{PATHS[step]}: {reason}"
        self.failures[key] += 1
        if self.failures[key] == 1 and len(self.failure_examples) < 10:  # one example of each kind
            detail = " ".join(detail.split())
            self.failure_examples.append(f"{key}{f' -- {detail}' if detail else ''}")


@dataclass(frozen=True)
class StepStats:
    requests: int
    p50_ms: float
    p99_ms: float
    p999_ms: float = 0.0
    max_ms: float = 0.0

    @classmethod
    def of(cls, sorted_latencies: Sequence[float]) -> StepStats:
        return cls(
            requests=len(sorted_latencies),
            p50_ms=percentile(sorted_latencies, 50),
            p99_ms=percentile(sorted_latencies, 99),
            p999_ms=percentile(sorted_latencies, 99.9),
            max_ms=sorted_latencies[-1] if sorted_latencies else 0.0,
        )


@dataclass(frozen=True)
class TargetResult:
    name: str
    window_s: float
    requests: int
    calls: int
    requests_per_s: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    steps: dict[str, StepStats]
    failures: int
    failure_reasons: dict[str, int]
    failure_examples: list[str]
    gather_outcomes: dict[str, int]
    server_cpu_ms_per_request: float
    server_cpu_cores: float
    database_cpu_ms_per_request: float  # PostgreSQL backends of the bench database (0 for SQLite: in-process)
    database_cpu_cores: float
    client_cpu_cores: float
    calls_started: int
    pool_exhausted: bool
    hit_time_bound: bool
    p999_ms: float = 0.0
    max_ms: float = 0.0
    # Open loop only (``--rate``): the arrival rate offered, how many measured requests were sent more than
    # LATE_SEND_MS after they were due (the load generator falling behind), and the latest of them.
    offered_per_s: float = 0.0
    late_sends: int = 0
    max_late_ms: float = 0.0


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


async def drive(
    name: str,
    base_url: str,
    calls: Sequence[EmulatedCall],
    *,
    cfg: BenchConfig,
    cycle: bool,
    expects: Mapping[Step, Sequence[str]],
    fallback_marker: str | None,
    server_pid: int,
    database_marker: str | None = None,
) -> TargetResult:
    """Place calls on ``concurrency`` lines until the window closes; measure what completed inside the window."""
    load = _Load()
    loop_start = time.perf_counter()
    t0 = loop_start + cfg.warmup
    stop_at = t0 + cfg.duration if cfg.calls is None else loop_start + cfg.max_seconds
    window: dict[str, tuple[float, float, float, float]] = {}  # "start"/"end" -> (wall, server, client, db CPU)
    client_errors: tuple[type[Exception], ...] = (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError)

    def sample(key: str) -> None:
        server, database = cpu_seconds(server_pid, database_marker=database_marker)
        window[key] = (time.perf_counter(), server, time.process_time(), database)

    def claim() -> EmulatedCall | None:
        now = time.perf_counter()
        if now >= stop_at:
            return None
        if cfg.calls is not None and now >= t0:
            if load.measured_claimed >= cfg.calls:
                return None
            load.measured_claimed += 1
        if not cycle and load.next_call >= len(calls):
            load.pool_exhausted = True
            return None
        call = calls[load.next_call % len(calls)]
        load.next_call += 1
        return call

    async def line(sender: Sender) -> None:
        try:
            while (call := claim()) is not None:
                for request in cfg.posted(call):
                    started = time.perf_counter()
                    try:
                        status, body = await sender.send(request)
                    except client_errors as exc:
                        load.fail(request.step, type(exc).__name__, str(exc)[:200])
                        break
                    ended = time.perf_counter()
                    failure, outcome = check_twiml(
                        status, body, expects=expects[request.step], fallback_marker=fallback_marker
                    )
                    if request.step == "gather":
                        load.outcomes[outcome] += 1
                    if failure is not None:
                        load.fail(request.step, failure, body[:300].decode("utf-8", "replace"))
                        break
                    load.starts.append(started)
                    load.ends.append(ended)
                    load.steps.append(request.step)
        finally:
            await sender.close()

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        sample("start")
        if cfg.calls is None:
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            sample("end")

    async with AsyncExitStack() as stack:
        senders: list[Sender]
        if cfg.client == "aiohttp":
            import aiohttp

            client_errors += (aiohttp.ClientError,)
            connector = aiohttp.TCPConnector(limit=cfg.concurrency, force_close=not cfg.keepalive)
            timeout = aiohttp.ClientTimeout(total=cfg.request_timeout)
            session = aiohttp.ClientSession(base_url=base_url, connector=connector, timeout=timeout)
            await stack.enter_async_context(session)
            senders = [AiohttpSender(session) for _ in range(cfg.concurrency)]
        else:
            address = urlsplit(base_url)
            host, port = address.hostname or "127.0.0.1", address.port or 80
            timeout_s = cfg.request_timeout
            senders = [
                RawHttpSender(host, port, keepalive=cfg.keepalive, timeout=timeout_s) for _ in range(cfg.concurrency)
            ]
        sampling = asyncio.create_task(sampler())
        try:
            await asyncio.gather(*(line(sender) for sender in senders))
        finally:
            if not sampling.done():
                sampling.cancel()
        if "start" not in window:
            sample("start")
        if "end" not in window:
            sample("end")

    return _summarise(name, load, t0=t0, stop_at=stop_at, window=window, cfg=cfg)


def _summarise(
    name: str,
    load: _Load,
    *,
    t0: float,
    stop_at: float,
    window: Mapping[str, tuple[float, float, float, float]],
    cfg: BenchConfig,
) -> TargetResult:
    last_end = max(load.ends, default=t0)
    window_end = min(stop_at, last_end) if load.pool_exhausted or cfg.calls is not None else stop_at
    measured = [i for i, end in enumerate(load.ends) if t0 <= end <= window_end]
    return _target_result(
        name,
        [(load.steps[i], (load.ends[i] - load.starts[i]) * 1000.0) for i in measured],
        load,
        cfg=cfg,
        span=max(window_end - t0, 1e-9),
        wall=window["end"][0] - window["start"][0],
        server_cpu=window["end"][1] - window["start"][1],
        client_cpu=window["end"][2] - window["start"][2],
        database_cpu=window["end"][3] - window["start"][3],
        cpu_requests=len(measured),
        calls_started=load.next_call,
        pool_exhausted=load.pool_exhausted,
        hit_time_bound=cfg.calls is not None and load.measured_claimed < cfg.calls,
    )


def _target_result(
    name: str,
    timed: Sequence[tuple[str, float]],
    load: _Load,
    *,
    cfg: BenchConfig,
    span: float,
    wall: float,
    server_cpu: float,
    client_cpu: float,
    database_cpu: float,
    cpu_requests: int,
    calls_started: int,
    pool_exhausted: bool = False,
    hit_time_bound: bool = False,
    late: Sequence[float] = (),
) -> TargetResult:
    """A target's figures, closed or open loop: ``timed`` is (step, latency ms) of each request measured; the CPU
    figures are per ``cpu_requests`` requests over ``wall`` seconds."""
    latencies = sorted(ms for _, ms in timed)
    steps: dict[str, StepStats] = {
        step: StepStats.of(sorted(ms for posted, ms in timed if posted == step)) for step in STEPS
    }
    return TargetResult(
        name=name,
        window_s=span,
        requests=len(timed),
        calls=steps[cfg.last_step].requests,
        requests_per_s=len(timed) / span,
        calls_per_s=steps[cfg.last_step].requests / span,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        p999_ms=percentile(latencies, 99.9),
        max_ms=latencies[-1] if latencies else 0.0,
        steps=steps,
        failures=sum(load.failures.values()),
        failure_reasons=dict(load.failures),
        failure_examples=list(load.failure_examples),
        gather_outcomes=dict(load.outcomes),
        server_cpu_ms_per_request=server_cpu * 1000.0 / cpu_requests if cpu_requests else 0.0,
        server_cpu_cores=server_cpu / wall if wall > 0 else 0.0,
        client_cpu_cores=client_cpu / wall if wall > 0 else 0.0,
        database_cpu_ms_per_request=database_cpu * 1000.0 / cpu_requests if cpu_requests else 0.0,
        database_cpu_cores=database_cpu / wall if wall > 0 else 0.0,
        calls_started=calls_started,
        pool_exhausted=pool_exhausted,
        hit_time_bound=hit_time_bound,
        offered_per_s=cfg.rate or 0.0,
        late_sends=sum(1 for value in late if value > LATE_SEND_MS),
        max_late_ms=max(late, default=0.0),
    )


# --- the open-loop load generator ------------------------------------------------------------------------------------


def poisson_arrivals(rate: float, seconds: float, *, seed: int) -> list[float]:
    """Send times (seconds from the start) of a Poisson process of ``rate`` per second over ``seconds``: the same
    seed gives every target the very same schedule."""
    rng = random.Random(seed)
    arrivals: list[float] = []
    moment = rng.expovariate(rate)
    while moment < seconds:
        arrivals.append(moment)
        moment += rng.expovariate(rate)
    return arrivals


@dataclass
class Exchange:
    """One request of the open loop. Times are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, the clock the
    servers' trace uses too, see bench/tail_probe.py)."""

    request: PreparedRequest
    scheduled: float  # when it was due to be sent (a gather: the moment its call's incoming answer arrived)
    call_due: float  # when its call's first request was due (what puts it in the measured window or not)
    sent: float = 0.0  # when connecting began
    ended: float = 0.0  # when the whole answer had been read (or the request failed)
    status: int = 0
    body: bytes = b""
    error: str | None = None
    _received: bytearray = field(default_factory=bytearray, repr=False)
    _socket: socket.socket | None = field(default=None, repr=False)

    @property
    def late_ms(self) -> float:
        return (self.sent - self.scheduled) * 1000.0

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.sent) * 1000.0


class OpenLoopClient:
    """Sends every request at its scheduled time on a connection of its own, whatever the earlier ones are doing:
    a slow answer cannot hold back the next arrival, so the tail is measured instead of hidden (a closed loop sends
    less while the server stalls).

    Two threads. The sender sleeps until each arrival with ``time.sleep`` (a nanosecond timer: an event loop's
    selector rounds its timeouts up to whole milliseconds), connects, writes the pre-built bytes and hands the
    socket over; the reader waits on epoll for all open answers at once and timestamps each as it completes. Both
    spend their time in system calls, which release the GIL; the switch interval is lowered while they run so that
    neither waits long for the other. One connection per request is also what gunicorn's sync worker does (it
    closes after every answer). ``follow_up`` may name a request to send the moment an answer arrives (the
    gather step of a call after its incoming answer, as Twilio sends it). A server so far behind that its listen
    queue is full makes ``connect`` wait: those requests are sent late, and counted as late sends.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        follow_up: Callable[[Exchange], PreparedRequest | None] | None = None,
    ) -> None:
        self._address = (host, port)
        self._timeout = timeout
        self._follow_up = follow_up
        self._epoll = select.epoll()
        self._open: dict[int, Exchange] = {}
        self._exchanges: list[Exchange] = []
        self._sending_done = threading.Event()
        self._abandon = threading.Event()

    def run(self, arrivals: Sequence[tuple[float, PreparedRequest]], *, start: float) -> list[Exchange]:
        """Send each request at ``start`` + its offset (seconds); return every exchange once all are answered,
        failed or timed out."""
        reader = threading.Thread(target=self._read, name="open-loop-reader", daemon=True)
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0001)
        try:
            reader.start()
            for offset, request in arrivals:
                due = start + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                self._send(Exchange(request, due, due))
            self._sending_done.set()
            reader.join()
        except BaseException:
            self._abandon.set()  # interrupted: what is still open fails below, unanswered
            raise
        finally:
            sys.setswitchinterval(switch_interval)
            self._sending_done.set()
            reader.join()
            for exchange in list(self._open.values()):
                self._finish(exchange, time.perf_counter(), error="not answered when the load stopped")
            self._epoll.close()
        return self._exchanges

    def _send(self, exchange: Exchange) -> None:
        self._exchanges.append(exchange)
        exchange.sent = time.perf_counter()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(self._address)
            sock.sendall(exchange.request.wire)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            exchange.ended, exchange.error = time.perf_counter(), f"{type(exc).__name__}: {exc}"
            return
        exchange._socket = sock
        self._open[sock.fileno()] = exchange  # before the reader can hear of it
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _read(self) -> None:
        next_timeout_check = time.perf_counter() + 0.5
        while not (self._sending_done.is_set() and not self._open) and not self._abandon.is_set():
            for descriptor, _events in self._epoll.poll(0.05):
                exchange = self._open.get(descriptor)
                if exchange is None or exchange._socket is None:
                    continue
                try:
                    data = exchange._socket.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._finish(exchange, time.perf_counter(), error=f"{type(exc).__name__}: {exc}")
                    continue
                now = time.perf_counter()
                if data:
                    exchange._received += data
                    if _complete_answer(exchange._received) is None:
                        continue
                self._finish(exchange, now, closed=not data)
            now = time.perf_counter()
            if now >= next_timeout_check:
                next_timeout_check = now + 0.5
                for exchange in [e for e in self._open.values() if now - e.sent > self._timeout]:
                    self._finish(exchange, now, error=f"no answer within {self._timeout:g} s")

    def _finish(self, exchange: Exchange, now: float, *, closed: bool = False, error: str | None = None) -> None:
        sock, exchange._socket = exchange._socket, None
        if sock is not None:
            self._open.pop(sock.fileno(), None)
            with suppress(OSError, ValueError):
                self._epoll.unregister(sock)
            sock.close()
        exchange.ended = now
        if error is None:
            answer = _complete_answer(exchange._received, closed=closed)
            if answer is None:
                error = "the server closed the connection before the whole answer"
            else:
                exchange.status, exchange.body = answer
        exchange.error = error
        exchange._received = bytearray()
        if error is None and self._follow_up is not None:
            following = self._follow_up(exchange)
            if following is not None:
                self._send(Exchange(following, now, exchange.call_due))


def _complete_answer(received: bytes | bytearray, *, closed: bool = False) -> tuple[int, bytes] | None:
    """(status, body) once ``received`` holds a whole HTTP/1.x answer (``closed``: the server has closed the
    connection, which ends an answer without a length); None while more is to come. Raises nothing: a malformed
    head is an answer with status 0."""
    head_end = received.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    try:
        status, length, chunked, _close = _parse_response_head(bytes(received[: head_end + 4]))
    except ValueError:
        return (0, bytes(received)) if closed else None
    body = bytes(received[head_end + 4 :])
    if chunked:
        if not (body.endswith(b"0\r\n\r\n") or closed):
            return None
        parts, rest = [], body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            parts.append(rest[:size])
            rest = rest[size + 2 :]
        return status, b"".join(parts)
    if length is not None:
        return (status, body[:length]) if len(body) >= length else None
    return (status, body) if closed else None


def drive_open_loop(
    name: str,
    base_url: str,
    calls: Sequence[EmulatedCall],
    *,
    cfg: BenchConfig,
    cycle: bool,
    expects: Mapping[Step, Sequence[str]],
    fallback_marker: str | None,
    server_pid: int,
    database_marker: str | None = None,
    trace: Path | None = None,
) -> TargetResult:
    """Calls arriving at ``cfg.rate`` a second (Poisson, seeded: every target gets the same schedule) for
    ``cfg.warmup`` + ``cfg.duration`` seconds; what the requests of calls due after the warm-up measured."""
    assert cfg.rate is not None
    offsets = poisson_arrivals(cfg.rate, cfg.warmup + cfg.duration, seed=cfg.seed)
    if not cycle and len(offsets) > len(calls):
        raise BenchError(f"{name}: {len(offsets)} arrivals but only {len(calls)} calls prepared")
    # Each answered step is followed by the call's next one, as Twilio would post it.
    follow_ups: dict[int, PreparedRequest] = {}
    for call in calls:
        posted = cfg.posted(call)
        follow_ups.update((id(step), then) for step, then in itertools.pairwise(posted))

    def follow_up(exchange: Exchange) -> PreparedRequest | None:
        return follow_ups.get(id(exchange.request)) if exchange.status == 200 else None

    address = urlsplit(base_url)
    client = OpenLoopClient(
        address.hostname or "127.0.0.1", address.port or 80, timeout=cfg.request_timeout, follow_up=follow_up
    )
    server_before, database_before = cpu_seconds(server_pid, database_marker=database_marker)
    client_before = time.process_time()
    start = time.perf_counter() + 0.05
    exchanges = client.run(
        [(offset, calls[index % len(calls)].incoming) for index, offset in enumerate(offsets)], start=start
    )
    wall = time.perf_counter() - start
    server_after, database_after = cpu_seconds(server_pid, database_marker=database_marker)
    client_cpu = time.process_time() - client_before

    load = _Load()
    window_start, window_end = start + cfg.warmup, start + cfg.warmup + cfg.duration
    measured: list[Exchange] = []
    for exchange in exchanges:
        in_window = window_start <= exchange.call_due < window_end
        step = exchange.request.step
        if exchange.error is not None:
            load.fail(step, exchange.error.split(":")[0], exchange.error)
            continue
        failure, outcome = check_twiml(
            exchange.status, exchange.body, expects=expects[step], fallback_marker=fallback_marker
        )
        if step == "gather" and in_window:
            load.outcomes[outcome] += 1
        if failure is not None:
            load.fail(step, failure, exchange.body[:300].decode("utf-8", "replace"))
        elif in_window:
            measured.append(exchange)
    if trace is not None:
        _write_client_trace(trace, exchanges)
    answered = sum(1 for exchange in exchanges if exchange.error is None)
    late = [exchange.late_ms for exchange in measured if exchange.request.step == "incoming"]
    # The CPU figures are over the whole phase (warm-up included), sampled before the first send and after the last
    # answer: reading /proc in the middle would hold the GIL and delay the sender.
    return _target_result(
        name,
        [(exchange.request.step, exchange.latency_ms) for exchange in measured],
        load,
        cfg=cfg,
        span=cfg.duration,
        wall=wall,
        server_cpu=server_after - server_before,
        client_cpu=client_cpu,
        database_cpu=database_after - database_before,
        cpu_requests=answered,
        calls_started=len(offsets),
        late=late,
    )


def _write_client_trace(path: Path, exchanges: Sequence[Exchange]) -> None:
    """One JSON line per request: its idempotency token (how bench/tail_probe.py's server records name it), step,
    and the client's times."""
    with path.open("w", encoding="utf-8") as out:
        for exchange in exchanges:
            record = {
                "token": exchange.request.headers["I-Twilio-Idempotency-Token"],
                "step": exchange.request.step,
                "scheduled": exchange.scheduled,
                "sent": exchange.sent,
                "ended": exchange.ended,
                "status": exchange.status,
                "error": exchange.error,
            }
            out.write(json.dumps(record) + "\n")


# --- server processes ------------------------------------------------------------------------------------------------


def _warmline_command(*args: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; {RUN_WARMLINE_CLI}", *args]


#: A REST request the app sent in the background to TWILIO_API_URL, where nothing listens by design (see the module
#: docstring): the proof that it was not on the response path, not a failure. Webhooks whose answer depends on REST
#: do not exist, so these lines say nothing about the figures. Anything else logged as an error still counts.
REFUSED_BACKGROUND_REST = re.compile(r"voice\.adapters\.twilio_rest: background \w+ \S+ failed: .*Connection refused")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GunicornServer:
    """One gunicorn master (own session, so it and its workers can be stopped as a group) on a loopback port."""

    def __init__(
        self,
        name: str,
        app_spec: str,
        *,
        cfg: BenchConfig,
        port: int,
        env: Mapping[str, str],
        log: Path,
        tree: Path = PROJECT_ROOT,
        through_cli: bool = False,
    ):
        self.name = name
        self.app_spec = app_spec  # what gunicorn serves (unused with ``through_cli``: the CLI builds the app)
        self.tree = tree  # the source tree it runs from (cwd and first on the path)
        self.through_cli = through_cli  # started as the tree's own `warmline serve`
        self.cfg = cfg
        self.port = port
        self.env = dict(env)
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.stop_mark: int | None = None  # log size when we began stopping the server
        self.shutdown_seconds = 0.0
        self._stop_requested_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        workers = ["--workers", str(self.cfg.workers), "--worker-class", self.cfg.worker_class]
        if self.cfg.worker_class == "gthread":  # with sync, --threads > 1 would silently switch to gthread
            workers += ["--threads", str(self.cfg.threads)]
        if self.through_cli:  # the deployment: this tree's `warmline serve`, whatever it starts besides gunicorn
            return _warmline_command("serve", "--host", "127.0.0.1", "--port", str(self.port), *workers)
        command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", *workers]
        # As `warmline serve` configures gunicorn: an access log line per request on stdout, no control socket.
        command += ["--access-logfile", "-", "--no-control-socket"]
        command += ["--log-level", "warning", "--timeout", "60", "--graceful-timeout", "5"]
        command.append(self.app_spec)
        return command

    def start(self) -> None:
        self._log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.tree,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> None:
        """Until the master and all its workers are up and one of them answers HTTP."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._answers_http() and self._worker_count() >= self.cfg.workers:
                return
            time.sleep(0.05)
        raise BenchError(f"{self.name} server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _answers_http(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                # Any answer means a worker has loaded the app (404 here: no route, no database access).
                sock.sendall(b"GET /__bench_ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return sock.recv(16).startswith(b"HTTP/")
        except OSError:
            return False

    def _worker_count(self) -> int:
        assert self.process is not None
        count = 0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rfind(")") + 2 :].split()[1]) == self.process.pid:
                    count += 1
        return count

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_problems(self) -> tuple[list[str], list[str]]:
        """Lines of the server log that mean something went wrong (errors, tracebacks, worker timeouts): those
        written while serving, and those written while we were shutting the server down."""
        markers = (" ERROR ", "[ERROR]", "CRITICAL", "Traceback")
        text = self.log_text()
        split = len(text) if self.stop_mark is None else self.stop_mark

        def problems(part: str) -> list[str]:
            lines = part.splitlines()
            found = []
            for number, line in enumerate(lines):
                if not any(marker in line for marker in markers) or REFUSED_BACKGROUND_REST.search(line):
                    continue
                if "Traceback" in line:  # name the exception: a traceback's first unindented line after it
                    raised = next((later for later in lines[number + 1 :] if later and not later[0].isspace()), "")
                    line = f"{line} -> {raised}"
                found.append(line)
            return found

        return problems(text[:split]), problems(text[split:])

    def request_stop(self) -> None:
        """SIGINT the master: quick shutdown (the load is over). Returns at once; ``stop`` waits for it."""
        if self.process is None or self._stop_requested_at is not None:
            return
        self._stop_requested_at = time.perf_counter()
        with suppress(OSError):
            self.stop_mark = self.log_path.stat().st_size
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)

    def stop(self) -> None:
        """Stop the master and its workers (SIGKILL to the process group if they linger). Idempotent."""
        self.request_stop()
        process, self.process = self.process, None
        if process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(process.pid)
                process.wait(timeout=10)
            _kill_group(process.pid)  # stray workers whose master is gone
            self.shutdown_seconds = time.perf_counter() - (self._stop_requested_at or time.perf_counter())
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# --- database and settings -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    url: str
    label: str
    known_numbers: tuple[str, ...]
    process_marker: str | None = None  # in the process title of this database's PostgreSQL backends


@dataclass(frozen=True)
class DatabasePlan:
    """Which database a run will use, known before it exists (the servers can boot while it is being made)."""

    url: str
    label: str
    admin_url: str | None = None  # PostgreSQL: the maintenance database, to CREATE and DROP it through
    name: str | None = None


def plan_database(cfg: BenchConfig, workdir: Path, *, stem: str = "warmline") -> DatabasePlan:
    """The database of one app (``stem`` names its file; each app served gets one of its own)."""
    from sqlalchemy.engine import make_url

    if cfg.database_url is None:
        return DatabasePlan(url=f"sqlite:///{workdir / f'{stem}.sqlite3'}", label="SQLite (fresh file in a temp dir)")
    parsed = make_url(cfg.database_url)
    if parsed.get_backend_name() != "postgresql":
        raise BenchError(
            f"--database-url must be a PostgreSQL URL (got {parsed.get_backend_name()}); omit it to bench on SQLite"
        )
    if parsed.drivername == "postgresql":  # plain postgresql:// means psycopg 3 here, as in crm_sync.db
        parsed = parsed.set(drivername="postgresql+psycopg")
    name = parsed.database if parsed.database not in (None, "", "postgres") and stem == "warmline" else None
    name = name or f"{stem}_bench_{secrets.token_hex(5)}"
    return DatabasePlan(
        url=parsed.set(database=name).render_as_string(hide_password=False),
        label=f"PostgreSQL (fresh database {name})",
        admin_url=parsed.set(database="postgres").render_as_string(hide_password=False),
        name=name,
    )


@contextmanager
def fresh_database(
    plan: DatabasePlan, departments: Sequence[str], *, seed: Callable[[str], tuple[str, ...]] | None = None
) -> Iterator[Database]:
    """A migrated, seeded database of our own for this run; a PostgreSQL one is created, then dropped afterwards.
    ``seed(url)`` migrates and seeds it (default: this tree's code, in process) and returns the customers' numbers."""
    from sqlalchemy import create_engine, text

    def migrate_and_seed(url: str) -> tuple[str, ...]:
        return seed(url) if seed is not None else _migrate_and_seed(url, departments)

    if plan.admin_url is None or plan.name is None:
        yield Database(url=plan.url, label=plan.label, known_numbers=migrate_and_seed(plan.url))
        return
    name = plan.name
    admin = create_engine(plan.admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if exists:
                raise BenchError(f"database {name!r} already exists; name a fresh one (it is dropped afterwards)")
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except BenchError:
        admin.dispose()
        raise
    except Exception as exc:
        admin.dispose()
        raise BenchError(f"cannot create a PostgreSQL database through {plan.admin_url}: {exc}") from exc
    try:
        known = migrate_and_seed(plan.url)
        yield Database(url=plan.url, label=plan.label, known_numbers=known, process_marker=f" {name} ")
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _migrate_and_seed(url: str, departments: Sequence[str]) -> tuple[str, ...]:
    """Migrate; add customers (returns their numbers) and reps with every department's skill, all available."""
    from crm_sync.db import Store
    from crm_sync.models import RepState, utcnow
    from crm_sync.queries.customers import upsert_customer
    from crm_sync.queries.reps import upsert_rep

    store = Store(url)
    try:
        store.upgrade()
        numbers = tuple(f"+1555123{index:04d}" for index in range(1, N_CUSTOMERS + 1))
        with store.unit_of_work() as session:
            for index, phone in enumerate(numbers):
                upsert_customer(
                    session,
                    name=f"Customer{index} Bench",
                    phone_e164=phone,
                    email=None,
                    tier="gold" if index % 4 == 0 else "standard",
                    notes=None,
                    custom_fields={},
                )
            for index in range(1, N_REPS + 1):
                rep, _ = upsert_rep(
                    session,
                    name=f"Rep {index}",
                    phone_e164=f"+1555010{index:04d}",
                    departments=list(departments),
                    languages=["en-US"],
                )
                rep.choose_presence(RepState.AVAILABLE, now=utcnow())
        return numbers
    finally:
        store.dispose()


@dataclass(frozen=True)
class AppSettings:
    config_path: Path
    departments: tuple[str, ...]
    fallback_apology: str


def write_bench_config(workdir: Path, *, tree: Path = PROJECT_ROOT, name: str = "config") -> Path:
    """A copy of ``tree``'s config.yaml with ``log_level: WARNING`` (and the flows folder made absolute)."""
    source = tree / "config.yaml"
    data: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    data["log_level"] = "WARNING"
    flows = dict(data.get("flows") or {})
    directory = Path(flows.get("directory", "ivr_flows"))
    flows["directory"] = str(directory if directory.is_absolute() else source.parent / directory)
    # What `make run` serves: the default install routes speech with WordLlama (MiniLM is an optional extra).
    flows["classifier"] = "wordllama"
    data["flows"] = flows
    routing = dict(data.get("routing") or {})
    if "missed_offers_before_away" in routing:
        # Nobody answers the reps' phones here, so every offer is missed: after three each, every rep would be set
        # away and callers would get voicemail instead of a place in line (measured: the fifth round of a
        # 5-round run answered every gather with voicemail).
        routing["missed_offers_before_away"] = 1_000_000
        data["routing"] = routing
    if "check_calls_after" in routing:
        # Calls here are never ended by a status callback, so after check_calls_after the housekeeping process would
        # ask Twilio about them, at a port where nothing listens (REST must never be on the response path), and log
        # each failure: the run would be invalid after its first minute.
        routing["check_calls_after"] = 86_400
        data["routing"] = routing
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_bench_settings(config_path: Path) -> AppSettings:
    """Validate the bench config as the app will, and read what seeding and checking need from it."""
    from voice.config import load_settings

    settings = load_settings(
        environ={"WARMLINE_CONFIG": str(config_path), "TWILIO_AUTH_TOKEN": "x", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32}
    )
    departments: set[str] = set()  # of every flow in the folder: reps get them all, so nobody lands in voicemail
    for flow_file in sorted(settings.flows_directory.glob("*.yaml")):
        with suppress(OSError, yaml.YAMLError):
            flow = yaml.safe_load(flow_file.read_text(encoding="utf-8"))
            if isinstance(flow, dict) and isinstance(flow.get("departments"), dict):
                departments.update(str(name) for name in flow["departments"])
    if not departments:
        raise BenchError(f"no flow with departments in {settings.flows_directory}")
    return AppSettings(config_path, tuple(sorted(departments)), settings.fallback.apology)


def server_environment(
    *,
    config: Path,
    database_url: str,
    public_url: str,
    auth_token: str,
    account_sid: str,
    rest_url: str,
    tree: Path = PROJECT_ROOT,
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WARMLINE_", "TWILIO_"))}
    env.update(
        WARMLINE_CONFIG=str(config),
        WARMLINE_DATABASE_URL=database_url,
        WARMLINE_PUBLIC_URL=public_url,
        TWILIO_AUTH_TOKEN=auth_token,
        TWILIO_ACCOUNT_SID=account_sid,
        TWILIO_API_URL=rest_url,  # nothing listens there: REST must never be on the response path
        PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
    )
    return env


# --- a baseline: another commit's app, served beside this one --------------------------------------------------------


@dataclass(frozen=True)
class SourceTree:
    """A checkout whose ``voice:create_app()`` is served: this one, or ``--baseline``'s commit."""

    root: Path
    label: str


@contextmanager
def baseline_tree(ref: str) -> Iterator[SourceTree]:
    """``ref`` checked out (detached) in a temporary git worktree, removed afterwards."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"git {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    commit = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    short = git("rev-parse", "--short", commit)
    parent = Path(tempfile.mkdtemp(prefix="warmline-baseline-"))
    root = parent / short
    try:
        git("worktree", "add", "--detach", "--quiet", str(root), commit)
        yield SourceTree(root, ref if short.startswith(ref) else f"{ref} ({short})")
    finally:
        with suppress(BenchError):
            git("worktree", "remove", "--force", str(root))
        shutil.rmtree(parent, ignore_errors=True)
        with suppress(BenchError):
            git("worktree", "prune")


# What the bench needs of another tree's settings, read by that tree's own code (its config schema may differ).
_SETTINGS_OF_TREE = """
import json, sys
from voice.config import load_settings
settings = load_settings(environ={"WARMLINE_CONFIG": sys.argv[1], "TWILIO_AUTH_TOKEN": "x",
                                  "TWILIO_ACCOUNT_SID": "AC" + "0" * 32})
print(json.dumps({"apology": settings.fallback.apology, "flows": str(settings.flows_directory),
                  "default": settings.flows.default}))
"""


def tree_settings(tree: SourceTree, config_path: Path, env: Mapping[str, str]) -> AppSettings:
    """A baseline's settings, read by its own code; its reps get the departments of its default flow (all a bench
    call can reach), which is what its ``reps import`` accepts."""
    done = subprocess.run(
        [sys.executable, "-c", _SETTINGS_OF_TREE, str(config_path)],
        cwd=tree.root,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"{tree.label}: cannot read its settings:\n{done.stderr.strip()[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    flow = yaml.safe_load((Path(found["flows"]) / f"{found['default']}.yaml").read_text(encoding="utf-8"))
    departments = tuple(sorted(str(name) for name in (flow or {}).get("departments") or {}))
    if not departments:
        raise BenchError(f"{tree.label}: its default flow has no departments")
    return AppSettings(config_path, departments, str(found["apology"]))


def seed_through_cli(
    tree: SourceTree, env: Mapping[str, str], departments: Sequence[str], workdir: Path, url: str
) -> tuple[str, ...]:
    """Migrate ``url`` with the tree's own migrations and seed it through the tree's own ``warmline`` commands,
    whose names are stable across versions: the same customers and reps as :func:`_migrate_and_seed`."""
    numbers = tuple(f"+1555123{index:04d}" for index in range(1, N_CUSTOMERS + 1))
    customers = workdir / f"{tree.root.name}-customers.csv"
    customers.write_text(
        "name,phone,email,tier,notes\n"
        + "".join(
            f"Customer{index} Bench,{phone},,{'gold' if index % 4 == 0 else 'standard'},\n"
            for index, phone in enumerate(numbers)
        ),
        encoding="utf-8",
    )
    reps = workdir / f"{tree.root.name}-reps.csv"
    reps.write_text(
        "name,phone,departments,languages\n"
        + "".join(f"Rep {index},+1555010{index:04d},{';'.join(departments)},en-US\n" for index in range(1, N_REPS + 1)),
        encoding="utf-8",
    )
    for command in (
        ["db", "upgrade"],
        ["crm", "import", "customers", str(customers)],
        ["reps", "import", str(reps), "--status", "available"],
    ):
        done = subprocess.run(
            _warmline_command(*command),
            cwd=tree.root,
            env={**env, "WARMLINE_DATABASE_URL": url},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"{tree.label}: warmline {' '.join(command)} failed:\n{done.stderr.strip()[-2000:]}")
    return numbers


# --- the benchmark ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    floor: TargetResult
    app: TargetResult
    ratio: float  # app/floor requests per second
    cpu_ratio: float  # floor/app server CPU per request: the same comparison, free of the load generator
    baseline: TargetResult | None = None  # --baseline's app, measured in the same round
    baseline_ratio: float = 0.0  # baseline/floor requests per second
    consoles: TargetResult | None = None  # --consoles: the app again, with that many consoles' streams open


@dataclass(frozen=True)
class BenchResult:
    config: dict[str, Any]
    server: str
    database: str
    rounds: list[Round]
    floor: TargetResult  # of the median round (by ratio)
    app: TargetResult
    ratio: float  # median over rounds
    cpu_ratio: float
    target: float
    meets_target: bool
    server_log_problems: dict[str, list[str]]  # errors logged while serving: each counts as a failure
    shutdown_log_problems: dict[str, list[str]]  # logged while we stopped the servers: reported, not counted
    failures: int
    baseline_label: str | None = None  # --baseline's ref (and commit)
    baseline: TargetResult | None = None  # of the round with the median baseline ratio
    baseline_ratio: float = 0.0  # median over rounds of baseline/floor throughput
    app_to_baseline: float = 0.0  # median over rounds of app/baseline throughput (same round, same load)
    # Open loop: per target ("floor", "warmline", "baseline"), the median over rounds of each latency figure (ms)
    open_loop: dict[str, dict[str, float]] = field(default_factory=dict)
    # --consoles: medians over rounds of (with consoles)/(without) throughput and p99, both measured in each round
    consoles_throughput_ratio: float = 0.0
    consoles_p99_ratio: float = 0.0
    consoles_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failures == 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure(
    server: GunicornServer,
    calls: Sequence[EmulatedCall],
    *,
    cfg: BenchConfig,
    cycle: bool,
    expects: Mapping[Step, Sequence[str]],
    fallback_marker: str | None,
    database_marker: str | None,
    round_number: int = 1,
) -> TargetResult:
    assert server.process is not None, "start the server first"
    if server.process.poll() is not None:
        raise BenchError(f"{server.name} server died (exit {server.process.returncode}):\n{server.log_tail()}")
    if cfg.rate is not None:
        _log(f"  {server.name}: {cfg.rate:g} calls/s on {server.url}, {cfg.warmup:g} s warm-up + {cfg.duration:g} s")
        trace = Path(cfg.trace_dir) / f"client-{server.name}-{round_number}.jsonl" if cfg.trace_dir else None
        return drive_open_loop(
            server.name,
            server.url,
            calls,
            cfg=cfg,
            cycle=cycle,
            expects=expects,
            fallback_marker=fallback_marker,
            server_pid=server.process.pid,
            database_marker=database_marker,
            trace=trace,
        )
    what = f"{cfg.calls} calls" if cfg.calls is not None else f"{cfg.duration:g} s"
    _log(f"  {server.name}: {cfg.concurrency} lines on {server.url}, {cfg.warmup:g} s warm-up, then {what}")
    return asyncio.run(
        drive(
            server.name,
            server.url,
            calls,
            cfg=cfg,
            cycle=cycle,
            expects=expects,
            fallback_marker=fallback_marker,
            server_pid=server.process.pid,
            database_marker=database_marker,
        )
    )


@dataclass
class _Served:
    """One app under test: its server, database, settings, and what its answers must look like."""

    server: GunicornServer
    settings: AppSettings
    expects: Mapping[Step, Sequence[str]]
    database: Database | None = None


def run_benchmark(cfg: BenchConfig) -> BenchResult:
    """Start the servers, measure floor then app (and baseline) ``rounds`` times, stop them, summarise."""
    rng = random.Random(cfg.seed)
    auth_token = secrets.token_hex(16)
    account_sid = "AC" + secrets.token_hex(16)
    rounds: list[Round] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="warmline-bench-")))
        if cfg.trace_dir:
            Path(cfg.trace_dir).mkdir(parents=True, exist_ok=True)
        trees = [SourceTree(PROJECT_ROOT, "current tree")]
        if cfg.baseline is not None:
            trees.append(stack.enter_context(baseline_tree(cfg.baseline)))
        _log(f"server: {cfg.describe_server()}" + (f"; baseline: {trees[1].label}" if len(trees) > 1 else ""))
        floor_port, baseline_port, rest_port = _distinct_ports(3)
        app_port = serve_port((floor_port, baseline_port, rest_port))

        def environment(tree: SourceTree, config: Path, database_url: str, port: int) -> dict[str, str]:
            env = server_environment(
                config=config,
                database_url=database_url,
                public_url=f"http://127.0.0.1:{port}",
                auth_token=auth_token,
                account_sid=account_sid,
                rest_url=f"http://127.0.0.1:{rest_port}",
                tree=tree.root,
            )
            if cfg.trace_dir:  # every process of the server loads the probe at start-up (bench/trace_site)
                env[TRACE_DIR_VARIABLE] = str(Path(cfg.trace_dir).resolve())
                env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "bench" / "trace_site"), env["PYTHONPATH"]])
            return env

        def server(name: str, spec: str, port: int, env: dict[str, str], tree: SourceTree) -> GunicornServer:
            env["WARMLINE_FLOOR_DB"] = str(workdir / f"{name}-floor.sqlite3")  # a minimal reference's own database
            if cfg.trace_dir:
                env[TRACE_NAME_VARIABLE] = name  # names the probe's files (bench/tail_probe.py)
            logs = Path(cfg.log_dir) if cfg.log_dir else workdir
            logs.mkdir(parents=True, exist_ok=True)
            through_cli = name != "floor" and spec == APP_SPEC  # Warmline runs as its `warmline serve` runs it
            log = logs / f"{name}.log"
            instance = GunicornServer(
                name, spec, cfg=cfg, port=port, env=env, log=log, tree=tree.root, through_cli=through_cli
            )
            stack.callback(instance.stop)  # also on Ctrl-C or an exception
            return instance

        config_path = write_bench_config(workdir)
        plan = plan_database(cfg, workdir)
        _log(f"database: {plan.label}")
        floor_spec = REFERENCE_SPECS.get(cfg.floor, FLOOR_SPEC)
        app_spec = REFERENCE_SPECS.get(cfg.app, APP_SPEC)
        floor_server = server(
            "floor", floor_spec, floor_port, environment(trees[0], config_path, plan.url, floor_port), trees[0]
        )
        settings = load_bench_settings(config_path)
        app_env = environment(trees[0], config_path, plan.url, app_port)
        served = [
            _Served(
                server("warmline", app_spec, app_port, app_env, trees[0]),
                settings,
                APP_EXPECTS if cfg.app == "warmline" else FLOOR_EXPECTS,
            )
        ]
        baseline_plan: DatabasePlan | None = None
        if len(trees) > 1:
            tree = trees[1]
            baseline_config = write_bench_config(workdir, tree=tree.root, name="baseline-config")
            baseline_plan = plan_database(cfg, workdir, stem="baseline")
            baseline_env = environment(tree, baseline_config, baseline_plan.url, baseline_port)
            served.append(
                _Served(
                    server("baseline", APP_SPEC, baseline_port, baseline_env, tree),
                    tree_settings(tree, baseline_config, baseline_env),
                    APP_EXPECTS,
                )
            )
        # The floor and the reference apps boot while the databases are made (they touch none at start-up);
        # `warmline serve` migrates at start, so it starts once its database is seeded.
        floor_server.start()
        for app in served:
            if not app.server.through_cli:
                app.server.start()
        for app, database_plan in zip(served, [plan, baseline_plan], strict=False):
            assert database_plan is not None
            if app.server.tree == PROJECT_ROOT:
                app.database = stack.enter_context(fresh_database(database_plan, app.settings.departments))
            else:
                seed = functools.partial(seed_through_cli, trees[1], app.server.env, app.settings.departments, workdir)
                app.database = stack.enter_context(fresh_database(database_plan, app.settings.departments, seed=seed))
            if app.server.through_cli:
                app.server.start()
        servers = [floor_server, *(app.server for app in served)]
        for instance in servers:
            stack.callback(instance.stop)  # again, so that they are stopped before the databases are dropped
        for instance in servers:
            instance.wait_ready(cfg.startup_timeout)
        main_database = served[0].database
        assert main_database is not None

        def calls_for(count: int, base_url: str, database: Database) -> list[EmulatedCall]:
            return build_calls(
                count,
                base_url=base_url,
                auth_token=auth_token,
                account_sid=account_sid,
                known_numbers=database.known_numbers,
                rng=rng,
            )

        floor_calls = calls_for(min(FLOOR_POOL_CALLS, cfg.calls or FLOOR_POOL_CALLS), floor_server.url, main_database)
        console_cookies: tuple[str, ...] = ()
        console_stats: list[dict[str, Any]] = []
        if cfg.consoles:
            started = time.perf_counter()
            console_cookies = sign_in_consoles(
                database_url=main_database.url,
                config_path=config_path,
                instance_path=workdir / "console-instance",
                app_url=served[0].server.url,
                count=cfg.consoles,
                departments=settings.departments,
            ).cookies
            _log(f"  signed {cfg.consoles} consoles in, in {time.perf_counter() - started:.1f} s")
        open_loop_calls = (
            len(poisson_arrivals(cfg.rate, cfg.warmup + cfg.duration, seed=cfg.seed)) if cfg.rate is not None else 0
        )

        for number in range(1, cfg.rounds + 1):
            if cfg.rounds > 1:
                _log(f"round {number} of {cfg.rounds}")
            floor = _measure(
                floor_server,
                floor_calls,
                cfg=cfg,
                cycle=True,
                expects=FLOOR_EXPECTS,
                fallback_marker=None,
                database_marker=main_database.process_marker,
                round_number=number,
            )
            # Each app call needs a CallSid of its own: sign enough before the timing (the app should not outrun
            # its floor; if it does, it runs out of calls and the report says so).
            if cfg.rate is not None:
                wanted = open_loop_calls
            elif cfg.calls is not None:
                floor_rate = floor.calls_started / max(cfg.warmup + floor.window_s, 1e-3)
                wanted = cfg.calls + math.ceil(floor_rate * cfg.warmup * 1.2) + cfg.concurrency
            else:
                floor_rate = floor.calls_started / max(cfg.warmup + floor.window_s, 1e-3)
                wanted = math.ceil(floor_rate * (cfg.warmup + cfg.duration) * 1.2) + 2 * cfg.concurrency
            count = max(min(wanted, cfg.max_calls), cfg.concurrency)
            results: dict[str, TargetResult] = {}
            def measure_with_consoles(count: int, number: int, results: dict[str, TargetResult]) -> None:
                # The same app, the same load, with every console's stream open; before or after the measurement
                # without them, by turns.
                app = served[0]
                assert app.database is not None
                app_calls = calls_for(count, app.server.url, app.database)
                crowd = ConsoleCrowd(
                    f"http://127.0.0.1:{app.server.port + 1}/console/events", console_cookies, origin=app.server.url
                )
                crowd.open()
                _log(f"  {cfg.consoles} consoles following the live-events stream")
                try:
                    with_consoles = _measure(
                        app.server,
                        app_calls,
                        cfg=cfg,
                        cycle=False,
                        expects=app.expects,
                        fallback_marker=app.settings.fallback_apology,
                        database_marker=app.database.process_marker,
                        round_number=number,
                    )
                finally:
                    stats = consoles_summary(crowd.close())
                console_stats.append(stats)
                _log(f"  consoles: {stats}")
                results["consoles"] = replace(with_consoles, name="warmline+consoles")
                if stats["failures"]:
                    raise BenchError(f"console streams failed during the measurement: {stats}")

            # Consoles open before the app alone in even rounds, after it in odd ones (the database grows meanwhile).
            if cfg.consoles and number % 2 == 0:
                measure_with_consoles(count, number, results)
            # The apps take turns going first, so that neither always runs on the machine the other just warmed.
            order = served if number % 2 else served[::-1]
            for app in order:
                assert app.database is not None
                started = time.perf_counter()
                app_calls = calls_for(count, app.server.url, app.database)
                _log(f"  signed {count} calls for {app.server.name} in {time.perf_counter() - started:.1f} s")
                results[app.server.name] = _measure(
                    app.server,
                    app_calls,
                    cfg=cfg,
                    cycle=False,
                    expects=app.expects,
                    fallback_marker=app.settings.fallback_apology,
                    database_marker=app.database.process_marker,
                    round_number=number,
                )
            if cfg.consoles and number % 2 == 1:
                measure_with_consoles(count, number, results)
            rounds.append(_round(floor, results["warmline"], results.get("baseline"), results.get("consoles")))

        serving: dict[str, list[str]] = {}
        stopping: dict[str, list[str]] = {}
        for instance in servers:
            instance.request_stop()
        for instance in servers:
            instance.stop()
            _log(f"  {instance.name}: stopped in {instance.shutdown_seconds:.1f} s")
            during, after = instance.log_problems()
            if during:
                serving[instance.name] = during[:20]
            if after:
                stopping[instance.name] = after[:20]
        database_label = main_database.label

    median = sorted(rounds, key=lambda r: r.ratio)[(len(rounds) - 1) // 2]
    failures = sum(sum(target.failures for target in _targets(r)) for r in rounds)
    failures += sum(len(lines) for lines in serving.values())
    with_baseline = [r for r in rounds if r.baseline is not None]
    baseline_median = (
        sorted(with_baseline, key=lambda r: r.baseline_ratio)[(len(with_baseline) - 1) // 2]
        if (with_baseline)
        else None
    )
    return BenchResult(
        config=asdict(cfg),
        server=cfg.describe_server(),
        database=database_label,
        rounds=rounds,
        floor=median.floor,
        app=median.app,
        ratio=median.ratio,
        cpu_ratio=median.cpu_ratio,
        target=cfg.target,
        # Only Warmline against the bare floor, in the closed loop, is what the target judges.
        meets_target=cfg.rate is None and cfg.floor == "bare" and cfg.app == "warmline" and median.ratio >= cfg.target,
        server_log_problems=serving,
        shutdown_log_problems=stopping,
        failures=failures,
        baseline_label=trees[1].label if len(trees) > 1 else None,
        baseline=baseline_median.baseline if baseline_median else None,
        baseline_ratio=baseline_median.baseline_ratio if baseline_median else 0.0,
        app_to_baseline=_median(
            [
                r.app.requests_per_s / r.baseline.requests_per_s
                for r in with_baseline
                if r.baseline and r.baseline.requests_per_s
            ]
        ),
        open_loop=_open_loop_medians(rounds) if cfg.rate is not None else {},
        consoles_throughput_ratio=_median(
            [r.consoles.requests_per_s / r.app.requests_per_s for r in rounds if r.consoles and r.app.requests_per_s]
        ),
        consoles_p99_ratio=_median([r.consoles.p99_ms / r.app.p99_ms for r in rounds if r.consoles and r.app.p99_ms]),
        consoles_stats={"count": cfg.consoles, "rounds": console_stats} if cfg.consoles else {},
    )


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2] if ordered else 0.0


def _open_loop_medians(rounds: Sequence[Round]) -> dict[str, dict[str, float]]:
    """Per target, the median over rounds of each open-loop figure (each figure on its own: the round with the
    median p99 need not be the one with the median p99.9)."""
    targets: dict[str, list[TargetResult]] = {}
    for current in rounds:
        for target in (current.floor, current.app, current.baseline):
            if target is not None:
                targets.setdefault(target.name, []).append(target)
    return {
        name: {
            "p50_ms": _median([t.p50_ms for t in results]),
            "p99_ms": _median([t.p99_ms for t in results]),
            "p999_ms": _median([t.p999_ms for t in results]),
            "max_ms": _median([t.max_ms for t in results]),
            "late_sends": float(sum(t.late_sends for t in results)),
            "requests": float(sum(t.requests for t in results)),
        }
        for name, results in targets.items()
    }


def _round(
    floor: TargetResult, app: TargetResult, baseline: TargetResult | None = None, consoles: TargetResult | None = None
) -> Round:
    def ratio(target: TargetResult) -> float:
        return target.requests_per_s / floor.requests_per_s if floor.requests_per_s else 0.0

    app_cpu = app.server_cpu_ms_per_request
    return Round(
        floor,
        app,
        ratio(app),
        floor.server_cpu_ms_per_request / app_cpu if app_cpu else 0.0,
        baseline,
        ratio(baseline) if baseline is not None else 0.0,
        consoles,
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def serve_port(taken: Sequence[int] = ()) -> int:
    """A port for `warmline serve`, whose console live-events server binds the next port once the workers are up:
    by then the load generator's connections hold thousands of ephemeral ports, and one of them was that next port
    (measured: "address already in use", the consoles' streams refused). So both come from below Linux's ephemeral
    range, which outgoing connections never take."""
    lowest, _ = (int(bound) for bound in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(max(1024, lowest - 12_000), lowest - 1)
        if port not in taken and port + 1 not in taken and _port_free(port) and _port_free(port + 1):
            return port
    raise BenchError("no two free ports in a row below the ephemeral range")


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


# --- output ----------------------------------------------------------------------------------------------------------


def format_report(result: BenchResult) -> str:
    cfg = result.config
    open_loop = cfg.get("rate") is not None
    measured = f"{cfg['calls']} calls" if cfg["calls"] is not None else f"{cfg['duration']:g} s"
    with_baseline = result.baseline_label is not None
    alternating = "floor/app/baseline" if with_baseline else "floor/app"
    rounds = f", {len(result.rounds)} rounds alternating {alternating} (median shown)" if len(result.rounds) > 1 else ""
    steps_posted = cfg.get("steps", "both")
    app_name = str(cfg.get("app", "warmline"))
    app_label = {"checked": "reference app (form + signature)", "minimal": "reference app (+ lookup, 1 INSERT)"}.get(
        app_name, "warmline"
    )
    baseline_label = f"baseline {result.baseline_label}"
    posted = {
        "both": "signed POST /voice/incoming, then POST /voice/gather",
        "call": "signed POST /voice/incoming, /voice/gather, then the final POST /voice/status",
    }.get(str(steps_posted), "signed POST /voice/incoming only")
    if open_loop:
        load = f"open loop: {cfg['rate']:g} calls/s arriving (Poisson, seed {cfg['seed']})"
        client = "open-loop client (a connection per request; a sender and a reader thread)"
    else:
        load = f"{cfg['concurrency']} concurrent emulated calls"
        client = f"{cfg['client']} client"
    lines = [
        f"Warmline webhook benchmark, {load} ({posted}), {measured} after {cfg['warmup']:g} s warm-up{rounds}",
        f"server: {result.server}, keep-alive {'on' if cfg['keepalive'] else 'off'}; database: {result.database}; "
        f"load generator: {client}, 1 process; {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "",
    ]
    if open_loop:
        lines.append(
            f"{'':<38}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}{'late':>6}{'failures':>10}"
            f"{'CPU ms/req':>12}"
        )
    else:
        lines.append(f"{'':<38}{'req/s':>9}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failures':>10}{'CPU ms/req':>12}")

    def row(label: str, target: TargetResult) -> str:
        if open_loop:
            return (
                f"{label:<38}{target.requests_per_s:>9.1f}{target.p50_ms:>9.2f}{target.p99_ms:>9.2f}"
                f"{target.p999_ms:>10.2f}{target.max_ms:>9.1f}{target.late_sends:>6}{target.failures:>10}"
                f"{target.server_cpu_ms_per_request:>12.2f}"
            )
        return (
            f"{label:<38}{target.requests_per_s:>9.1f}{target.calls_per_s:>9.1f}{target.p50_ms:>9.1f}"
            f"{target.p99_ms:>9.1f}{target.failures:>10}{target.server_cpu_ms_per_request:>12.2f}"
        )

    def step_row(label: str, target: TargetResult, stats: StepStats) -> str:
        rate = stats.requests / target.window_s
        if open_loop:
            return f"{label:<38}{rate:>9.1f}{stats.p50_ms:>9.2f}{stats.p99_ms:>9.2f}{stats.p999_ms:>10.2f}"
        return f"{label:<38}{rate:>9.1f}{'':>9}{stats.p50_ms:>9.1f}{stats.p99_ms:>9.1f}"

    many = len(result.rounds) > 1
    floor_label = {"checked": "floor (form + signature)", "minimal": "floor (signature + lookup + 1 INSERT)"}.get(
        str(result.config.get("floor")), "floor (constant TwiML)"
    )
    for number, current in enumerate(result.rounds, start=1):
        suffix = f" #{number}" if many else ""
        lines.append(row(f"{floor_label}{suffix}", current.floor))
        apps = [(app_label, current.app)] + ([(baseline_label, current.baseline)] if current.baseline else [])
        if current.consoles is not None:
            apps.append((f"{app_label} + {cfg['consoles']} consoles", current.consoles))
        for label, target in apps:
            lines.append(row(f"{label}{suffix}", target))
            if steps_posted != "incoming":
                for step in STEPS:
                    if target.steps[step].requests:
                        lines.append(step_row(f"  {PATHS[step]}", target, target.steps[step]))
    floor, app = result.floor, result.app
    outcomes = ", ".join(f"{verb} {count}" for verb, count in sorted(app.gather_outcomes.items(), key=lambda i: -i[1]))
    lines += [""]
    if steps_posted != "incoming" and app_name == "warmline":
        lines.append(f"gather step answered: {outcomes or 'nothing'}")
    lines += [
        f"CPU busy: servers {floor.server_cpu_cores:.2f} / {app.server_cpu_cores:.2f} cores, load generator "
        f"{floor.client_cpu_cores:.2f} / {app.client_cpu_cores:.2f} cores (floor / {app_label})",
        f"server CPU per request: {app_label} {app.server_cpu_ms_per_request:.2f} ms = "
        f"{1 / result.cpu_ratio if result.cpu_ratio else 0:.1f}x the floor's {floor.server_cpu_ms_per_request:.2f} ms",
    ]
    if result.baseline is not None:
        lines.append(f"server CPU per request: {baseline_label} {result.baseline.server_cpu_ms_per_request:.2f} ms")
    if app.database_cpu_cores:
        lines.append(
            f"PostgreSQL backends: {app.database_cpu_cores:.2f} cores busy, "
            f"{app.database_cpu_ms_per_request:.2f} ms CPU per request (not in the CPU ms/req column)"
        )
    for current in result.rounds:
        for target in _targets(current):
            if target.pool_exhausted:
                lines.append(f"note: {target.name} used up its {target.calls_started} prepared calls; window shortened")
            if target.hit_time_bound:
                lines.append(f"note: {target.name} hit the {cfg['max_seconds']:g} s bound before {cfg['calls']} calls")
    for name, problems in result.shutdown_log_problems.items():
        lines += [f"note: {name} server logged while we stopped it: {line}" for line in problems]
    if open_loop:
        names = {"floor": floor_label, "warmline": app_label, "baseline": baseline_label}
        late = sum(int(figures["late_sends"]) for figures in result.open_loop.values())
        lines += [
            "",
            f"open loop at {cfg['rate']:g}/s, median of {len(result.rounds)} round(s):"
            f"{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}",
        ]
        for name, figures in result.open_loop.items():
            lines.append(
                f"  {names.get(name, name):<38}{figures['p50_ms']:>9.2f}{figures['p99_ms']:>9.2f}"
                f"{figures['p999_ms']:>10.2f}{figures['max_ms']:>9.1f}"
            )
        lines.append(
            f"late sends (more than {LATE_SEND_MS:g} ms after they were due): {late} of "
            f"{sum(int(f['requests']) for f in result.open_loop.values())} measured requests"
            + ("" if late == 0 else ": the load generator fell behind, and those requests arrived later than planned")
        )
    else:
        if many:
            lines.append("ratios by round: " + ", ".join(f"{current.ratio:.2f}" for current in result.rounds))
        if app_name != "warmline":  # a reference in the app's place: nothing here is judged
            lines += ["", f"ratio {app_label}/{floor_label} throughput = {result.ratio:.2f} (a reference, not judged)"]
        elif result.config.get("floor", "bare") == "bare":
            verdict = "meets the target" if result.meets_target else "BELOW TARGET"
            lines += ["", f"ratio app/floor throughput = {result.ratio:.2f} (target ≥ {result.target:.2f}): {verdict}"]
        else:  # a reference floor: the target is against the bare one, so no verdict here
            reference = f"ratio app/{floor_label} throughput = {result.ratio:.2f} (a reference, not the target's floor)"
            lines += ["", reference]
        if with_baseline:
            lines += [
                f"ratio {baseline_label}/floor throughput = {result.baseline_ratio:.2f}",
                f"ratio app/{baseline_label} throughput = {result.app_to_baseline:.2f} (same rounds, same load)",
            ]
    if result.consoles_stats:
        verdict = "within 10 %" if result.consoles_throughput_ratio >= 0.9 else "MORE THAN 10 % LOST"
        lines += [
            "",
            f"with {cfg['consoles']} consoles' live-events streams open against none (same rounds, same load): "
            f"throughput {result.consoles_throughput_ratio:.3f}x ({verdict}), p99 {result.consoles_p99_ratio:.2f}x",
        ]
        if many:
            lines.append(
                "by round (throughput with/without): "
                + ", ".join(
                    f"{r.consoles.requests_per_s / r.app.requests_per_s:.3f}"
                    for r in result.rounds
                    if r.consoles and r.app.requests_per_s
                )
            )
    if not result.ok:
        lines += ["", "!" * 100, f"!!! {result.failures} FAILURES: these figures are NOT valid", "!" * 100]
        for number, current in enumerate(result.rounds, start=1):
            for target in _targets(current):
                label = f"{target.name} #{number}" if many else target.name
                for reason, count in sorted(target.failure_reasons.items(), key=lambda i: -i[1]):
                    lines.append(f"  {label}: {count} x {reason}")
                lines += [f"    e.g. {example}" for example in target.failure_examples]
        for name, problems in result.server_log_problems.items():
            lines += [f"  {name} server log: {line}" for line in problems]
    return "\n".join(lines)


def explain_trace(directory: Path, result: BenchResult, *, threshold_ms: float = 5.0) -> str:
    """What overlapped each server's requests slower than ``threshold_ms`` (bench/tail_probe.py)."""
    names = ["floor", "warmline"] + (["baseline"] if result.baseline_label else [])
    lines = [
        f"Slow requests (> {threshold_ms:g} ms), all rounds, by what overlapped them most (traces in {directory}):"
    ]
    for name in names:
        slow, total = explain(directory, name, threshold_ms=threshold_ms)
        lines.append(format_explanation(name, slow, total, threshold_ms=threshold_ms))
    return "\n".join(lines)


def _targets(current: Round) -> list[TargetResult]:
    extra = [target for target in (current.baseline, current.consoles) if target is not None]
    return [current.floor, current.app, *extra]


# --- command line ----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchConfig, bool, bool]:
    parser = argparse.ArgumentParser(
        description="p50/p99 latency and throughput of /voice/incoming + /voice/gather against a bare Flask floor."
    )
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent emulated calls (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured after warm-up (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first (default 2)")
    parser.add_argument(
        "--calls",
        type=int,
        default=None,
        help="instead of --duration: the window closes when this many calls started after the warm-up are done",
    )
    parser.add_argument("--max-seconds", type=float, default=120.0, help="hard time bound per target with --calls")
    parser.add_argument("--max-calls", type=int, default=200_000, help="hard bound on calls prepared for the app")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, for both servers (default 2)")
    parser.add_argument(
        "--worker-class", choices=["gthread", "sync"], default="sync", help="default sync, as `warmline serve`"
    )
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (default 4)")
    parser.add_argument("--no-keepalive", action="store_true", help="a new connection per request")
    parser.add_argument(
        "--floor",
        choices=["bare", "checked", "minimal"],
        default="bare",
        help="bare: constant TwiML (the target's floor); checked: the same after reading the form and checking "
        "the signature, to see what accepting a request costs; minimal: checked plus the least CRM work of a call "
        "(a caller lookup, one INSERT)",
    )
    parser.add_argument(
        "--steps",
        choices=["both", "incoming", "call"],
        default=None,
        help="both: each call posts /voice/incoming then /voice/gather (the default in the closed loop); incoming: "
        "only /voice/incoming (the default with --rate); call: both, then the call's final status callback "
        "(completed: ends the interaction, writes the CRM outbox)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop: calls arrive at this rate per second (Poisson, seeded), each on a connection of its own, "
        "whatever the answers; reports p50/p99/p99.9/max and late sends instead of a throughput ratio",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REF",
        help="also serve this git ref's app (checked out in a temporary worktree, its own fresh database migrated "
        "and seeded by its own code) and measure it in the same rounds, alternating with the current tree",
    )
    parser.add_argument(
        "--trace",
        default=None,
        metavar="DIR",
        help="record every request (client and server side), GC pause, lock wait and background pass of the "
        "servers in DIR, and explain the slow requests (bench/tail_probe.py; sync workers)",
    )
    parser.add_argument(
        "--app",
        choices=["warmline", "checked", "minimal"],
        default="warmline",
        help="what takes the app's place: Warmline (default), or a reference floor (checked, minimal; see --floor) "
        "measured against the floor like the app, to show what the least a webhook must do reaches",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "aiohttp"],
        default="raw",
        help="load generator HTTP client: raw asyncio streams (default, cheapest) or aiohttp",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL server to bench on, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/warmline_bench: "
        "that database (or a random name) is created fresh and dropped afterwards. Default: SQLite in a temp dir",
    )
    parser.add_argument("--target", type=float, default=TARGET_RATIO, help="throughput ratio target (default 0.6)")
    parser.add_argument("--fail-under-target", action="store_true", help="exit 2 when the ratio misses the target")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout (report on stderr)")
    parser.add_argument("--seed", type=int, default=7, help="random seed for callers and phrases")
    parser.add_argument("--rounds", type=int, default=1, help="alternate floor/app runs this many times (median)")
    parser.add_argument("--log-dir", default=None, help="keep the servers' logs (floor.log, warmline.log) here")
    parser.add_argument(
        "--consoles",
        type=int,
        default=0,
        help="also measure the app with N signed-in rep consoles following the live-events stream (same rounds)",
    )
    args = parser.parse_args(argv)
    if min(args.concurrency, args.rounds, args.workers, args.threads, args.calls or 1) < 1:
        parser.error("--concurrency, --rounds, --workers, --threads and --calls must be ≥ 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup ≥ 0")
    if args.rate is not None and (args.rate <= 0 or args.calls is not None):
        parser.error("--rate must be > 0, and measures --duration seconds (not --calls)")
    if args.trace is not None and (args.rate is None or args.worker_class != "sync"):
        parser.error("--trace needs --rate (the open loop) and sync workers")
    cfg = BenchConfig(
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        calls=args.calls,
        max_seconds=args.max_seconds,
        max_calls=args.max_calls,
        workers=args.workers,
        worker_class=args.worker_class,
        threads=args.threads,
        keepalive=not args.no_keepalive,
        floor=args.floor,
        steps=args.steps or ("incoming" if args.rate is not None else "both"),
        app=args.app,
        rate=args.rate,
        baseline=args.baseline,
        trace_dir=args.trace,
        client=args.client,
        database_url=args.database_url,
        target=args.target,
        seed=args.seed,
        rounds=args.rounds,
        log_dir=args.log_dir,
        consoles=args.consoles,
    )
    return cfg, args.json, args.fail_under_target


_terminated: list[int] = []


def _interrupt_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM is handled like Ctrl-C (asyncio cancels the load cleanly, the ExitStack stops the servers and drops
    the database), then exits with 128 + SIGTERM."""
    _terminated.append(signum)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background by a shell: SIGINT is ignored
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, as_json, fail_under_target = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        result = run_benchmark(cfg)
    except BenchError as exc:
        _log(f"benchmark error: {exc}")
        return 3
    except KeyboardInterrupt:
        _log("interrupted; servers stopped")
        return 128 + (_terminated[0] if _terminated else signal.SIGINT)
    report = format_report(result)
    if as_json:
        _log(report)
        print(json.dumps(result.to_json(), indent=2), flush=True)
    else:
        print(report, flush=True)
    if cfg.trace_dir is not None:
        explanation = explain_trace(Path(cfg.trace_dir), result)
        if as_json:
            _log(explanation)
        else:
            print(explanation)
    if not result.ok:
        return 1
    if fail_under_target and not result.meets_target:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
