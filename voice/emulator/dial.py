"""``<Dial>``: its nouns, its action, and ``<Number>``: ringing reps, the whisper on the rep's leg, the bridge.

What each noun does comes from one table (:data:`voice.emulator.interpreter.DIAL_NOUNS`) that
:func:`run_dial` dispatches through: a :class:`PhoneNoun` names a phone the ``<Dial>`` rings
together with its other phones (``<Number>``, and bare text); a :class:`SoleNoun` must be the
only noun of its ``<Dial>`` and carries it out alone (``<Conference>``, in
:mod:`voice.emulator.dial_conference`).  Nouns the table does not name are skipped with a warning.

Twilio rings every ``<Number>`` of a ``<Dial>`` at once and connects the first one that answers
(and, with ``<Number url>``, gets through that whisper document without hanging up).  The
emulator plays that out on the call's virtual clock: reps "answer" at their scripted
``answer_after`` in order, each answered rep's whisper runs on its own child leg, and the first
whisper that ends without a hang-up wins the bridge.

The bridge then lasts until the first of: the caller's talk time, the rep's talk time,
``timeLimit``, or a signal (``call.hang_up()``, ``emu.rep_hang_up()``, a REST update of either
leg).  Which side ended it decides what happens next, exactly as on Twilio: if the rep side
ended, the caller continues with the Dial action's TwiML; if the caller hung up, the action is
still requested but its TwiML is ignored.

Modifying a leg through the REST API while bridged:

* the *child* (rep) leg: it leaves the bridge and runs the new TwiML on its own — it becomes a
  call of its own in the emulator, with its own thread — while the parent's ``<Dial>`` ends
  as completed and the parent continues at the action (``DialCallStatus=completed``, the
  ``DialCallSid`` and ``DialCallDuration`` of the bridge);
* the *parent* (caller) leg: the child is hung up, the parent runs the new TwiML, and the
  ``action`` is still requested with its TwiML ignored (Twilio changelog, 2021-05-24, "Changes
  to <Dial> behavior ...": that is what Twilio does for every account).
"""

from __future__ import annotations

import contextlib
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from voice.emulator.call_threads import run_detached_leg
from voice.emulator.http import Document, new_session
from voice.emulator.legs import CallbackSpec, EmulatedCall, HangupSignal, Leg, RedirectSignal, new_sid
from voice.emulator.parties import RepBehavior, RepCursor
from voice.emulator.runner import Interrupted, LegEnded, LegRunner, Step, attr_float

__all__ = ["DialAction", "DialNoun", "PhoneNoun", "RingTarget", "SoleNoun", "number_target", "run_dial"]

CALL_PROGRESS_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})


@dataclass(frozen=True)
class RingTarget:
    """A phone a ``<Dial>`` rings: its number, its whisper document, its status callback."""

    number: str
    url: str | None = None
    method: str | None = None
    callback: CallbackSpec | None = None


@dataclass(frozen=True)
class PhoneNoun:
    """A noun naming a phone that its ``<Dial>`` rings at once with its other phones (``<Number>``)."""

    target: Callable[[LegRunner, ET.Element, Document], RingTarget]


@dataclass(frozen=True)
class SoleNoun:
    """A noun that must be the only one of its ``<Dial>``, and carries the ``<Dial>`` out alone (``<Conference>``).

    ``run(runner, dial, noun, doc)`` returns what the call does next, like a verb.
    """

    run: Callable[[LegRunner, ET.Element, ET.Element, Document], Step]


#: What one ``<Dial>`` noun does; :data:`voice.emulator.interpreter.DIAL_NOUNS` maps noun names to these.
DialNoun = PhoneNoun | SoleNoun


@dataclass(eq=False)
class _Attempt:
    target: RingTarget
    child: Leg
    behavior: RepBehavior | None


class DialAction:
    """The ``<Dial action method>`` of one ``<Dial>``, and the three ways Twilio uses it."""

    def __init__(self, runner: LegRunner, element: ET.Element, doc: Document) -> None:
        self.runner = runner
        action = element.get("action")
        self.url = runner.absolute(action, doc) if action else None
        self.method = element.get("method")

    def continue_with(self, params: dict[str, str]) -> Step:
        """The call goes on: with the action's TwiML, or (no action) the next verb."""
        runner = self.runner
        runner.set_state("in-progress")
        if self.url is None:
            return None
        return runner.fetch(self.url, self.method, {**runner.leg_params(), **params}, "dial action")

    def report_after_caller_left(self, params: dict[str, str]) -> None:
        """The dialing party hung up: the action is still requested, its TwiML ignored."""
        leg = self.runner.leg
        leg.status = "completed"
        if self.url is not None:
            self.runner.notify(self.url, self.method, {**leg.params(), **params}, "dial action")

    def report_after_redirect(self, params: dict[str, str]) -> None:
        """The dialing leg was modified through the REST API: action requested, TwiML ignored."""
        if self.url is not None:
            self.runner.notify(self.url, self.method, {**self.runner.leg_params(), **params}, "dial action")


def _events(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset({"completed"})
    return frozenset(e for e in value.replace(",", " ").split() if e in CALL_PROGRESS_EVENTS)


def number_target(runner: LegRunner, noun: ET.Element, doc: Document) -> RingTarget:
    """``<Number url method statusCallback ...>``: the number to ring, its whisper and its status callback."""
    callback_url = noun.get("statusCallback")
    callback = (
        CallbackSpec(
            runner.absolute(callback_url, doc),
            noun.get("statusCallbackMethod") or "POST",
            _events(noun.get("statusCallbackEvent")),
        )
        if callback_url
        else None
    )
    url = noun.get("url")
    return RingTarget(
        number=(noun.text or "").strip(),
        url=runner.absolute(url, doc) if url else None,
        method=noun.get("method"),
        callback=callback,
    )


def _start_attempt(runner: LegRunner, target: RingTarget, caller_id: str) -> _Attempt:
    """Create the child leg for one ``<Number>`` and start it ringing."""
    call, parent = runner.call, runner.leg
    child = Leg(
        call,
        sid=new_sid("CA"),
        account_sid=parent.account_sid,
        from_=caller_id,
        to=target.number,
        direction="outbound-dial",
        party=f"rep:{target.number}",
        parent_sid=parent.sid,
        from_geo=parent.from_geo if caller_id == parent.from_ else None,
        status="queued",
        status_callback=target.callback,
    )
    call.add_child(child)
    runner.rt.register_leg(child)
    behavior = runner.rt.directory.offer(target.number)
    call.note("app", "Dial", f"ringing {target.number}", call_sid=child.sid)
    runner.leg_event(child, "initiated")
    child.status = "ringing"
    runner.leg_event(child, "ringing")
    return _Attempt(target, child, behavior)


def _end(runner: LegRunner, attempt: _Attempt, status: str) -> None:
    if attempt.child.live:
        attempt.child.finish(status, runner.call.clock)
        runner.leg_event(attempt.child, "completed")


def _ring_until(runner: LegRunner, attempts: list[_Attempt], until: float) -> None:
    """Let phones ring until ``until``; a ringing leg hung up meanwhile is canceled."""
    children = {a.child: a for a in attempts}
    while runner.call.clock < until:
        try:
            runner.advance(until - runner.call.clock)
        except Interrupted as intr:
            attempt = children.get(intr.leg)
            if attempt is None:
                raise
            runner.call.note("app", "Dial", f"{intr.leg.to} stopped ringing ({intr.signal})")
            _end(runner, attempt, "canceled")


def _connect(runner: LegRunner, attempt: _Attempt) -> bool:
    """The rep picks up: run the whisper on the rep's leg.  ``True`` if it ends in a bridge."""
    call, child = runner.call, attempt.child
    assert attempt.behavior is not None
    child.answer(call.clock)
    runner.leg_event(child, "answered")
    call.note("app", "Dial", f"{child.to} answered", call_sid=child.sid)
    if attempt.target.url is None:
        return True
    session = new_session()
    whisper = LegRunner(
        runner.rt,
        call,
        child,
        RepCursor(attempt.behavior),
        verbs=runner.verbs,
        session=session,
        mode="whisper",
        also_watch=(runner.leg,),
    )
    url, method = attempt.target.url, attempt.target.method
    try:
        whisper.drive(lambda: whisper.fetch(url, method, whisper.leg_params(), "dial number url"))
    except LegEnded:
        call.note("app", "Dial", f"{child.to} hung up during the whisper; not bridged")
        _end(runner, attempt, "completed")
        return False
    except Interrupted as intr:
        if intr.leg is not child:
            raise
        call.note("app", "Dial", f"{child.to} left during the whisper; not bridged")
        _end(runner, attempt, "completed")
        return False
    finally:
        session.close()
    return True


def _bridge(runner: LegRunner, winner: _Attempt, time_limit: float) -> tuple[float, Interrupted | None]:
    """Hold the two legs together until one side ends it.

    Returns the talk time and, when the caller's side ended it, the caller's signal.  When the
    caller's and the rep's talk times run out at the same moment, the caller hangs up first.
    """
    call, parent, child = runner.call, runner.leg, winner.child
    runner.set_state("bridged")
    call.note("app", "Dial", f"bridged {parent.party} with {child.to}", call_sid=child.sid)
    started = call.clock
    caller_talk = runner.inputs.talk_seconds if runner.inputs is not None else None
    rep_talk = winner.behavior.talk_seconds if winner.behavior is not None else None
    try:
        with runner.watching(child), contextlib.ExitStack() as stack:
            stack.enter_context(runner.deadline(started + time_limit, child, HangupSignal("limit")))
            horizon: list[float] = []
            if caller_talk is not None:
                horizon.append(started + caller_talk)
                stack.enter_context(runner.deadline(horizon[-1], parent, HangupSignal("party")))
            if rep_talk is not None:
                horizon.append(started + rep_talk)
                stack.enter_context(runner.deadline(horizon[-1], child, HangupSignal("party")))
            while True:  # only an Interrupted (signal or deadline) ends a bridge
                runner.advance(min(horizon) - call.clock if horizon else None)
    except Interrupted as intr:
        talk = call.clock - started
        if intr.leg is child:
            signal = intr.signal
            if isinstance(signal, RedirectSignal):
                call.note("app", "Dial", f"rep {child.to} was redirected; bridge ended", call_sid=child.sid)
                _detach(runner, winner, signal)
            else:
                why = f"hung up ({signal.by})" if isinstance(signal, HangupSignal) else "left"
                call.note("app", "Dial", f"rep {child.to} {why}; bridge ended")
                _end(runner, winner, "completed")
            return talk, None
        call.note("app", "Dial", f"{parent.party} side ended the bridge ({intr.signal})")
        _end(runner, winner, "completed")
        return talk, intr


def _detach(runner: LegRunner, attempt: _Attempt, signal: RedirectSignal) -> None:
    """The child leg leaves the bridge for new TwiML: it becomes the root of a call of its own.

    The new :class:`EmulatedCall` continues the parent's clock (same timeline), so the rep's
    transcript goes on where the whisper left off; ``emu.call(child_sid)`` finds it.
    """
    parent_call, child = runner.call, attempt.child
    rt = runner.rt
    if rt.closing:
        _end(runner, attempt, "completed")
        return
    call = EmulatedCall(
        sid=child.sid,
        from_=child.from_,
        to=child.to,
        direction=child.direction,
        inputs=RepCursor(attempt.behavior) if attempt.behavior is not None else None,
        caller_party=child.party,
    )
    call.clock = parent_call.clock
    call.wall_start = parent_call.wall_start
    call.set_state("in-progress")
    # Both locks, so a concurrent Leg.signal() lands on one call or the other; a signal that
    # arrived since the redirect stays pending for the new thread.
    with parent_call.cond, call.cond:
        child.call = call
        call.attach_root(child)
    rt.launch(call, lambda: run_detached_leg(rt, call, runner.verbs, signal))


def run_dial(runner: LegRunner, element: ET.Element, doc: Document, nouns: Mapping[str, DialNoun]) -> Step:
    """Execute one ``<Dial>`` on ``runner``'s leg and return what the call does next.

    ``nouns`` says what each noun does (:data:`voice.emulator.interpreter.DIAL_NOUNS`).
    """
    text = (element.text or "").strip()
    for noun in element:
        sole = nouns.get(noun.tag)
        if isinstance(sole, SoleNoun):
            if len(element) > 1 or text:
                runner.warn(12200, f"<{noun.tag}> must be the only noun of its <Dial>; other nouns ignored", doc.url)
            return sole.run(runner, element, noun, doc)
    # Bare text is a number to ring: <Dial>+15551234567</Dial>.
    targets = [RingTarget(text)] if text else []
    for noun in element:
        phone = nouns.get(noun.tag)
        if isinstance(phone, PhoneNoun):
            targets.append(phone.target(runner, noun, doc))
        else:
            runner.warn(12200, f"<Dial><{noun.tag}> is not emulated; skipped", doc.url)
    return _ring(runner, element, doc, targets)


def _ring(runner: LegRunner, element: ET.Element, doc: Document, targets: list[RingTarget]) -> Step:
    """Ring every phone at once, bridge the first that answers (and gets through its whisper), report."""
    call, parent = runner.call, runner.leg
    timeout = attr_float(element.get("timeout"), 30.0)
    time_limit = attr_float(element.get("timeLimit"), runner.rt.config.time_limit)
    caller_id = element.get("callerId") or parent.from_
    record = element.get("record", "do-not-record")
    action = DialAction(runner, element, doc)
    continue_with = action.continue_with
    report_after_caller_left = action.report_after_caller_left

    if not targets:
        runner.warn(12200, "<Dial> has nothing the emulator can dial", doc.url)
        return continue_with({"DialCallStatus": "failed", "DialCallDuration": "0", "DialBridged": "false"})

    runner.set_state("dialing")
    attempts = [_start_attempt(runner, target, caller_id) for target in targets]
    started = call.clock
    winner: _Attempt | None = None
    try:
        with runner.watching(*(a.child for a in attempts)):
            for attempt in attempts:
                if attempt.behavior is not None and attempt.behavior.kind == "busy":
                    call.note("app", "Dial", f"{attempt.target.number} is busy")
                    _end(runner, attempt, "busy")
            answering = sorted(
                (
                    a
                    for a in attempts
                    if a.behavior is not None and a.behavior.answers and a.behavior.answer_after < timeout
                ),
                key=lambda a: a.behavior.answer_after if a.behavior is not None else 0.0,
            )
            for attempt in answering:
                assert attempt.behavior is not None
                _ring_until(runner, attempts, started + attempt.behavior.answer_after)
                if attempt.child.live and _connect(runner, attempt):
                    winner = attempt
                    break
            if winner is None and any(a.child.live for a in attempts):
                _ring_until(runner, attempts, started + timeout)
            for attempt in attempts:
                if attempt is not winner and attempt.child.live:
                    if winner is None:
                        call.note("app", "Dial", f"{attempt.target.number} did not answer")
                    _end(runner, attempt, "no-answer" if winner is None else "canceled")
    except Interrupted as intr:
        # The caller's own leg was signalled while the reps' phones rang or a whisper ran.
        for attempt in attempts:
            _end(runner, attempt, "completed" if attempt.child.answered else "canceled")
        if isinstance(intr.signal, HangupSignal):
            report_after_caller_left(
                {
                    "DialCallStatus": "canceled",
                    "DialCallSid": attempts[-1].child.sid,
                    "DialCallDuration": "0",
                    "DialBridged": "false",
                }
            )
        raise

    if winner is None:
        statuses = {a.child.status for a in attempts}
        dial_status = "busy" if statuses == {"busy"} else "no-answer"
        tried = next((a for a in attempts if a.child.answered), attempts[0])
        return continue_with(
            {
                "DialCallStatus": dial_status,
                "DialCallSid": tried.child.sid,
                "DialCallDuration": "0",
                "DialBridged": "false",
            }
        )

    talk, caller_signal = _bridge(runner, winner, time_limit)
    params = {
        "DialCallStatus": "completed",
        "DialCallSid": winner.child.sid,
        "DialCallDuration": str(max(0, math.ceil(talk - 1e-9))),
        "DialBridged": "true",
    }
    if record != "do-not-record":
        recording = runner.store_recording(talk, None, "DialVerb")
        params.update(
            RecordingUrl=runner.rt.recording_url(recording.sid),
            RecordingSid=recording.sid,
            RecordingDuration=str(recording.duration),
        )
    if caller_signal is None:
        return continue_with(params)
    if isinstance(caller_signal.signal, HangupSignal):
        report_after_caller_left(params)
    elif isinstance(caller_signal.signal, RedirectSignal):
        action.report_after_redirect(params)
    raise caller_signal
