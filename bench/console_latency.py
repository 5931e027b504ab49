"""Live-update latency of the rep console, event to screen, in a real Chromium: the live-events stream against
polling, same server, same run.

``warmline serve`` (gunicorn and its live-events process, as deployed) serves a fresh database; a supervisor's
floor page (Debian's chromium, Playwright) watches its reps' rows. This process commits one presence change at a
time through the app's own service (``PresenceService.set_presence_of``: the unit of work has committed when it
returns, and that instant is the event), spaced by a seeded random 100-400 ms so that changes do not fall in step
with the poll; the page records, with a MutationObserver, when each rep's row first shows the new state. Latency =
shown - committed (one machine, one clock).

Modes, taking turns by round: ``stream`` (the page's EventSource on the live-events server) and ``polling`` (the
same page with ``/console/events`` refused by the browser: the page falls back to polling ``/console/state`` every
2 s, as it does when the stream is down). ``--consoles N`` keeps N other signed-in consoles following the stream
meanwhile (bench/consoles.py).

    .venv/bin/python bench/console_latency.py                       # SQLite, 2 rounds of 40 changes per mode
    .venv/bin/python bench/console_latency.py --consoles 100 --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(PROJECT_ROOT))

from bench.consoles import ConsoleCrowd, sign_in_consoles, summary  # noqa: E402
from bench.webhook import serve_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SUPERVISOR = "Erin Walsh"  # the demo supervisor (crm_sync/demo/reps.csv)
#: Records when each rep's row on the floor first shows a new presence (epoch milliseconds).
OBSERVE_ROWS = """() => {
    window.seen = [];
    const rows = document.querySelector("#floor-reps");
    new MutationObserver((records) => {
        const now = Date.now();
        for (const record of records) {
            const row = record.target;
            if (record.attributeName === "data-state" && row.dataset.state !== record.oldValue) {
                window.seen.push({rep: Number(row.dataset.repId), state: row.dataset.state, at: now});
            }
        }
    }).observe(rows, {subtree: true, attributes: true, attributeFilter: ["data-state"], attributeOldValue: true});
}"""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


@contextmanager
def database(url: str | None, workdir: Path) -> Iterator[str]:
    if url is None:
        yield f"sqlite:///{workdir / 'latency.sqlite3'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"latency_bench_{secrets.token_hex(4)}"
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def warmline(env: dict[str, str], *args: str, **options: Any) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from voice.cli import main; main()", *args]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, **options)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from crm_sync.models import RepState
    from crm_sync.queries.reps import find_rep, upsert_rep
    from voice import create_app

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="warmline-latency-") as tmp, database(args.database_url, Path(tmp)) as url:
        workdir = Path(tmp)
        port = serve_port()
        app_url = f"http://127.0.0.1:{port}"
        env = {key: value for key, value in os.environ.items() if not key.startswith(("WARMLINE_", "TWILIO_"))}
        env.update(
            WARMLINE_DATABASE_URL=url,
            WARMLINE_CONFIG=str(PROJECT_ROOT / "config.yaml"),
            WARMLINE_SECRET_KEY=secrets.token_hex(32),
            TWILIO_AUTH_TOKEN=secrets.token_hex(16),
            TWILIO_API_URL="http://127.0.0.1:9",
        )
        for step in (
            ("db", "upgrade"),
            ("crm", "import", "customers", "crm_sync/demo/customers.csv"),
            ("reps", "import", "crm_sync/demo/reps.csv", "--status", "available"),
        ):
            if warmline(env, *step, stdout=subprocess.DEVNULL).wait() != 0:
                raise SystemExit(f"warmline {' '.join(step)} failed")
        log = (workdir / "serve.log").open("wb")
        server = warmline(
            env, "serve", "--port", str(port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # This process's own view of the app: the services that make the changes and issue sign-in links.
        app = create_app(
            {"database_url": url, "instance_path": workdir / "instance", "secret_key": env["WARMLINE_SECRET_KEY"],
             "log_level": "WARNING"},
            background=False,
        )  # fmt: skip
        parts = app.extensions["warmline"]
        crowd: ConsoleCrowd | None = None
        try:
            _wait_for(f"{app_url}/healthz", server)
            _wait_for(f"http://127.0.0.1:{port + 1}/console/events", server, status=401)
            with parts.store.unit_of_work() as session:
                ids = []
                for index in range(args.changes):
                    rep, _ = upsert_rep(
                        session,
                        name=f"Latency Rep {index:03d}",
                        phone_e164=f"+1555070{index:04d}",
                        departments=["general"],
                        languages=["en-US"],
                    )
                    rep.choose_presence(RepState.AWAY, now=parts.clock(), reason="training")
                    session.flush()
                    ids.append(rep.id)
                find_rep(session, SUPERVISOR).role = "supervisor"
            if args.consoles:
                cookies = sign_in_consoles(
                    database_url=url,
                    config_path=PROJECT_ROOT / "config.yaml",
                    instance_path=workdir / "instance",
                    app_url=app_url,
                    count=args.consoles,
                    departments=["general"],
                ).cookies
                crowd = ConsoleCrowd(f"http://127.0.0.1:{port + 1}/console/events", cookies, origin=app_url)
                crowd.open()
                _log(f"{args.consoles} consoles following the stream")
            results: dict[str, list[float]] = {"stream": [], "polling": []}
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                current = RepState.AWAY  # as the reps were made; each measurement turns them all over
                for number in range(args.rounds):
                    modes = ("stream", "polling") if number % 2 == 0 else ("polling", "stream")
                    for mode in modes:
                        target = RepState.AVAILABLE if current is RepState.AWAY else RepState.AWAY
                        latencies = _measure(browser, parts, app_url, ids, mode, target, rng, args.spacing)
                        current = target
                        _log(
                            f"round {number + 1} {mode}: p50 {statistics.median(latencies):.0f} ms, "
                            f"p99 {percentile(latencies, 0.99):.0f} ms"
                        )
                        results[mode] += latencies
                browser.close()
        finally:
            consoles = summary(crowd.close()) if crowd is not None else None
            parts.close()
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
            log.close()
    figures = {
        mode: {
            "changes": len(values),
            "p50_ms": round(statistics.median(values)),
            "p99_ms": round(percentile(values, 0.99)),
            "max_ms": round(max(values)),
        }
        for mode, values in results.items()
    }
    return {
        "database": "PostgreSQL" if args.database_url else "SQLite",
        "consoles": args.consoles,
        "consoles_stats": consoles,
        "rounds": args.rounds,
        **figures,
    }


def _wait_for(url: str, server: subprocess.Popen[bytes], *, status: int = 200, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"warmline serve exited with {server.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == status:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer {status} within {timeout:g} s")


def _measure(
    browser: Any,
    parts: Any,
    app_url: str,
    ids: Sequence[int],
    mode: str,
    target: Any,
    rng: random.Random,
    spacing: tuple[float, float],
) -> list[float]:
    context = browser.new_context(base_url=app_url, viewport={"width": 1440, "height": 900})
    try:
        if mode == "polling":  # the stream refused: the page falls back to polling, as when the server is down
            context.route("**/console/events", lambda route: route.abort())
        page = context.new_page()
        page.goto(f"/console/link/{parts.accounts.issue_login_link(SUPERVISOR)}")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("link", name="Skip for now").click()
        page.goto("/console/floor")
        page.wait_for_function(f"window.warmline.mode() === '{mode}'", timeout=15_000)
        page.evaluate(OBSERVE_ROWS)
        committed: dict[int, float] = {}
        for rep_id in ids:
            parts.presence.set_presence_of(rep_id, target, reason="break" if target.value == "away" else None)
            committed[rep_id] = time.time() * 1000  # committed when the service returns
            page.wait_for_timeout(rng.uniform(*spacing) * 1000)
        try:
            page.wait_for_function(
                "([expected, state]) => new Set(window.seen.filter((s) => s.state === state).map((s) => s.rep)).size"
                " >= expected",
                arg=[len(ids), target.value],
                timeout=30_000,
            )
        except Exception:
            _log(f"{mode}: seen {page.evaluate('window.seen')}, mode {page.evaluate('window.warmline.mode()')}")
            raise
        seen = page.evaluate("window.seen")
        shown = {entry["rep"]: entry["at"] for entry in seen if entry["state"] == target.value}
        assert page.evaluate("window.warmline.mode()") == mode
        return [shown[rep_id] - committed[rep_id] for rep_id in ids]
    finally:
        context.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Console live-update latency, event to screen: stream vs polling")
    parser.add_argument("--changes", type=int, default=40, help="presence changes per mode and round (default 40)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, the modes taking turns going first")
    parser.add_argument("--consoles", type=int, default=0, help="other consoles following the stream meanwhile")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL (a fresh database is made)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    args.spacing = (0.1, 0.4)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"console live-update latency, event (commit) to screen, {result['database']}, "
            f"{args.changes * args.rounds} changes per mode, {args.consoles} other consoles open"
        )
        for mode in ("stream", "polling"):
            figures = result[mode]
            print(
                f"  {mode:<8} p50 {figures['p50_ms']:>5} ms  p99 {figures['p99_ms']:>5} ms  "
                f"max {figures['max_ms']:>5} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
