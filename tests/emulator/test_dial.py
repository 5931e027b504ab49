"""``<Dial><Number url>``: whisper on the rep's leg, bridging, and how each ending is reported."""

from __future__ import annotations

from twilio.rest import Client

from tests.emulator.conftest import CALLER, REP, REP_2, TWILIO_NUMBER, EmulatorFactory, WebhookApp
from voice.emulator import CallerScript, RepScript, TwilioEmulator

WHISPER = "Caller needs help with billing. Press 1 to accept."


def _dial_done(app: WebhookApp) -> dict[str, str]:
    hits = app.requests_to("/dial-done")
    assert len(hits) == 1, hits
    return hits[0].params


def test_accepted_whisper_bridges_then_reports_completed(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    emu.register_rep(REP, RepScript.accepts(talk_seconds=30))
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(talk_seconds=None), "/dial")
    assert call.wait_finished(5)

    whisper = webhook_app.requests_to("/whisper")[0].params
    child_sid = whisper["CallSid"]
    assert child_sid != call.sid and whisper["ParentCallSid"] == call.sid
    assert whisper["Direction"] == "outbound-dial" and whisper["CallStatus"] == "in-progress"
    assert (whisper["From"], whisper["To"]) == (TWILIO_NUMBER, REP)
    assert webhook_app.requests_to("/whisper-answer")[0].params["Digits"] == "1"

    done = _dial_done(webhook_app)
    assert done["CallSid"] == call.sid
    assert done["DialCallStatus"] == "completed" and done["DialCallSid"] == child_sid
    assert done["DialCallDuration"] == "30"
    assert call.heard("rep") == [WHISPER, "Connecting."]
    assert call.heard(f"rep:{REP}") == call.heard("rep")
    assert call.heard("caller") == ["Dial status completed."]
    assert all(h.valid for h in webhook_app.all())

    rep_status = [h.params for h in webhook_app.requests_to("/rep-status")]
    assert [p["CallStatus"] for p in rep_status] == ["initiated", "ringing", "in-progress", "completed"]
    assert rep_status[-1]["CallSid"] == child_sid and int(rep_status[-1]["CallDuration"]) >= 30
    assert [leg.status for leg in call.legs] == ["completed", "completed"]


def test_bridge_lasts_until_the_rep_hangs_up(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    emu.register_rep(REP, RepScript.accepts(talk_seconds=None))
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(talk_seconds=None), "/dial")
    assert call.wait_until(lambda c: c.state == "bridged", 5)
    assert webhook_app.requests_to("/dial-done") == []
    assert emu.rep_hang_up(REP)
    assert call.wait_finished(5)
    assert _dial_done(webhook_app)["DialCallStatus"] == "completed"
    assert call.heard("caller") == ["Dial status completed."]  # the caller continued with the action


def test_caller_hanging_up_while_bridged_still_posts_the_action(
    emu: TwilioEmulator, webhook_app: WebhookApp
) -> None:
    emu.register_rep(REP, RepScript.accepts(talk_seconds=None))
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(talk_seconds=10), "/dial", status_callback="/status")
    assert call.wait_finished(5)
    done = _dial_done(webhook_app)
    assert done["DialCallStatus"] == "completed" and done["DialCallDuration"] == "10"
    assert done["CallStatus"] == "completed"
    assert call.heard("caller") == []  # the action's TwiML was ignored: nobody was left to hear it
    assert webhook_app.requests_to("/status")[0].params["CallStatus"] == "completed"


def test_rest_completing_the_rep_leg_ends_the_bridge(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    emu.register_rep(REP, RepScript.accepts(talk_seconds=None))
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(talk_seconds=None), "/dial")
    assert call.wait_until(lambda c: c.state == "bridged", 5)
    child_sid = call.legs[1].sid
    fetched = client.calls(child_sid).fetch()
    assert fetched.parent_call_sid == call.sid and fetched.status == "in-progress"
    client.calls(child_sid).update(status="completed")
    assert call.wait_finished(5)
    assert _dial_done(webhook_app)["DialCallStatus"] == "completed"
    assert call.heard("caller") == ["Dial status completed."]


def test_caller_hanging_up_during_the_whisper_cancels_the_dial(
    make_emulator: EmulatorFactory, webhook_app: WebhookApp
) -> None:
    emu = make_emulator(time_scale=0.05)  # the whisper prompt takes ~0.2 s of real time
    emu.register_rep(REP, RepScript.accepts())
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/dial")
    assert call.wait_until(lambda c: c.heard("rep") != [], 5)
    assert call.hang_up()
    assert call.wait_finished(5)
    assert _dial_done(webhook_app)["DialCallStatus"] == "canceled"
    assert webhook_app.requests_to("/whisper-answer") == []
    assert [leg.status for leg in call.legs] == ["completed", "completed"]
    assert call.heard("caller") == []


def test_declined_whisper_is_no_answer(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    emu.register_rep(REP, RepScript.declines())
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/dial")
    assert call.wait_finished(5)
    done = _dial_done(webhook_app)
    assert (done["DialCallStatus"], done["DialCallDuration"]) == ("no-answer", "0")
    assert webhook_app.requests_to("/whisper-answer")[0].params["Digits"] == "2"
    assert call.heard("rep") == [WHISPER]
    assert call.heard("caller") == ["Dial status no-answer."]


def test_ignored_whisper_times_out_into_hangup(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    emu.register_rep(REP, RepScript.ignores_whisper())
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/dial")
    assert call.wait_finished(5)
    assert webhook_app.requests_to("/whisper-answer") == []
    assert _dial_done(webhook_app)["DialCallStatus"] == "no-answer"


def test_unanswered_dial_times_out(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    emu.register_rep(REP, RepScript.no_answer())
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/dial?timeout=20")
    assert call.wait_finished(5)
    assert _dial_done(webhook_app)["DialCallStatus"] == "no-answer"
    action = next(w for w in call.webhooks if w.purpose == "dial action")
    assert 20 <= action.at < 21  # requested when the 20 s ring timeout expired
    assert webhook_app.requests_to("/whisper") == []


def test_unregistered_number_is_no_answer(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/dial?reps=%2B15550100099")
    assert call.wait_finished(5)
    assert _dial_done(webhook_app)["DialCallStatus"] == "no-answer"


def test_busy_rep(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    emu.register_rep(REP, RepScript.busy())
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/dial")
    assert call.wait_finished(5)
    assert _dial_done(webhook_app)["DialCallStatus"] == "busy"
    assert call.heard("caller") == ["Dial status busy."]


def test_parallel_numbers_first_accepting_rep_wins(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    emu.register_rep(REP, RepScript.declines(answer_after=1))
    emu.register_rep(REP_2, RepScript.accepts(talk_seconds=5, answer_after=3))
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url=f"/dial?reps={REP},{REP_2}".replace("+", "%2B"))
    assert call.wait_finished(5)
    done = _dial_done(webhook_app)
    winner = next(leg for leg in call.legs if leg.to == REP_2)
    assert done["DialCallStatus"] == "completed" and done["DialCallSid"] == winner.sid
    assert call.heard(f"rep:{REP}") == [WHISPER]
    assert call.heard(f"rep:{REP_2}") == [WHISPER, "Connecting."]


def test_rep_sequence_changes_behaviour_per_offer(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    emu.register_rep(REP, RepScript.sequence([RepScript.busy(), RepScript.accepts(talk_seconds=5)]))
    results = []
    for _ in range(3):
        call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/dial")
        assert call.wait_finished(5)
        results.append(call.heard("caller")[0])
    assert results == ["Dial status busy.", "Dial status completed.", "Dial status completed."]


def test_rest_redirect_of_the_caller_while_bridged_drops_the_rep(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    emu.register_rep(REP, RepScript.accepts(talk_seconds=None))
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(talk_seconds=None), "/dial")
    assert call.wait_until(lambda c: c.state == "bridged", 5)
    client.calls(call.sid).update(url=webhook_app.base_url + "/agent-ready")
    assert call.wait_finished(5)
    # Twilio still requests the Dial action after a call modification, and ignores its TwiML
    # (changelog 2021-05-24, "Changes to <Dial> behavior ...").
    assert _dial_done(webhook_app)["DialCallStatus"] == "completed"
    assert call.heard("caller") == ["Connecting you now."]
    assert [leg.status for leg in call.legs] == ["completed", "completed"]
