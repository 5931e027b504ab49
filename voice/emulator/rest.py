"""A fake of the Twilio REST API (``/2010-04-01/Accounts/{AccountSid}/...``) on loopback.

It serves the calls a call-center app makes while calls are live: create an outbound call,
fetch/redirect/hang up a call, dequeue a queue member, download a recording.  Resources are
shaped like Twilio's JSON so :class:`twilio.rest.Client` (with ``client.api.base_url`` pointed
here) parses them, and errors carry Twilio's error codes so the app's error handling is
exercised too.  Changing a live call never blocks the request: the call's thread is signalled
and acts on the change at its next verb boundary or wait, as on Twilio.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from voice.emulator.calls import CallbackSpec, EmulatedCall, HangupSignal, Leg, RedirectSignal
from voice.emulator.queues import CallQueue, QueueMember
from voice.emulator.runtime import Runtime, StoredRecording

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["FakeRestApi", "OutboundCallRequest", "RestRequest"]

API_VERSION = "2010-04-01"


class RestRequest(NamedTuple):
    """One request the app made to the fake REST API: ``(method, path, form)``."""

    method: str
    path: str
    form: dict[str, str]


@dataclass(frozen=True)
class OutboundCallRequest:
    """A validated ``Calls.json`` create, handed to the emulator to start the call."""

    to: str
    from_: str
    url: str | None
    method: str
    twiml: str | None
    status_callback: CallbackSpec | None
    timeout: float


def _rfc2822(value: datetime | None) -> str | None:
    return format_datetime(value) if value is not None else None


def _json(payload: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def twilio_error(status: int, code: int, message: str) -> Response:
    """An error body the way Twilio's API (and ``TwilioRestException``) shapes it."""
    return _json(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status,
    )


def _page(key: str, items: list[dict[str, Any]], uri: str) -> dict[str, Any]:
    return {
        key: items,
        "start": 0,
        "end": max(0, len(items) - 1),
        "page": 0,
        "page_size": max(50, len(items)),
        "first_page_uri": uri,
        "next_page_uri": None,
        "previous_page_uri": None,
        "uri": uri,
    }


class _QuietHandler(WSGIRequestHandler):
    """Keeps werkzeug's per-request access log out of test output."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


Handler = Callable[[Request, dict[str, str]], Response]


class FakeRestApi:
    """The fake API server.  ``create_call`` is how it asks the emulator to start outbound calls."""

    def __init__(
        self,
        rt: Runtime,
        create_call: Callable[[OutboundCallRequest], EmulatedCall],
        api_keys: Mapping[str, str] | None = None,
    ) -> None:
        self.rt = rt
        self._create_call = create_call
        self._api_keys = dict(api_keys or {})
        self._log: list[RestRequest] = []
        self._log_lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        account = r"/2010-04-01/Accounts/(?P<account>[^/]+)"
        sid = r"(?P<sid>[^/.]+)"
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(account + r"/Calls\.json"), {"GET": self._list_calls, "POST": self._create}),
            (re.compile(account + rf"/Calls/{sid}\.json"), {"GET": self._fetch_call, "POST": self._update_call}),
            (re.compile(account + r"/Queues\.json"), {"GET": self._list_queues, "POST": self._create_queue}),
            (re.compile(account + rf"/Queues/{sid}\.json"), {"GET": self._fetch_queue}),
            (re.compile(account + rf"/Queues/{sid}/Members\.json"), {"GET": self._list_members}),
            (
                re.compile(account + rf"/Queues/{sid}/Members/(?P<member>[^/.]+)\.json"),
                {"GET": self._fetch_member, "POST": self._dequeue_member},
            ),
            (
                re.compile(account + rf"/Recordings/{sid}(?P<ext>\.[a-z0-9]+)?"),
                {"GET": self._fetch_recording},
            ),
        ]

    # ------------------------------------------------------------------ server lifecycle
    def start(self) -> str:
        self._server = make_server("127.0.0.1", 0, self.wsgi, threaded=True, request_handler=_QuietHandler)
        # A short poll interval keeps shutdown() (and so emulator.close()) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="twilio-rest", daemon=True
        )
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def log(self) -> list[RestRequest]:
        with self._log_lock:
            return list(self._log)

    # ------------------------------------------------------------------ dispatch
    def wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self.handle(request)
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        form = request.form.to_dict(flat=True) if request.method == "POST" else request.args.to_dict(flat=True)
        with self._log_lock:
            self._log.append(RestRequest(request.method, request.path, form))
        if not self._authorized(request):
            response = twilio_error(401, 20003, "Authentication Error - invalid username")
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        for pattern, handlers in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            args = {k: v for k, v in match.groupdict().items() if v is not None}
            if args["account"] != self.rt.config.account_sid:
                return self._not_found(request)
            handler = handlers.get(request.method)
            if handler is None:
                return twilio_error(405, 20004, "Method not allowed")
            return handler(request, args)
        return self._not_found(request)

    def _authorized(self, request: Request) -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic" or auth.username is None or auth.password is None:
            return False
        if auth.username == self.rt.config.account_sid:
            return auth.password == self.rt.config.auth_token
        return self._api_keys.get(auth.username) == auth.password

    @staticmethod
    def _not_found(request: Request) -> Response:
        return twilio_error(404, 20404, f"The requested resource {request.path} was not found")

    def _base(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.rt.config.account_sid}"

    # ------------------------------------------------------------------ Calls
    def call_json(self, leg: Leg, status: str | None = None) -> dict[str, Any]:
        call = leg.call
        with call.cond:
            uri = f"{self._base()}/Calls/{leg.sid}.json"
            ended = leg.ended_at is not None
            return {
                "sid": leg.sid,
                "account_sid": leg.account_sid,
                "parent_call_sid": leg.parent_sid,
                "date_created": _rfc2822(call.wall(leg.created_at)),
                "date_updated": _rfc2822(leg.date_updated),
                "to": leg.to,
                "to_formatted": leg.to,
                "from": leg.from_,
                "from_formatted": leg.from_,
                "phone_number_sid": None,
                "status": status or leg.status,
                "start_time": _rfc2822(call.wall(leg.answered_at)) if leg.answered_at is not None else None,
                "end_time": _rfc2822(call.wall(leg.ended_at)) if leg.ended_at is not None else None,
                "duration": str(leg.duration) if ended else None,
                "price": None,
                "price_unit": "USD",
                "direction": leg.direction,
                "answered_by": None,
                "api_version": API_VERSION,
                "forwarded_from": None,
                "group_sid": None,
                "caller_name": None,
                "queue_time": "0",
                "trunk_sid": None,
                "uri": uri,
                "subresource_uris": {
                    "notifications": uri.replace(".json", "/Notifications.json"),
                    "recordings": uri.replace(".json", "/Recordings.json"),
                },
            }

    def _list_calls(self, request: Request, args: dict[str, str]) -> Response:
        filters = {"To": "to", "From": "from_", "Status": "status", "ParentCallSid": "parent_sid"}
        legs = self.rt.legs()
        for param, attribute in filters.items():
            wanted = request.args.get(param)
            if wanted:
                legs = [leg for leg in legs if getattr(leg, attribute) == wanted]
        items = [self.call_json(leg) for leg in reversed(legs)]
        return _json(_page("calls", items, request.full_path.rstrip("?")))

    def _create(self, request: Request, args: dict[str, str]) -> Response:
        form = request.form
        to, from_ = form.get("To", "").strip(), form.get("From", "").strip()
        url, twiml = form.get("Url"), form.get("Twiml")
        if not to:
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not from_:
            return twilio_error(400, 21213, "No 'From' number is specified")
        if form.get("ApplicationSid") and not (url or twiml):
            return twilio_error(400, 21205, "ApplicationSid is not emulated; pass Url or Twiml")
        if not url and not twiml:
            return twilio_error(400, 21205, "Url parameter is required")
        if url and not _absolute_http(url):
            return twilio_error(400, 21205, f"Url is not a valid URL: {url}")
        callback = form.get("StatusCallback")
        if callback and not _absolute_http(callback):
            return twilio_error(400, 21609, f"StatusCallback is not a valid URL: {callback}")
        events = frozenset(" ".join(form.getlist("StatusCallbackEvent")).split()) or frozenset({"completed"})
        try:
            timeout = float(form.get("Timeout", "60"))
        except ValueError:
            return twilio_error(400, 21216, "Timeout must be a number")
        call = self._create_call(
            OutboundCallRequest(
                to=to,
                from_=from_,
                url=url or None,
                method=(form.get("Method") or "POST").upper(),
                twiml=twiml or None,
                status_callback=(
                    CallbackSpec(callback, (form.get("StatusCallbackMethod") or "POST").upper(), events)
                    if callback
                    else None
                ),
                timeout=timeout,
            )
        )
        return _json(self.call_json(call.root_leg, status="queued"), 201)

    def _leg_or_404(self, request: Request, sid: str) -> Leg | Response:
        leg = self.rt.leg(sid)
        return leg if leg is not None else self._not_found(request)

    def _fetch_call(self, request: Request, args: dict[str, str]) -> Response:
        leg = self._leg_or_404(request, args["sid"])
        return leg if isinstance(leg, Response) else _json(self.call_json(leg))

    def _update_call(self, request: Request, args: dict[str, str]) -> Response:
        leg = self._leg_or_404(request, args["sid"])
        if isinstance(leg, Response):
            return leg
        form = request.form
        status, url, twiml = form.get("Status"), form.get("Url"), form.get("Twiml")
        if not leg.live:
            return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if status:
            if status not in ("completed", "canceled"):
                return twilio_error(400, 21218, f"Invalid Status {status!r}: use completed or canceled")
            if status == "canceled" and leg.answered:
                # Twilio: "canceled" only ends calls that are still queued or ringing.
                return _json(self.call_json(leg))
            accepted = leg.signal(HangupSignal("rest", status))
            final = status if leg.answered or status == "canceled" else "canceled"
            return _json(self.call_json(leg, status=final if accepted else None))
        if twiml:
            signal = RedirectSignal(None, "POST", twiml)
        elif url:
            if not _absolute_http(url):
                return twilio_error(400, 21205, f"Url is not a valid URL: {url}")
            signal = RedirectSignal(url, (form.get("Method") or "POST").upper())
        else:
            return _json(self.call_json(leg))
        if not leg.signal(signal):
            return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        return _json(self.call_json(leg))

    # ------------------------------------------------------------------ Queues
    def queue_json(self, queue: CallQueue) -> dict[str, Any]:
        uri = f"{self._base()}/Queues/{queue.sid}.json"
        return {
            "sid": queue.sid,
            "account_sid": self.rt.config.account_sid,
            "friendly_name": queue.friendly_name,
            "current_size": len(self.rt.queues.members(queue)),
            "average_wait_time": self.rt.queues.average_wait(queue),
            "max_size": queue.max_size,
            "date_created": _rfc2822(queue.date_created),
            "date_updated": _rfc2822(queue.date_created),
            "uri": uri,
            "subresource_uris": {"members": uri.replace(".json", "/Members.json")},
        }

    def member_json(self, member: QueueMember, position: int) -> dict[str, Any]:
        return {
            "call_sid": member.leg.sid,
            "queue_sid": member.queue.sid,
            "date_enqueued": _rfc2822(member.date_enqueued),
            "position": position,
            "wait_time": round(member.wait_time),
            "uri": f"{self._base()}/Queues/{member.queue.sid}/Members/{member.leg.sid}.json",
        }

    def _queue_or_404(self, request: Request, sid: str) -> CallQueue | Response:
        queue = self.rt.queues.by_sid(sid)
        return queue if queue is not None else self._not_found(request)

    def _list_queues(self, request: Request, args: dict[str, str]) -> Response:
        items = [self.queue_json(q) for q in self.rt.queues.all()]
        return _json(_page("queues", items, request.path))

    def _create_queue(self, request: Request, args: dict[str, str]) -> Response:
        name = request.form.get("FriendlyName", "").strip()
        if not name:
            return twilio_error(400, 20001, "Missing required parameter FriendlyName in the post body")
        try:
            max_size = int(request.form.get("MaxSize", "100"))
        except ValueError:
            return twilio_error(400, 20001, "MaxSize must be an integer")
        return _json(self.queue_json(self.rt.queues.create(name, max_size)), 201)

    def _fetch_queue(self, request: Request, args: dict[str, str]) -> Response:
        queue = self._queue_or_404(request, args["sid"])
        return queue if isinstance(queue, Response) else _json(self.queue_json(queue))

    def _list_members(self, request: Request, args: dict[str, str]) -> Response:
        queue = self._queue_or_404(request, args["sid"])
        if isinstance(queue, Response):
            return queue
        members = self.rt.queues.members(queue)
        items = [self.member_json(m, i + 1) for i, m in enumerate(members)]
        return _json(_page("queue_members", items, request.path))

    def _fetch_member(self, request: Request, args: dict[str, str]) -> Response:
        queue = self._queue_or_404(request, args["sid"])
        if isinstance(queue, Response):
            return queue
        found = self.rt.queues.find_member(queue, args["member"])
        return self._not_found(request) if found is None else _json(self.member_json(*found))

    def _dequeue_member(self, request: Request, args: dict[str, str]) -> Response:
        """Take a member out of the queue and send its call to ``Url`` (Twilio's Member update)."""
        queue = self._queue_or_404(request, args["sid"])
        if isinstance(queue, Response):
            return queue
        url = request.form.get("Url", "")
        if not url:
            return twilio_error(400, 20001, "Missing required parameter Url in the post body")
        if not _absolute_http(url):
            return twilio_error(400, 21205, f"Url is not a valid URL: {url}")
        taken = self.rt.queues.take(queue, args["member"])
        if taken is None:
            return self._not_found(request)
        member, position = taken
        method = (request.form.get("Method") or "POST").upper()
        if not member.leg.signal(RedirectSignal(url, method, source="dequeue")):
            return self._not_found(request)
        return _json(self.member_json(member, position))

    # ------------------------------------------------------------------ Recordings
    def recording_json(self, recording: StoredRecording) -> dict[str, Any]:
        uri = f"{self._base()}/Recordings/{recording.sid}.json"
        return {
            "sid": recording.sid,
            "account_sid": recording.account_sid,
            "call_sid": recording.call_sid,
            "api_version": API_VERSION,
            "channels": 1,
            "date_created": _rfc2822(recording.date_created),
            "date_updated": _rfc2822(recording.date_created),
            "start_time": _rfc2822(recording.date_created),
            "duration": str(recording.duration),
            "price": None,
            "price_unit": "USD",
            "source": recording.source,
            "status": "completed",
            "error_code": None,
            "uri": uri,
            "media_url": self.rt.recording_url(recording.sid),
        }

    def _fetch_recording(self, request: Request, args: dict[str, str]) -> Response:
        recording = self.rt.recordings.get(args["sid"])
        if recording is None:
            return self._not_found(request)
        ext = args.get("ext", "")
        if ext == ".json":
            return _json(self.recording_json(recording))
        if ext not in ("", ".wav"):
            return twilio_error(404, 20404, f"Only .wav media is emulated, not {ext}")
        return Response(recording.audio(), mimetype="audio/x-wav")


def _absolute_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
