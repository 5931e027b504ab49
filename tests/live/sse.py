"""A console's side of the live-events stream for tests: signing in over HTTP as a browser does, and reading
Server-Sent Events off a real connection on a thread (``requests``, streamed)."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from voice.web.console import wire
from voice.web.console.sessions import COOKIE_NAME


def sign_in(app_url: str, token: str) -> str:
    """The console cookie of a browser that followed the one-time link ``token`` (its value, signed)."""
    with requests.Session() as browser:
        page = browser.get(f"{app_url}/console/link/{token}", timeout=10).text
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found, page[:300]
        answer = browser.post(
            f"{app_url}/console/link/{token}", data={"csrf_token": found.group(1)}, timeout=10, allow_redirects=False
        )
        assert answer.status_code in (302, 303), answer.text[:300]
        cookie = browser.cookies.get(COOKIE_NAME)
        assert cookie, "no console cookie after signing in"
        return str(cookie)


@dataclass
class Event:
    name: str
    data: dict[str, Any]
    at: float


@dataclass
class Stream:
    """One open stream; :meth:`next` takes its events in order (comments and ``retry:`` kept apart)."""

    response: requests.Response
    events: queue.Queue[Event | None] = field(default_factory=queue.Queue)
    comments: list[str] = field(default_factory=list)
    retry_ms: int | None = None

    @classmethod
    def open(cls, url: str, cookie: str | None, *, origin: str | None = None, timeout: float = 10) -> Stream:
        headers = {"Accept": "text/event-stream"}
        if cookie is not None:
            headers["Cookie"] = f"{COOKIE_NAME}={cookie}"
        if origin is not None:
            headers["Origin"] = origin
        response = requests.get(url, headers=headers, stream=True, timeout=timeout)
        response.encoding = "utf-8"
        stream = cls(response)
        if response.status_code == 200:
            threading.Thread(target=stream._read, daemon=True).start()
        return stream

    def _read(self) -> None:
        name, data = "message", list[str]()
        try:
            for raw in self.response.iter_lines(chunk_size=1, decode_unicode=True):
                line = raw or ""
                if not line:
                    if data:
                        self.events.put(Event(name, json.loads("\n".join(data)), time.time()))
                    name, data = "message", list[str]()
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line.startswith("retry:"):
                    self.retry_ms = int(line[6:])
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
        except (requests.RequestException, OSError, ValueError, AttributeError):  # closed under the reader
            pass
        finally:
            self.events.put(None)

    def next(self, timeout: float = 10) -> Event | None:
        """The next event (None: the stream ended); raises queue.Empty after ``timeout`` seconds."""
        return self.events.get(timeout=timeout)

    def until(self, wanted: Any, timeout: float = 10) -> Event:
        """Events are taken until one for which ``wanted(event)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.01, deadline - time.monotonic()))
            assert event is not None, "the stream ended"
            if wanted(event):
                return event

    def close(self) -> None:
        self.response.close()


class VersionMismatch(AssertionError):
    """A floor change for another version than the console's: it missed a message."""


@dataclass
class ConsoleFloor:
    """The floor as a console following ``stream`` has it, as console.js keeps it: whole from ``event: floor``, then
    each ``event: floor-changes`` applied to the version it names."""

    stream: Stream
    version: int | None = None
    floor: dict[str, Any] | None = None
    #: The bytes of each floor message taken, as the server serialised them: (event, size).
    sizes: list[tuple[str, int]] = field(default_factory=list)

    def take(self, event: Event) -> bool:
        """Applies ``event`` if it is about the floor (whether it was); raises VersionMismatch for a change that does
        not apply to this version."""
        if event.name not in ("floor", wire.FLOOR_CHANGES):
            return False
        self.sizes.append((event.name, len(json.dumps(event.data, separators=(",", ":")))))
        if event.name == "floor":
            self.version, self.floor = event.data["version"], event.data["data"]
            return True
        if self.floor is None or event.data["base"] != self.version:
            raise VersionMismatch(f"a change from version {event.data['base']}, the console has {self.version}")
        self.version, self.floor = event.data["version"], wire.apply_floor_changes(self.floor, event.data["data"])
        return True

    def until(self, wanted: Any, timeout: float = 10) -> dict[str, Any]:
        """Takes the stream's events (every one: the floor's applied) until the floor is one ``wanted`` holds for."""
        deadline = time.monotonic() + timeout
        while self.floor is None or not wanted(self.floor):
            event = self.stream.next(max(0.01, deadline - time.monotonic()))
            assert event is not None, "the stream ended"
            self.take(event)
        return self.floor
