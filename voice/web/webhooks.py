"""The Twilio-facing endpoints. Each handler parses the request, delegates to the call service, renders TwiML.

Every failure still answers with valid TwiML (see ``on_error``): a 500 would make Twilio say "an application error
has occurred" and hang up on the caller.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from voice.bootstrap import Warmline
from voice.domain.replies import Acknowledge, Fallback, Goodbye, HoldMusic, LeaveQueue, Reply
from voice.services.calls import CallService
from voice.services.handoffs import HandoffService
from voice.services.queue import QueueService
from voice.web import forms
from voice.web.signature import SignatureRejected, verify_twilio_request
from voice.web.twiml import render
from voice.web.urls import request_url_builder

log = logging.getLogger(__name__)

bp = Blueprint("voice", __name__, url_prefix="/voice")


def _warmline() -> Warmline:
    warmline: Warmline = current_app.extensions["warmline"]
    return warmline


def _calls() -> CallService:
    return _warmline().calls


def _queue() -> QueueService:
    return _warmline().queue


def _handoffs() -> HandoffService:
    return _warmline().handoffs


def _handoff_id() -> int:
    return forms.number(request.args, "handoff")


def respond(reply: Reply) -> Response:
    return Response(render(reply, request_url_builder()), status=200, mimetype="text/xml")


@bp.before_request
def check_signature() -> None:
    settings = _warmline().settings
    verify_twilio_request(
        request, auth_token=settings.auth_token, public_url=settings.public_url, shared_key=settings.webhook_shared_key
    )


@bp.post("/incoming")
def incoming() -> Response:
    return respond(_calls().incoming(forms.incoming_call(request.form)))


@bp.post("/gather")
def gather() -> Response:
    return respond(_calls().caller_input(forms.call_sid(request.form), forms.caller_input(request.form)))


@bp.post("/whisper")
def whisper() -> Response:
    return respond(_calls().whisper(forms.offer_id(request.args), rep_call_sid=request.form.get("CallSid")))


@bp.post("/whisper/answer")
def whisper_answer() -> Response:
    return respond(_calls().whisper_answer(forms.offer_id(request.args), request.form.get("Digits")))


@bp.post("/dial-ended")
def dial_ended() -> Response:
    return respond(_calls().dial_ended(forms.offer_id(request.args)))


@bp.post("/hold")
def hold() -> Response:
    form = request.form
    return respond(_queue().hold(forms.call_sid(form), queue_seconds=forms.seconds(form, "QueueTime")))


@bp.post("/hold/choice")
def hold_choice() -> Response:
    return respond(_queue().hold_choice(forms.call_sid(request.form), digits=request.form.get("Digits")))


@bp.post("/queue-exit")
def queue_exit() -> Response:
    form = request.form
    result, waited = form.get("QueueResult", "error"), forms.seconds(form, "QueueTime")
    return respond(_queue().queue_exit(forms.call_sid(form), result=result, queue_seconds=waited))


@bp.post("/callback/answer")
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


@bp.post("/callback/status")
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


@bp.post("/connect")
def connect() -> Response:
    return respond(_calls().connect(forms.offer_id(request.args)))


@bp.post("/voicemail")
def voicemail() -> Response:
    form = request.form
    url, length = form.get("RecordingUrl", ""), forms.seconds(form, "RecordingDuration")
    return respond(_warmline().voicemail.saved(forms.call_sid(form), recording_url=url, duration_seconds=length))


@bp.post("/status")
def status() -> Response:
    form = request.form
    duration = forms.optional_seconds(form, "CallDuration")
    return respond(
        _calls().call_status(forms.call_sid(form), call_status=form.get("CallStatus", ""), duration_seconds=duration)
    )


# --- rep-to-rep hand-offs (voice.services.handoffs) -------------------------------------------------------------------


@bp.post("/handoff/rep-joins")
def handoff_rep_joins() -> Response:
    return respond(_handoffs().rep_joins(_handoff_id()))


@bp.post("/handoff/events")
def handoff_events() -> Response:
    form = request.form
    event, conference = form.get("StatusCallbackEvent", ""), form.get("ConferenceSid")
    return respond(
        _handoffs().conference_event(
            _handoff_id(), event=event, call_sid=form.get("CallSid", ""), conference_sid=conference
        )
    )


@bp.post("/handoff/hold-music")
def handoff_hold_music() -> Response:
    return respond(_handoffs().hold_music())


@bp.post("/handoff/whisper")
def handoff_whisper() -> Response:
    return respond(_handoffs().whisper(_handoff_id(), call_sid=forms.call_sid(request.form)))


@bp.post("/handoff/whisper/answer")
def handoff_whisper_answer() -> Response:
    return respond(_handoffs().whisper_answer(_handoff_id(), digits=request.form.get("Digits")))


@bp.post("/handoff/target-status")
def handoff_target_status() -> Response:
    form = request.form
    return respond(
        _handoffs().target_status(
            _handoff_id(), call_sid=forms.call_sid(form), call_status=form.get("CallStatus", "")
        )
    )


@bp.post("/handoff/rep-left")
def handoff_rep_left() -> Response:
    return respond(_handoffs().rep_left(_handoff_id()))


@bp.post("/handoff/caller-left")
def handoff_caller_left() -> Response:
    return respond(_handoffs().caller_left(_handoff_id()))


@bp.post("/handoff/after")
def handoff_after() -> Response:
    return respond(_handoffs().after_conversation(_handoff_id()))


@bp.post("/handoff/fallback")
def handoff_fallback() -> Response:
    return respond(_handoffs().fallback(_handoff_id()))


@bp.post("/handoff/announce")
def handoff_announce() -> Response:
    return respond(_handoffs().announcement(_handoff_id()))


# Which safe answer fits depends on whose leg asked: the rep's whisper leg must not dial the fallback number, and a
# waitUrl document may only use queue-safe verbs.
_REP_LEG_ENDPOINTS = frozenset(
    {
        "voice.whisper",
        "voice.whisper_answer",
        "voice.handoff_rep_joins",
        "voice.handoff_whisper",
        "voice.handoff_whisper_answer",
        "voice.handoff_rep_left",
    }
)
_QUIET_ENDPOINTS = frozenset(
    {"voice.status", "voice.callback_status", "voice.handoff_events", "voice.handoff_target_status",
     "voice.handoff_announce"}
)
_QUEUE_ENDPOINTS = frozenset({"voice.hold", "voice.hold_choice"})


@bp.errorhandler(SignatureRejected)
def on_forged(_error: SignatureRejected) -> tuple[str, int, dict[str, str]]:
    return "Forbidden: invalid X-Twilio-Signature\n", 403, {"Content-Type": "text/plain; charset=utf-8"}


@bp.errorhandler(Exception)
def on_error(error: Exception) -> Response:
    if isinstance(error, HTTPException) and error.code == 405:
        return Response(error.get_description(), status=405)
    endpoint = request.endpoint or ""
    if isinstance(error, forms.MalformedWebhook):
        log.error("malformed webhook on %s: %s", request.path, error)
    else:
        log.exception("webhook %s failed; answering with fallback TwiML", request.path)
    reply: Reply
    if endpoint in _REP_LEG_ENDPOINTS:
        reply = Goodbye(say=("Sorry, this call cannot be connected.",))
    elif endpoint in _QUEUE_ENDPOINTS:
        reply = LeaveQueue()  # the Enqueue action takes over and can use the full fallback
    elif endpoint == "voice.handoff_hold_music":
        reply = HoldMusic(music_url="", pause_seconds=10)  # keeps the caller holding; fetched again after
    elif endpoint in _QUIET_ENDPOINTS:
        reply = Acknowledge()
    else:
        reply = _caller_fallback(error)
    return respond(reply)


def _caller_fallback(error: Exception) -> Fallback:
    """config.yaml's fallback in the caller's language; exactly as configured if even that cannot be worked out."""
    try:
        form = request.form
        return _warmline().calls.fallback(call_sid=form.get("CallSid"), called=form.get("To"), cause=error)
    except Exception:  # the last resort must not fail: the caller would hear Twilio's "application error"
        log.exception("fallback for %s could not be localised; using config.yaml's text", request.path)
    settings = _warmline().settings.fallback
    return Fallback(
        apology=settings.apology,
        number=settings.number or None,
        voicemail_prompt=settings.voicemail_prompt,
        voicemail_max_length=settings.voicemail_max_length,
    )
