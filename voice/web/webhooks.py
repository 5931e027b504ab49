"""The Twilio-facing endpoints. Each handler parses the request, delegates to a service, renders TwiML.

Every route is registered with :func:`webhook`, which names its ``Endpoint`` (its URL) and the ``Leg`` it answers
for: when a handler fails, ``voice.web.errors`` answers with the TwiML that is safe for that leg (a 500 would make
Twilio say "an application error has occurred" and hang up on the caller). The signature is checked before
anything else, and a request whose signature has not checked out gets 403 or 413 and nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, Response, request

from crm_sync.db import again_after_deadlock
from voice.services.calls import CallService
from voice.services.handoffs import HandoffService
from voice.services.queue import QueueService
from voice.web import forms
from voice.web.errors import Leg, webhook_failure
from voice.web.parts import app_parts
from voice.web.signature import verify_twilio_request
from voice.web.twiml import respond
from voice.web.urls import Endpoint

bp = Blueprint("voice", __name__)

View = TypeVar("View", bound=Callable[[], Response])

#: Flask endpoint name -> the leg its route answers for; filled by :func:`webhook`, read when a handler fails.
LEGS: dict[str, Leg] = {}


def webhook(endpoint: Endpoint, leg: Leg) -> Callable[[View], View]:
    """Register the view Twilio POSTs ``endpoint`` to; ``leg``: whose call it answers for (see ``Leg``)."""

    def register(view: View) -> View:
        # A webhook that PostgreSQL picks as a deadlock's victim runs again rather than falling back: its
        # transaction was rolled back whole and nothing is sent before a commit (ARCHITECTURE.md, "A deadlock
        # victim runs again").
        def view_again_after_deadlock() -> Response:
            return again_after_deadlock(view)

        bp.add_url_rule(endpoint.path, endpoint.view_name, view_again_after_deadlock, methods=["POST"])
        LEGS[f"{bp.name}.{endpoint.view_name}"] = leg
        return view

    return register


def _calls() -> CallService:
    return app_parts().calls


def _queue() -> QueueService:
    return app_parts().queue


def _handoffs() -> HandoffService:
    return app_parts().handoffs


def _handoff_id() -> int:
    return forms.number(request.args, "handoff")


@bp.before_request
def check_signature() -> None:
    settings = app_parts().settings
    verify_twilio_request(
        request, auth_token=settings.auth_token, public_url=settings.public_url, shared_key=settings.webhook_shared_key
    )


@bp.errorhandler(Exception)
def on_error(error: Exception) -> Response:
    return webhook_failure(error, LEGS[request.endpoint or ""])


@webhook(Endpoint.INCOMING, Leg.CALLER)
def incoming() -> Response:
    return respond(_calls().incoming(forms.incoming_call(request.form)))


@webhook(Endpoint.GATHER, Leg.CALLER)
def gather() -> Response:
    return respond(_calls().caller_input(forms.call_sid(request.form), forms.caller_input(request.form)))


@webhook(Endpoint.WHISPER, Leg.REP)
def whisper() -> Response:
    return respond(_calls().whisper(forms.offer_id(request.args), rep_call_sid=request.form.get("CallSid")))


@webhook(Endpoint.WHISPER_ANSWER, Leg.REP)
def whisper_answer() -> Response:
    return respond(_calls().whisper_answer(forms.offer_id(request.args), request.form.get("Digits")))


@webhook(Endpoint.DIAL_ENDED, Leg.CALLER_AFTER_DIAL)
def dial_ended() -> Response:
    return respond(_calls().dial_ended(forms.offer_id(request.args)))


@webhook(Endpoint.HOLD, Leg.QUEUE_HOLD)
def hold() -> Response:
    form = request.form
    return respond(_queue().hold(forms.call_sid(form), queue_seconds=forms.seconds(form, "QueueTime")))


@webhook(Endpoint.HOLD_CHOICE, Leg.QUEUE_HOLD)
def hold_choice() -> Response:
    return respond(_queue().hold_choice(forms.call_sid(request.form), digits=request.form.get("Digits")))


@webhook(Endpoint.QUEUE_EXIT, Leg.CALLER)
def queue_exit() -> Response:
    form = request.form
    result, waited = form.get("QueueResult", "error"), forms.seconds(form, "QueueTime")
    return respond(_queue().queue_exit(forms.call_sid(form), result=result, queue_seconds=waited))


@webhook(Endpoint.CALLBACK_ANSWER, Leg.CALLER)
def callback_answer() -> Response:
    form = request.form
    return respond(
        _queue().callback_answered(
            forms.number(request.args, "callback"),
            attempt=forms.optional_number(request.args, "attempt"),
            call_sid=forms.call_sid(form),
            answered_by=form.get("AnsweredBy"),
        )
    )


@webhook(Endpoint.CALLBACK_STATUS, Leg.STATUS)
def callback_status() -> Response:
    form = request.form
    return respond(
        _queue().callback_status(
            forms.number(request.args, "callback"),
            attempt=forms.optional_number(request.args, "attempt"),
            call_sid=forms.call_sid(form),
            call_status=form.get("CallStatus", ""),
            duration=forms.optional_seconds(form, "CallDuration"),
        )
    )


@webhook(Endpoint.CONNECT, Leg.CALLER)
def connect() -> Response:
    return respond(_calls().connect(forms.offer_id(request.args)))


@webhook(Endpoint.VOICEMAIL, Leg.CALLER)
def voicemail() -> Response:
    form = request.form
    url, length = form.get("RecordingUrl", ""), forms.seconds(form, "RecordingDuration")
    return respond(app_parts().voicemail.saved(forms.call_sid(form), recording_url=url, duration_seconds=length))


@webhook(Endpoint.STATUS, Leg.STATUS)
def status() -> Response:
    form = request.form
    duration, caller, called = forms.optional_seconds(form, "CallDuration"), form.get("From"), form.get("To")
    return respond(
        _calls().call_status(
            forms.call_sid(form),
            call_status=form.get("CallStatus", ""),
            duration_seconds=duration,
            caller=caller,
            called=called,
        )
    )


# --- rep-to-rep hand-offs (voice.services.handoffs) -------------------------------------------------------------------


@webhook(Endpoint.HANDOFF_REP_JOINS, Leg.REP)
def handoff_rep_joins() -> Response:
    return respond(_handoffs().rep_joins(_handoff_id()))


@webhook(Endpoint.HANDOFF_EVENTS, Leg.STATUS)
def handoff_events() -> Response:
    form = request.form
    event, conference = form.get("StatusCallbackEvent", ""), form.get("ConferenceSid")
    return respond(
        _handoffs().conference_event(
            _handoff_id(), event=event, call_sid=form.get("CallSid", ""), conference_sid=conference
        )
    )


@webhook(Endpoint.HANDOFF_HOLD_MUSIC, Leg.CONFERENCE_HOLD)
def handoff_hold_music() -> Response:
    return respond(_handoffs().hold_music())


@webhook(Endpoint.HANDOFF_WHISPER, Leg.REP)
def handoff_whisper() -> Response:
    return respond(_handoffs().whisper(_handoff_id(), call_sid=forms.call_sid(request.form)))


@webhook(Endpoint.HANDOFF_WHISPER_ANSWER, Leg.REP)
def handoff_whisper_answer() -> Response:
    return respond(_handoffs().whisper_answer(_handoff_id(), digits=request.form.get("Digits")))


@webhook(Endpoint.HANDOFF_TARGET_STATUS, Leg.STATUS)
def handoff_target_status() -> Response:
    form = request.form
    return respond(
        _handoffs().target_status(_handoff_id(), call_sid=forms.call_sid(form), call_status=form.get("CallStatus", ""))
    )


@webhook(Endpoint.HANDOFF_REP_LEFT, Leg.REP)
def handoff_rep_left() -> Response:
    return respond(_handoffs().rep_left(_handoff_id()))


@webhook(Endpoint.HANDOFF_CALLER_LEFT, Leg.CALLER)
def handoff_caller_left() -> Response:
    return respond(_handoffs().caller_left(_handoff_id()))


@webhook(Endpoint.HANDOFF_AFTER, Leg.CALLER)
def handoff_after() -> Response:
    return respond(_handoffs().after_conversation(_handoff_id()))


@webhook(Endpoint.HANDOFF_FALLBACK, Leg.CALLER)
def handoff_fallback() -> Response:
    return respond(_handoffs().fallback(_handoff_id()))


@webhook(Endpoint.HANDOFF_ANNOUNCE, Leg.STATUS)
def handoff_announce() -> Response:
    return respond(_handoffs().announcement(_handoff_id()))
