"""The fake REST API, exercised through the real ``twilio.rest.Client``."""

from __future__ import annotations

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.emulator.conftest import ACCOUNT_SID, AUTH_TOKEN, CALLER, REP, TWILIO_NUMBER, WebhookApp
from voice.emulator import CallerScript, EmulatedCall, RepScript, Speech, TwilioEmulator


def _calls_url(emu: TwilioEmulator, suffix: str = "Calls.json") -> str:
    return f"{emu.rest_url}/2010-04-01/Accounts/{ACCOUNT_SID}/{suffix}"


def test_rest_requires_basic_auth(emu: TwilioEmulator) -> None:
    for auth in (None, (ACCOUNT_SID, "wrong"), ("AC" + "9" * 32, AUTH_TOKEN)):
        response = requests.get(_calls_url(emu), auth=auth, timeout=5)
        assert response.status_code == 401
        body = response.json()
        assert body["code"] == 20003 and body["status"] == 401 and body["message"] and body["more_info"]
    bad = Client(ACCOUNT_SID, "wrong")
    bad.api.base_url = emu.rest_url
    with pytest.raises(TwilioRestException) as excinfo:
        bad.calls("CA" + "0" * 32).fetch()
    assert (excinfo.value.status, excinfo.value.code) == (401, 20003)
    assert emu.rest_log[0].method == "GET" and emu.rest_log[0].path.endswith("/Calls.json")


def test_outbound_call_created_through_the_client(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client
) -> None:
    emu.register_callee(CALLER, CallerScript([Speech("call me tomorrow")]))
    created = client.calls.create(
        to=CALLER,
        from_=TWILIO_NUMBER,
        url=webhook_app.base_url + "/outbound",
        status_callback=webhook_app.base_url + "/status",
        status_callback_event=["initiated", "answered", "completed"],
    )
    assert created.sid.startswith("CA") and created.status == "queued" and created.direction == "outbound-api"
    call = emu.call(created.sid)
    assert isinstance(call, EmulatedCall) and call.wait_finished(5)
    assert emu.wait_for_call(lambda c: c.sid == created.sid, 1) is call

    first = webhook_app.requests_to("/outbound")[0].params
    assert first["Direction"] == "outbound-api" and first["CallStatus"] == "in-progress"
    assert (first["From"], first["To"]) == (TWILIO_NUMBER, CALLER)
    assert call.heard("caller") == ["This is Warmline calling you back.", "You said call me tomorrow."]
    events = [h.params["CallStatus"] for h in webhook_app.requests_to("/status")]
    assert events == ["initiated", "in-progress", "completed"]

    fetched = client.calls(created.sid).fetch()
    assert fetched.status == "completed" and fetched.duration == str(call.duration)
    assert fetched.start_time is not None and fetched.end_time is not None
    with pytest.raises(TwilioRestException) as finished:
        client.calls(created.sid).update(url=webhook_app.base_url + "/outbound")
    assert (finished.value.status, finished.value.code) == (400, 21220)
    with pytest.raises(TwilioRestException) as unknown:
        client.calls("CA" + "0" * 32).fetch()
    assert (unknown.value.status, unknown.value.code) == (404, 20404)
    assert [c.sid for c in client.calls.list(to=CALLER)] == [created.sid]
    create = next(r for r in emu.rest_log if r.method == "POST")
    assert create.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json" and create.form["To"] == CALLER


@pytest.mark.parametrize(
    ("script", "status"),
    [(None, "no-answer"), (CallerScript(answer="busy"), "busy"), (CallerScript(answer="no-answer"), "no-answer")],
)
def test_outbound_call_that_never_connects(
    emu: TwilioEmulator, webhook_app: WebhookApp, client: Client, script: CallerScript | None, status: str
) -> None:
    if script is not None:
        emu.register_callee(CALLER, script)
    created = client.calls.create(
        to=CALLER, from_=TWILIO_NUMBER, url=webhook_app.base_url + "/outbound",
        status_callback=webhook_app.base_url + "/status",
    )
    call = emu.call(created.sid)
    assert call is not None and call.wait_finished(5)
    assert webhook_app.requests_to("/outbound") == []
    assert call.status == status and call.duration == 0
    callback = webhook_app.requests_to("/status")[0].params
    assert callback["CallStatus"] == status and callback["CallDuration"] == "0"


def test_outbound_call_with_inline_twiml_to_a_rep(emu: TwilioEmulator, client: Client) -> None:
    emu.register_rep(REP, RepScript.accepts())
    created = client.calls.create(to=REP, from_=TWILIO_NUMBER, twiml="<Response><Say>Shift starts.</Say></Response>")
    call = emu.call(created.sid)
    assert call is not None and call.wait_finished(5)
    assert call.heard("rep") == ["Shift starts."] and call.heard("caller") == []


def test_create_validation_errors(emu: TwilioEmulator, client: Client) -> None:
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    missing_to = requests.post(_calls_url(emu), data={"From": TWILIO_NUMBER, "Url": "http://x/y"}, auth=auth, timeout=5)
    assert (missing_to.status_code, missing_to.json()["code"]) == (400, 21201)
    no_url = requests.post(_calls_url(emu), data={"From": TWILIO_NUMBER, "To": CALLER}, auth=auth, timeout=5)
    assert (no_url.status_code, no_url.json()["code"]) == (400, 21205)
    other_account = requests.get(
        f"{emu.rest_url}/2010-04-01/Accounts/AC{'5' * 32}/Calls.json", auth=auth, timeout=5
    )
    assert other_account.status_code == 404


def test_status_updates_on_a_live_call(emu: TwilioEmulator, webhook_app: WebhookApp, client: Client) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(talk_seconds=None), "/enqueue")
    assert call.wait_until(lambda c: c.state == "queued", 5)
    # "canceled" only ends calls that were never answered: no effect here.
    assert client.calls(call.sid).update(status="canceled").status == "in-progress"
    assert not call.wait_finished(0.1)
    assert client.calls(call.sid).update(status="completed").status == "completed"
    assert call.wait_finished(5)
    assert call.status == "completed"
    assert webhook_app.requests_to("/queue-done")[0].params["QueueResult"] == "hangup"
