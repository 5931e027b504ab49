"""Acting on live calls through Twilio's REST API — always off the webhook's response path.

A REST round trip inside a webhook caps a worker at a few calls per second (Twilio's own warm-transfer sample: 12
requests/s at 150 ms per round trip), so webhooks only decide and commit; the REST calls (``voice.domain.actions``)
run afterwards on a small thread pool. The base URL is configurable (TWILIO_API_URL): a Twilio-compatible carrier or
the emulator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from voice.domain.actions import EndedCall

log = logging.getLogger(__name__)

#: How long one REST request may take before it fails (and is logged, or retried by the next housekeeping pass).
REST_TIMEOUT_SECONDS = 10

#: Twilio's answer when a call is over (or never was): error 21220 "Call is not in-progress", or a 404.
CALL_GONE_CODES = frozenset({21220, 20404})


def call_is_gone(error: TwilioRestException) -> bool:
    return error.status == 404 or error.code in CALL_GONE_CODES


@dataclass(frozen=True)
class CallFacts:
    status: str
    duration: int | None


class TwilioRest:
    def __init__(self, *, account_sid: str, auth_token: str, base_url: str) -> None:
        # A bounded wait: a Twilio request that hangs must not hold a background thread (and what it carries) forever.
        self._client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=REST_TIMEOUT_SECONDS))
        # twilio-python builds every API URL from the domain's base_url: pointing it elsewhere is all it takes.
        self._client.api.base_url = base_url.rstrip("/")

    def redirect_call(self, call_sid: str, url: str) -> None:
        """Make a live call fetch new TwiML now (e.g. pull a caller out of a queue the moment a rep is free)."""
        self._client.calls(call_sid).update(url=url, method="POST")

    def hang_up(self, call_sid: str) -> None:
        """End a call: hangs up one in progress, cancels one still ringing."""
        self._client.calls(call_sid).update(status="completed")

    def create_call(
        self, *, to: str, from_: str, url: str, status_callback: str, timeout: int, detect_machines: bool = False
    ) -> str:
        """Place a call that runs ``url`` once answered. ``detect_machines``: synchronous answering machine
        detection, so that request carries ``AnsweredBy`` (human, machine_start, fax or unknown)."""
        call = self._client.calls.create(
            to=to,
            from_=from_,
            url=url,
            method="POST",
            status_callback=status_callback,
            status_callback_method="POST",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            timeout=timeout,
            **({"machine_detection": "Enable"} if detect_machines else {}),
        )
        return str(call.sid)

    def fetch_call(self, call_sid: str) -> CallFacts:
        call = self._client.calls(call_sid).fetch()
        duration = int(call.duration) if call.duration not in (None, "") else None
        return CallFacts(status=str(call.status), duration=duration)

    def ended_inbound_calls(self, *, started_after: datetime, statuses: frozenset[str]) -> list[EndedCall]:
        """Inbound calls (callers' calls to our numbers, not the legs we dial) that began after ``started_after``
        and ended with one of ``statuses``; every page of the list."""
        ended: list[EndedCall] = []
        for call in self._client.calls.list(start_time_after=started_after, page_size=1000):
            if call.direction != "inbound" or call.parent_call_sid or call.status not in statuses:
                continue
            duration = int(call.duration) if call.duration not in (None, "") else None
            caller = call._from  # twilio-python's name for the payload's "from" (a keyword in Python)
            ended.append(EndedCall(str(call.sid), str(call.status), duration, str(caller), str(call.to)))
        return ended

    def conference_sid(self, friendly_name: str) -> str | None:
        """The live conference of that name (conferences are addressed by their Sid in REST)."""
        for status in ("in-progress", "init"):
            for conference in self._client.conferences.list(friendly_name=friendly_name, status=status, limit=1):
                return str(conference.sid)
        return None

    def hold_participant(self, conference_sid: str, call_sid: str, *, hold: bool, hold_url: str) -> None:
        participant = self._client.conferences(conference_sid).participants(call_sid)
        if hold:
            participant.update(hold=True, hold_url=hold_url, hold_method="POST")
        else:
            participant.update(hold=False)

    def announce_to_participant(self, conference_sid: str, call_sid: str, url: str) -> None:
        self._client.conferences(conference_sid).participants(call_sid).update(announce_url=url, announce_method="POST")


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
