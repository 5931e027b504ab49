"""``<Enqueue>``: the waitUrl loop, Leave, hang-ups in the queue, and leaving through the REST API."""

from __future__ import annotations

from twilio.rest import Client

from tests.emulator.conftest import CALLER, TWILIO_NUMBER, WebhookApp
from voice.emulator import CallerScript, EmulatedCall, TwilioEmulator

OTHER_CALLER = "+15551230002"


def _hold_params(app: WebhookApp, call: EmulatedCall) -> list[dict[str, str]]:
    return [h.params for h in app.requests_to("/hold", call.sid)]


def _saw_position(app: WebhookApp, call: EmulatedCall, position: str, size: str) -> bool:
    return any(
        p["QueuePosition"] == position and p["CurrentQueueSize"] == size for p in _hold_params(app, call)
    )


def test_wait_url_loop_reports_positions_and_rest_redirect_leaves_the_queue(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    patient = CallerScript(talk_seconds=None)
    first = emu.place_call(CALLER, TWILIO_NUMBER, patient, "/enqueue")
    assert first.wait_until(lambda c: c.state == "queued", 5)
    second = emu.place_call(OTHER_CALLER, TWILIO_NUMBER, patient, "/enqueue")
    assert second.wait_until(lambda c: _saw_position(webhook_app, c, "2", "2"), 5)
    assert first.wait_until(lambda c: _saw_position(webhook_app, c, "1", "2"), 5)

    hold = _hold_params(webhook_app, first)[-1]
    assert hold["QueueSid"].startswith("QU") and len(hold["QueueSid"]) == 34
    assert hold["QueueSid"] == _hold_params(webhook_app, second)[-1]["QueueSid"]
    assert hold["MaxQueueSize"] == "100"
    assert int(hold["QueueTime"]) > 0 and int(hold["AvgQueueTime"]) > 0
    assert all(h.valid for h in webhook_app.all())
    assert first.heard()[:2] == ["All reps are busy.", "You are caller number 1."]

    # The real helper library, pointed at the fake API, takes the first caller out of the queue.
    client.calls(first.sid).update(url=webhook_app.base_url + "/agent-ready", method="POST")
    assert first.wait_finished(5)
    assert first.heard()[-1] == "Connecting you now."
    assert webhook_app.requests_to("/queue-done", first.sid) == []  # redirect: no Enqueue action
    assert ("POST", f"/2010-04-01/Accounts/{emu.account_sid}/Calls/{first.sid}.json") in [
        (r.method, r.path) for r in emu.rest_log
    ]

    # The second caller moves up, then hangs up: the Enqueue action hears about it.
    assert second.wait_until(lambda c: _saw_position(webhook_app, c, "1", "1"), 5)
    assert second.hang_up()
    assert second.wait_finished(5)
    done = webhook_app.requests_to("/queue-done", second.sid)
    assert len(done) == 1
    assert done[0].params["QueueResult"] == "hangup" and done[0].params["CallStatus"] == "completed"
    assert "Queue result hangup." not in second.heard()  # the caller was gone: TwiML ignored
    assert second.status == "completed"


def test_leave_posts_the_action_and_continues_with_its_twiml(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/enqueue?wait=/hold-leave&wait_method=GET")
    assert call.wait_finished(5)
    waits = webhook_app.requests_to("/hold-leave")
    assert waits and all(h.method == "GET" and h.valid for h in waits)
    assert [h.params["QueueTime"] for h in waits] == ["0", "4", "8", "12"]
    done = webhook_app.requests_to("/queue-done")[0].params
    assert done["QueueResult"] == "leave"
    assert done["QueueSid"].startswith("QU") and int(done["QueueTime"]) >= 10
    assert call.heard() == ["All reps are busy.", "Queue result leave."]


def test_caller_gives_up_in_the_queue(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(
        CALLER, TWILIO_NUMBER, CallerScript(hang_up_in_queue_after=12), "/enqueue", status_callback="/status"
    )
    assert call.wait_finished(5)
    done = webhook_app.requests_to("/queue-done")[0].params
    assert done["QueueResult"] == "hangup" and done["QueueTime"] == "12"
    # Hold TwiML: Say (5 words, 2 s) + Pause 5 = 7 s per loop; fetched at 0 s and 7 s, gone at 12 s.
    assert [h.params["QueueTime"] for h in webhook_app.requests_to("/hold")] == ["0", "7"]
    status = webhook_app.requests_to("/status")[0].params
    assert status["CallStatus"] == "completed"
    assert call.duration == int(status["CallDuration"]) >= 12


def test_verbs_not_allowed_in_a_wait_url_are_skipped_with_a_warning(
    emu: TwilioEmulator, webhook_app: WebhookApp
) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/enqueue?wait=/hold-bad")
    assert call.wait_finished(5)
    assert [(e.code, e.fatal) for e in call.errors] == [(12200, False)]
    assert webhook_app.requests_to("/whisper") == []
    assert call.heard() == ["All reps are busy.", "Still holding.", "Queue result leave."]


def test_dequeue_through_the_member_resource(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(talk_seconds=None), "/enqueue")
    assert call.wait_until(lambda c: len(_hold_params(webhook_app, c)) >= 1, 5)
    queue_sid = _hold_params(webhook_app, call)[0]["QueueSid"]
    queues = client.queues.list()
    assert [(q.sid, q.friendly_name, q.current_size) for q in queues] == [(queue_sid, "support", 1)]
    member = client.queues(queue_sid).members("Front").update(url=webhook_app.base_url + "/agent-ready")
    assert member.call_sid == call.sid and member.position == 1
    assert call.wait_finished(5)
    assert call.heard()[-1] == "Connecting you now."
    done = webhook_app.requests_to("/queue-done", call.sid)
    assert [d.params["QueueResult"] for d in done] == ["redirected"]
    assert client.queues(queue_sid).fetch().current_size == 0
