"""The generic signed webhook, for every other system: each record as a JSON POST, signed with HMAC-SHA256.

Headers: ``X-Warmline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>`` (the
timestamp inside the signed text lets a receiver refuse replays), ``Idempotency-Key: <record key>``. The body is
``{"type": "call"|"task", "id": <key>, "sent_at": …, "data": {…}}``: the whole record as it is now, so a receiver
upserts on ``id`` and a repeated delivery (after a timeout) changes nothing. 2xx is delivered; 408, 409, 425, 429 and
5xx are tried again (``Retry-After`` honoured); 401/403 stop every record until the secret is fixed; any other 4xx
parks the record with the receiver's answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import requests

from crm_sync.sync.failures import Rejected, TargetRefused, TryLater, retry_after_seconds, with_request_retries
from crm_sync.sync.records import CallRecord, TaskRecord
from crm_sync.sync.settings import WEBHOOK, Behaviour, WebhookConnection
from crm_sync.sync.targets import Delivery, RemoteContact

SIGNATURE_HEADER = "X-Warmline-Signature"
_RETRIED = {408, 409, 425, 429}


def sign(secret: str, body: bytes, *, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None, tolerance: float = 300.0) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is no older than ``tolerance`` seconds (what a receiver
    does; the tests' receiver uses it)."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp=timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookTarget:
    name = WEBHOOK
    pulls = False

    def __init__(self, connection: WebhookConnection, behaviour: Behaviour, *, sleep: Callable[[float], None]) -> None:
        self._connection = connection
        self._behaviour = behaviour
        self._sleep = sleep
        self._session = requests.Session()

    def push_call(self, record: CallRecord, contact: RemoteContact | None, *, remote_id: str | None) -> Delivery:
        self._post("call", record.key, record.as_json())
        return Delivery(remote_id=None)

    def push_task(self, record: TaskRecord, contact: RemoteContact | None, *, remote_id: str | None) -> Delivery:
        self._post("task", record.key, record.as_json())
        return Delivery(remote_id=None)

    def changed_contacts(self, since: datetime | None) -> Iterator[RemoteContact]:
        return iter(())

    def _post(self, kind: str, key: str, data: dict[str, Any]) -> None:
        body = json.dumps(
            {"type": kind, "id": key, "sent_at": datetime.now(UTC).isoformat(), "data": data}, separators=(",", ":")
        ).encode("utf-8")

        def once() -> None:
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(self._connection.secret, body, timestamp=int(time.time())),
                "Idempotency-Key": key,
                "User-Agent": "warmline-crm-sync",
            }
            try:
                response = self._session.post(
                    self._connection.url,
                    data=body,
                    headers=headers,
                    timeout=(self._behaviour.connect_timeout, self._behaviour.request_timeout),
                )
            except requests.RequestException as error:
                raise TryLater(f"the webhook did not answer: {str(error)[:300]}") from None
            status = response.status_code
            if 200 <= status < 300:
                return
            said = response.text.strip()[:500]
            if status in _RETRIED or status >= 500:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                raise TryLater(f"the webhook answered {status}: {said}", retry_after=retry_after)
            if status in (401, 403):
                raise TargetRefused(
                    f"the webhook refused our signature ({status}: {said}): check WARMLINE_SYNC_WEBHOOK_SECRET"
                )
            raise Rejected(f"the webhook refused the record ({status}): {said}")

        with_request_retries(
            once,
            attempts=self._behaviour.request_attempts,
            base=self._behaviour.request_backoff_base,
            inline_wait_cap=self._behaviour.inline_wait_cap,
            sleep=self._sleep,
        )

    def close(self) -> None:
        self._session.close()
