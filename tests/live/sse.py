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
