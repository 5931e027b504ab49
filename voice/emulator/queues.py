"""Named FIFO call queues shared by every call of one emulator (``<Enqueue>`` and the Queue API).

Calls run in different threads, so all queue state sits behind one lock.  A member's wait time
is measured on its own call's virtual clock, which is why a member keeps a reference to its leg.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from voice.emulator.legs import Leg, new_sid

__all__ = ["CallQueue", "QueueMember", "QueueRegistry", "QueueStats"]

DEFAULT_MAX_SIZE = 100


@dataclass(eq=False)
class QueueMember:
    leg: Leg
    queue: CallQueue
    enqueued_at: float
    date_enqueued: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def wait_time(self) -> float:
        return max(0.0, self.leg.call.clock - self.enqueued_at)


@dataclass(eq=False)
class CallQueue:
    sid: str
    friendly_name: str
    max_size: int = DEFAULT_MAX_SIZE
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    members: list[QueueMember] = field(default_factory=list)


@dataclass(frozen=True)
class QueueStats:
    """What Twilio reports to a waitUrl about one member's place in its queue."""

    position: int
    size: int
    max_size: int
    queue_time: int
    average_time: int


class QueueRegistry:
    """All queues of one emulator, by name and by SID."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, CallQueue] = {}
        self._by_sid: dict[str, CallQueue] = {}

    def _get_or_create(self, name: str, max_size: int = DEFAULT_MAX_SIZE) -> CallQueue:
        queue = self._by_name.get(name)
        if queue is None:
            queue = CallQueue(new_sid("QU"), name, max_size)
            self._by_name[name] = queue
            self._by_sid[queue.sid] = queue
        return queue

    def create(self, name: str, max_size: int = DEFAULT_MAX_SIZE) -> CallQueue:
        """The REST ``Queues.json`` create: returns the existing queue of that name if any."""
        with self._lock:
            return self._get_or_create(name, max_size)

    def join(self, name: str, leg: Leg, max_size: int | None = None) -> tuple[CallQueue, QueueMember | None]:
        """Append ``leg`` to queue ``name`` (created on demand); member ``None`` if the queue is full.

        ``max_size`` is ``<Enqueue maxQueueSize>``, which (re)sizes the queue like the REST API does.
        """
        with self._lock:
            queue = self._get_or_create(name)
            if max_size is not None and max_size > 0:
                queue.max_size = max_size
            if len(queue.members) >= queue.max_size:
                return queue, None
            member = QueueMember(leg, queue, leg.call.clock)
            queue.members.append(member)
            return queue, member

    def leave(self, member: QueueMember) -> bool:
        """Remove ``member``; ``False`` if it was already gone (e.g. dequeued through the API)."""
        with self._lock:
            try:
                member.queue.members.remove(member)
            except ValueError:
                return False
            return True

    def contains(self, member: QueueMember) -> bool:
        with self._lock:
            return member in member.queue.members

    def stats(self, member: QueueMember) -> QueueStats:
        with self._lock:
            members = member.queue.members
            position = members.index(member) + 1 if member in members else 0
            waits = [m.wait_time for m in members]
            average = sum(waits) / len(waits) if waits else 0.0
            return QueueStats(
                position=position,
                size=len(members),
                max_size=member.queue.max_size,
                queue_time=round(member.wait_time),
                average_time=round(average),
            )

    # -- REST API views -------------------------------------------------------------------------
    def all(self) -> list[CallQueue]:
        with self._lock:
            return list(self._by_sid.values())

    def by_sid(self, sid: str) -> CallQueue | None:
        with self._lock:
            return self._by_sid.get(sid)

    def members(self, queue: CallQueue) -> list[QueueMember]:
        with self._lock:
            return list(queue.members)

    def find_member(self, queue: CallQueue, call_sid: str) -> tuple[QueueMember, int] | None:
        """The member with ``call_sid`` (or the first one for ``"Front"``) and its 1-based position."""
        with self._lock:
            for index, member in enumerate(queue.members):
                if call_sid == "Front" or member.leg.sid == call_sid:
                    return member, index + 1
            return None

    def take(self, queue: CallQueue, call_sid: str) -> tuple[QueueMember, int] | None:
        """Atomically find and remove a member (the Member-resource dequeue)."""
        with self._lock:
            for index, member in enumerate(queue.members):
                if call_sid == "Front" or member.leg.sid == call_sid:
                    del queue.members[index]
                    return member, index + 1
            return None

    def average_wait(self, queue: CallQueue) -> int:
        with self._lock:
            waits = [m.wait_time for m in queue.members]
            return round(sum(waits) / len(waits)) if waits else 0
