"""Inbound calls: signatures, request parameters, Gather, Redirect, Record, errors, status callbacks."""

from __future__ import annotations

import time

import pytest
import requests

from tests.emulator.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CALLER,
    TWILIO_NUMBER,
    EmulatorFactory,
    WebhookApp,
)
from voice.emulator import (
    APPLICATION_ERROR_MESSAGE,
    CallerScript,
    Digits,
    Recording,
    Silence,
    Speech,
    TwilioEmulator,
)


def test_webhooks_are_signed_and_carry_the_standard_parameters(
    emu: TwilioEmulator, webhook_app: WebhookApp
) -> None:
    call = emu.place_call(
        from_=CALLER, to=TWILIO_NUMBER, script=CallerScript([Digits("1")]), voice_url="/gather",
        from_city="PORTLAND", from_state="OR",
    )
    assert call.wait_finished(5)
    hits = webhook_app.all()
    assert [h.path for h in hits] == ["/gather", "/menu"]
    assert all(h.valid for h in hits), "every webhook must validate with RequestValidator"
    first, second = (h.params for h in hits)
    assert first["CallSid"] == call.sid and call.sid.startswith("CA") and len(call.sid) == 34
    assert first["AccountSid"] == ACCOUNT_SID
    assert first["CallStatus"] == "ringing"
    assert second["CallStatus"] == "in-progress"
    assert first["Direction"] == "inbound"
    assert first["ApiVersion"] == "2010-04-01"
    assert (first["From"], first["To"], first["Caller"], first["Called"]) == (
        CALLER, TWILIO_NUMBER, CALLER, TWILIO_NUMBER,
    )
    assert (first["FromCity"], first["FromState"], first["FromCountry"]) == ("PORTLAND", "OR", "US")
    assert hits[0].headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    # Relative action "menu" resolved against the document URL.
    assert call.requests[1].url == webhook_app.base_url + "/menu"
    assert second["Digits"] == "1" and second["FinishedOnKey"] == ""
    assert call.heard("caller") == ["Welcome to Warmline.", "Press one or say sales.", "You pressed 1."]
    assert call.status == "completed" and call.state == "completed"
    assert call.errors == []


def test_signature_covers_the_public_url_when_sent_through_a_proxy(
    make_emulator: EmulatorFactory, webhook_app: WebhookApp
) -> None:
    emu = make_emulator(
        public_url="https://warmline.example.com",
        connect_url=webhook_app.base_url,
        extra_headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "warmline.example.com"},
    )
    call = emu.place_call(from_=CALLER, to=TWILIO_NUMBER, voice_url="/redirect")
    assert call.wait_finished(5)
    hits = webhook_app.all()
    assert [h.path for h in hits] == ["/redirect", "/redirected"]
    assert all(h.valid for h in hits)
    assert all(h.url.startswith("https://warmline.example.com/") for h in hits)
    assert call.requests[0].url == "https://warmline.example.com/redirect"
    # Signed for the public URL: it would not validate against the URL the bytes went to.
    from twilio.request_validator import RequestValidator

    direct = webhook_app.base_url + "/redirect"
    signature = hits[0].headers["X-Twilio-Signature"]
    assert not RequestValidator(AUTH_TOKEN).validate(direct, hits[0].params, signature)


def test_gather_speech(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript([Speech("sales", confidence=0.87)]), "/gather")
    assert call.wait_finished(5)
    menu = webhook_app.requests_to("/menu")[0].params
    assert menu["SpeechResult"] == "sales" and menu["Confidence"] == "0.87"
    assert "Digits" not in menu
    assert call.heard("caller")[-1] == "You said sales."


def test_gather_silence_falls_through_to_the_next_verb(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript([Silence()]), "/gather")
    assert call.wait_finished(5)
    assert webhook_app.requests_to("/menu") == []
    assert call.heard() == ["Welcome to Warmline.", "Press one or say sales.", "We did not get that."]
    # 3 + 5 words at 2.5 words/s, the 3 s timeout, then 5 more words: 8.2 s, reported as 9.
    assert call.duration == 9


def test_gather_ignores_an_input_kind_it_does_not_accept(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript([Speech("sales")]), "/gather?input=dtmf")
    assert call.wait_finished(5)
    assert webhook_app.requests_to("/menu") == []
    assert call.heard()[-1] == "We did not get that."


def test_gather_action_on_empty_result_posts_without_input(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(), "/gather-empty")
    assert call.wait_finished(5)
    menu = webhook_app.requests_to("/menu")[0].params
    assert "Digits" not in menu and "SpeechResult" not in menu
    assert call.heard() == ["Enter your account number.", "Nothing received."]


def test_redirect_with_get_puts_params_in_the_signed_query_string(
    emu: TwilioEmulator, webhook_app: WebhookApp
) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/redirect")
    assert call.wait_finished(5)
    get = webhook_app.requests_to("/redirected")[0]
    assert get.method == "GET" and get.valid
    assert get.params["step"] == "2" and get.params["CallSid"] == call.sid
    assert call.webhooks[1].method == "GET"
    assert call.heard() == ["One moment.", "Step 2."]


def test_record_posts_a_downloadable_recording(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    audio = b"RIFF-fake-wave-bytes"
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript([Recording(duration=7, wav=audio)]), "/record")
    assert call.wait_finished(5)
    params = webhook_app.requests_to("/recorded")[0].params
    assert params["RecordingDuration"] == "7" and params["RecordingSid"].startswith("RE")
    url = params["RecordingUrl"]
    assert url == f"{emu.rest_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{params['RecordingSid']}"
    ok = requests.get(url + ".wav", auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5)
    assert ok.status_code == 200 and ok.content == audio
    assert requests.get(url + ".wav", timeout=5).status_code == 401
    status = webhook_app.requests_to("/recording-status")[0].params
    assert status["RecordingStatus"] == "completed" and status["RecordingSid"] == params["RecordingSid"]
    assert call.heard() == ["Leave a message after the beep.", "Got 7 seconds."]


def test_record_with_silence_continues_with_the_next_verb(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript([Silence()]), "/record")
    assert call.wait_finished(5)
    assert webhook_app.requests_to("/recorded") == []
    assert call.heard()[-1] == "No message recorded."


def test_status_callback_when_the_call_ends(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(
        CALLER, TWILIO_NUMBER, CallerScript([Digits("1")]), "/gather", status_callback="/status"
    )
    assert call.wait_finished(5)
    status = webhook_app.requests_to("/status")
    assert len(status) == 1 and status[0].valid
    params = status[0].params
    assert params["CallStatus"] == "completed"
    assert params["CallDuration"] == str(call.duration) and call.duration > 0
    assert params["CallbackSource"] == "call-progress-events"
    assert params["SequenceNumber"] == "0"
    assert params["Timestamp"].endswith("+0000")


@pytest.mark.parametrize(
    ("path", "code"),
    [("/broken-500", 11200), ("/broken-html", 12100), ("/broken-json", 12300), ("/broken-root", 12102)],
)
def test_application_errors_end_the_call(emu: TwilioEmulator, path: str, code: int) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url=path, status_callback="/status")
    assert call.wait_finished(5)
    assert [e.code for e in call.errors] == [code]
    assert call.errors[0].fatal and call.errors[0].url is not None and call.errors[0].url.endswith(path)
    assert call.heard() == [APPLICATION_ERROR_MESSAGE]
    assert call.status == "completed"


def test_reject_before_answer_is_busy(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/reject", status_callback="/status")
    assert call.wait_finished(5)
    assert call.status == "busy" and call.duration == 0 and call.heard() == []
    assert webhook_app.requests_to("/status")[0].params["CallStatus"] == "busy"


def test_unreachable_app_is_a_connection_failure(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator(public_url="http://127.0.0.1:9")  # discard port: nothing listens
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/voice")
    assert call.wait_finished(5)
    assert [e.code for e in call.errors] == [11205]
    assert call.requests[0].status_code == 0


def test_post_signed_and_forged_variants(emu: TwilioEmulator, webhook_app: WebhookApp) -> None:
    params = {"CallSid": "CA" + "f" * 32, "CallStatus": "completed", "CallDuration": "12"}
    assert emu.post_signed("/status", params).status_code == 204
    assert emu.post_signed("/status", params, sign_url=webhook_app.base_url + "/other").status_code == 403
    assert emu.post_signed("/status", params, signature="AAAA").status_code == 403
    assert emu.sign(webhook_app.base_url + "/status", params) == webhook_app.all()[0].headers["X-Twilio-Signature"]


def test_rest_redirect_interrupts_a_long_pause(make_emulator: EmulatorFactory, webhook_app: WebhookApp) -> None:
    from twilio.rest import Client

    emu = make_emulator(time_scale=0.25)  # a real 150 s pause unless interrupted
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = emu.rest_url
    call = emu.place_call(CALLER, TWILIO_NUMBER, voice_url="/long-pause")
    assert call.wait_until(lambda c: "Please hold." in c.heard(), 5)
    started = time.monotonic()
    client.calls(call.sid).update(url=webhook_app.base_url + "/agent-ready")
    assert call.wait_finished(5)
    assert time.monotonic() - started < 3
    assert call.heard() == ["Please hold.", "Connecting you now."]


def test_close_hangs_up_live_calls(make_emulator: EmulatorFactory) -> None:
    emu = make_emulator()
    call = emu.place_call(CALLER, TWILIO_NUMBER, CallerScript(talk_seconds=None), "/enqueue")
    assert call.wait_until(lambda c: c.state == "queued", 5)
    emu.close()
    assert call.finished and call.status == "completed"
