"""A call's own thread: run its top-level leg's TwiML to the end, then end every leg and report.

Three ways a call starts: an inbound call (:func:`run_inbound_call`), a REST-created call that
rings its callee first (:func:`run_outbound_call`), and a child leg redirected out of its
``<Dial>`` that goes on as a call of its own (:func:`run_detached_leg`).  Each gets the
:class:`~voice.emulator.runner.VerbTable` its runners interpret TwiML with
(:data:`voice.emulator.interpreter.VERBS`), so this module depends on no verb.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Literal

from voice.emulator.http import Document, DocumentProblem, new_session, parse_twiml
from voice.emulator.legs import EmulatedCall, HangupSignal, Leg, RedirectSignal, TwilioError
from voice.emulator.runner import Interrupted, LegEnded, LegRunner, VerbTable
from voice.emulator.runtime import Runtime

__all__ = ["AMD_SECONDS", "run_detached_leg", "run_inbound_call", "run_outbound_call"]

logger = logging.getLogger(__name__)


def _final_status(leg: Leg, signal: HangupSignal) -> str:
    if leg.answered:
        return "completed"
    return "canceled" if signal.status in ("completed", "canceled") else signal.status


def _run_call(rt: Runtime, call: EmulatedCall, verbs: VerbTable, body: Callable[[LegRunner], None]) -> None:
    """Thread body shared by inbound and outbound calls: run, then end every leg and report."""
    leg = call.root_leg
    session = new_session()
    runner = LegRunner(rt, call, leg, call.inputs, verbs=verbs, session=session)
    status = "completed"
    try:
        with runner.deadline(rt.config.time_limit, leg, HangupSignal("limit")):
            body(runner)
    except LegEnded as ended:
        status = ended.status
    except Interrupted as intr:
        if intr.leg is leg and isinstance(intr.signal, HangupSignal):
            status = _final_status(leg, intr.signal)
            call.note("app", "Hangup", f"hung up ({intr.signal.by})")
        else:  # pragma: no cover - a signal escaped the verb that should have handled it
            logger.error("unhandled signal %r on %s", intr.signal, intr.leg)
            call.record_error(TwilioError(0, f"emulator: unhandled {intr.signal!r}", None, leg.sid, call.clock))
    except Exception as exc:  # pragma: no cover - emulator bug; report it on the call instead of dying
        logger.exception("emulator failure on %s", call.sid)
        call.record_error(TwilioError(0, f"emulator internal error: {exc!r}", None, leg.sid, call.clock))
        status = "failed"
    finally:
        try:
            for child in call.child_legs():
                # A child redirected out of its <Dial> lives on in a call of its own (child.call).
                if child.live and child.call is call:
                    child.finish("completed" if child.answered else "canceled", call.clock)
            leg.finish(status, call.clock)
            runner.leg_event(leg, "completed")
            rt.conferences.call_ended(leg)
        finally:
            call.note("app", "Hangup", f"call ended: {status}")
            call.mark_finished()
            session.close()


def run_inbound_call(rt: Runtime, call: EmulatedCall, verbs: VerbTable, voice_url: str, method: str) -> None:
    """An inbound call: Twilio requests the number's voice URL with ``CallStatus=ringing``."""

    def body(runner: LegRunner) -> None:
        runner.drive(lambda: runner.fetch(voice_url, method, runner.leg_params(), "voice"))

    _run_call(rt, call, verbs, body)


def run_detached_leg(rt: Runtime, call: EmulatedCall, verbs: VerbTable, signal: RedirectSignal) -> None:
    """A child leg redirected out of its ``<Dial>``: it runs the new TwiML on its own from now on."""

    def body(runner: LegRunner) -> None:
        runner.drive(functools.partial(runner.redirect_document, signal))

    _run_call(rt, call, verbs, body)


#: How long synchronous answering machine detection listens after pick-up before the answer URL is fetched.
AMD_SECONDS = 2.5


def run_outbound_call(
    rt: Runtime,
    call: EmulatedCall,
    verbs: VerbTable,
    *,
    url: str | None,
    method: str,
    twiml: str | None,
    ring_timeout: float,
    answer: Literal["answer", "busy", "no-answer"],
    answer_after: float = 0.0,
    answered_by: str | None = None,
) -> None:
    """A REST-created call: ring the callee, then run ``url`` (or ``twiml``) once answered.

    ``answered_by``: the call asked for answering machine detection; as with Twilio's synchronous detection, the
    answer URL is fetched only once it has listened (:data:`AMD_SECONDS`), with ``AnsweredBy`` and
    ``MachineDetectionDuration``."""
    target: dict[str, str | None] = {"url": url, "method": method, "twiml": twiml}

    def ring(runner: LegRunner, seconds: float) -> None:
        until = runner.call.clock + seconds
        while True:
            try:
                runner.advance(until - runner.call.clock)
                return
            except Interrupted as intr:
                signal = intr.signal
                if intr.leg is runner.leg and isinstance(signal, RedirectSignal):
                    # Updating a call before it is answered changes what runs when it is.
                    target.update(url=signal.url, method=signal.method, twiml=signal.twiml)
                    continue
                raise

    def body(runner: LegRunner) -> None:
        leg = runner.leg
        runner.leg_event(leg, "initiated")
        leg.status = "ringing"
        runner.leg_event(leg, "ringing")
        if answer == "busy":
            call.note("app", "Dial", f"{leg.to} is busy")
            raise LegEnded("busy", "reject")
        if answer == "no-answer" or answer_after >= ring_timeout:
            # A rep who would pick up only after the ring timeout never gets the chance.
            ring(runner, ring_timeout)
            call.note("app", "Dial", f"{leg.to} did not answer")
            raise LegEnded("no-answer", "reject")
        ring(runner, answer_after)
        runner.answer()
        runner.leg_event(leg, "answered")

        def first_document() -> Document:
            inline, url = target["twiml"], target["url"]
            if inline is not None:
                parsed = parse_twiml(inline.encode("utf-8"), rt.webhooks.public_url + "/")
                if isinstance(parsed, DocumentProblem):
                    runner.app_error(parsed.code, parsed.message, None)
                return parsed
            assert url is not None
            params = runner.leg_params()
            if answered_by is not None:
                runner.advance(AMD_SECONDS)
                params.update(AnsweredBy=answered_by, MachineDetectionDuration=str(int(AMD_SECONDS * 1000)))
            return runner.fetch(url, target["method"], params, "voice (outbound)")

        runner.drive(first_document)

    _run_call(rt, call, verbs, body)
