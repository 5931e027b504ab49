"""Carrying out ``voice.domain.actions`` after their transaction committed, on the background pool: Twilio's REST
API, and voicemail transcription; failures are fed back to the services.

A pull whose call is already gone (the caller hung up and the queue's own callbacks were lost) closes the
interaction and hands the rep the next caller; a callback Twilio refuses to place counts as an unanswered attempt;
a call checked for a lost status callback is closed if Twilio says it is over; a call Twilio lists that the store
never heard of is recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from twilio.base.exceptions import TwilioRestException

from voice.adapters.transcription import Transcription
from voice.adapters.twilio_rest import BackgroundRunner, CallFacts, TwilioRest, call_is_gone
from voice.domain.actions import (
    Action,
    AnnounceToParticipant,
    CheckCall,
    DialHandoffTarget,
    EndCall,
    FindUnrecordedCalls,
    HandoffStep,
    HoldParticipant,
    PlaceCallback,
    PullCaller,
    RedirectHandoffLeg,
    TranscribeVoicemail,
)
from voice.services.calls import FINAL_CALL_STATUSES, CallService
from voice.services.context import Flows
from voice.services.handoffs import HandoffService
from voice.services.queue import QueueService
from voice.services.voicemail import VoicemailService
from voice.web.urls import CallbackUrls, Endpoint

log = logging.getLogger(__name__)


def describe(action: Action) -> str:
    return type(action).__name__ + (f" {action.call_sid}" if hasattr(action, "call_sid") else "")


#: Where each step of a hand-off fetches its TwiML.
_HANDOFF_ENDPOINTS = {
    HandoffStep.JOIN_CONFERENCE: Endpoint.HANDOFF_REP_JOINS,
    HandoffStep.AFTER_CONVERSATION: Endpoint.HANDOFF_AFTER,
    HandoffStep.FIND_SOMEONE_ELSE: Endpoint.HANDOFF_FALLBACK,
}


@dataclass
class ActionRunner:
    pool: BackgroundRunner
    rest: TwilioRest
    urls: CallbackUrls
    flows: Flows
    transcription: Transcription
    queue: QueueService
    calls: CallService
    handoffs: HandoffService
    voicemail: VoicemailService

    def submit(self, action: Action) -> None:
        """Carry ``action`` out on the background pool (never on a webhook's response path)."""
        self.pool.submit(describe(action), self.perform, action)

    def perform(self, action: Action) -> None:
        match action:
            case PullCaller(call_sid=call_sid, offer_id=offer_id):
                try:
                    self.rest.redirect_call(call_sid, self.urls(Endpoint.CONNECT, offer=offer_id))
                except TwilioRestException as exc:
                    log.warning("pull of %s failed: %s", call_sid, exc.msg)
                    self.queue.pull_failed(offer_id, call_gone=call_is_gone(exc))
            case PlaceCallback():
                try:
                    self.rest.create_call(
                        to=action.to,
                        from_=action.from_,
                        url=self.urls(Endpoint.CALLBACK_ANSWER, callback=action.callback_id, attempt=action.attempt),
                        status_callback=self.urls(
                            Endpoint.CALLBACK_STATUS, callback=action.callback_id, attempt=action.attempt
                        ),
                        timeout=action.timeout,
                        detect_machines=action.detect_machines,
                    )
                except TwilioRestException as exc:
                    log.warning("callback %s could not be placed: %s", action.callback_id, exc.msg)
                    self.queue.callback_failed(action.callback_id, reason=str(exc.code or exc.status))
            case RedirectHandoffLeg(call_sid=call_sid, handoff_id=handoff_id, to=step):
                try:
                    self.rest.redirect_call(call_sid, self.urls(_HANDOFF_ENDPOINTS[step], handoff=handoff_id))
                except TwilioRestException as exc:
                    if step is HandoffStep.JOIN_CONFERENCE:
                        log.warning("hand-off %s: rep leg %s could not be moved: %s", handoff_id, call_sid, exc.msg)
                        self.handoffs.move_failed(handoff_id, reason=exc.msg)
                    elif call_is_gone(exc):  # the party hung up first: nothing left to redirect
                        log.info("redirect of %s to %s skipped: the call is over", call_sid, step)
                    else:
                        raise
            case EndCall(call_sid=call_sid):
                try:
                    self.rest.hang_up(call_sid)
                except TwilioRestException as exc:
                    if not call_is_gone(exc):
                        raise
            case CheckCall(call_sid=call_sid):
                try:
                    facts = self.rest.fetch_call(call_sid)
                except TwilioRestException as exc:
                    if not call_is_gone(exc):
                        raise
                    # Twilio does not know the call (any more): it is over, whatever we missed of it.
                    facts = CallFacts(status="completed", duration=None)
                if facts.status in FINAL_CALL_STATUSES:
                    log.warning("call %s had ended (%s) without a status callback reaching us", call_sid, facts.status)
                    self.calls.call_status(call_sid, call_status=facts.status, duration_seconds=facts.duration)
            case FindUnrecordedCalls(started_after=started_after):
                ended = self.rest.ended_inbound_calls(started_after=started_after, statuses=FINAL_CALL_STATUSES)
                self.calls.record_unrecorded(ended)
            case HoldParticipant(conference=conference, call_sid=call_sid, hold=hold):
                sid = self._conference_sid(conference)
                if sid is not None:
                    music = self.urls(Endpoint.HANDOFF_HOLD_MUSIC)
                    self.rest.hold_participant(sid, call_sid, hold=hold, hold_url=music)
            case AnnounceToParticipant(conference=conference, call_sid=call_sid, handoff_id=handoff_id):
                sid = self._conference_sid(conference)
                if sid is not None:
                    url = self.urls(Endpoint.HANDOFF_ANNOUNCE, handoff=handoff_id)
                    self.rest.announce_to_participant(sid, call_sid, url)
            case TranscribeVoicemail(call_sid=call_sid, recording_url=url, flow_name=name, flow_version=version):
                transcript = self.transcription.transcribe(url, self.flows.version(version, name=name))
                self.voicemail.store_transcript(
                    call_sid,
                    text=transcript.text,
                    engine=transcript.engine,
                    confidence=transcript.confidence,
                    error=transcript.error,
                )
            case DialHandoffTarget():
                try:
                    self.rest.create_call(
                        to=action.to,
                        from_=action.from_,
                        url=self.urls(Endpoint.HANDOFF_WHISPER, handoff=action.handoff_id),
                        status_callback=self.urls(Endpoint.HANDOFF_TARGET_STATUS, handoff=action.handoff_id),
                        timeout=action.timeout,
                    )
                except TwilioRestException as exc:
                    log.warning("hand-off %s: could not ring %s: %s", action.handoff_id, action.to, exc.msg)
                    self.handoffs.target_unreachable(action.handoff_id, reason=exc.msg)

    def _conference_sid(self, conference: str) -> str | None:
        """Conferences are addressed by Sid; before its first status callback we only know its name."""
        if conference.startswith("CF"):
            return conference
        sid = self.rest.conference_sid(conference)
        if sid is None:
            log.warning("conference %s is not live any more", conference)
        return sid
