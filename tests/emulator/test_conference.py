"""``<Dial><Conference>``: rep-to-rep warm transfer, the room's lifecycle, hold, kicks, waitUrl.

The scenarios run at ``time_scale=0``: scripted durations are instant and every party stays in
a room until the test (or the app, through the REST API) makes something happen, so the order
of events is decided by the test, not by timing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twilio.rest import Client

from tests.emulator.conftest import CALLER, REP, REP_2, TWILIO_NUMBER, EmulatorFactory, WebhookApp
from voice.emulator import CallerScript, Conference, EmulatedCall, RepScript, TwilioEmulator

WHISPER = "Caller needs help with billing. Press 1 to accept."
REP_B_WHISPER = "Warm transfer: billing question. Press 1 to accept."
STAYS = CallerScript(talk_seconds=None)


def _hits(app: WebhookApp, path: str, **params: str) -> list[dict[str, str]]:
    return [h.params for h in app.requests_to(path) if all(h.params.get(k) == v for k, v in params.items())]


def _in_room(emu: TwilioEmulator, room: str, *labels: str) -> Conference:
    """Wait until the room is in progress with exactly ``labels`` connected."""

    def ready(c: Conference) -> bool:
        connected = sorted(p.label or p.party for p in c.participants if p.status == "connected")
        return c.status == "in-progress" and connected == sorted(labels)

    conference = emu.wait_for_conference(room, ready, timeout=5)
    assert conference is not None, (room, emu.conference(room) and emu.conference(room).participants)  # type: ignore[union-attr]
    return conference


def _hears(call: EmulatedCall, *parties: str, timeout: float = 5) -> None:
    """Wait until the call's own party hears exactly ``parties`` (nobody: silence)."""

    def now_hearing(c: EmulatedCall) -> bool:
        timeline = c.hearing()
        return bool(timeline) and sorted(timeline[-1].parties) == sorted(parties)

    assert call.wait_until(now_hearing, timeout), call.hearing()


def _transfer_to_room(
    emu: TwilioEmulator,
    app: WebhookApp,
    client: Client,
    room: str = "warm",
    wait: str = "/conf-wait",
    rep_args: str = "",
) -> tuple[EmulatedCall, EmulatedCall]:
    """Caller bridged to rep A, then rep A's child leg redirected into ``room``: both end up there."""
    emu.register_rep(REP, RepScript.accepts(talk_seconds=None))
    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, f"/dial-transfer?room={room}&wait={wait}")
    assert caller.wait_until(lambda c: c.state == "bridged", 5)
    child_sid = caller.legs[1].sid
    client.calls(child_sid).update(url=f"{app.base_url}/conf-dial?room={room}&label=rep-a&wait={wait}{rep_args}")
    _in_room(emu, room, "caller", "rep-a")
    rep_a = emu.call(child_sid)
    assert rep_a is not None
    return caller, rep_a


# ====================================================================== child-leg redirect
def test_redirecting_the_child_leg_ends_the_dial_and_both_legs_meet_in_a_conference(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, rep_a = _transfer_to_room(emu, webhook_app, client)
    child_sid = caller.legs[1].sid

    # The parent's <Dial> ended as completed and Twilio requested its action with the bridge's details.
    action = _hits(webhook_app, "/conf-dial", label="caller")
    assert len(action) == 1
    assert action[0]["CallSid"] == caller.sid and action[0]["DialCallStatus"] == "completed"
    assert action[0]["DialCallSid"] == child_sid and action[0]["DialBridged"] == "true"
    assert "DialCallDuration" in action[0]
    # The child ran the new TwiML as itself: same SID, still a child of the caller's call.
    redirected = _hits(webhook_app, "/conf-dial", label="rep-a")
    assert len(redirected) == 1 and redirected[0]["CallSid"] == child_sid
    assert redirected[0]["ParentCallSid"] == caller.sid and redirected[0]["Direction"] == "outbound-dial"
    assert rep_a is not caller and rep_a.sid == child_sid and rep_a.root_leg is caller.child_legs()[0]
    assert all(h.valid for h in webhook_app.all())

    _hears(caller, "rep-a")
    _hears(rep_a, "caller")
    assert caller.connected_with() == ("rep-a",) and rep_a.connected_with() == ("caller",)
    assert WHISPER not in rep_a.heard()  # the whisper was heard on the caller's call, before the detach
    assert caller.heard(f"rep:{REP}") == [WHISPER, "Connecting."]
    # The rep's leg is not ended by the transfer: its Number statusCallback has not said completed.
    assert [h["CallStatus"] for h in _hits(webhook_app, "/rep-status")] == ["initiated", "ringing", "in-progress"]

    # Rep A hangs up: the caller is alone in a started room, and hears silence.
    assert emu.hang_up(child_sid)
    assert rep_a.wait_finished(5)
    _hears(caller)
    assert caller.silence_periods() and caller.hearing()[-1].what == "silence"
    assert _hits(webhook_app, "/rep-status")[-1]["CallStatus"] == "completed"
    rep_a_done = _hits(webhook_app, "/conf-done", CallSid=child_sid)
    assert len(rep_a_done) == 1 and rep_a_done[0]["CallStatus"] == "completed"  # action posted, TwiML ignored

    # The caller hangs up too: the room ends with its last participant.
    assert caller.hang_up()
    assert caller.wait_finished(5)
    conference = emu.conference("warm")
    assert conference is not None and conference.status == "completed"
    assert conference.reason_conference_ended == "last-participant-left"
    assert conference.call_sid_ending_conference == caller.sid
    assert [leg.status for leg in caller.legs] == ["completed", "completed"]


# ====================================================================== the warm transfer
def test_warm_transfer_rep_b_is_whispered_joins_and_rep_a_leaves_without_silence(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, rep_a = _transfer_to_room(emu, webhook_app, client)
    conference = emu.conference("warm")
    assert conference is not None
    _hears(caller, "rep-a")

    # Rep B is called through the REST API; the call's TwiML whispers, rep B presses 1 and joins.
    emu.register_rep(REP_2, RepScript.accepts(talk_seconds=None))
    created = client.calls.create(
        to=REP_2,
        from_=TWILIO_NUMBER,
        url=f"{webhook_app.base_url}/rep-whisper-conf?room=warm&label=rep-b",
        status_callback=f"{webhook_app.base_url}/status",
    )
    _in_room(emu, "warm", "caller", "rep-a", "rep-b")
    rep_b = emu.call(created.sid)
    assert rep_b is not None and rep_b.direction == "outbound-api"
    assert rep_b.heard("rep")[0] == REP_B_WHISPER
    assert _hits(webhook_app, "/rep-whisper-conf-answer")[0]["Digits"] == "1"
    _hears(caller, "rep-a", "rep-b")
    _hears(rep_b, "caller", "rep-a")

    # Rep A drops out (the app removes them by label): rep A's call goes on at its Dial action.
    client.conferences(conference.sid).participants("rep-a").delete()
    _hears(caller, "rep-b")
    _hears(rep_b, "caller")
    assert rep_a.wait_finished(5)
    assert rep_a.heard()[-1] == "Conference over: completed."

    # What the caller experienced, in order: never silence.
    people = [h.parties for h in caller.hearing() if h.what == "people"]
    assert people == [("rep-a",), ("rep-a", "rep-b"), ("rep-b",)]
    assert caller.silence_periods() == [] and caller.silence_seconds() == 0
    assert caller.connected_with() == ("rep-b",)
    assert conference.status == "in-progress"
    leave = next(e for e in conference.events if e.event == "participant-leave")
    assert leave.label == "rep-a" and leave.params["ReasonParticipantLeft"] == "participant_updated_via_api"

    # The caller and rep B finish the call; rep B's REST status callback reports it.
    assert caller.hang_up()
    _hears(rep_b)
    assert emu.hang_up(created.sid)
    assert caller.wait_finished(5) and rep_b.wait_finished(5)
    assert conference.wait_until(lambda c: c.status == "completed", 5)
    assert [h["CallStatus"] for h in _hits(webhook_app, "/status", CallSid=created.sid)] == ["completed"]


def test_hold_plays_the_hold_url_in_a_loop_and_hides_the_held_party(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, rep_a = _transfer_to_room(emu, webhook_app, client)
    conference = emu.conference("warm")
    assert conference is not None
    _hears(caller, "rep-a")

    held = client.conferences(conference.sid).participants(caller.sid).update(
        hold=True, hold_url=f"{webhook_app.base_url}/hold-music"
    )
    assert held.hold is True and held.call_sid == caller.sid and held.label == "caller"
    # The hold document loops itself with <Redirect>: the caller hears it again and again.
    assert caller.wait_until(lambda c: c.heard().count("You are on hold.") >= 2, 5)
    _hears(rep_a)  # the held caller is not heard by anybody
    assert [p.call_sid for p in client.conferences(conference.sid).participants.list(hold=True)] == [caller.sid]
    hold_fetches = webhook_app.requests_to("/hold-music")
    assert hold_fetches and all(h.method == "GET" and h.valid for h in hold_fetches)  # HoldMethod defaults to GET
    assert hold_fetches[0].params["CallSid"] == caller.sid

    client.conferences(conference.sid).participants("caller").update(hold=False)
    _hears(caller, "rep-a")
    _hears(rep_a, "caller")
    assert "[play https://media.example.com/hold.mp3]" in caller.heard()
    events = [e.attrs["event"] for e in caller.conference_log()]
    assert events.index("hold") < events.index("unhold")
    assert [h.what for h in caller.hearing()][-3:] == ["people", "hold-audio", "people"]
    assert caller.silence_seconds() == 0
    assert rep_a.silence_periods()  # rep A sat alone while the caller was held
    names = conference.event_names()
    assert names.index("participant-hold") < names.index("participant-unhold")


def test_hold_without_a_hold_url_plays_twilio_hold_music_and_a_one_shot_document_ends_in_silence(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, _ = _transfer_to_room(emu, webhook_app, client)
    conference = emu.conference("warm")
    assert conference is not None
    participant = client.conferences(conference.sid).participants(caller.sid)
    participant.update(hold=True)
    assert caller.wait_until(lambda c: any("twimlets.com/holdmusic" in t for t in c.heard()), 5)
    # A hold document that runs out of verbs: silence, which the transcript shows.
    participant.update(hold=True, hold_url=f"{webhook_app.base_url}/conf-wait-once")
    assert caller.wait_until(lambda c: c.hearing()[-1].what == "silence", 5)
    assert caller.silence_periods()


def test_mute_hides_a_participant_from_the_others(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, rep_a = _transfer_to_room(emu, webhook_app, client)
    conference = emu.conference("warm")
    assert conference is not None
    assert client.conferences(conference.sid).participants("rep-a").update(muted=True).muted is True
    _hears(caller)
    assert rep_a.wait_until(lambda c: any(e.attrs.get("event") == "mute" for e in c.conference_log()), 5)
    client.conferences(conference.sid).participants("rep-a").update(muted=False)
    _hears(caller, "rep-a")
    names = conference.event_names()
    assert names.index("participant-mute") < names.index("participant-unmute")


# ====================================================================== ending a room
def test_end_conference_on_exit_ends_it_for_everybody(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, rep_a = _transfer_to_room(emu, webhook_app, client, room="moderated", rep_args="&end=true")
    conference = emu.conference("moderated")
    assert conference is not None
    emu.register_rep(REP_2, RepScript.accepts(talk_seconds=None))
    added = client.conferences(conference.sid).participants.create(from_=TWILIO_NUMBER, to=REP_2, label="rep-b")
    _in_room(emu, "moderated", "caller", "rep-a", "rep-b")

    assert emu.rep_hang_up(REP)
    assert conference.wait_until(lambda c: c.status == "completed", 5)
    assert conference.reason_conference_ended == "participant-with-end-conference-on-exit-left"
    assert conference.call_sid_ending_conference == rep_a.sid
    # Everybody else dropped out and went on at their own <Dial> action.
    assert caller.wait_finished(5)
    assert caller.heard()[-1] == "Conference over: completed."
    rep_b = emu.call(added.call_sid)
    assert rep_b is not None and rep_b.wait_finished(5)  # an API participant has no more TwiML: it hangs up
    emu.wait_for_conference_callbacks()
    leaves = {e.label: e.params for e in conference.events if e.event == "participant-leave"}
    assert leaves["rep-a"]["ReasonParticipantLeft"] == "participant_hung_up"
    assert leaves["caller"]["ReasonParticipantLeft"] == "moderator_ended_conference"
    assert leaves["rep-b"]["ReasonParticipantLeft"] == "moderator_ended_conference"
    end = conference.events[-1]
    assert end.event == "conference-end" and end.params["CallSidEndingConference"] == rep_a.sid
    assert end.params["ParticipantLabelEndingConference"] == "rep-a"
    assert any(e.event == "conference-end" and e.number == len(conference.events) for e in conference.events)
    for call in (caller, rep_a):
        assert [e.attrs["event"] for e in call.conference_log()][-1] in ("leave", "end")


def test_kicking_a_participant_continues_its_call_at_the_dial_action_or_next_verb(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    alone = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=kick&label=caller&action=none")
    conference = emu.wait_for_conference("kick", lambda c: len(c.participants) == 1)
    assert conference is not None and conference.status == "init"
    client.conferences(conference.sid).participants(alone.sid).delete()
    assert alone.wait_finished(5)
    assert alone.heard()[-1] == "After the conference."  # no action: the next verb
    assert conference.status == "completed" and conference.reason_conference_ended == "last-participant-kicked"
    assert client.conferences(conference.sid).participants.list() == []


def test_the_app_ends_the_conference_through_the_rest_api(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, rep_a = _transfer_to_room(emu, webhook_app, client)
    conference = emu.conference("warm")
    assert conference is not None
    ended = client.conferences(conference.sid).update(status="completed")
    assert ended.status == "completed" and ended.reason_conference_ended == "conference-ended-via-api"
    assert caller.wait_finished(5) and rep_a.wait_finished(5)
    assert caller.heard()[-1] == rep_a.heard()[-1] == "Conference over: completed."
    emu.wait_for_conference_callbacks()
    assert conference.events[-1].params["ReasonConferenceEnded"] == "conference-ended-via-api"
    assert "CallSidEndingConference" not in conference.events[-1].params


# ====================================================================== waiting for the start
def test_wait_url_plays_until_the_conference_starts(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=lobby&label=caller&wait=/conf-wait")
    assert caller.wait_until(lambda c: c.heard().count("Please hold while we connect you.") >= 2, 5)
    conference = emu.conference("lobby")
    assert conference is not None and conference.status == "init"
    waits = webhook_app.requests_to("/conf-wait")
    assert waits[0].method == "POST" and waits[0].params["CallSid"] == caller.sid
    assert "[play https://media.example.com/wait.mp3]" in caller.heard()

    emu.register_rep(REP, RepScript.accepts(talk_seconds=None))
    client.conferences(conference.sid).participants.create(from_=TWILIO_NUMBER, to=REP, label="rep-a")
    _in_room(emu, "lobby", "caller", "rep-a")
    _hears(caller, "rep-a")
    assert [h.what for h in caller.hearing()] == ["wait-audio", "people"]
    log = [e.attrs["event"] for e in caller.conference_log()]
    assert log[:3] == ["join", "hears", "start"]
    assert caller.silence_seconds() == 0


@pytest.mark.parametrize(
    ("wait", "first_heard", "silent"),
    [
        ("none", "[play https://twimlets.com/holdmusic?Bucket=com.twilio.music.classical]", False),
        ("/conf-wait-once", "Please hold.", True),  # runs out of verbs: silence, not a loop
        ("", None, True),  # waitUrl="": nothing at all
    ],
)
def test_wait_audio_variants(
    emu: TwilioEmulator, webhook_app: WebhookApp, wait: str, first_heard: str | None, silent: bool
) -> None:
    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, f"/conf-dial?room=lobby&label=caller&wait={wait}")
    assert caller.wait_until(lambda c: c.hearing() != [] and (c.hearing()[-1].what == "silence") == silent, 5)
    if first_heard is not None:
        assert caller.wait_until(lambda c: first_heard in c.heard(), 5)
    assert bool(caller.silence_periods()) == silent


def test_wait_url_verbs_other_than_say_play_pause_redirect_are_skipped(
    emu: TwilioEmulator, webhook_app: WebhookApp
) -> None:
    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=lobby&label=caller&wait=/conf-wait-bad")
    assert caller.wait_until(lambda c: "Still waiting." in c.heard(), 5)
    assert caller.errors[0].code == 13238 and not caller.errors[0].fatal
    assert "Press a key." not in caller.heard()


def test_a_failing_wait_url_keeps_the_call_out_of_the_room(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=lobby&label=caller&wait=/broken-500")
    assert caller.wait_finished(5)
    assert [e.code for e in caller.errors] == [11200]
    assert caller.heard() == ["Conference over: failed."]


def test_start_conference_on_enter_false_waits_for_a_moderator(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    url = "/conf-dial?room=mod&wait=/conf-wait&start=false&label="
    first = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, url + "a")
    second = emu.place_call("+15551230002", TWILIO_NUMBER, STAYS, url + "b")
    conference = emu.wait_for_conference("mod", lambda c: len(c.participants) == 2)
    assert conference is not None and conference.status == "init"  # two in, nobody may start it
    assert second.wait_until(lambda c: "Please hold while we connect you." in c.heard(), 5)
    emu.register_rep(REP, RepScript.accepts(talk_seconds=None))
    client.conferences(conference.sid).participants.create(from_=TWILIO_NUMBER, to=REP, label="moderator")
    _in_room(emu, "mod", "a", "b", "moderator")
    _hears(first, "b", "moderator")


# ====================================================================== status callbacks
def test_status_callback_events_parameters_and_order(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, rep_a = _transfer_to_room(emu, webhook_app, client)
    conference = emu.conference("warm")
    assert conference is not None
    participants = client.conferences(conference.sid).participants
    participants("rep-a").update(muted=True)
    participants("rep-a").update(muted=False)
    participants("caller").update(hold=True, hold_url=f"{webhook_app.base_url}/hold-music")
    participants("caller").update(hold=False)
    participants("caller").update(end_conference_on_exit=True)
    participants("caller").update(announce_url=f"{webhook_app.base_url}/announcement")
    assert caller.wait_until(lambda c: "Your call is being transferred." in c.heard(), 5)
    assert emu.wait_for_conference_callbacks()
    assert conference.wait_until(lambda c: "announcement-end" in c.event_names(), 5)
    assert caller.hang_up()  # endConferenceOnExit now: rep A is dropped too
    assert rep_a.wait_finished(5) and caller.wait_finished(5)
    assert emu.wait_for_conference_callbacks()

    hits = webhook_app.requests_to("/conf-status")
    assert hits and all(h.valid and h.method == "POST" for h in hits)
    posted = [h.params for h in hits]
    sent = sorted(posted, key=lambda p: int(p["SequenceNumber"]))
    assert [int(p["SequenceNumber"]) for p in sent] == list(range(1, len(sent) + 1))
    names = [p["StatusCallbackEvent"] for p in sent]
    assert names[2:] == [
        "conference-start",
        "participant-mute",
        "participant-unmute",
        "participant-hold",
        "participant-unhold",
        "participant-modify",
        "announcement-end",
        "participant-leave",
        "participant-leave",
        "conference-end",
    ]
    assert names[:2] == ["participant-join", "participant-join"]
    assert conference.event_names() == names
    for params in sent:
        assert params["ConferenceSid"] == conference.sid and params["FriendlyName"] == "warm"
        assert params["AccountSid"] == emu.account_sid and params["Timestamp"].endswith("+0000")
    join = sent[0]
    assert {"CallSid", "Muted", "Hold", "Coaching", "EndConferenceOnExit", "StartConferenceOnEnter"} <= set(join)
    assert join["ParticipantLabel"] in ("caller", "rep-a") and join["Coaching"] == "false"
    mute = sent[3]
    assert mute["CallSid"] == rep_a.sid and mute["Muted"] == "true" and mute["ParticipantLabel"] == "rep-a"
    assert sent[5]["Hold"] == "true" and sent[6]["Hold"] == "false"
    assert sent[7]["EndConferenceOnExit"] == "true"
    assert sent[8]["AnnounceUrl"] == f"{webhook_app.base_url}/announcement" and sent[8]["CallSid"] == caller.sid
    first_leave = sent[9]
    assert first_leave["CallSid"] == caller.sid and first_leave["ReasonParticipantLeft"] == "participant_hung_up"
    assert first_leave["ParticipantCallStatus"] == "completed"
    assert sent[10]["ReasonParticipantLeft"] == "moderator_ended_conference"
    end = sent[11]
    assert end["ReasonConferenceEnded"] == "participant-with-end-conference-on-exit-left"
    assert end["CallSidEndingConference"] == caller.sid and "CallSid" not in end


def test_only_subscribed_events_are_posted(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=quiet&label=caller&events=end")
    conference = emu.wait_for_conference("quiet", lambda c: len(c.participants) == 1)
    assert conference is not None
    assert caller.hang_up() and caller.wait_finished(5)
    assert emu.wait_for_conference_callbacks()
    posted = [h.params for h in webhook_app.requests_to("/conf-status")]
    assert [(p["StatusCallbackEvent"], p["SequenceNumber"]) for p in posted] == [("conference-end", "1")]
    assert conference.event_names() == ["participant-join", "participant-leave", "conference-end"]
    assert conference.event_names(sent_only=True) == ["conference-end"]


# ====================================================================== announcements
def test_announcements_to_the_room_and_to_one_participant(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, rep_a = _transfer_to_room(emu, webhook_app, client)
    conference = emu.conference("warm")
    assert conference is not None
    client.conferences(conference.sid).update(announce_url=f"{webhook_app.base_url}/announcement?text=Hello+all")
    for call in (caller, rep_a):
        assert call.wait_until(lambda c: "Hello all" in c.heard(), 5)
    assert len(webhook_app.requests_to("/announcement")) == 1  # fetched once for the whole room
    client.conferences(conference.sid).participants("rep-a").update(
        announce_url=f"{webhook_app.base_url}/announcement?text=Only+for+you"
    )
    assert rep_a.wait_until(lambda c: "Only for you" in c.heard(), 5)
    _hears(rep_a, "caller")
    assert "Only for you" not in caller.heard()
    assert conference.wait_until(lambda c: c.event_names().count("announcement-end") == 2, 5)
    assert [h.what for h in rep_a.hearing()][-2:] == ["announcement", "people"]


# ====================================================================== REST-created calls and participants
@pytest.mark.parametrize(
    ("script", "status", "joined"),
    [
        (RepScript.accepts(talk_seconds=None), "in-progress", True),
        (RepScript.declines(), "completed", False),
        (RepScript.no_answer(), "no-answer", False),
        (RepScript.accepts(answer_after=90), "no-answer", False),  # would pick up after the Timeout
        (RepScript.busy(), "busy", False),
    ],
)
def test_rest_created_call_to_a_rep_runs_the_whisper_then_the_conference(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client, script: RepScript, status: str, joined: bool
) -> None:
    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=warm&label=caller&wait=/conf-wait")
    assert caller.wait_until(lambda c: [h.what for h in c.hearing()] == ["wait-audio"], 5)
    emu.register_rep(REP_2, script)
    created = client.calls.create(
        to=REP_2,
        from_=TWILIO_NUMBER,
        url=f"{webhook_app.base_url}/rep-whisper-conf?room=warm&label=rep-b",
        status_callback=f"{webhook_app.base_url}/status",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        timeout=60,
    )
    rep_b = emu.call(created.sid)
    assert rep_b is not None
    if joined:
        _in_room(emu, "warm", "caller", "rep-b")
        assert rep_b.status == status
        _hears(caller, "rep-b")
        return
    assert rep_b.wait_finished(5)
    assert rep_b.status == status
    events = [h["CallStatus"] for h in _hits(webhook_app, "/status", CallSid=created.sid)]
    assert events[-1] == status
    conference = emu.conference("warm")
    assert conference is not None and [p.label for p in conference.participants] == ["caller"]
    assert caller.hearing()[-1].what == "wait-audio"  # still waiting, still hearing music


def test_participant_create_dials_and_joins_creating_the_room_by_name(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    emu.register_rep(REP, RepScript.accepts(talk_seconds=None))
    added = client.conferences("new-room").participants.create(
        from_=TWILIO_NUMBER,
        to=REP,
        label="rep-a",
        status_callback=f"{webhook_app.base_url}/status",
        status_callback_event=["initiated", "answered", "completed"],
        conference_status_callback=f"{webhook_app.base_url}/conf-status",
        conference_status_callback_event=["start", "end", "join", "leave"],
        wait_url=f"{webhook_app.base_url}/conf-wait",
        end_conference_on_exit=True,
        beep="false",
    )
    assert added.call_sid.startswith("CA") and added.label == "rep-a" and added.status == "queued"
    assert added.conference_sid.startswith("CF") and added.end_conference_on_exit is True
    conference = emu.conference("new-room")
    assert conference is not None and conference.sid == added.conference_sid
    rep = emu.call(added.call_sid)
    assert rep is not None and rep.wait_until(lambda c: c.heard().count("Please hold while we connect you.") >= 1, 5)
    fetched = client.conferences(conference.sid).participants("rep-a").fetch()
    assert fetched.status == "connected" and fetched.call_sid == added.call_sid
    assert client.conferences(conference.sid).fetch().status == "init"

    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=new-room&label=caller")
    _in_room(emu, "new-room", "caller", "rep-a")
    assert emu.hang_up(added.call_sid)  # endConferenceOnExit: the caller goes on at its action
    assert caller.wait_finished(5) and caller.heard()[-1] == "Conference over: completed."
    assert emu.wait_for_conference_callbacks()
    posted = [h.params["StatusCallbackEvent"] for h in webhook_app.requests_to("/conf-status")]
    assert posted == [
        "participant-join",
        "participant-join",
        "conference-start",
        "participant-leave",
        "participant-leave",
        "conference-end",
    ]
    rep_events = [h["CallStatus"] for h in _hits(webhook_app, "/status", CallSid=added.call_sid)]
    assert rep_events == ["initiated", "in-progress", "completed"]
    assert webhook_app.requests_to("/conf-dial", added.call_sid) == []  # its TwiML is Twilio's, not the app's


def test_an_added_participant_who_does_not_answer_leaves_with_participant_add_failed(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    emu.register_rep(REP, RepScript.no_answer())
    added = client.conferences("nobody").participants.create(
        from_=TWILIO_NUMBER,
        to=REP,
        timeout=10,
        conference_status_callback=f"{webhook_app.base_url}/conf-status",
        conference_status_callback_event=["leave", "end"],
    )
    conference = emu.conference("nobody")
    assert conference is not None
    assert conference.wait_until(lambda c: c.status == "completed", 5)
    leave = conference.events[0]
    assert leave.event == "participant-leave" and leave.call_sid == added.call_sid
    assert leave.params["ReasonParticipantLeft"] == "participant_add_failed"
    assert leave.params["ParticipantCallStatus"] == "no-answer"
    assert conference.events[-1].event == "conference-end"


# ====================================================================== the REST API
def test_conference_resources_through_the_twilio_client(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    caller, rep_a = _transfer_to_room(emu, webhook_app, client)
    other = emu.place_call("+15551230002", TWILIO_NUMBER, STAYS, "/conf-dial?room=other&label=x")
    assert emu.wait_for_conference("other") is not None

    listed = client.conferences.list(friendly_name="warm", status="in-progress")
    assert [c.friendly_name for c in listed] == ["warm"]
    warm = listed[0]
    assert warm.sid.startswith("CF") and warm.status == "in-progress" and warm.region == "us1"
    assert warm.subresource_uris["participants"].endswith(f"/Conferences/{warm.sid}/Participants.json")
    assert {c.friendly_name for c in client.conferences.list()} == {"warm", "other"}
    assert [c.friendly_name for c in client.conferences.list(status="init")] == ["other"]
    today = warm.date_created.date()
    assert len(client.conferences.list(date_created=today)) == 2
    assert len(client.conferences.list(date_created_after=today, date_created_before=today)) == 2
    assert client.conferences(warm.sid).fetch().friendly_name == "warm"

    participants = client.conferences(warm.sid).participants.list()
    assert {(p.label, p.status) for p in participants} == {("caller", "connected"), ("rep-a", "connected")}
    by_label = client.conferences(warm.sid).participants("rep-a").fetch()
    assert by_label.call_sid == rep_a.sid and by_label.conference_sid == warm.sid
    assert by_label.muted is False and by_label.hold is False and by_label.start_conference_on_enter is True
    assert client.conferences(warm.sid).participants(caller.sid).fetch().label == "caller"
    assert client.conferences(warm.sid).participants.list(muted=True) == []
    assert other.hang_up()


def test_rest_errors_look_like_twilio(emu: TwilioEmulator, webhook_app: WebhookApp, client: Client) -> None:
    import requests
    from twilio.base.exceptions import TwilioRestException

    from tests.emulator.conftest import ACCOUNT_SID, AUTH_TOKEN

    unknown = "CF" + "0" * 32

    def code(action: Callable[[], object]) -> tuple[int, int]:
        with pytest.raises(TwilioRestException) as excinfo:
            action()
        return excinfo.value.status, excinfo.value.code

    assert code(lambda: client.conferences(unknown).fetch()) == (404, 20404)
    assert code(lambda: client.conferences(unknown).update(status="completed")) == (404, 20404)
    assert code(lambda: client.conferences(unknown).participants.create(from_=TWILIO_NUMBER, to=REP)) == (404, 20404)

    caller, _ = _transfer_to_room(emu, webhook_app, client)
    room = emu.conference("warm")
    assert room is not None
    participants = client.conferences(room.sid).participants
    assert code(lambda: participants("CA" + "0" * 32).fetch()) == (404, 20404)
    assert code(lambda: participants("nobody").update(muted=True)) == (404, 20404)
    assert code(lambda: participants("nobody").delete()) == (404, 20404)
    assert code(lambda: participants.create(from_=TWILIO_NUMBER, to=REP_2, label="caller")) == (400, 16026)
    assert code(lambda: participants.create(from_=TWILIO_NUMBER, to=REP_2, label="a/b")) == (400, 16024)
    assert code(lambda: participants("caller").update(hold=True, hold_url="not a url")) == (400, 21205)
    assert code(lambda: participants("caller").update(hold=True, hold_method="PUT")) == (400, 20001)
    assert code(lambda: client.conferences(room.sid).update(status="in-progress")) == (400, 20001)

    url = f"{emu.rest_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Conferences/{room.sid}/Participants.json"
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    no_to = requests.post(url, data={"From": TWILIO_NUMBER}, auth=auth, timeout=5)
    no_from = requests.post(url, data={"To": REP_2}, auth=auth, timeout=5)
    assert (no_to.status_code, no_to.json()["code"]) == (400, 21201)
    assert (no_from.status_code, no_from.json()["code"]) == (400, 21213)
    body = requests.get(url.replace(room.sid, unknown), auth=auth, timeout=5).json()  # the list of an unknown room
    assert body["status"] == 404 and body["message"] and body["more_info"].endswith("/20404")
    assert requests.get(url, timeout=5).status_code == 401

    # Once the room has ended its participants are gone (the resource keeps no history).
    client.conferences(room.sid).update(status="completed")
    assert caller.wait_finished(5)
    assert code(lambda: participants("caller").fetch()) == (404, 20404)
    assert participants.list() == []
    assert client.conferences(room.sid).update(status="completed").status == "completed"  # idempotent


# ====================================================================== TwiML edge cases
def test_a_duplicate_label_or_a_full_room_keeps_the_call_out_and_goes_to_the_next_verb(
    emu: TwilioEmulator, webhook_app: WebhookApp
) -> None:
    first = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=small&label=x&max=2&action=none")
    assert emu.wait_for_conference("small", lambda c: len(c.participants) == 1) is not None
    twin = emu.place_call("+15551230002", TWILIO_NUMBER, STAYS, "/conf-dial?room=small&label=x&action=none")
    assert twin.wait_finished(5)
    assert [e.code for e in twin.errors] == [16025] and twin.heard() == ["After the conference."]
    second = emu.place_call("+15551230003", TWILIO_NUMBER, STAYS, "/conf-dial?room=small&label=y&action=none")
    assert emu.wait_for_conference("small", lambda c: len(c.participants) == 2) is not None
    third = emu.place_call("+15551230004", TWILIO_NUMBER, STAYS, "/conf-dial?room=small&label=z&action=none")
    assert third.wait_finished(5)
    assert [e.code for e in third.errors] == [16020]
    assert first.hang_up() and second.hang_up()


def test_dial_time_limit_takes_the_party_out_of_the_room(
    make_emulator: EmulatorFactory, webhook_app: WebhookApp
) -> None:
    emu = make_emulator()
    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=short&label=caller&time_limit=30")
    assert caller.wait_finished(5)
    assert caller.heard()[-1] == "Conference over: completed."
    joined = next(e.at for e in caller.conference_log() if e.attrs["event"] == "join")
    left = next(e.at for e in caller.conference_log() if e.attrs["event"] == "leave")
    assert left - joined == pytest.approx(30)


def test_talk_time_counts_from_joining_the_room(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    caller = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(talk_seconds=45), "/conf-dial?room=t&label=caller")
    assert caller.wait_finished(5)
    log = caller.conference_log()
    assert log[-1].attrs["event"] == "leave" and log[-1].attrs["reason"] == "participant_hung_up"
    assert log[-1].at - log[0].at == pytest.approx(45)
    assert caller.heard()[-1].startswith("[play https://twimlets.com/holdmusic")  # the done TwiML was ignored


def test_join_attributes_muted_beep_and_wait_method(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    quiet = "/conf-dial?room=attrs&label=a&muted=true&beep=false&wait=/conf-wait&wait_method=GET"
    a = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, quiet)
    assert a.wait_until(lambda c: "Please hold while we connect you." in c.heard(), 5)
    assert all(h.method == "GET" and h.valid for h in webhook_app.requests_to("/conf-wait"))
    b = emu.place_call("+15551230002", TWILIO_NUMBER, STAYS, "/conf-dial?room=attrs&label=b&wait=/conf-wait")
    conference = _in_room(emu, "attrs", "a", "b")
    assert [(p.label, p.muted) for p in conference.participants] == [("a", True), ("b", False)]
    _hears(a, "b")
    _hears(b)  # a joined muted: b hears nobody
    assert [e.text for e in a.conference_log() if e.attrs["event"] == "beep"] == ["beep: b joined"]
    assert b.hang_up()
    assert a.wait_until(lambda c: any(e.text == "beep: b left" for e in c.conference_log()), 5)
    assert [e.text for e in b.conference_log() if e.attrs["event"] == "beep"] == []  # a's beep="false"
    assert a.hang_up()


def test_silence_is_measured_in_virtual_seconds(make_emulator: EmulatorFactory, webhook_app: WebhookApp) -> None:
    import time

    emu = make_emulator(time_scale=0.01)  # 1 virtual second = 10 ms
    client = Client(emu.account_sid, emu.auth_token)
    client.api.base_url = emu.rest_url
    caller, rep_a = _transfer_to_room(emu, webhook_app, client)
    _hears(caller, "rep-a")
    # A bad hand-off: rep A leaves before rep B is even called.
    assert emu.hang_up(rep_a.sid)
    _hears(caller)
    time.sleep(0.2)  # ~20 virtual seconds of nothing
    emu.register_rep(REP_2, RepScript.accepts(talk_seconds=None, answer_after=2))
    client.calls.create(
        to=REP_2, from_=TWILIO_NUMBER, url=f"{webhook_app.base_url}/rep-whisper-conf?room=warm&label=rep-b"
    )
    _hears(caller, "rep-b")
    [(start, end)] = caller.silence_periods()
    # 20 s waiting, then 2 s of ringing and 3.5 s of whisper before rep B is in (plus real-time jitter).
    assert 25 <= end - start <= 200 and caller.silence_seconds() == end - start
    assert caller.hang_up()


def test_hang_up_any_leg(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    assert emu.hang_up("CA" + "0" * 32) is False
    caller = emu.place_call(CALLER, TWILIO_NUMBER, STAYS, "/conf-dial?room=h&label=caller")
    assert emu.wait_for_conference("h") is not None
    assert emu.hang_up(caller.sid) and caller.wait_finished(5)
    assert emu.hang_up(caller.sid) is False  # already over
