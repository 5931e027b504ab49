"""What the slow requests of an open-loop run waited for: a probe inside the servers, and the explanation.

``bench/webhook.py --rate N --trace DIR`` has every process of its servers run :func:`install` at start-up
(bench/trace_site/sitecustomize.py): gunicorn's master, its workers, and any process they fork or start. Each appends
JSON lines to ``DIR/events-<server>-<pid>.jsonl``:

* ``request``: gunicorn's sync worker handling one connection: ``accepted`` (the worker took the connection),
  ``start``/``end`` of ``handle_request`` (parsing done, the app called, the answer written), ``closed`` (after the
  lingering close), the request's ``I-Twilio-Idempotency-Token``, which the client's own record carries too, and
  ``cpu_wait_ms``: how long the worker, runnable, waited for a CPU meanwhile (the kernel's schedstat run delay: what
  other processes on the machine cost it);
* ``gc``: a garbage collection (``gc.callbacks``): generation, start, end;
* ``flock``: a writer taking SQLite's writers' ``flock`` (``crm_sync.sqlite``): when it asked, got and gave it up;
* ``sweep``, ``checkpoint``, ``reload``: the housekeeping pass, SQLite WAL checkpoint and flow-folder poll, by the
  names the served tree gives them (:data:`BACKGROUND_PASSES` lists the candidates of each version), with the
  thread that ran them.

All times are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux), the load generator's clock too, so the client's
record of a request (scheduled, sent, answered) and the servers' records line up. :func:`explain` then sorts the
requests slower than a threshold by what overlapped them: it is a tool for finding causes, not a measurement (the
probe costs a few microseconds per record).

Only the stdlib is imported at install time: the probe goes into the floor and into any version of Warmline alike.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import gc
import heapq
import json
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRACE_DIR_VARIABLE = "WARMLINE_BENCH_TRACE_DIR"
TRACE_NAME_VARIABLE = "WARMLINE_BENCH_TRACE_NAME"
TOKEN_HEADER = "I-TWILIO-IDEMPOTENCY-TOKEN"

#: (kind, module, qualified name) of the background work worth timing, in every layout Warmline has had.
BACKGROUND_PASSES: tuple[tuple[str, str, str], ...] = (
    ("sweep", "voice.services.housekeeping", "Housekeeper.sweep"),
    ("sweep", "voice.presence", "Housekeeper.sweep"),
    ("checkpoint", "crm_sync.db", "Store.checkpoint"),
    ("reload", "voice.adapters.flow_library", "FlowLibrary.refresh"),
    ("reload", "voice.flow_library", "FlowLibrary.refresh"),
)


# --- the probe (runs inside the servers) ------------------------------------------------------------------------------


class _Recorder:
    """Buffers records and appends them to this process's file (a forked child starts a file of its own)."""

    def __init__(self, directory: Path, server: str) -> None:
        self.directory = directory
        self.server = server
        self.lines: list[str] = []
        self.pid = os.getpid()

    def add(self, kind: str, **values: Any) -> None:
        pid = os.getpid()
        if pid != self.pid:  # forked: what is buffered belongs to the parent
            self.pid, self.lines = pid, []
        self.lines.append(json.dumps({"kind": kind, "pid": pid, "thread": threading.current_thread().name, **values}))

    def flush(self) -> None:
        if self.lines and os.getpid() == self.pid:
            path = self.directory / f"events-{self.server}-{self.pid}.jsonl"
            with path.open("a", encoding="utf-8") as out:
                out.write("\n".join(self.lines) + "\n")
            self.lines = []

    def flush_if_full(self) -> None:
        if len(self.lines) >= 2000:
            self.flush()


_recorder: _Recorder | None = None


def install() -> None:
    """Start recording in this process and in everything it forks (no-op without the trace folder variable)."""
    global _recorder
    directory = os.environ.get(TRACE_DIR_VARIABLE)
    if not directory or _recorder is not None:
        return
    recorder = _recorder = _Recorder(Path(directory), os.environ.get(TRACE_NAME_VARIABLE, "server"))
    atexit.register(recorder.flush)
    _time_garbage_collections(recorder)
    _time_writer_locks(recorder)
    _time_gunicorn(recorder)
    _time_background_passes_once_threads_start(recorder)


def _time_background_passes_once_threads_start(recorder: _Recorder) -> None:
    """Background passes run on threads the app starts once its modules are loaded: wrapping them then also covers
    processes that are neither gunicorn's master nor a worker (a housekeeping process)."""
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        _time_background_passes(recorder)
        real_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]


def _time_garbage_collections(recorder: _Recorder) -> None:
    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started["at"] = time.perf_counter()
        else:
            recorder.add(
                "gc",
                generation=info["generation"],
                start=started.get("at", 0.0),
                end=time.perf_counter(),
                collected=info["collected"],
            )

    gc.callbacks.append(on_gc)


def _time_writer_locks(recorder: _Recorder) -> None:
    """``fcntl.flock`` is SQLite's writers' queue in Warmline (crm_sync/sqlite.py looks it up on each call)."""
    real_flock = fcntl.flock
    held: dict[int, tuple[float, float]] = {}  # descriptor -> (asked, got)

    def flock(fd: Any, operation: int) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        if operation & fcntl.LOCK_EX:
            asked = time.perf_counter()
            real_flock(fd, operation)
            held[number] = (asked, time.perf_counter())
            return
        real_flock(fd, operation)
        if operation & fcntl.LOCK_UN and number in held:
            asked, got = held.pop(number)
            recorder.add("flock", asked=asked, start=got, end=time.perf_counter())

    fcntl.flock = flock


def _time_background_passes(recorder: _Recorder) -> None:
    """Wrap the background passes of whichever layout is loaded (idempotent): only modules already imported, so the
    probe never loads anything the server would not have."""
    for kind, module_name, qualified in BACKGROUND_PASSES:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        owner_name, method_name = qualified.split(".")
        owner = getattr(module, owner_name, None)
        method = getattr(owner, method_name, None) if owner is not None else None
        if method is None or getattr(method, "_tail_probe", False):
            continue
        setattr(owner, method_name, _timed(recorder, kind, method))


def _timed(recorder: _Recorder, kind: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            recorder.add(kind, start=start, end=time.perf_counter())

    timed._tail_probe = True  # type: ignore[attr-defined]
    return timed


def _run_delay_ms() -> float:
    """How long this thread has waited for a CPU while runnable, so far (the kernel's schedstat run delay): what
    other processes' CPU use cost it. 0.0 where the kernel does not keep it."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def _time_gunicorn(recorder: _Recorder) -> None:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker
    from gunicorn.workers.sync import SyncWorker

    real_run, real_load_wsgi = Arbiter.run, Worker.load_wsgi
    real_handle, real_handle_request = SyncWorker.handle, SyncWorker.handle_request
    current: dict[str, Any] = {}

    def run(self: Any) -> Any:  # the master, before it forks anything: its children inherit the wrappers
        _time_background_passes(recorder)
        return real_run(self)

    def load_wsgi(self: Any) -> Any:  # a worker, once the app is loaded (when it was not loaded in the master)
        loaded = real_load_wsgi(self)
        _time_background_passes(recorder)
        return loaded

    def handle(self: Any, listener: Any, client: Any, address: Any) -> Any:
        current.clear()
        current["accepted"] = time.perf_counter()
        waited = _run_delay_ms()
        try:
            return real_handle(self, listener, client, address)
        finally:
            closed = time.perf_counter()
            recorder.add("request", closed=closed, cpu_wait_ms=_run_delay_ms() - waited, **current)
            recorder.flush_if_full()

    def handle_request(self: Any, listener: Any, request: Any, client: Any, address: Any) -> Any:
        current["token"] = next((value for name, value in request.headers if name == TOKEN_HEADER), None)
        current["start"] = time.perf_counter()
        try:
            return real_handle_request(self, listener, request, client, address)
        finally:
            current["end"] = time.perf_counter()

    Arbiter.run = run
    Worker.load_wsgi = load_wsgi
    SyncWorker.handle = handle
    SyncWorker.handle_request = handle_request


# --- the explanation (runs in the bench, after the load) -------------------------------------------------------------


@dataclass
class _Span:
    kind: str
    pid: int
    thread: str
    start: float
    end: float
    detail: dict[str, Any] = field(default_factory=dict)

    def overlap(self, start: float, end: float) -> float:
        return max(0.0, min(self.end, end) - max(self.start, start))

    def overlap_ms(self, start: float, end: float) -> float:
        """How much of this span's stall fell between start and end: a CPU wait is spread evenly over its request."""
        seconds = self.overlap(start, end)
        if self.kind == "cpu wait":
            return float(self.detail["ms"]) * seconds / (self.end - self.start) if self.end > self.start else 0.0
        return seconds * 1000.0


class _SpanIndex:
    """Spans by time, so that the few overlapping a moment are found without walking them all."""

    BUCKET_S = 0.01

    def __init__(self, spans: Iterable[_Span]) -> None:
        self._buckets: defaultdict[int, list[_Span]] = defaultdict(list)
        for span in spans:
            for bucket in range(self._bucket(span.start), self._bucket(span.end) + 1):
                self._buckets[bucket].append(span)

    def _bucket(self, moment: float) -> int:
        return int(moment // self.BUCKET_S)

    def between(self, start: float, end: float) -> list[_Span]:
        found: dict[int, _Span] = {}
        for bucket in range(self._bucket(start), self._bucket(end) + 1):
            for span in self._buckets.get(bucket, ()):
                if span.start < end and span.end > start:
                    found[id(span)] = span
        return list(found.values())


@dataclass
class SlowRequest:
    token: str
    latency_ms: float
    wait_ms: float  # from the client's connect to a worker taking the connection
    service_ms: float  # the worker's handle_request
    cause: str
    overlaps_ms: dict[str, float]


#: Causes in the order they are preferred when two explain a request equally well.
CAUSES = (
    "CPU wait (same worker)",
    "gc (same worker)",
    "sweep pass (same worker)",
    "checkpoint (same worker)",
    "reload poll (same worker)",
    "writers' lock wait",
    "gc (other worker, while queued)",
    "sweep pass (other worker, while queued)",
    "CPU wait (other worker, while queued)",
    "checkpoint (other process)",
    "housekeeping process pass",
)


def _load_spans(directory: Path, server: str) -> tuple[list[_Span], dict[str, list[dict[str, Any]]]]:
    spans: list[_Span] = []
    requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(directory.glob(f"events-{server}-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            kind = record.pop("kind")
            if kind == "request":
                if record.get("token") and "start" in record:
                    requests[record["token"]].append(record)
                if record.get("cpu_wait_ms", 0.0) > 0.0:
                    cpu_wait = {"ms": record["cpu_wait_ms"]}
                    spans.append(
                        _Span("cpu wait", record["pid"], "MainThread", record["accepted"], record["closed"], cpu_wait)
                    )
            elif kind == "flock":
                spans.append(_Span(kind, record["pid"], record["thread"], record["asked"], record["start"]))
            else:
                spans.append(
                    _Span(kind, record.pop("pid"), record.pop("thread"), record.pop("start"), record.pop("end"), record)
                )
    return spans, requests


def explain(
    directory: Path, server: str, *, threshold_ms: float = 5.0, workers: int = 2
) -> tuple[list[SlowRequest], int]:
    """The client's requests to ``server`` slower than ``threshold_ms``, each with its main cause (and every
    overlap, in ms); also how many requests the client records hold.

    A request that arrived while at least ``workers`` earlier ones were still waiting for a worker found the server
    behind: its cause is the backlog (whatever started it), since no single stall overlapping it explains its wait.
    Otherwise its cause is the stall that overlapped it most: in the worker that served it, while it did; in any
    process, while it waited for a worker.
    """
    spans, served = _load_spans(directory, server)
    index = _SpanIndex(spans)
    worker_pids = {record["pid"] for records in served.values() for record in records}
    matched: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for path in sorted(directory.glob(f"client-{server}-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            client = json.loads(line)
            if client["error"] is None:
                matched.append((client, _matching(served.get(client["token"], ()), client["sent"], client["ended"])))
    matched.sort(key=lambda pair: pair[0]["sent"])
    waiting: list[tuple[float, float]] = []  # heap of (taken by a worker, sent) of the requests still waiting
    backlog_since: float | None = None
    slow: list[SlowRequest] = []
    for client, record in matched:
        while waiting and waiting[0][0] <= client["sent"]:
            heapq.heappop(waiting)
        if len(waiting) < workers:
            backlog_since = None
        elif backlog_since is None:
            backlog_since = min(sent for _, sent in waiting)
        if record is not None:
            heapq.heappush(waiting, (record["accepted"], client["sent"]))
        latency_ms = (client["ended"] - client["sent"]) * 1000.0
        if latency_ms <= threshold_ms:
            continue
        if record is None:
            slow.append(SlowRequest(client["token"], latency_ms, 0.0, 0.0, "no server record", {}))
            continue
        found = _attribute(client, record, index, worker_pids, latency_ms)
        if backlog_since is not None:
            found.cause = _backlog_cause(backlog_since, client["sent"], record["accepted"], index, worker_pids)
        slow.append(found)
    return slow, len(matched)


#: The share of a backlog's duration a stall must overlap to be named its cause.
BACKLOG_SHARE = 0.2
#: A backlog older than this is the server not keeping up with the arrivals, not a stall it recovers from.
SATURATED_AFTER_S = 1.0
STALL_NAMES = {
    "gc": "gc",
    "sweep": "sweep pass",
    "checkpoint": "checkpoint",
    "reload": "reload poll",
    "cpu wait": "CPU wait",
}


def _backlog_cause(since: float, sent: float, accepted: float, index: _SpanIndex, worker_pids: set[int]) -> str:
    """Why a request found the server behind: the stall that overlapped the backlog most, from its start to when
    this request was taken (a stall can hold up every request that arrives until the backlog is worked off)."""
    if sent - since > SATURATED_AFTER_S:
        return f"server saturated (behind for over {SATURATED_AFTER_S:g} s)"
    overlaps: defaultdict[str, float] = defaultdict(float)
    for span in index.between(since, accepted):
        if span.kind == "cpu wait":
            overlaps["CPU wait"] += span.overlap_ms(since, accepted)
        elif span.kind in STALL_NAMES:
            where = "a worker" if span.pid in worker_pids else "another process"
            overlaps[f"{STALL_NAMES[span.kind]} in {where}"] += span.overlap_ms(since, accepted)
    stall, overlap_ms = max(overlaps.items(), key=lambda item: item[1], default=("", 0.0))
    # A stall explains a backlog when it took a fair part of the time the backlog lasted (many small CPU waits of
    # requests add up over a long window without holding anything up).
    if overlap_ms < max(1.0, BACKLOG_SHARE * (accepted - since) * 1000.0):
        return "backlog, no stall in it (a burst of arrivals)"
    return f"backlog behind a {stall}"


def _matching(records: Iterable[dict[str, Any]], sent: float, ended: float) -> dict[str, Any] | None:
    """The server's record of this request (the floor's requests repeat tokens: the one inside the client's span)."""
    return next((r for r in records if sent - 0.001 <= r["accepted"] <= ended), None)


def _attribute(
    client: dict[str, Any],
    record: dict[str, Any],
    index: _SpanIndex,
    worker_pids: set[int],
    latency_ms: float,
) -> SlowRequest:
    sent, accepted, start, end = client["sent"], record["accepted"], record["start"], record["end"]
    worker = record["pid"]
    overlaps: defaultdict[str, float] = defaultdict(float)
    for span in index.between(sent, end):
        if span.pid == worker:  # the worker that served it, while it did
            during = span.overlap_ms(start, end)
            if span.kind == "flock" and span.thread == "MainThread":
                overlaps["writers' lock wait"] += during
            elif span.kind in STALL_NAMES:
                overlaps[f"{STALL_NAMES[span.kind]} (same worker)"] += during
        elif span.kind == "checkpoint":  # everything else, while the request waited for a worker or was served
            overlaps["checkpoint (other process)"] += span.overlap_ms(sent, end)
        elif span.pid not in worker_pids and span.kind == "sweep":
            overlaps["housekeeping process pass"] += span.overlap_ms(sent, end)
        elif span.kind in ("gc", "sweep", "cpu wait"):
            overlaps[f"{STALL_NAMES[span.kind]} (other worker, while queued)"] += span.overlap_ms(sent, accepted)
    significant = {cause: ms for cause, ms in overlaps.items() if ms >= 0.5}
    cause = max(CAUSES, key=lambda c: (significant.get(c, 0.0), -CAUSES.index(c))) if significant else None
    wait_ms = (accepted - sent) * 1000.0
    service_ms = (end - start) * 1000.0
    if cause is None:
        cause = (
            "queued (both workers busy with requests)" if wait_ms > service_ms else "slow service, nothing overlapped"
        )
    return SlowRequest(client["token"], latency_ms, wait_ms, service_ms, cause, dict(significant))


def format_explanation(server: str, slow: Sequence[SlowRequest], total: int, *, threshold_ms: float) -> str:
    if not slow:
        return f"{server}: no request slower than {threshold_ms:g} ms of {total}"
    lines = [
        f"{server}: {len(slow)} of {total} requests slower than {threshold_ms:g} ms "
        f"(median wait for a worker {_median([s.wait_ms for s in slow]):.1f} ms, "
        f"median service {_median([s.service_ms for s in slow]):.1f} ms); main cause (largest overlap):"
    ]
    for cause, count in Counter(s.cause for s in slow).most_common():
        lines.append(f"  {cause:<45}{count:>6}  {100.0 * count / len(slow):5.1f} %")
    lines.append(
        "  (CPU wait: the worker was runnable while others ran: the load generator, the other worker, other programs)"
    )
    touched = Counter(cause for s in slow for cause in s.overlaps_ms)
    lines.append(
        "  overlapped at all (≥ 0.5 ms; a request can have several): "
        + ", ".join(f"{cause} {100.0 * count / len(slow):.0f} %" for cause, count in touched.most_common())
    )
    return "\n".join(lines)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Explain the slow requests of a bench/webhook.py --trace run.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--threshold-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    servers = sorted({path.name.split("-")[1] for path in args.directory.glob("client-*.jsonl")})
    for server in servers:
        slow, total = explain(args.directory, server, threshold_ms=args.threshold_ms)
        print(format_explanation(server, slow, total, threshold_ms=args.threshold_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
