"""The test-facing facade: :class:`TwilioEmulator`.

It wires the pieces together (webhook client, call threads, fake REST API, registries) and
exposes the few verbs a test needs: place a call, register who answers which number, end a
rep's conversation (or hang up any leg), look at conferences, sign or send an arbitrary
webhook, and read what the app asked the REST API to do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Literal

import requests

from voice.emulator.call_threads import run_inbound_call, run_outbound_call
from voice.emulator.conferences import Conference
from voice.emulator.http import SharedKey, WebhookClient, new_session
from voice.emulator.interpreter import VERBS
from voice.emulator.legs import CallbackSpec, EmulatedCall, HangupSignal, Leg, new_sid
from voice.emulator.parties import CallerScript, InputSource, Party, RepCursor, RepScript
from voice.emulator.rest import FakeRestApi, OutboundCallRequest, RestRequest
from voice.emulator.runtime import Config, Runtime

__all__ = ["DEFAULT_ACCOUNT_SID", "TwilioEmulator"]

DEFAULT_ACCOUNT_SID = "AC" + "0" * 32

#: Where the emulator pretends the Twilio number and the callers are (Twilio sends these).
TWILIO_NUMBER_GEO = {"City": "SAN FRANCISCO", "State": "CA", "Zip": "94105", "Country": "US"}


class TwilioEmulator:
    """Twilio Programmable Voice, emulated against a webhook app over real loopback HTTP.

    ``public_url`` is the base URL Twilio believes the app lives at: it is what requests are
    signed with and what relative URLs resolve against.  ``connect_url``, when given, is where
    those requests physically go (an app behind a TLS-terminating proxy).  ``time_scale`` is
    real seconds slept per virtual second (0: scripted durations take no real time);
    ``queue_poll_interval`` is the real pause between ``waitUrl`` fetches.  ``shared_key``: sign
    every webhook as a matching Webhook Rule makes Twilio sign it (that key's secret and algorithm,
    named in ``X-Twilio-Webhooks-Signature-Settings``) instead of with the Auth Token.
    """

    def __init__(
        self,
        public_url: str = "http://127.0.0.1:5001",
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = "secret",
        connect_url: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        time_scale: float = 0.0,
        queue_poll_interval: float = 0.02,
        *,
        play_seconds: float = 10.0,
        api_keys: Mapping[str, str] | None = None,
        shared_key: SharedKey | None = None,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.webhooks = WebhookClient(
            public_url=public_url,
            auth_token=auth_token,
            connect_url=connect_url,
            extra_headers=extra_headers,
            shared_key=shared_key,
        )
        config = Config(
            public_url=self.public_url,
            account_sid=account_sid,
            auth_token=auth_token,
            time_scale=time_scale,
            queue_poll_interval=queue_poll_interval,
            play_seconds=play_seconds,
        )
        self._rt = Runtime(config, self.webhooks)
        self._rest = FakeRestApi(self._rt, self._create_outbound, api_keys)
        self._started = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> TwilioEmulator:
        """Start the fake REST API (idempotent).  Returns ``self`` for chaining."""
        with self._lock:
            if not self._started:
                self._rt.rest_url = self._rest.start()
                self._started = True
        return self

    def __enter__(self) -> TwilioEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Hang up every live call, wait (bounded) for the call threads, stop the REST server."""
        self._rt.closing = True
        calls = self._rt.calls()
        for call in calls:
            if not call.finished:
                call.root_leg.signal(HangupSignal("emulator"))
        deadline = time.monotonic() + timeout
        # Calls can spawn calls (a child leg redirected out of its <Dial>): join until none is new.
        joined: set[str] = set()
        while True:
            pending = [c for c in self._rt.calls() if c.sid not in joined]
            if not pending:
                break
            for call in pending:
                joined.add(call.sid)
                if not call.finished:
                    call.root_leg.signal(HangupSignal("emulator"))
                if call.thread is not None:
                    call.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._rt.conferences.close(timeout=max(0.1, deadline - time.monotonic()))
        with self._lock:
            if self._started:
                self._rest.stop()
                self._started = False

    @property
    def rest_url(self) -> str:
        """Base URL of the fake REST API (set ``client.api.base_url`` / ``TWILIO_API_URL`` to it)."""
        if not self._rt.rest_url:
            raise RuntimeError("call TwilioEmulator.start() first")
        return self._rt.rest_url

    @property
    def rest_log(self) -> list[RestRequest]:
        """Every request the app sent to the fake REST API, as ``(method, path, form)``."""
        return self._rest.log

    # ------------------------------------------------------------------ people
    def register_rep(self, number: str, script: RepScript) -> None:
        """Who answers a ``<Dial><Number>`` to ``number`` (re-register to change; restarts a sequence)."""
        self._rt.directory.register_rep(number, script)

    def register_callee(self, number: str, script: CallerScript) -> None:
        """Who answers an outbound REST-created call to ``number``."""
        self._rt.directory.register_callee(number, script)

    def rep_hang_up(self, number: str) -> bool:
        """The rep at ``number`` hangs up every call leg they are on.  ``False`` if none was live."""
        found = False
        for leg in self._rt.legs():
            if leg.to == number and leg.direction != "inbound" and leg.live:
                found = leg.signal(HangupSignal("party")) or found
        return found

    def hang_up(self, call_sid: str) -> bool:
        """Whoever is on the leg ``call_sid`` (any leg: inbound, child, REST-created) hangs up now.

        ``False`` if there is no such live leg.
        """
        leg = self._rt.leg(call_sid)
        return leg is not None and leg.signal(HangupSignal("party"))

    # ------------------------------------------------------------------ conferences
    @property
    def conferences(self) -> list[Conference]:
        """Every conference so far, oldest first (completed ones included)."""
        return self._rt.conferences.all()

    def conference(self, name_or_sid: str) -> Conference | None:
        """A conference by SID, or the newest one with that friendly name."""
        return self._rt.conferences.find(name_or_sid)

    def wait_for_conference(
        self, name_or_sid: str, predicate: Callable[[Conference], bool] = lambda c: True, timeout: float = 10
    ) -> Conference | None:
        """Wait until the conference exists and ``predicate`` holds for it (``None`` on timeout)."""
        deadline = time.monotonic() + timeout
        registry = self._rt.conferences
        with registry.cond:
            while True:
                found = registry.find(name_or_sid)
                if found is not None and predicate(found):
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                registry.cond.wait(min(0.05, remaining))

    def wait_for_conference_callbacks(self, timeout: float = 5) -> bool:
        """Wait until every conference status callback fired so far has been delivered."""
        return self._rt.conferences.drain(timeout)

    # ------------------------------------------------------------------ calls
    def place_call(
        self,
        from_: str,
        to: str,
        script: CallerScript | Party | None = None,
        voice_url: str = "/voice/incoming",
        status_callback: str | None = None,
        *,
        method: str = "POST",
        status_callback_method: str = "POST",
        from_city: str = "SPRINGFIELD",
        from_state: str = "IL",
        from_zip: str = "62701",
        from_country: str = "US",
        extra_params: Mapping[str, str] | None = None,
    ) -> EmulatedCall:
        """Ring the app: an inbound call from ``from_`` to the Twilio number ``to``.

        Returns at once; the call runs in its own thread.  ``extra_params`` are added to every
        webhook of the call (e.g. ``CallerName``, ``StirVerstat``).
        """
        self.start()
        script = script if script is not None else CallerScript()
        sid = new_sid("CA")
        call = EmulatedCall(sid=sid, from_=from_, to=to, direction="inbound", inputs=script.cursor())
        callback = (
            CallbackSpec(self.webhooks.absolute(status_callback), status_callback_method.upper())
            if status_callback
            else None
        )
        call.attach_root(
            Leg(
                call,
                sid=sid,
                account_sid=self.account_sid,
                from_=from_,
                to=to,
                direction="inbound",
                party="caller",
                from_geo={"City": from_city, "State": from_state, "Zip": from_zip, "Country": from_country},
                to_geo=TWILIO_NUMBER_GEO,
                extra_params=extra_params,
                status="ringing",
                status_callback=callback,
            )
        )
        url = self.webhooks.absolute(voice_url)
        self._launch(call, lambda: run_inbound_call(self._rt, call, VERBS, url, method.upper()))
        return call

    def _create_outbound(self, request: OutboundCallRequest) -> EmulatedCall:
        """Start a REST-created (``outbound-api``) call; the callee comes from the directory."""
        directory = self._rt.directory
        inputs: InputSource | None = None
        party = "caller"
        answer_after = 0.0
        answer: Literal["answer", "busy", "no-answer"] = "no-answer"
        answered_by = "human"
        callee = directory.callee(request.to)
        if callee is not None:
            inputs, answer, answered_by = callee.cursor(), callee.answer, callee.answered_by
        elif directory.is_rep(request.to):
            behavior = directory.offer(request.to)
            party = f"rep:{request.to}"
            if behavior is not None:
                answer_after = behavior.answer_after
                inputs = RepCursor(behavior)
                answer = "answer" if behavior.answers else ("busy" if behavior.kind == "busy" else "no-answer")
        sid = request.sid or new_sid("CA")
        call = EmulatedCall(
            sid=sid, from_=request.from_, to=request.to, direction="outbound-api", inputs=inputs, caller_party=party
        )
        call.attach_root(
            Leg(
                call,
                sid=sid,
                account_sid=self.account_sid,
                from_=request.from_,
                to=request.to,
                direction="outbound-api",
                party=party,
                from_geo=TWILIO_NUMBER_GEO,
                to_geo={"City": "SPRINGFIELD", "State": "IL", "Zip": "62701", "Country": "US"},
                status="queued",
                status_callback=request.status_callback,
            )
        )
        self._launch(
            call,
            lambda: run_outbound_call(
                self._rt,
                call,
                VERBS,
                url=request.url,
                method=request.method,
                twiml=request.twiml,
                ring_timeout=request.timeout,
                answer=answer,
                answer_after=answer_after,
                answered_by=answered_by if request.machine_detection else None,
            ),
        )
        return call

    def _launch(self, call: EmulatedCall, target: Callable[[], None]) -> None:
        self._rt.launch(call, target)

    @property
    def calls(self) -> list[EmulatedCall]:
        """Every call so far (inbound and REST-created), oldest first."""
        return self._rt.calls()

    def call(self, sid: str) -> EmulatedCall | None:
        """The call a SID belongs to (child-leg SIDs find their parent call)."""
        leg = self._rt.leg(sid)
        return leg.call if leg is not None else None

    def wait_for_call(self, predicate: Callable[[EmulatedCall], bool], timeout: float = 10) -> EmulatedCall | None:
        """Wait until some call (e.g. one the app created through the REST API) matches ``predicate``.

        Re-checked whenever a call appears and every 20 ms otherwise, so predicates on a call's
        state (``c.finished``, ``c.state == "queued"``) work too.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = next((c for c in self._rt.calls() if predicate(c)), None)
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0:
                return found
            with self._rt.cond:
                self._rt.cond.wait(min(0.02, remaining))

    # ------------------------------------------------------------------ signing helpers
    def sign(self, url: str, params: Mapping[str, str]) -> str:
        """The ``X-Twilio-Signature`` Twilio would send for ``params`` POSTed to ``url``."""
        return self.webhooks.sign(url, params)

    def post_signed(
        self,
        path_or_url: str,
        params: Mapping[str, str],
        *,
        sign_url: str | None = None,
        signature: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """POST ``params`` to the app exactly like a Twilio webhook (signed, via ``connect_url``).

        For forged-request tests: ``sign_url`` signs a different URL than the one requested,
        ``signature`` sends a given header value verbatim, ``headers`` adds/overrides headers.
        """
        url = self.webhooks.absolute(path_or_url)
        value = signature if signature is not None else self.sign(sign_url or url, params)
        sent_headers = self.webhooks.headers(value)
        sent_headers.update(headers or {})
        with new_session() as session:
            return session.post(
                self.webhooks.transport_url(url),
                data=dict(params),
                headers=sent_headers,
                timeout=self.webhooks.timeout,
            )
