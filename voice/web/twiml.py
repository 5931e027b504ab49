"""The only place TwiML is built: each ``Reply`` becomes a twilio ``VoiceResponse`` object tree."""

from __future__ import annotations

from flask import Response
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from ivr_flows import Gather as GatherAction
from ivr_flows import Hangup as HangupAction
from ivr_flows import Record as RecordAction
from voice.domain.replies import (
    Acknowledge,
    AfterHandoff,
    Announcement,
    Bridge,
    ConferenceLeg,
    DialRep,
    EnqueueCaller,
    Fallback,
    FlowReply,
    Goodbye,
    HandoffWhisper,
    HoldLoop,
    HoldMusic,
    HoldThrough,
    JoinConference,
    LeaveQueue,
    Reply,
    Voicemail,
    Whisper,
)
from voice.web.urls import CallbackUrls, Endpoint, request_urls

# Twilio caps speech hints; long hint lists also slow recognition down.
MAX_HINTS = 100


#: Where a hand-off leg's <Dial> goes when its conference is over: the caller's, to what comes after the
#: conversation; a rep's, to the next step of the hand-off.
_AFTER_CONFERENCE: dict[ConferenceLeg, Endpoint] = {
    "caller": Endpoint.HANDOFF_CALLER_LEFT,
    "from": Endpoint.HANDOFF_REP_LEFT,
    "to": Endpoint.HANDOFF_REP_LEFT,
}

# Replies that carry no per-call identifier (greetings, questions, hold loops) repeat across calls: rendering one is
# most of a webhook's CPU after the database, so identical (reply, base URL) pairs are rendered once.
_CACHEABLE = (
    FlowReply,
    EnqueueCaller,
    HoldLoop,
    HoldMusic,
    LeaveQueue,
    Bridge,
    Goodbye,
    Voicemail,
    Fallback,
    Acknowledge,
)


_RENDERED: dict[tuple[Reply, str], str] = {}
_RENDERED_MAX = 4096


def respond(reply: Reply) -> Response:
    """The answer to this webhook request: ``reply`` as TwiML, its URLs under the base URL Twilio calls."""
    return Response(render(reply, request_urls()), status=200, mimetype="text/xml")


def render(reply: Reply, urls: CallbackUrls) -> str:
    if not isinstance(reply, _CACHEABLE):
        return _render(reply, urls)
    key = (reply, urls.base)
    document = _RENDERED.get(key)
    if document is None:
        document = _render(reply, urls)
        if len(_RENDERED) >= _RENDERED_MAX:
            _RENDERED.clear()  # crude but bounded; the common documents come straight back
        _RENDERED[key] = document
    return document


def _render(reply: Reply, urls: CallbackUrls) -> str:
    response = VoiceResponse()
    match reply:
        case FlowReply(step=step):
            _say_all(response, step.say, step.language, step.voice)
            action = step.action
            if isinstance(action, GatherAction):
                _gather(response, action, step.language, step.voice, urls)
            elif isinstance(action, HangupAction):
                response.hangup()
            elif isinstance(action, RecordAction):
                _record(
                    response,
                    urls,
                    action.max_length,
                    no_message=action.no_message,
                    language=step.language,
                    voice=step.voice,
                )
        case DialRep():
            _say_all(response, reply.say, reply.language, reply.voice)
            dial = Dial(
                action=urls(Endpoint.DIAL_ENDED, offer=reply.targets[0][0]),
                method="POST",
                timeout=reply.ring_timeout,
                answer_on_bridge=True,
                caller_id=reply.caller_id,
            )
            # Several numbers ring at once; the first to answer hears the whisper, Twilio hangs up the others.
            for offer_id, phone in reply.targets:
                dial.number(phone, url=urls(Endpoint.WHISPER, offer=offer_id), method="POST")
            response.append(dial)
        case EnqueueCaller():
            _say_all(response, reply.say, reply.language, reply.voice)
            response.enqueue(
                reply.queue_name,
                action=urls(Endpoint.QUEUE_EXIT),
                method="POST",
                wait_url=urls(Endpoint.HOLD),
                wait_url_method="POST",
            )
        case HoldLoop():
            # Only Say/Play/Pause/Gather/Redirect/Leave/Hangup are allowed in a waitUrl document. One announcement
            # per turn at most, and the key offer inside the same Gather, so announcements never overlap.
            texts = [text for text in (reply.announcement, reply.choice_prompt) if text]
            if reply.choice_prompt:
                gather = Gather(input="dtmf", num_digits=1, timeout=3, action=urls(Endpoint.HOLD_CHOICE), method="POST")
                for text in texts:
                    gather.say(text, language=reply.language, voice=reply.voice)
                response.append(gather)
            else:
                _say_all(response, tuple(texts), reply.language, reply.voice)
            if reply.music_url:
                response.play(reply.music_url)
            else:
                response.pause(length=reply.pause_seconds)
        case LeaveQueue():
            _say_all(response, reply.say, reply.language, reply.voice)
            response.leave()
        case Whisper():
            # No key pressed: the Gather falls through, the rep leg ends unbridged, the Dial moves on.
            answer_url = urls(Endpoint.WHISPER_ANSWER, offer=reply.offer_id)
            _whisper(response, reply, action=answer_url, no_key="No key pressed. Passing the call on.")
        case JoinConference():
            _say_all(response, reply.say, reply.language, reply.voice)
            dial = Dial(action=urls(_AFTER_CONFERENCE[reply.label], handoff=reply.handoff_id), method="POST")
            dial.conference(
                reply.room,
                start_conference_on_enter=reply.starts,
                end_conference_on_exit=reply.ends,
                beep=False,
                participant_label=reply.label,
                wait_url=urls(Endpoint.HANDOFF_HOLD_MUSIC),
                wait_method="POST",
                status_callback=urls(Endpoint.HANDOFF_EVENTS, handoff=reply.handoff_id),
                status_callback_event="start end join leave",
                status_callback_method="POST",
            )
            response.append(dial)
        case HoldMusic():
            # Conference wait/hold documents: Say, Play, Pause, Redirect only. Twilio plays them once; the Redirect
            # back to the same URL is what keeps the music going (silence otherwise).
            if reply.music_url:
                response.play(reply.music_url)
            else:
                response.say("Please hold.")
                response.pause(length=reply.pause_seconds)
            response.redirect(urls(Endpoint.HANDOFF_HOLD_MUSIC), method="POST")
        case HandoffWhisper():
            answer_url = urls(Endpoint.HANDOFF_WHISPER_ANSWER, handoff=reply.handoff_id)
            _whisper(response, reply, action=answer_url, no_key="No key pressed. Goodbye.")
        case Announcement():
            response.say(reply.text, language=reply.language, voice=reply.voice)
        case Bridge() | Acknowledge():
            pass
        case HoldThrough(failures=failures, pause_seconds=pause):
            response.pause(length=pause)
            response.redirect(urls(Endpoint.HOLD, failures=failures), method="POST")
        case AfterHandoff(handoff_id=handoff_id):
            response.redirect(urls(Endpoint.HANDOFF_AFTER, handoff=handoff_id), method="POST")
        case Goodbye():
            _say_all(response, reply.say, reply.language, reply.voice)
            response.hangup()
        case Voicemail():
            _say_all(response, reply.say, reply.language, reply.voice)
            _record(
                response,
                urls,
                reply.max_length,
                no_message=reply.no_message,
                language=reply.language,
                voice=reply.voice,
            )
        case Fallback():
            response.say(reply.apology, language=reply.language, voice=reply.voice)
            if reply.number:
                response.dial(reply.number)
            else:
                response.say(reply.voicemail_prompt, language=reply.language, voice=reply.voice)
                _record(
                    response,
                    urls,
                    reply.voicemail_max_length,
                    no_message=reply.no_message,
                    language=reply.language,
                    voice=reply.voice,
                )
    return str(response)


def _whisper(response: VoiceResponse, reply: Whisper | HandoffWhisper, *, action: str, no_key: str) -> None:
    """A rep's whisper: the summary inside a one-key Gather, then (no key) ``no_key`` and the rep leg hangs up."""
    gather = Gather(input="dtmf", num_digits=1, timeout=reply.timeout, action=action, method="POST")
    gather.say(reply.summary, language=reply.language, voice=reply.voice)
    response.append(gather)
    response.say(no_key, language=reply.language, voice=reply.voice)
    response.hangup()


def _say_all(response: VoiceResponse, texts: tuple[str, ...], language: str, voice: str | None) -> None:
    for text in texts:
        if text.strip():
            response.say(text, language=language, voice=voice)


def _gather(
    response: VoiceResponse, action: GatherAction, language: str, voice: str | None, urls: CallbackUrls
) -> None:
    target = urls(Endpoint.GATHER)
    gather = Gather(
        input=action.input,
        action=target,
        method="POST",
        timeout=action.timeout,
        num_digits=action.num_digits,
        language=language,
        speech_timeout=action.speech_timeout if "speech" in action.input else None,
        hints=", ".join(action.hints[:MAX_HINTS]) if action.hints and "speech" in action.input else None,
    )
    gather.say(action.prompt, language=language, voice=voice)
    response.append(gather)
    # Silence makes Twilio fall through past the Gather: come back to the same action with no input.
    response.redirect(target, method="POST")


def _record(
    response: VoiceResponse,
    urls: CallbackUrls,
    max_length: int,
    *,
    no_message: str,
    language: str | None,
    voice: str | None,
) -> None:
    response.record(action=urls(Endpoint.VOICEMAIL), method="POST", max_length=max_length, play_beep=True)
    # No recording (silence): Twilio goes on to the next verb.
    response.say(no_message, language=language, voice=voice)
    response.hangup()
