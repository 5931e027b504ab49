"""Fixtures: a small Twilio webhook app served over real loopback HTTP, and emulators aimed at it.

The app validates ``X-Twilio-Signature`` with the real :class:`RequestValidator` against the URL
it was requested at (behind ``ProxyFix``, so the proxied case is checked against the public URL),
records every request, and answers each route with TwiML built by ``VoiceResponse``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask, Response, request
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from voice.emulator import TwilioEmulator

AUTH_TOKEN = "test-auth-token"
ACCOUNT_SID = "AC" + "1234abcd" * 4
REP = "+15550100001"
REP_2 = "+15550100002"
REP_3 = "+15550100003"
CALLER = "+15551230001"
TWILIO_NUMBER = "+15550009999"


@dataclass
class Hit:
    """One request the app received."""

    method: str
    path: str
    url: str
    params: dict[str, str]
    valid: bool
    headers: dict[str, str]


@dataclass
class WebhookApp:
    """The test app plus what it saw."""

    base_url: str = ""
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_to(self, path: str, call_sid: str | None = None) -> list[Hit]:
        with self.lock:
            return [
                h
                for h in self.hits
                if h.path == path and (call_sid is None or h.params.get("CallSid") == call_sid)
            ]

    def all(self) -> list[Hit]:
        with self.lock:
            return list(self.hits)


def xml(response: VoiceResponse) -> Response:
    return Response(str(response), mimetype="text/xml")


def build_app(state: WebhookApp) -> Flask:
    app = Flask("emulator-test-app")
    validator = RequestValidator(AUTH_TOKEN)

    @app.before_request
    def check_signature() -> Response | None:
        # request.url is rebuilt from the Host/X-Forwarded-* headers (ProxyFix below), the same
        # way a production app behind a proxy must do it.
        params = request.form if request.method == "POST" else {}
        valid = validator.validate(request.url, params, request.headers.get("X-Twilio-Signature", ""))
        hit = Hit(
            request.method, request.path, request.url, request.values.to_dict(), valid, dict(request.headers)
        )
        with state.lock:
            state.hits.append(hit)
        if not valid:
            return Response("bad signature", status=403)
        return None

    def p(name: str, default: str = "") -> str:
        return request.values.get(name, default)

    methods = ["GET", "POST"]

    @app.route("/gather", methods=methods)
    def gather() -> Response:
        r = VoiceResponse()
        r.say("Welcome to Warmline.")
        g = Gather(input=p("input", "speech dtmf"), action="menu", num_digits=1, timeout=3)
        g.say("Press one or say sales.")
        r.append(g)
        r.say("We did not get that.")
        return xml(r)

    @app.route("/gather-empty", methods=methods)
    def gather_empty() -> Response:
        r = VoiceResponse()
        g = Gather(input="dtmf", action="/menu", action_on_empty_result=True, timeout=4)
        g.say("Enter your account number.")
        r.append(g)
        r.say("unreachable")
        return xml(r)

    @app.route("/menu", methods=methods)
    def menu() -> Response:
        r = VoiceResponse()
        if "Digits" in request.values:
            r.say(f"You pressed {p('Digits')}.")
        elif "SpeechResult" in request.values:
            r.say(f"You said {p('SpeechResult')}.")
        else:
            r.say("Nothing received.")
        r.hangup()
        return xml(r)

    @app.route("/redirect", methods=methods)
    def redirect() -> Response:
        r = VoiceResponse()
        r.say("One moment.")
        r.redirect("/redirected?step=2", method="GET")
        return xml(r)

    @app.route("/redirected", methods=methods)
    def redirected() -> Response:
        r = VoiceResponse()
        r.say(f"Step {p('step')}.")
        return xml(r)

    @app.route("/enqueue", methods=methods)
    def enqueue() -> Response:
        r = VoiceResponse()
        r.say("All reps are busy.")
        r.enqueue("support", wait_url=p("wait", "/hold"), wait_url_method=p("wait_method", "POST"),
                  action="/queue-done")
        r.say("After the queue.")
        return xml(r)

    @app.route("/hold", methods=methods)
    def hold() -> Response:
        r = VoiceResponse()
        r.say(f"You are caller number {p('QueuePosition')}.")
        r.pause(length=5)
        return xml(r)

    @app.route("/hold-leave", methods=methods)
    def hold_leave() -> Response:
        r = VoiceResponse()
        if int(p("QueueTime", "0")) >= 10:
            r.leave()
        else:
            r.pause(length=4)
        return xml(r)

    @app.route("/hold-bad", methods=methods)
    def hold_bad() -> Response:
        r = VoiceResponse()
        r.dial(REP)  # not allowed in a waitUrl: skipped with a warning
        r.say("Still holding.")
        r.leave()
        return xml(r)

    @app.route("/queue-done", methods=methods)
    def queue_done() -> Response:
        r = VoiceResponse()
        r.say(f"Queue result {p('QueueResult')}.")
        r.hangup()
        return xml(r)

    @app.route("/agent-ready", methods=methods)
    def agent_ready() -> Response:
        r = VoiceResponse()
        r.say("Connecting you now.")
        return xml(r)

    @app.route("/long-pause", methods=methods)
    def long_pause() -> Response:
        r = VoiceResponse()
        r.say("Please hold.")
        r.pause(length=600)
        r.say("unreachable")
        return xml(r)

    @app.route("/dial", methods=methods)
    def dial() -> Response:
        r = VoiceResponse()
        d = Dial(action="/dial-done", timeout=int(p("timeout", "20")), caller_id=TWILIO_NUMBER)
        for number in p("reps", REP).split(","):
            d.number(number, url="/whisper", status_callback="/rep-status",
                     status_callback_event="initiated ringing answered completed")
        r.append(d)
        r.say("After the dial.")
        return xml(r)

    @app.route("/whisper", methods=methods)
    def whisper() -> Response:
        r = VoiceResponse()
        g = Gather(num_digits=1, action="/whisper-answer", timeout=5)
        g.say("Caller needs help with billing. Press 1 to accept.")
        r.append(g)
        r.hangup()
        return xml(r)

    @app.route("/whisper-answer", methods=methods)
    def whisper_answer() -> Response:
        r = VoiceResponse()
        if p("Digits") == "1":
            r.say("Connecting.")
        else:
            r.hangup()
        return xml(r)

    @app.route("/dial-done", methods=methods)
    def dial_done() -> Response:
        r = VoiceResponse()
        r.say(f"Dial status {p('DialCallStatus')}.")
        r.hangup()
        return xml(r)

    @app.route("/record", methods=methods)
    def record() -> Response:
        r = VoiceResponse()
        r.say("Leave a message after the beep.")
        r.record(action="/recorded", max_length=30, recording_status_callback="/recording-status")
        r.say("No message recorded.")
        return xml(r)

    @app.route("/recorded", methods=methods)
    def recorded() -> Response:
        r = VoiceResponse()
        r.say(f"Got {p('RecordingDuration')} seconds.")
        return xml(r)

    @app.route("/outbound", methods=methods)
    def outbound() -> Response:
        r = VoiceResponse()
        r.say("This is Warmline calling you back.")
        g = Gather(input="speech", action="/menu", timeout=3)
        r.append(g)
        return xml(r)

    @app.route("/status", methods=methods)
    @app.route("/rep-status", methods=methods)
    @app.route("/recording-status", methods=methods)
    @app.route("/conf-status", methods=methods)
    def status() -> Response:
        return Response("", status=204)

    # ------------------------------------------------------------------ conferences
    @app.route("/dial-transfer", methods=methods)
    def dial_transfer() -> Response:
        """Caller bridged to a rep; when the rep's leg is moved into room ``room``, the caller's
        Dial action puts the caller in the same room."""
        r = VoiceResponse()
        room = p("room", "warm")
        d = Dial(action=f"/conf-dial?room={room}&label=caller&wait={p('wait', '/conf-wait')}",
                 answer_on_bridge=True, timeout=20, caller_id=TWILIO_NUMBER)
        d.number(p("rep", REP), url="/whisper", status_callback="/rep-status",
                 status_callback_event="initiated ringing answered completed")
        r.append(d)
        return xml(r)

    @app.route("/conf-dial", methods=methods)
    def conf_dial() -> Response:
        """``<Dial action><Conference ...>room</Conference></Dial>``, every attribute from the query."""
        r = VoiceResponse()
        options: dict[str, object] = {"beep": p("beep", "true")}
        flags = {"start": "start_conference_on_enter", "end": "end_conference_on_exit", "muted": "muted"}
        for arg, attribute in flags.items():
            if arg in request.args:
                options[attribute] = p(arg)
        if p("label"):
            options["participant_label"] = p("label")
        if p("wait", "none") != "none":
            options["wait_url"] = p("wait")
        if p("wait_method"):
            options["wait_method"] = p("wait_method")
        if p("max"):
            options["max_participants"] = p("max")
        if p("callback", "/conf-status") != "none":
            options["status_callback"] = p("callback", "/conf-status")
            options["status_callback_event"] = p("events", "start end join leave mute hold modify announcement")
        dial_options: dict[str, object] = {}
        if p("action", "/conf-done") != "none":
            dial_options["action"] = p("action", "/conf-done")
        if p("time_limit"):
            dial_options["time_limit"] = p("time_limit")
        d = Dial(**dial_options)
        d.conference(p("room", "room1"), **options)
        r.append(d)
        r.say("After the conference.")
        return xml(r)

    @app.route("/conf-done", methods=methods)
    def conf_done() -> Response:
        r = VoiceResponse()
        r.say(f"Conference over: {p('DialCallStatus')}.")
        r.hangup()
        return xml(r)

    @app.route("/conf-wait", methods=methods)
    def conf_wait() -> Response:
        """Wait audio that loops itself with an empty <Redirect> (the URL of this document)."""
        r = VoiceResponse()
        r.say("Please hold while we connect you.")
        r.play("https://media.example.com/wait.mp3")
        r.redirect("")
        return xml(r)

    @app.route("/conf-wait-once", methods=methods)
    def conf_wait_once() -> Response:
        """Wait audio that does not loop: Twilio plays silence after it."""
        r = VoiceResponse()
        r.say("Please hold.")
        return xml(r)

    @app.route("/conf-wait-bad", methods=methods)
    def conf_wait_bad() -> Response:
        r = VoiceResponse()
        g = Gather(num_digits=1)  # not allowed in conference audio: skipped with 13238
        g.say("Press a key.")
        r.append(g)
        r.say("Still waiting.")
        r.redirect("")
        return xml(r)

    @app.route("/hold-music", methods=methods)
    def hold_music() -> Response:
        r = VoiceResponse()
        r.say("You are on hold.")
        r.play("https://media.example.com/hold.mp3")
        r.redirect("", method="GET")
        return xml(r)

    @app.route("/announcement", methods=methods)
    def announcement() -> Response:
        r = VoiceResponse()
        r.say(p("text", "Your call is being transferred."))
        return xml(r)

    @app.route("/rep-whisper-conf", methods=methods)
    def rep_whisper_conf() -> Response:
        """A REST-created call to a rep: whisper, press 1, then into the room."""
        r = VoiceResponse()
        g = Gather(num_digits=1, action=f"/rep-whisper-conf-answer?room={p('room', 'warm')}&label={p('label')}",
                   timeout=5)
        g.say("Warm transfer: billing question. Press 1 to accept.")
        r.append(g)
        r.hangup()
        return xml(r)

    @app.route("/rep-whisper-conf-answer", methods=methods)
    def rep_whisper_conf_answer() -> Response:
        r = VoiceResponse()
        if p("Digits") == "1":
            d = Dial(action="/conf-done")
            d.conference(p("room", "warm"), participant_label=p("label"), beep="false")
            r.append(d)
        else:
            r.hangup()
        return xml(r)

    @app.route("/reject", methods=methods)
    def reject() -> Response:
        r = VoiceResponse()
        r.reject(reason="busy")
        return xml(r)

    @app.route("/broken-500", methods=methods)
    def broken_500() -> Response:
        return Response("boom", status=500)

    @app.route("/broken-html", methods=methods)
    def broken_html() -> Response:
        return Response("<html><body>Oops", mimetype="text/html")

    @app.route("/broken-json", methods=methods)
    def broken_json() -> Response:
        return Response('{"say": "hi"}', mimetype="application/json")

    @app.route("/broken-root", methods=methods)
    def broken_root() -> Response:
        return Response("<Say>hi</Say>", mimetype="text/xml")

    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1)  # type: ignore[method-assign]
    return app


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


@pytest.fixture
def webhook_app() -> Iterator[WebhookApp]:
    state = WebhookApp()
    server: BaseWSGIServer = make_server(
        "127.0.0.1", 0, build_app(state), threaded=True, request_handler=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


EmulatorFactory = Callable[..., TwilioEmulator]


@pytest.fixture
def make_emulator(webhook_app: WebhookApp) -> Iterator[EmulatorFactory]:
    created: list[TwilioEmulator] = []

    def factory(**kwargs: object) -> TwilioEmulator:
        options: dict[str, object] = {
            "public_url": webhook_app.base_url,
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
        }
        options.update(kwargs)
        emu = TwilioEmulator(**options).start()  # type: ignore[arg-type]
        created.append(emu)
        return emu

    yield factory
    for emu in created:
        emu.close()


@pytest.fixture
def emu(make_emulator: EmulatorFactory) -> TwilioEmulator:
    return make_emulator()


@pytest.fixture
def client(emu: TwilioEmulator) -> Client:
    """The real Twilio helper library, pointed at the fake REST API."""
    twilio = Client(ACCOUNT_SID, AUTH_TOKEN)
    twilio.api.base_url = emu.rest_url
    return twilio
