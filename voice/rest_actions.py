"""Carrying out ``voice.actions`` through Twilio's REST API, on the background pool, and feeding failures back.

A pull whose call is already gone (the caller hung up and the queue's own callbacks were lost) closes the
interaction and hands the rep the next caller; a callback Twilio refuses to place counts as an unanswered attempt;
a call checked for a lost status callback is closed if Twilio says it is over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from twilio.base.exceptions import TwilioRestException

from voice.actions import (
    Action,
    AnnounceToParticipant,
    CheckCall,
    DialHandoffTarget,
    EndCall,
    HoldParticipant,
    PlaceCallback,
    PullCaller,
    RedirectCall,
)
from voice.calls import FINAL_CALL_STATUSES, CallService
from voice.config import Settings
from voice.queueing import QueueService
from voice.twilio_rest import TwilioRest, call_is_gone
from voice.twiml import UrlFor

log = logging.getLogger(__name__)


def describe(action: Action) -> str:
    return type(action).__name__ + (f" {action.call_sid}" if hasattr(action, "call_sid") else "")


@dataclass
class RestActions:
    rest: TwilioRest
    urls: UrlFor
    queue: QueueService
    calls: CallService
    settings: Settings

    def perform(self, action: Action) -> None:
        match action:
            case PullCaller(call_sid=call_sid, offer_id=offer_id):
                try:
                    self.rest.redirect_call(call_sid, self.urls("voice.connect", offer=offer_id))
                except TwilioRestException as exc:
                    log.warning("pull of %s failed: %s", call_sid, exc.msg)
                    self.queue.pull_failed(offer_id, call_gone=call_is_gone(exc))
            case PlaceCallback():
                try:
                    self.rest.create_call(
                        to=action.to,
                        from_=action.from_,
                        url=self.urls("voice.callback_answer", callback=action.callback_id),
                        status_callback=self.urls("voice.callback_status", callback=action.callback_id),
                        timeout=action.timeout,
                    )
                except TwilioRestException as exc:
                    log.warning("callback %s could not be placed: %s", action.callback_id, exc.msg)
                    self.queue.callback_failed(action.callback_id, reason=str(exc.code or exc.status))
            case RedirectCall(call_sid=call_sid, endpoint=endpoint, params=params):
                self.rest.redirect_call(call_sid, self.urls(endpoint, **params))
            case EndCall(call_sid=call_sid):
                try:
                    self.rest.hang_up(call_sid)
                except TwilioRestException as exc:
                    if not call_is_gone(exc):
                        raise
            case CheckCall(call_sid=call_sid):
                facts = self.rest.fetch_call(call_sid)
                if facts.status in FINAL_CALL_STATUSES:
                    log.warning("call %s had ended (%s) without a status callback reaching us", call_sid, facts.status)
                    self.calls.call_status(call_sid, call_status=facts.status, duration_seconds=facts.duration)
            case HoldParticipant() | AnnounceToParticipant() | DialHandoffTarget():
                raise NotImplementedError(type(action).__name__)  # hand-offs: voice.handoffs
