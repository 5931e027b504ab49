"""``<Dial><Conference>``: one leg's life as a conference participant.

The leg joins the room (:mod:`voice.emulator.conferences` keeps the room), then loops on its
own *view* of it until it leaves:

* room not started yet: the ``waitUrl`` audio (Twilio's hold music when there is none, nothing
  for ``waitUrl=""``);
* on hold: the ``holdUrl`` audio (Twilio's hold music when there is none);
* started: the people it can hear, or silence;
* an announcement (``AnnounceUrl``) interrupts whichever of those for its duration.

``waitUrl``/``holdUrl``/``announceUrl`` documents are ``"conference audio"`` documents: they may
use only ``<Say>``, ``<Play>``, ``<Pause>`` and ``<Redirect>`` (others are skipped with error
13238; see :data:`voice.emulator.interpreter.VERBS`).  Per the ``<Conference>`` docs, "once
the TwiML document located at the waitUrl runs out of verbs to execute, silence will be played":
a document does not loop by itself, only a ``<Redirect>`` loops it.  The emulator treats holdUrl
documents the same way (the Participant docs say nothing else), and records the silence.

Every change of what the party hears is written to the call's transcript as a ``Conference``
entry (``event="hears"``), which is what :meth:`EmulatedCall.hearing`,
:meth:`~EmulatedCall.connected_with` and :meth:`~EmulatedCall.silence_seconds` read.

Leaving, and what the call does next (``<Dial>`` action parameters: ``DialCallStatus`` only —
``DialCallSid`` and ``DialCallDuration`` are not sent after dialing a conference):

* the room ended, or the participant was kicked (Participant delete): the ``<Dial>`` ends and
  the call continues at the action (``DialCallStatus=completed``), or with the next verb;
* the party hung up (script talk time, ``hang_up``, REST ``Status=completed``): the action is
  requested and its TwiML ignored;
* the call was redirected through the REST API: the action is requested, its TwiML ignored,
  and the call runs the new TwiML;
* ``<Dial timeLimit>`` ran out: out of the room, on at the action;
* the waitUrl could not be fetched ("the Conference will not be fully established"): on at the
  action with ``DialCallStatus=failed`` (the status is the emulator's choice).

A party's script talk time (``CallerScript.talk_seconds``, ``RepBehavior.talk_seconds``) counts
from the moment it joins the room; ``None`` keeps it there until something else ends it.
"""

from __future__ import annotations

import contextlib
import functools
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from voice.emulator.conferences import (
    BEEP_VALUES,
    CONFERENCE_EVENTS,
    DEFAULT_CONFERENCE_EVENTS,
    MAX_PARTICIPANTS,
    Announcement,
    JoinOptions,
    JoinRefused,
    Participant,
    ParticipantView,
    Removal,
    label_problem,
)
from voice.emulator.dial import DialAction
from voice.emulator.http import Document, DocumentProblem, parse_document
from voice.emulator.legs import CONFERENCE_VERB, CallbackSpec, HangupSignal, LeaveSignal, RedirectSignal
from voice.emulator.runner import (
    DEFAULT_HOLD_MUSIC,
    Interrupted,
    LegEnded,
    LegRunner,
    Step,
    Woken,
    attr_bool,
    attr_float,
    spoken_seconds,
)

__all__ = ["conference_twiml", "run_conference_dial"]

_HEARS_TEXT: Final = {
    "wait-audio": "hears the conference wait audio",
    "hold-audio": "hears the hold audio",
    "announcement": "hears an announcement",
    "silence": "hears nothing (silence)",
}


class _WaitUrlFailed(Exception):
    """The waitUrl could not be fetched or run: the participant does not stay in the room."""


class _Ear:
    """Writes what the party hears to its transcript, once per change."""

    def __init__(self, runner: LegRunner) -> None:
        self.runner = runner
        self.state: tuple[str, tuple[str, ...]] | None = None

    def hear(self, what: str, parties: tuple[str, ...] = ()) -> None:
        if what == "people" and not parties:
            what = "silence"
        if (what, parties) == self.state:
            return
        self.state = (what, parties)
        text = f"hears {', '.join(parties)}" if what == "people" else _HEARS_TEXT[what]
        runner = self.runner
        runner.call.note(runner.party, CONFERENCE_VERB, text, event="hears", hears=what, parties="|".join(parties))

    def note(self, event: str, text: str, **attrs: str) -> None:
        self.runner.call.note(self.runner.party, CONFERENCE_VERB, text, event=event, **attrs)


# ====================================================================== attributes
def _http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _method(runner: LegRunner, value: str | None, default: str, code: int, what: str, doc: Document) -> str:
    if value is None or not value.strip():
        return default
    method = value.strip().upper()
    if method not in ("GET", "POST"):
        runner.warn(code, f"<Conference {what}> must be GET or POST, not {value!r}; using {default}", doc.url)
        return default
    return method


def _options(runner: LegRunner, noun: ET.Element, doc: Document) -> JoinOptions | JoinRefused:
    """The ``<Conference>`` attributes, checked the way Twilio checks them."""
    wait_url: str | None = None
    raw_wait = noun.get("waitUrl")
    if raw_wait is not None:
        wait_url = runner.absolute(raw_wait, doc) if raw_wait.strip() else ""
        if wait_url and not _http_url(wait_url):
            runner.warn(13233, f"Invalid waitUrl {raw_wait!r}: using the default hold music", doc.url)
            wait_url = None
    # waitMethod defaults to POST for a given waitUrl (Twilio GETs its own default playlist).
    wait_method = _method(runner, noun.get("waitMethod"), "POST", 13234, "waitMethod", doc)
    beep = BEEP_VALUES.get((noun.get("beep") or "true").strip().lower())
    if beep is None:
        runner.warn(12200, f"<Conference beep={noun.get('beep')!r}> is not a valid value; using true", doc.url)
        beep = "true"
    max_participants = int(attr_float(noun.get("maxParticipants"), MAX_PARTICIPANTS))
    if not 2 <= max_participants <= MAX_PARTICIPANTS:
        runner.warn(12200, f"maxParticipants must be 2..{MAX_PARTICIPANTS}; using {MAX_PARTICIPANTS}", doc.url)
        max_participants = MAX_PARTICIPANTS
    label = noun.get("participantLabel")
    if label is not None:
        problem = label_problem(label)
        if problem is not None:
            return JoinRefused(16023, problem)
    callback: CallbackSpec | None = None
    callback_url = noun.get("statusCallback")
    if callback_url:
        events = frozenset((noun.get("statusCallbackEvent") or "").replace(",", " ").split())
        unknown = events - set(CONFERENCE_EVENTS)
        if unknown:
            runner.warn(12200, f"unknown <Conference statusCallbackEvent> values {sorted(unknown)}", doc.url)
        callback = CallbackSpec(
            runner.absolute(callback_url, doc),
            _method(runner, noun.get("statusCallbackMethod"), "POST", 12200, "statusCallbackMethod", doc),
            (events & set(CONFERENCE_EVENTS)) or DEFAULT_CONFERENCE_EVENTS,
        )
    # record, recordingStatusCallback*, trim, region, jitterBufferSize, eventCallbackUrl and
    # recordingConfigurationId are accepted and have no effect in the emulator.
    return JoinOptions(
        label=label,
        muted=attr_bool(noun.get("muted")),
        beep=beep,
        start_on_enter=attr_bool(noun.get("startConferenceOnEnter"), True),
        end_on_exit=attr_bool(noun.get("endConferenceOnExit")),
        wait_url=wait_url,
        wait_method=wait_method,
        max_participants=max_participants,
        coach=noun.get("coach") or None,
        status_callback=callback,
    )


def conference_twiml(name: str, options: JoinOptions) -> str:
    """The TwiML an API-created participant's call runs once answered (``<Dial><Conference>``)."""
    response = ET.Element("Response")
    dial = ET.SubElement(response, "Dial")
    attrs = {
        "muted": "true" if options.muted else "false",
        "beep": options.beep,
        "startConferenceOnEnter": "true" if options.start_on_enter else "false",
        "endConferenceOnExit": "true" if options.end_on_exit else "false",
        "waitMethod": options.wait_method,
        "maxParticipants": str(options.max_participants),
    }
    if options.wait_url is not None:
        attrs["waitUrl"] = options.wait_url
    if options.label:
        attrs["participantLabel"] = options.label
    if options.coach:
        attrs["coach"] = options.coach
    noun = ET.SubElement(dial, "Conference", attrs)
    noun.text = name
    return ET.tostring(response, encoding="unicode")


# ====================================================================== the verb
def _wall(runner: LegRunner) -> datetime:
    return runner.call.wall(runner.call.clock)


def run_conference_dial(runner: LegRunner, element: ET.Element, noun: ET.Element, doc: Document) -> Step:
    """Execute ``<Dial><Conference>`` on ``runner``'s leg and return what the call does next."""
    action = DialAction(runner, element, doc)
    call, leg, rt = runner.call, runner.leg, runner.rt
    # Twilio trims the room name (its own examples put it on a line of its own).
    name = " ".join((noun.text or "").split())
    if not name:
        runner.warn(12200, "<Conference> needs a room name", doc.url)
        return action.continue_with({"DialCallStatus": "failed"})
    options = _options(runner, noun, doc)
    joined = options if isinstance(options, JoinRefused) else rt.conferences.join(leg, name, options, _wall(runner))
    if isinstance(joined, JoinRefused):
        # 16020/16023/16025: "the call will not be added into the conference and instead
        # continue to the next TwiML verb".
        runner.warn(joined.code, joined.message, doc.url)
        call.note("app", "Dial", f"not added to conference {name!r}: {joined.message}")
        return None
    p = joined
    time_limit = attr_float(element.get("timeLimit"), rt.config.time_limit)
    talk = runner.inputs.talk_seconds if runner.inputs is not None else None
    ear = _Ear(runner)
    runner.set_state("conference")
    sid = p.conference.sid
    ear.note("join", f"joined conference {name!r}", conference=name, conference_sid=sid, label=p.label or "")
    joined_at = call.clock
    # Scripted ends are finite waits (instant at time_scale=0), like a bridge's talk times; the
    # default 4-hour time limit is not one (an open wait runs on real time so the test can act).
    horizon = [joined_at + talk] if talk is not None else []
    if element.get("timeLimit"):
        horizon.append(joined_at + time_limit)
    until = min(horizon) if horizon else None
    completed = {"DialCallStatus": "completed"}
    left = False

    def leave(reason: str, call_status: str) -> None:
        nonlocal left
        left = True
        rt.conferences.leave(p, reason, call_status, _wall(runner))
        ear.note("leave", f"left conference {name!r} ({reason})", reason=reason)

    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(runner.deadline(joined_at + time_limit, leg, LeaveSignal("time-limit")))
            if talk is not None:
                stack.enter_context(runner.deadline(joined_at + talk, leg, HangupSignal("party")))
            removal = _participate(runner, p, ear, until)
    except Interrupted as intr:
        signal = intr.signal
        if intr.leg is leg and isinstance(signal, LeaveSignal):
            # Not a documented ReasonParticipantLeft case; the call itself stays up.
            leave("participant_updated_via_api", "in-progress")
            return action.continue_with(completed)
        if isinstance(signal, RedirectSignal) and intr.leg is leg:
            leave("participant_updated_via_api", "in-progress")
            action.report_after_redirect(completed)
        else:
            leave("participant_hung_up", "completed")
            action.report_after_caller_left(completed)
        raise
    except LegEnded:
        leave("participant_hung_up", "completed")
        action.report_after_caller_left(completed)
        raise
    except _WaitUrlFailed:
        leave("participant_add_failed", "in-progress")
        return action.continue_with({"DialCallStatus": "failed"})
    finally:
        if not left:  # an emulator bug must not leave a ghost in the room
            rt.conferences.leave(p, "participant_hung_up", "failed", _wall(runner))
    ear.note("leave", f"left conference {name!r} ({removal.reason})", reason=removal.reason)
    return action.continue_with(completed)


def _changed(p: Participant, seen: int) -> bool:
    return p.changes != seen


def _participate(runner: LegRunner, p: Participant, ear: _Ear, until: float | None) -> Removal:
    """Stay in the room until it lets go of ``p``; leaving of one's own accord raises instead.

    ``until`` is the virtual time of the party's own scripted end (its deadline fires there).
    """
    rt = runner.rt

    def rest() -> None:
        runner.advance(until - runner.call.clock if until is not None else None)

    previous: ParticipantView | None = None
    while True:
        seen = p.changes
        view = rt.conferences.view(p)
        _note_changes(ear, p, previous, view)
        previous = view
        if view.removed is not None:
            if view.removed.ended:
                ear.note("end", f"conference {view.conference_name!r} ended", reason=view.removed.reason)
            return view.removed
        if view.announcements:
            for announcement in view.announcements:
                _announce(runner, p, announcement, ear)
            continue
        with runner.waking(functools.partial(_changed, p, seen)):
            try:
                if view.mode == "hold":
                    _audio(runner, ear, "hold-audio", view.hold_url, view.hold_method, rest)
                elif view.mode == "wait":
                    _audio(runner, ear, "wait-audio", view.wait_url, view.wait_method, rest)
                else:
                    ear.hear("people", view.audible)
                    rest()
            except Woken:
                pass


def _note_changes(ear: _Ear, p: Participant, before: ParticipantView | None, now: ParticipantView) -> None:
    was_started = before.started if before is not None else p.joined_started
    if now.started and not was_started:
        ear.note("start", f"conference {now.conference_name!r} started")
    if before is not None and before.hold != now.hold:
        ear.note("hold" if now.hold else "unhold", "put on hold" if now.hold else "taken off hold")
    if before is not None and before.muted != now.muted:
        ear.note("mute" if now.muted else "unmute", "muted" if now.muted else "unmuted")
    for beep in now.beeps:
        ear.note("beep", f"beep: {beep}")


def _audio(runner: LegRunner, ear: _Ear, kind: str, url: str | None, method: str, rest: Callable[[], None]) -> None:
    """Play wait or hold audio until woken: the URL's TwiML or audio, then silence (``rest``)."""
    config = runner.rt.config
    poll = config.queue_poll_interval
    if url is None:
        # Twilio's default: the classical hold-music twimlet, which loops itself.
        ear.hear(kind)
        while True:
            runner.call.note(runner.party, "Play", f"[play {DEFAULT_HOLD_MUSIC}]")
            runner.advance(config.play_seconds, min_real=poll)
    if url:
        purpose = "conference waitUrl" if kind == "wait-audio" else "conference holdUrl"
        result = runner.request(url, method, runner.leg_params(), purpose)
        runner.checkpoint()
        parsed = parse_document(result)
        if isinstance(parsed, DocumentProblem):
            runner.warn(parsed.code, f"{purpose}: {parsed.message}", result.url)
            if kind == "wait-audio":
                raise _WaitUrlFailed(parsed.message)
        else:
            ear.hear(kind)
            _play(runner, parsed)
    # No audio at all (waitUrl=""), or the document ran out of verbs: Twilio plays silence.
    ear.hear("silence")
    rest()


def _play(runner: LegRunner, parsed: Document | str) -> None:
    """Run an audio/TwiML response of a waitUrl, holdUrl or announceUrl."""
    poll = runner.rt.config.queue_poll_interval
    if isinstance(parsed, Document):
        runner.drive(parsed, "conference audio", follow_redirects=False)
    elif parsed.startswith("[play "):
        runner.call.note(runner.party, "Play", parsed)
        runner.advance(runner.rt.config.play_seconds, min_real=poll)
    else:  # text/plain is read out
        runner.call.note(runner.party, "Say", parsed.strip())
        runner.advance(spoken_seconds(parsed), min_real=poll)


def _announce(runner: LegRunner, p: Participant, announcement: Announcement, ear: _Ear) -> None:
    """Play one announcement to ``p`` (fetched once per announcement, however many hear it).

    Only the leg's own signals interrupt it: somebody joining or leaving does not.
    """
    rt = runner.rt
    conference = announcement.conference
    # What Twilio sends to an AnnounceUrl is not documented: the room's identity, plus the call
    # for a participant announcement.
    params = {
        "AccountSid": conference.account_sid,
        "ApiVersion": "2010-04-01",
        "ConferenceSid": conference.sid,
        "FriendlyName": conference.friendly_name,
    }
    if announcement.participant is not None:
        params["CallSid"] = p.call_sid
    result = rt.conferences.announcement_result(
        announcement,
        lambda: runner.request(announcement.url, announcement.method, params, "conference announceUrl"),
    )
    parsed = parse_document(result)
    if isinstance(parsed, DocumentProblem):
        runner.warn(parsed.code, f"announceUrl: {parsed.message}", result.url)
        rt.conferences.announcement_done(announcement, parsed.message, datetime.now(UTC))
        return
    ear.note("announcement", f"announcement {announcement.url}", url=announcement.url)
    ear.hear("announcement")
    _play(runner, parsed)
    rt.conferences.announcement_done(announcement, None, _wall(runner))
