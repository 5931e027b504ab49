"""Recordings fetched from a real local HTTP server that, like Twilio, wants the account's basic auth."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from ivr_flows import Flow
from tests.adapters.conftest import Speak, route
from voice.adapters.recordings import RecordingUnavailable, download_recording, media_url, transcribe_recording
from voice.adapters.speech import SphinxTranscriber

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ACCOUNT_SID = "AC" + "0f" * 16
AUTH_TOKEN = "recording-token-5f9c2e7a1b"
BASE = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings"


@dataclass
class FakeTwilio:
    """Serves recordings by SID; only ``<sid>.wav`` exists (as the WAV rendition), everything needs basic auth."""

    media: dict[str, bytes] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)
    url: str = ""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        self.requested.append(request.path)
        expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            response = Response("authenticate", status=401, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        else:
            name = request.path.removeprefix(BASE + "/")
            body = self.media.get(name.removesuffix(".wav")) if name.endswith(".wav") else None
            response = Response("not found", status=404) if body is None else Response(body, mimetype="audio/x-wav")
        return response(environ, start_response)


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    app = FakeTwilio()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    app.url = f"http://127.0.0.1:{server.server_port}{BASE}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_server_refuses_without_credentials(twilio: FakeTwilio) -> None:
    twilio.media["RE1"] = b"RIFF..."
    assert requests.get(f"{twilio.url}/RE1.wav", timeout=5).status_code == 401


def test_download_appends_wav_and_authenticates(twilio: FakeTwilio) -> None:
    twilio.media["RE1"] = b"RIFF" + bytes(range(256)) * 1000
    audio = download_recording(f"{twilio.url}/RE1", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    assert audio == twilio.media["RE1"]
    assert twilio.requested == [f"{BASE}/RE1.wav"]


def test_wrong_token_names_the_status_and_never_the_token(twilio: FakeTwilio) -> None:
    twilio.media["RE1"] = b"RIFF..."
    with pytest.raises(RecordingUnavailable) as caught:
        download_recording(f"{twilio.url}/RE1", account_sid=ACCOUNT_SID, auth_token="wrong-secret-123")
    assert caught.value.status == 401 and not caught.value.retryable
    assert "HTTP 401" in str(caught.value)
    assert "wrong-secret-123" not in str(caught.value)


def test_missing_recording_is_retryable(twilio: FakeTwilio) -> None:
    with pytest.raises(RecordingUnavailable, match="HTTP 404") as caught:
        download_recording(f"{twilio.url}/RE404", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    assert caught.value.retryable


def test_unreachable_server_is_a_recording_error() -> None:
    with pytest.raises(RecordingUnavailable, match="ConnectionError"):
        download_recording("http://127.0.0.1:9/RE1", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, timeout=2)


def test_credentials_in_the_url_stay_out_of_messages(twilio: FakeTwilio) -> None:
    url = twilio.url.replace("http://", f"http://{ACCOUNT_SID}:url-secret-456@") + "/RE404"
    with pytest.raises(RecordingUnavailable) as caught:
        download_recording(url, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    assert "url-secret-456" not in str(caught.value)


def test_media_url() -> None:
    assert media_url("https://api.twilio.com/x/Recordings/RE1") == "https://api.twilio.com/x/Recordings/RE1.wav"
    assert media_url("https://api.twilio.com/x/Recordings/RE1?a=b") == "https://api.twilio.com/x/Recordings/RE1.wav?a=b"
    assert media_url("https://api.twilio.com/x/Recordings/RE1.mp3") == "https://api.twilio.com/x/Recordings/RE1.mp3"


def test_voicemail_is_transcribed_and_keeps_its_link(
    twilio: FakeTwilio, transcriber: SphinxTranscriber, speech_flow: Flow, speak: Speak
) -> None:
    twilio.media["RE7"] = speak("hi I was charged twice on my bill please call me back", "rms")
    result = transcribe_recording(
        f"{twilio.url}/RE7", transcriber=transcriber, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN
    )
    assert result.ok and result.error is None
    assert result.engine == "sphinx" and result.confidence is not None
    assert result.text is not None and route(speech_flow, result.text) == "billing", result.text
    assert result.recording_url == f"{twilio.url}/RE7"


@pytest.mark.parametrize(
    ("sid", "reason"),
    [("RE404", "download failed: recording .* unavailable: HTTP 404"), ("REBAD", "transcription failed: not a WAV")],
)
def test_failed_voicemail_keeps_the_link_and_says_why(
    twilio: FakeTwilio, transcriber: SphinxTranscriber, sid: str, reason: str
) -> None:
    twilio.media["REBAD"] = b"<Response>not audio</Response>"
    result = transcribe_recording(
        f"{twilio.url}/{sid}", transcriber=transcriber, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN
    )
    assert not result.ok and result.text is None and result.confidence is None
    assert result.error is not None and re.search(reason, result.error), result.error
    assert result.recording_url == f"{twilio.url}/{sid}"
    assert result.to_dict()["recording_url"] == result.recording_url
