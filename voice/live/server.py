"""The console's live-events server: ``GET /console/events``, a Server-Sent Events stream of the four pieces a
console follows (``floor``, ``me``, ``screen``, ``work``; ``voice.web.console.wire``), in an asyncio process of its
own beside gunicorn's workers.

Why a process of its own: a stream stays open as long as a console is, and a sync worker serving one would be a
worker lost to webhooks for hours; here one event loop holds every console's connection, and no webhook waits.

How a change reaches the consoles: a feed (``voice.live.feeds``: PostgreSQL's LISTEN, SQLite's data_version) says
the store changed; changes are coalesced and rate-limited (:class:`TokenBucket`); the state is then read **once**
for all subscribers (one floor, one look at the open tasks, a screen-pop only for reps who have a call in front of
them, a work count only when the open tasks changed) and each piece that changed is sent to the consoles it
concerns, serialised once per audience (the floor: once for supervisors, once for reps, who do not see other reps'
callers). 100 consoles cost one reading of the floor per change, not 100.

The floor is sent whole only to a console that connects; then, per change, only what changed (``event:
floor-changes``, ``wire.floor_changes``): the whole floor of a busy call center is tens of kilobytes, sent to every
console on every change, where one rep's move is a row. Each audience's floor (:class:`FloorFeed`) has a version,
numbered on from one change to the next, and a change names the version it applies to. That it always applies
holds because a console gets every message of its stream in order: it joins with the latest version whole, taken
and followed without an await between (so no change falls between the two), every later change is put in its queue,
and a console whose queue overflows has its stream closed, and reconnects to a whole floor. The page still checks
the version, and one that does not match asks for the whole floor again (console.js) rather than show a wrong one.
The joiner's whole floor is serialised when someone joins, once per version, not on every change.

Who may listen: the console's own signed session cookie (``warmline_console``, verified with the app's secret key
and serializer, then its session looked up), so a rep's stream carries what a rep may see and a supervisor's the
floor. The server answers on another port than the app's, so another origin: the page opens the stream with
``withCredentials`` and the answer allows the page's origin with credentials (an origin on the same host name, or
the public URL's). Behind a proxy, route ``/console/events`` to this server on the app's own origin (README).

Keeping the stream healthy: ``retry:`` tells the browser when to reconnect, a comment line every
``heartbeat_seconds`` keeps proxies from closing an idle stream and notices consoles that went away, and each
session is checked again at that pace (signed out elsewhere → ``event: signed-out``, and the stream ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from flask import Flask
from itsdangerous import BadSignature
from sqlalchemy import select

from crm_sync.models import Task, TaskState
from voice.domain.actor import Actor
from voice.live.feeds import ChangeFeed
from voice.web.console import sessions, wire
from voice.web.parts import WebParts

log = logging.getLogger(__name__)

EVENTS_PATH = "/console/events"
#: Fields that move with the clock alone: left out when deciding whether a piece changed (the page ticks them).
CLOCK_FIELDS = frozenset({"at", "seconds_in_state", "longest_wait_seconds"})


@dataclass(frozen=True)
class Tuning:
    #: A comment line this often on an idle stream; each session is checked again at this pace too.
    heartbeat_seconds: float = 15.0
    #: How long the browser waits before reconnecting a dropped stream (SSE ``retry:``).
    retry_ms: int = 2000
    #: Readings of the state per second, sustained, and how many may come at once after a quiet spell.
    rate: float = 4.0
    burst: int = 2
    #: The share of one core the server may spend on average (readings, sending, checking sessions): after each
    #: reading the next waits until the CPU the server used since the last one, spread at this share, has passed.
    #: Idle, a change is read at once; under load, readings thin out instead of taking CPU the webhooks need.
    cpu_share: float = 0.05
    #: ...but never longer than this (seconds): a burst of consoles connecting must not hold changes back for long,
    #: and a stream should not fall behind what polling would show.
    max_wait: float = 2.0
    #: Read again this often even when nothing is heard (overdue tasks and the like follow the clock).
    refresh_seconds: float = 30.0
    #: Messages a console may fall behind by before its stream is closed (the browser reconnects, fresh).
    backlog: int = 64


class TokenBucket:
    """At most ``rate`` takes a second, sustained, ``burst`` at once after a quiet spell."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()

    async def take(self) -> None:
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


@dataclass(eq=False)
class Subscriber:
    sid: str
    actor: Actor
    #: Messages waiting to be written (None: end the stream), at most ``Tuning.backlog``.
    queue: asyncio.Queue[bytes | None]


@dataclass(eq=False)
class Scope:
    """Everyone following one rep's console (or one supervisor's): the same four pieces."""

    actor: Actor
    subscribers: set[Subscriber] = field(default_factory=set)
    #: Per piece but the floor (:class:`FloorFeed`): a fingerprint of what was last sent, and the message itself
    #: (for a console joining later).
    sent: dict[str, str] = field(default_factory=dict)
    messages: dict[str, bytes] = field(default_factory=dict)
    work: wire.JSON | None = None

    @property
    def callers(self) -> bool:
        """Which floor its consoles follow: a supervisor's, with the callers, or a rep's, without."""
        return self.actor.supervisor


#: Floor versions, numbered across every audience and every feed this process makes: a version never comes back,
#: even after an audience's last console left and its feed was made again.
_floor_versions = itertools.count(1)


@dataclass(eq=False)
class FloorFeed:
    """One audience's floor (supervisors' or reps', ``wire.floor_json``), as each of its consoles has it now: the
    version last sent (the base of the next change), and its whole message for a console that joins."""

    callers: bool
    floor: wire.JSON
    #: :func:`fingerprint` of ``floor``: a reading whose floor has the same one (the clock alone moved) sends nothing.
    print_: str
    version: int
    #: The reading the version came from, which its whole message gives as its own.
    detected_at: datetime
    reason: str
    sent_at: str
    _whole: bytes | None = None

    def change_to(self, floor: wire.JSON, print_: str, *, detected_at: datetime, reason: str, sent_at: str) -> bytes:
        """Makes ``floor`` the next version; the message that brings a console from the last one to it."""
        changes = wire.floor_changes(self.floor, floor)
        base, self.version = self.version, next(_floor_versions)
        self.floor, self.print_, self._whole = floor, print_, None
        self.detected_at, self.reason, self.sent_at = detected_at, reason, sent_at
        return sse(
            wire.FLOOR_CHANGES,
            {
                "event": wire.FLOOR_CHANGES,
                "reason": reason,
                "sent_at": sent_at,
                "base": base,
                "version": self.version,
                **wire.piece(changes, detected_at),
            },
        )

    def whole(self) -> bytes:
        """The whole floor at this version (``event: floor``), serialised at the first console that asks for it."""
        if self._whole is None:
            self._whole = sse(
                "floor",
                {
                    "event": "floor",
                    "reason": self.reason,
                    "sent_at": self.sent_at,
                    "version": self.version,
                    **wire.piece(self.floor, self.detected_at),
                },
            )
        return self._whole


def fingerprint(data: Any) -> str:
    return json.dumps(_without_clock(data), sort_keys=True, separators=(",", ":"))


def _without_clock(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _without_clock(value) for key, value in data.items() if key not in CLOCK_FIELDS}
    if isinstance(data, list):
        return [_without_clock(item) for item in data]
    return data


def sse(event: str, data: wire.JSON) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass
class Reading:
    """One reading of the store for every scope: pieces by scope key (None: unchanged work, keep the last)."""

    at: datetime
    floors: dict[bool, wire.JSON]
    pieces: dict[tuple[int, bool], dict[str, wire.JSON | None]]
    work_read: bool


class LiveEvents:
    """The server's state and its aiohttp application (:meth:`application`)."""

    def __init__(
        self,
        parts: WebParts,
        feed: ChangeFeed,
        *,
        tuning: Tuning | None = None,
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        self.parts = parts
        self.feed = feed
        self.tuning = tuning or Tuning()
        self.allowed_origins = frozenset(origin.rstrip("/") for origin in allowed_origins if origin)
        self.scopes: dict[tuple[int, bool], Scope] = {}
        #: The floor of each audience (key: with callers, i.e. supervisors'), while a scope of it is open.
        self.floors: dict[bool, FloorFeed] = {}
        #: Readings of the state made since start (for tests and the bench: one per change, not one per console),
        #: and how many waited for the CPU budget.
        self.readings = 0
        self.throttled = 0
        self.session_id = _cookie_reader(parts)
        """The session id a console cookie carries ("": none, or not signed with our key)."""
        # The services are synchronous (SQLAlchemy): they run on one thread, never on the event loop.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-events-db")
        self._changed: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._tasks_seen: tuple[Any, ...] | None = None

    # --- the application -------------------------------------------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get(EVENTS_PATH, self.stream)
        app.router.add_route("OPTIONS", EVENTS_PATH, self.preflight)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._stop)
        return app

    async def _start(self, _app: web.Application) -> None:
        self._changed = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self.feed.run(self.changed)),
            asyncio.create_task(self._refresh_loop()),
            asyncio.create_task(self._clock_loop()),
        ]

    async def _stop(self, _app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for scope in self.scopes.values():
            for subscriber in scope.subscribers:
                _offer(subscriber, None)
        self._db.shutdown(wait=False, cancel_futures=True)

    def changed(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # --- CORS ------------------------------------------------------------------------------------------------------

    def _origin_allowed(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if not origin:
            return None
        if origin.rstrip("/") in self.allowed_origins:
            return origin
        # The app and this server are one host on two ports: a page from the host name the browser used for this
        # stream is the console's own.
        if urlsplit(origin).hostname == urlsplit(f"//{request.host}").hostname:
            return origin
        return None

    def _cors(self, request: web.Request, headers: dict[str, str]) -> None:
        origin = self._origin_allowed(request)
        if origin is not None:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"
        headers["Vary"] = "Origin"

    async def preflight(self, request: web.Request) -> web.Response:
        headers: dict[str, str] = {}
        self._cors(request, headers)
        headers["Access-Control-Allow-Methods"] = "GET"
        headers["Access-Control-Allow-Headers"] = "Cache-Control, Last-Event-ID"
        return web.Response(status=204, headers=headers)

    # --- one console's stream --------------------------------------------------------------------------------------

    async def _actor_of(self, sid: str) -> Actor | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, self.parts.accounts.actor_for_session, sid)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        headers: dict[str, str] = {}
        self._cors(request, headers)
        if request.headers.get("Origin") and "Access-Control-Allow-Origin" not in headers:
            raise web.HTTPForbidden(text="this origin may not follow the console", headers=headers)
        sid = self.session_id(request.cookies.get(sessions.COOKIE_NAME, ""))
        actor = await self._actor_of(sid) if sid else None
        if actor is None:
            raise web.HTTPUnauthorized(text="sign in to the console first", headers=headers)
        response = web.StreamResponse(
            headers={
                **headers,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass each message on as it comes
            }
        )
        await response.prepare(request)
        await response.write(f"retry: {self.tuning.retry_ms}\n\n".encode())
        subscriber = Subscriber(sid, actor, asyncio.Queue(maxsize=self.tuning.backlog))
        try:
            for message in await self._join(subscriber):  # where the console stands now: every piece
                await response.write(message)
            await self._pump(subscriber, response)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._leave(subscriber)
        return response

    async def _pump(self, subscriber: Subscriber, response: web.StreamResponse) -> None:
        heartbeat = self.tuning.heartbeat_seconds
        while True:
            try:
                message = await asyncio.wait_for(subscriber.queue.get(), timeout=heartbeat)
            except TimeoutError:
                if await self._actor_of(subscriber.sid) != subscriber.actor:
                    await response.write(sse("signed-out", {"event": "signed-out"}))
                    return
                await response.write(b": heartbeat\n\n")
                continue
            if message is None:
                return
            await response.write(message)

    async def _join(self, subscriber: Subscriber) -> list[bytes]:
        """Adds ``subscriber`` to its scope; the messages that bring its console up to date."""
        key = (subscriber.actor.rep_id, subscriber.actor.supervisor)
        for _ in range(3):
            scope = self.scopes.setdefault(key, Scope(subscriber.actor))
            if scope.messages and scope.callers in self.floors:
                break
            # Nobody followed this console yet: read its pieces now (its first paint), before it joins, so that the
            # reading is sent to it once, below.
            try:
                await self._refresh(reason="connect", only=key)
            except Exception:
                if not scope.subscribers:  # nobody else follows it: not read again on every change for nothing
                    self.scopes.pop(key, None)
                    self._forget_floor_unless_followed(scope.callers)
                raise
        scope = self.scopes.setdefault(key, Scope(subscriber.actor))
        floor = self.floors.get(scope.callers)
        if floor is None:  # read three times, and each time everyone of its audience left meanwhile
            raise RuntimeError("no floor to send: the stream ends, and the browser reconnects")
        # From here to the return nothing awaits: no change can be sent between what it is given and what it is sent.
        scope.subscribers.add(subscriber)
        return [floor.whole()] + [scope.messages[name] for name in wire.PIECES if name in scope.messages]

    def _leave(self, subscriber: Subscriber) -> None:
        key = (subscriber.actor.rep_id, subscriber.actor.supervisor)
        scope = self.scopes.get(key)
        if scope is None:
            return
        scope.subscribers.discard(subscriber)
        if not scope.subscribers:
            del self.scopes[key]
            self._forget_floor_unless_followed(scope.callers)

    def _forget_floor_unless_followed(self, callers: bool) -> None:
        """Nobody left to follow this audience's floor: no version to keep (whoever comes next reads it afresh)."""
        if not any(scope.callers == callers for scope in self.scopes.values()):
            self.floors.pop(callers, None)

    @property
    def subscribers(self) -> int:
        return sum(len(scope.subscribers) for scope in self.scopes.values())

    # --- reading the state once, sending what changed --------------------------------------------------------------

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tuning.refresh_seconds)
            self.changed()

    async def _refresh_loop(self) -> None:
        assert self._changed is not None
        bucket = TokenBucket(self.tuning.rate, self.tuning.burst)
        last_wall, last_cpu = time.monotonic(), time.process_time()
        while True:
            await self._changed.wait()
            await bucket.take()  # changes heard meanwhile are taken by this one reading
            # What the last reading cost (this process's CPU since it began, its sending included), spread at
            # cpu_share of a core: readings are never closer than that. Its duration is not counted: on a busy host
            # it is mostly waiting for a core, and counting it held changes back by seconds (measured: p50 0.9 s).
            due = last_wall + (time.process_time() - last_cpu) / self.tuning.cpu_share
            if (delay := min(due - time.monotonic(), self.tuning.max_wait)) > 0:
                self.throttled += 1
                await asyncio.sleep(delay)
            self._changed.clear()
            if not self.scopes:
                continue
            last_wall, last_cpu = time.monotonic(), time.process_time()
            try:
                await self._refresh(reason="change")
            except Exception:  # a failing store must not end the stream: the next change tries again
                log.exception("live events: reading the console state failed")

    async def _refresh(self, *, reason: str, only: tuple[int, bool] | None = None) -> None:
        scopes = {key: scope for key, scope in self.scopes.items() if only is None or key == only}
        actors = {key: scope.actor for key, scope in scopes.items()}
        need_work = {key for key, scope in scopes.items() if scope.work is None}
        loop = asyncio.get_running_loop()
        reading = await loop.run_in_executor(self._db, self._read, actors, need_work, only is None)
        self.readings += 1
        sent_at = wire.iso(self.parts.clock())

        def message(name: str, data: wire.JSON | None) -> bytes:
            """A piece as the page takes it (wire.py): the piece, with ``event``, ``reason`` and ``sent_at``."""
            return sse(name, {"event": name, "reason": reason, "sent_at": sent_at, **wire.piece(data, reading.at)})

        for callers, floor in reading.floors.items():
            self._floor_read(callers, floor, detected_at=reading.at, reason=reason, sent_at=sent_at)
        for key, pieces in reading.pieces.items():
            scope = self.scopes.get(key)
            if scope is None:  # everyone following it left meanwhile
                continue
            outgoing: list[tuple[str, str, bytes]] = []
            if pieces.get("work") is not None:
                scope.work = pieces["work"]
            for name in ("me", "screen", "work"):
                if name == "work" and "work" not in pieces:
                    continue
                data = pieces[name] if name != "work" else scope.work
                outgoing.append((name, fingerprint(data), message(name, data)))
            for name, print_, encoded in outgoing:
                if scope.sent.get(name) == print_:
                    continue
                scope.sent[name], scope.messages[name] = print_, encoded
                for subscriber in list(scope.subscribers):
                    _offer(subscriber, encoded)

    def _floor_read(self, callers: bool, floor: wire.JSON, *, detected_at: datetime, reason: str, sent_at: str) -> None:
        """A floor just read for the audience ``callers``: its change since the last version, sent to every console
        of the audience (whichever scope the reading was for: they all follow the one version)."""
        audience = [scope for scope in self.scopes.values() if scope.callers == callers]
        if not audience:  # everyone following this floor left meanwhile
            return
        print_ = fingerprint(floor)
        feed = self.floors.get(callers)
        if feed is None:  # nobody has this floor yet: the first version, sent whole to whoever joins
            self.floors[callers] = FloorFeed(
                callers, floor, print_, next(_floor_versions), detected_at=detected_at, reason=reason, sent_at=sent_at
            )
            return
        if feed.print_ == print_:
            return
        change = feed.change_to(floor, print_, detected_at=detected_at, reason=reason, sent_at=sent_at)
        for scope in audience:
            for subscriber in list(scope.subscribers):
                _offer(subscriber, change)

    def _read(self, actors: dict[tuple[int, bool], Actor], need_work: set[tuple[int, bool]], everyone: bool) -> Reading:
        """On the database thread: the floor once, the open tasks once, then each scope's own pieces.
        ``everyone``: a reading for every scope (else one console's first paint, which leaves the others' work
        counts to the next full reading)."""
        parts = self.parts
        floor = parts.floor.floor()
        at = floor.at
        whole = wire.floor_json(floor, callers=True)
        floors = {callers: whole if callers else wire.without_callers(whole) for callers in {key[1] for key in actors}}
        work_changed = False
        if everyone:
            tasks_now = self._open_tasks(at)
            work_changed = tasks_now != self._tasks_seen
            self._tasks_seen = tasks_now
        pieces: dict[tuple[int, bool], dict[str, wire.JSON | None]] = {}
        for key, actor in actors.items():
            row = wire.row_of(floor, actor.rep_id)
            # A screen-pop exists only for a rep with a call offered or taken, or in wrap-up (FloorService).
            has_call = row is not None and (row.call_sid is not None or row.state == "wrap_up")
            screen = parts.floor.screen_for(actor) if has_call else None
            own: dict[str, wire.JSON | None] = {
                "me": wire.me_json(actor, row, at, screen),
                "screen": wire.screen_json(screen),
            }
            if work_changed or key in need_work:
                own["work"] = wire.work_counts(parts.work.work_queue(actor))
            pieces[key] = own
        return Reading(at=at, floors=floors, pieces=pieces, work_read=work_changed)

    def _open_tasks(self, now: datetime) -> tuple[Any, ...]:
        """What decides every console's work count: the open tasks, who claimed them, and which are overdue."""
        with self.parts.store.unit_of_work(read_only=True) as session:
            rows = session.execute(
                select(Task.id, Task.department, Task.claimed_by_rep_id, Task.due_at)
                .where(Task.state == TaskState.OPEN)
                .order_by(Task.id)
            ).all()
        naive_now = now.replace(tzinfo=None)
        return tuple(
            (task_id, department, claimed, due_at is not None and due_at.replace(tzinfo=None) < naive_now)
            for task_id, department, claimed, due_at in rows
        )


def _offer(subscriber: Subscriber, message: bytes | None) -> None:
    try:
        subscriber.queue.put_nowait(message)
    except asyncio.QueueFull:  # a console that cannot keep up starts again from a fresh stream
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(None)


def _cookie_reader(parts: WebParts) -> Callable[[str], str]:
    """The console cookie's session id, checked as the app checks it: Flask's session serializer, with the same
    secret key and lifetime (``voice.web.console.sessions``)."""
    app = Flask("voice.live")
    sessions.configure(app, parts.settings)
    serializer = sessions.ConsoleSessions().get_signing_serializer(app)
    assert serializer is not None  # a secret key is always set (settings make one when none is given)
    max_age = int(app.permanent_session_lifetime.total_seconds())

    def session_id(cookie: str) -> str:
        if not cookie:
            return ""
        try:
            data = serializer.loads(cookie, max_age=max_age)
        except BadSignature:
            return ""
        sid = data.get("sid") if isinstance(data, dict) else None
        return sid if isinstance(sid, str) else ""

    return session_id


class ServerThread:
    """The server on an event loop of its own thread: for tests and benchmarks that serve the app in process."""

    def __init__(self, events: LiveEvents, host: str = "127.0.0.1", port: int = 0) -> None:
        self.events, self.host, self.port = events, host, port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-events", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{EVENTS_PATH}"

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.events.application(), shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
