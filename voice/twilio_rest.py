"""Acting on live calls through Twilio's REST API — always off the webhook's response path.

A REST round trip inside a webhook caps a worker at a few calls per second (Twilio's own warm-transfer sample:
12 requests/s at 150 ms per round trip), so webhooks only decide and commit; the REST call runs afterwards on a
small thread pool. The base URL is configurable (TWILIO_API_URL): a Twilio-compatible carrier or the emulator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from twilio.base.exceptions import TwilioException
from twilio.rest import Client

log = logging.getLogger(__name__)


class TwilioRest:
    def __init__(self, *, account_sid: str, auth_token: str, base_url: str) -> None:
        self._client = Client(account_sid, auth_token)
        # twilio-python builds every API URL from the domain's base_url: pointing it elsewhere is all it takes.
        self._client.api.base_url = base_url.rstrip("/")

    def redirect_call(self, call_sid: str, url: str) -> None:
        """Make a live call fetch new TwiML now (e.g. pull a caller out of a queue the moment a rep is free)."""
        self._client.calls(call_sid).update(url=url, method="POST")

    def hang_up(self, call_sid: str) -> None:
        self._client.calls(call_sid).update(status="completed")


class BackgroundRunner:
    """A few worker threads for side effects that must not delay a TwiML response. Failures are logged."""

    def __init__(self, *, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="warmline-bg")

    def submit(self, description: str, task: Callable[..., Any], *args: Any) -> Future[Any]:
        def run() -> Any:
            try:
                return task(*args)
            except (TwilioException, OSError, ValueError) as exc:
                log.error("background %s failed: %s", description, exc)
            except Exception:
                log.exception("background %s crashed", description)
            return None

        return self._pool.submit(run)

    def shutdown(self, *, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


class InlineRunner(BackgroundRunner):
    """Runs tasks at once, in the caller's thread: for the CLI, which has no webhook to protect."""

    def __init__(self) -> None:
        super().__init__(workers=1)

    def submit(self, description: str, task: Callable[..., Any], *args: Any) -> Future[Any]:
        future = super().submit(description, task, *args)
        future.result()
        return future
