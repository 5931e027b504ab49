"""``<Enqueue>`` and ``<Leave>``: a leg waiting in a named queue, and how it gets out.

The queues themselves (shared by every call, and the Queue REST resources) are in
:mod:`voice.emulator.queues`.  While a leg waits, its ``waitUrl`` document runs in a loop as a
``"queue wait"`` document (see :data:`voice.emulator.interpreter.VERBS` for what it may use), with
the queue's statistics added to every request.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET

from voice.emulator.http import Document
from voice.emulator.legs import HangupSignal, RedirectSignal
from voice.emulator.queues import QueueMember
from voice.emulator.runner import DEFAULT_HOLD_MUSIC, LEAVE, Interrupted, LegEnded, LegRunner, Step, attr_float

__all__ = ["enqueue", "leave"]


def leave(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    """``<Leave>``: out of the queue, on with the ``<Enqueue>`` action (only inside a waitUrl document)."""
    if runner.document != "queue wait":
        runner.warn(12200, "<Leave> outside a queue wait; skipped", doc.url)
        return None
    return LEAVE


def _queue_params(result: str, queue_sid: str | None, queue_time: int | None) -> dict[str, str]:
    params = {"QueueResult": result}
    if queue_sid is not None:
        params["QueueSid"] = queue_sid
    if queue_time is not None:
        params["QueueTime"] = str(queue_time)
    return params


def enqueue(runner: LegRunner, element: ET.Element, doc: Document) -> Step:
    """``<Enqueue>``: hold in the named queue (running its waitUrl) until dequeued, ``<Leave>``, or hung up."""
    name = (element.text or "").strip()
    action = element.get("action")
    method = element.get("method")
    wait_url = element.get("waitUrl")
    wait_method = element.get("waitUrlMethod")
    if element.get("workflowSid"):
        runner.warn(12200, "TaskRouter workflowSid is not emulated; using a plain queue", doc.url)
    max_size = int(attr_float(element.get("maxQueueSize"), 0)) or None
    queue, member = runner.rt.queues.join(name, runner.leg, max_size)

    def action_url() -> str | None:
        return runner.absolute(action, doc) if action else None

    if member is None:
        runner.call.note("app", "Enqueue", f"queue {name!r} is full")
        url = action_url()
        if url is None:
            return None
        return runner.fetch(url, method, {**runner.leg_params(), "QueueResult": "queue-full"}, "enqueue action")

    runner.call.note("app", "Enqueue", f"joined queue {name!r}", queue_sid=queue.sid)
    runner.set_state("queued")
    patience = runner.inputs.queue_patience if runner.inputs is not None else None

    def finish_params(result: str) -> dict[str, str]:
        return {**runner.leg.params(), **_queue_params(result, queue.sid, round(member.wait_time))}

    try:
        with contextlib.ExitStack() as stack:
            if patience is not None:
                stack.enter_context(runner.deadline(member.enqueued_at + patience, runner.leg, HangupSignal("party")))
            while True:
                started = runner.call.clock
                if _wait_iteration(runner, member, wait_url, wait_method, doc) is LEAVE:
                    break
                spent = runner.call.clock - started
                # Never spin: at least one virtual second and one poll interval per loop.
                runner.advance(max(0.0, 1.0 - spent), min_real=runner.rt.config.queue_poll_interval)
    except Interrupted as intr:
        if intr.leg is runner.leg:
            params = None
            if isinstance(intr.signal, HangupSignal):
                runner.call.note("app", "Enqueue", f"{runner.party} hung up while queued")
                runner.leg.status = "completed"
                params = finish_params("hangup")
            elif isinstance(intr.signal, RedirectSignal) and intr.signal.source == "dequeue":
                params = finish_params("redirected")
            runner.rt.queues.leave(member)
            url = action_url()
            if params is not None and url is not None:
                runner.notify(url, method, params, "enqueue action")
        raise
    except LegEnded as ended:
        runner.rt.queues.leave(member)
        runner.leg.status = "completed"
        url = action_url()
        if url is not None:
            result = "error" if ended.reason == "error" else "hangup"
            runner.notify(url, method, finish_params(result), "enqueue action")
        raise
    finally:
        runner.rt.queues.leave(member)
        runner.set_state("in-progress")
    runner.call.note("app", "Leave", f"left queue {name!r}")
    url = action_url()
    if url is None:
        return None
    return runner.fetch(url, method, finish_params("leave"), "enqueue action")


def _wait_iteration(
    runner: LegRunner, member: QueueMember, wait_url: str | None, wait_method: str | None, doc: Document
) -> Step:
    """One pass of the hold loop: fetch waitUrl and run it with the queue's statistics."""
    if not wait_url:
        runner.call.note(runner.party, "Play", f"[play {DEFAULT_HOLD_MUSIC}]")
        runner.advance(runner.rt.config.play_seconds)
        return None
    stats = runner.rt.queues.stats(member)
    runner.context_params = {
        "QueuePosition": str(stats.position),
        "QueueSid": member.queue.sid,
        "QueueTime": str(stats.queue_time),
        "AvgQueueTime": str(stats.average_time),
        "CurrentQueueSize": str(stats.size),
        "MaxQueueSize": str(stats.max_size),
    }
    try:
        wait_doc = runner.fetch(runner.absolute(wait_url, doc), wait_method, runner.leg_params(), "waitUrl")
        return runner.drive(wait_doc, "queue wait", follow_redirects=False)
    finally:
        runner.context_params = {}
