"""How a send to a CRM can fail, by what is to be done about it; and the waits between tries."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from crm_sync.errors import InvalidInput, Refused, WarmlineError

T = TypeVar("T")


class SyncFailure(WarmlineError):
    """A CRM did not take what was sent."""


class TryLater(SyncFailure):
    """A passing failure: 429, 5xx, a timeout, a connection refused or reset. ``retry_after``: seconds the CRM asked
    us to wait (its ``Retry-After``), if it said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(SyncFailure, InvalidInput):
    """The CRM refused this record (a validation error): it is parked with the CRM's own words."""


class TargetRefused(SyncFailure, Refused):
    """The CRM refused the connection itself (credentials, permissions, a missing setup step such as the unique
    property): every record waits, uncharged, and it is reported once."""


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header's wait in seconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); None when
    absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def full_jitter(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """AWS's "full jitter": a wait drawn uniformly from [0, min(cap, base * 2**attempt)] (``attempt`` from 0), so
    that many records failing together do not all come back at the same moment."""
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return (rng or random).uniform(0.0, ceiling)


def with_request_retries(
    send: Callable[[], T],
    *,
    attempts: int,
    base: float,
    inline_wait_cap: float,
    sleep: Callable[[float], None],
) -> T:
    """Run ``send`` (an idempotent request: every write is an upsert) up to ``attempts`` times while it fails with
    :class:`TryLater`, waiting full jitter or the CRM's ``Retry-After``; a ``Retry-After`` longer than
    ``inline_wait_cap`` is not waited for here (the record is scheduled for then instead)."""

    def worth_waiting(error: BaseException) -> bool:
        return isinstance(error, TryLater) and (error.retry_after is None or error.retry_after <= inline_wait_cap)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, TryLater) and error.retry_after is not None:
            return error.retry_after
        return full_jitter(state.attempt_number - 1, base=base, cap=inline_wait_cap)

    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait,
        retry=retry_if_exception(worth_waiting),
        sleep=sleep,
        reraise=True,
    )
    return retrying(send)
