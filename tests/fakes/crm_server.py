"""What the fake CRMs share: a threaded HTTP(S) server on loopback, faults on demand, and a request log.

Faults follow what the real APIs do when they misbehave: a share of requests answered 429 (with ``Retry-After``),
500 or 503; "slow" requests that are carried out but answered only after the client gave up (the record is written,
the client sees a timeout: the case that makes duplicates if a retry is not idempotent); an outage, during which the
port refuses connections; scripted answers for the next requests; a wrong token.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Faults:
    """Faults applied to requests that get past authentication (a share of them, at random)."""

    fail_rate: float = 0.0  # answered 429, 500 or 503 instead of being carried out
    slow_rate: float = 0.0  # carried out, then answered after slow_seconds
    slow_seconds: float = 0.0
    retry_after: str = "1"  # the Retry-After of a 429
    seed: int = 19
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


@dataclass(frozen=True)
class Scripted:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeCrmServer:
    """Subclasses answer ``route(request) -> Response``; this serves them with faults and a log."""

    def __init__(self, *, token: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.token = token
        self.faults = Faults()
        self.scripted: list[Scripted] = []
        self.requests: list[tuple[str, str]] = []
        self.failures_injected = 0
        self._lock = threading.RLock()
        self._ssl_context = ssl_context
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- serving -----------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._server = make_server("127.0.0.1", self.port, self._wsgi, threaded=True, ssl_context=self._ssl_context)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-crm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def go_down(self) -> None:
        """An outage: the port refuses connections until :meth:`come_back`."""
        self.stop()

    def come_back(self) -> None:
        self.start()

    # --- requests ----------------------------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        with self._lock:
            self.requests.append((request.method, request.full_path))
        response = self._answer(request)
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        if not self.authorised(request):
            return self.unauthorised()
        with self._lock:
            scripted = self.scripted.pop(0) if self.scripted else None
            roll = self.faults.rng.random()
            slow_roll = self.faults.rng.random()
            kind = self.faults.rng.choice((429, 500, 503))
        if scripted is not None:
            return json_response(scripted.status, scripted.body, scripted.headers)
        if roll < self.faults.fail_rate:
            with self._lock:
                self.failures_injected += 1
            headers = {"Retry-After": self.faults.retry_after} if kind == 429 else {}
            return json_response(kind, self.failure_body(kind), headers)
        with self._lock:
            response = self.route(request)
        if slow_roll < self.faults.slow_rate:
            time.sleep(self.faults.slow_seconds)  # written already: the client times out and tries again
        return response

    def authorised(self, request: Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def unauthorised(self) -> Response:
        raise NotImplementedError

    def failure_body(self, status: int) -> Any:
        raise NotImplementedError

    def route(self, request: Request) -> Response:
        raise NotImplementedError


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body) if body is not None else b"",
        status=status,
        headers=headers or {},
        content_type="application/json;charset=UTF-8",
    )


def digits(phone: str | None) -> str:
    """The last ten digits: how the fakes match numbers written in any format."""
    return "".join(ch for ch in phone or "" if ch.isdigit())[-10:]
