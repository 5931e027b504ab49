"""Where a webhook's time goes: the benchmark's emulated calls, in process, one at a time, under cProfile.

No gunicorn, no sockets, no concurrency: each request's WSGI environ is built first, then handed straight to
``create_app()`` (the same settings as bench/webhook.py: fresh seeded database, log level WARNING, signed
requests), so what is timed is the app's own work per request. The floor app gets the same requests first, as the
baseline.

    .venv/bin/python bench/profile_webhook.py                  # 300 calls, SQLite, top 25 by own time
    .venv/bin/python bench/profile_webhook.py --calls 1000 --sort cumulative --top 40
    .venv/bin/python bench/profile_webhook.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/
    .venv/bin/python bench/profile_webhook.py --output /tmp/warmline.prof   # for snakeviz & co.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import pstats
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from werkzeug.test import EnvironBuilder  # noqa: E402

from bench import floor_app  # noqa: E402 (needs the path above when run as a script)
from bench.webhook import (  # noqa: E402
    APP_EXPECTS,
    FLOOR_EXPECTS,
    BenchConfig,
    EmulatedCall,
    Step,
    build_calls,
    check_twiml,
    fresh_database,
    load_bench_settings,
    plan_database,
    write_bench_config,
)

#: The steps replayed: each call's incoming and gather (what ``EmulatedCall.requests`` posts), not its status callback.
PROFILED_STEPS: tuple[Step, ...] = ("incoming", "gather")

PUBLIC_URL = "http://127.0.0.1:8999"  # what the calls are signed for; the app is told this is its public URL


def environs(calls: Sequence[EmulatedCall]) -> list[tuple[Step, dict[str, Any]]]:
    """Each request's WSGI environ, built before any timing (as gunicorn builds it before it calls the app)."""
    built = []
    for call in calls:
        for request in call.requests():
            builder = EnvironBuilder(
                path=request.path,
                base_url=PUBLIC_URL,
                method="POST",
                data=request.body,
                headers=list(request.headers.items()),
            )
            try:
                built.append((request.step, builder.get_environ()))
            finally:
                builder.close()
    return built


def _start_response(statuses: list[str], status: str, _headers: Any, _exc_info: Any = None) -> Any:
    statuses.append(status)


def replay(
    app: WSGIApplication,
    requests: Sequence[tuple[Step, dict[str, Any]]],
    *,
    expects: dict[Step, tuple[str, ...]],
    marker: str | None,
) -> dict[str, float]:
    """Call the WSGI app with every request; fail loudly on any wrong answer. Returns CPU seconds per step.

    Straight into the app, not through Flask's test client: the client builds each request and reads each answer
    at a cost (~0.25 ms) larger than the whole bare floor's (~0.09 ms), which hid how much of a webhook is the
    app's own work."""
    spent: dict[str, float] = dict.fromkeys(PROFILED_STEPS, 0.0)
    for step, environ in requests:
        statuses: list[str] = []
        started = time.process_time()
        chunks = app(environ, functools.partial(_start_response, statuses))
        try:
            data = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        spent[step] += time.process_time() - started
        failure, _ = check_twiml(int(statuses[0][:3]), data, expects=expects[step], fallback_marker=marker)
        if failure is not None:
            raise SystemExit(f"{environ['PATH_INFO']}: {failure}\n{data[:300]!r}")
    return spent


def own_time_by_package(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Profiled own time summed per top-level package (sqlalchemy, werkzeug, voice, ...), largest first."""
    totals: dict[str, float] = {}
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, own, *_rest) in raw.items():
        if "site-packages/" in filename:
            package = filename.split("site-packages/")[1].split("/")[0]
        elif filename.startswith(str(PROJECT_ROOT)):
            package = Path(filename).relative_to(PROJECT_ROOT).parts[0]
        elif filename == "~":  # C functions: "<method 'execute' of 'sqlite3.Cursor' objects>"
            owner = function.split(" of '")[1].split("'")[0] if " of '" in function else ""
            package = owner.split(".")[0] if "." in owner else "builtins"
        else:
            package = "stdlib"
        package = package.removesuffix(".py")
        totals[package] = totals.get(package, 0.0) + own
    return sorted(totals.items(), key=lambda item: -item[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=300, help="calls profiled (after 50 unprofiled warm-up calls)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL server (a fresh database is made)")
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"], help="profile order")
    parser.add_argument("--top", type=int, default=25, help="profile rows shown")
    parser.add_argument("--output", default=None, help="also write the raw profile (pstats) here")
    args = parser.parse_args(argv)

    from voice import create_app

    cfg = BenchConfig(database_url=args.database_url)
    rng = random.Random(11)
    token, sid = secrets.token_hex(16), "AC" + secrets.token_hex(16)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="warmline-profile-")))
        settings = load_bench_settings(write_bench_config(workdir))
        database = stack.enter_context(fresh_database(plan_database(cfg, workdir), settings.departments))
        app = create_app(
            {
                "config_path": settings.config_path,
                "database_url": database.url,
                "auth_token": token,
                "account_sid": sid,
                "public_url": PUBLIC_URL,
                "twilio_api_url": "http://127.0.0.1:9",
                "instance_path": workdir / "instance",
            }
        )
        warmline = app.extensions["warmline"]
        close = getattr(warmline, "close", None)  # stops background threads (flow watcher, REST runner) too
        if callable(close):
            stack.callback(close)
        else:
            stack.callback(warmline.store.dispose)
            stack.callback(warmline.runner.shutdown)

        def calls(count: int) -> list[tuple[Step, dict[str, Any]]]:
            numbers = database.known_numbers
            return environs(
                build_calls(
                    count, base_url=PUBLIC_URL, auth_token=token, account_sid=sid, known_numbers=numbers, rng=rng
                )
            )

        floor = floor_app.create_app()
        replay(floor, calls(50), expects=FLOOR_EXPECTS, marker=None)
        floor_cpu = replay(floor, calls(args.calls), expects=FLOOR_EXPECTS, marker=None)
        marker = settings.fallback_apology
        replay(app, calls(50), expects=APP_EXPECTS, marker=marker)
        app_cpu = replay(app, calls(args.calls), expects=APP_EXPECTS, marker=marker)
        profiled = calls(args.calls)
        profiler = cProfile.Profile()
        profiler.enable()
        replay(app, profiled, expects=APP_EXPECTS, marker=marker)
        profiler.disable()

    print(f"database: {database.label}; {args.calls} calls, one at a time, straight into the WSGI app (no HTTP)")
    print(f"{'CPU ms per request':<24}{'incoming':>10}{'gather':>10}")
    for name, spent in (("floor", floor_cpu), ("warmline", app_cpu)):
        print(f"{name:<24}" + "".join(f"{spent[step] * 1000 / args.calls:>10.2f}" for step in PROFILED_STEPS))
    print(f"(measured without the profiler; the profile below is of another {args.calls} calls)\n")
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    shares = own_time_by_package(stats)
    total = sum(own for _, own in shares) or 1.0
    print("own time by package (profiled): " + ", ".join(f"{name} {100 * t / total:.0f}%" for name, t in shares[:12]))
    if args.top:
        stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
    if args.output:
        profiler.dump_stats(args.output)
        print(f"raw profile written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
