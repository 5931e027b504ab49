"""Open rep consoles for the benchmarks: reps signed in over HTTP as a browser signs in (a one-time link, the form
with its CSRF token, the signed ``warmline_console`` cookie), then each holding the live-events stream open as a
page's EventSource does (``GET /console/events`` with the cookie and the page's ``Origin``), reading every message.

Used by ``bench/webhook.py --consoles N`` (webhook throughput and latency with N consoles open against none, same
run) and ``bench/console_latency.py``. All streams are read by one asyncio loop on a thread of its own (aiohttp's
client), so a hundred consoles cost the load generator one thread, not a hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import requests

from voice.web.console.sessions import COOKIE_NAME

#: Every tenth console is a supervisor's (the whole floor, callers included); the others reps'.
SUPERVISOR_EVERY = 10
#: The pieces a console is sent when its stream opens (the floor whole, then me, screen, work), before it follows
#: changes (the floor's as ``floor-changes``: counted as messages like the rest, never parsed here).
FIRST_PAINT = 4


@dataclass(frozen=True)
class ConsoleReps:
    names: tuple[str, ...]
    cookies: tuple[str, ...]


def sign_in_consoles(
    *,
    database_url: str,
    config_path: Path,
    instance_path: Path,
    app_url: str,
    count: int,
    departments: Sequence[str],
) -> ConsoleReps:
    """``count`` reps who take no calls (away: the webhooks' routing is the same with and without them), each
    signed in to the console served at ``app_url``; their cookies."""
    from crm_sync.models import RepState, utcnow
    from crm_sync.queries.reps import find_rep, upsert_rep
    from voice import create_app

    # The app's services in this process, on the server's database: to make reps and issue one-time links only.
    app = create_app(
        {"database_url": database_url, "config_path": config_path, "instance_path": instance_path,
         "log_level": "WARNING"},
        background=False,
    )  # fmt: skip
    warmline = app.extensions["warmline"]
    names = tuple(f"Console Rep {index:03d}" for index in range(1, count + 1))
    try:
        with warmline.store.unit_of_work() as session:
            for index, name in enumerate(names):
                rep, _ = upsert_rep(
                    session,
                    name=name,
                    phone_e164=f"+1555090{index:04d}",
                    departments=list(departments),
                    languages=["en-US"],
                )
                rep.role = "supervisor" if index % SUPERVISOR_EVERY == 0 else "rep"
        cookies = tuple(_sign_in(app_url, warmline.accounts.issue_login_link(name)) for name in names)
        with warmline.store.unit_of_work() as session:
            for name in names:
                find_rep(session, name).choose_presence(RepState.AWAY, now=utcnow(), reason="training")
    finally:
        warmline.close()
    return ConsoleReps(names, cookies)


def _sign_in(app_url: str, token: str) -> str:
    with requests.Session() as browser:
        page = browser.get(f"{app_url}/console/link/{token}", timeout=30).text
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        if found is None:
            raise RuntimeError(f"no sign-in form at {app_url}/console/link/…: {page[:200]}")
        browser.post(f"{app_url}/console/link/{token}", data={"csrf_token": found.group(1)}, timeout=30)
        cookie = browser.cookies.get(COOKIE_NAME)
        if not cookie:
            raise RuntimeError("signing in gave no console cookie")
        return str(cookie)


@dataclass
class ConsoleStats:
    opened: int = 0
    painted: int = 0  # consoles that got their first paint
    messages: int = 0
    bytes: int = 0
    failures: list[str] = field(default_factory=list)


class ConsoleCrowd:
    """``cookies``' consoles, each with the live-events stream at ``events_url`` open, until :meth:`close`."""

    def __init__(self, events_url: str, cookies: Sequence[str], *, origin: str) -> None:
        self.events_url, self.cookies, self.origin = events_url, tuple(cookies), origin
        self.stats = ConsoleStats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="consoles", daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def open(self, timeout: float = 60.0) -> ConsoleStats:
        """Opens every stream; returns once each console has its first paint (or raises after ``timeout``)."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout)
        deadline = time.monotonic() + timeout
        while self.stats.painted < len(self.cookies):
            if self.stats.failures:
                raise RuntimeError(f"a console's stream failed: {self.stats.failures[:3]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.stats.painted} of {len(self.cookies)} consoles painted")
            time.sleep(0.05)
        return self.stats

    async def _open(self) -> None:
        # No limit on connections per host (aiohttp's default is 100 in all): every console holds one open.
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        self._tasks = [asyncio.create_task(self._follow(cookie)) for cookie in self.cookies]

    async def _follow(self, cookie: str) -> None:
        assert self._session is not None
        headers = {"Accept": "text/event-stream", "Cookie": f"{COOKIE_NAME}={cookie}", "Origin": self.origin}
        try:
            async with self._session.get(self.events_url, headers=headers) as response:
                if response.status != 200:
                    self.stats.failures.append(f"HTTP {response.status}")
                    return
                self.stats.opened += 1
                seen = 0
                # Chunks as they come, messages counted in C (bytes.count): the load generator shares this
                # process, and parsing line by line in Python would take its time, not the server's.
                async for chunk in response.content.iter_any():
                    self.stats.bytes += len(chunk)
                    events = chunk.count(b"\nevent:") + chunk.startswith(b"event:")
                    if seen < FIRST_PAINT <= seen + events:
                        self.stats.painted += 1
                    seen += events
                    self.stats.messages += events
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # counted and reported: the run decides
            self.stats.failures.append(repr(exc))

    def close(self) -> ConsoleStats:
        async def stop() -> None:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._session is not None:
                await self._session.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        return self.stats


def summary(stats: ConsoleStats) -> dict[str, Any]:
    return {
        "opened": stats.opened,
        "painted": stats.painted,
        "messages": stats.messages,
        "bytes": stats.bytes,
        "failures": len(stats.failures),
    }
