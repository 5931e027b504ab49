"""A fake of the Twilio REST API (``/2010-04-01/Accounts/{AccountSid}/...``) on loopback.

It serves the calls a call-center app makes while calls are live: create an outbound call,
fetch/redirect/hang up a call, dequeue a queue member, download a recording, and run
conferences (list/fetch/end/announce a conference; add, list, fetch, mute, hold, announce to,
modify and kick its participants).  Resources are
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
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from voice.emulator.conferences import (
    BEEP_VALUES,
    CONFERENCE_EVENTS,
    DEFAULT_CONFERENCE_EVENTS,
    MAX_PARTICIPANTS,
    Conference,
    JoinOptions,
    Participant,
    ParticipantUpdate,
    RestRefusal,
    label_problem,
)
from voice.emulator.dial_conference import conference_twiml
from voice.emulator.legs import CallbackSpec, EmulatedCall, HangupSignal, Leg, RedirectSignal, new_sid
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
    #: ``MachineDetection`` (Enable or DetectMessageEnd): the answer URL is fetched with ``AnsweredBy``.
    machine_detection: str | None = None
    #: A SID chosen in advance (a Participant create must know its call's SID before the call runs).
    sid: str | None = None


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
        # A conference is addressed by SID, or (to add a participant) by friendly name, which may
        # contain dots and (URL-encoded) spaces.
        room = r"(?P<sid>[^/]+?)"
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
            (re.compile(account + r"/Conferences\.json"), {"GET": self._list_conferences}),
            (
                re.compile(account + rf"/Conferences/{room}\.json"),
                {"GET": self._fetch_conference, "POST": self._update_conference},
            ),
            (
                re.compile(account + rf"/Conferences/{room}/Participants\.json"),
                {"GET": self._list_participants, "POST": self._create_participant},
            ),
            (
                re.compile(account + rf"/Conferences/{room}/Participants/(?P<member>[^/]+?)\.json"),
                {"GET": self._fetch_participant, "POST": self._update_participant, "DELETE": self._kick_participant},
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
                machine_detection=form.get("MachineDetection") or None,
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

    # ------------------------------------------------------------------ Conferences
    def conference_json(self, conference: Conference) -> dict[str, Any]:
        uri = f"{self._base()}/Conferences/{conference.sid}.json"
        with self.rt.conferences.cond:
            return {
                "sid": conference.sid,
                "account_sid": conference.account_sid,
                "friendly_name": conference.friendly_name,
                "status": conference.status,
                "region": "us1",
                "api_version": API_VERSION,
                "date_created": _rfc2822(conference.date_created),
                "date_updated": _rfc2822(conference.date_updated),
                "reason_conference_ended": conference.reason_ended,
                "call_sid_ending_conference": conference.call_sid_ending,
                "uri": uri,
                "subresource_uris": {
                    "participants": uri.replace(".json", "/Participants.json"),
                    "recordings": uri.replace(".json", "/Recordings.json"),
                },
            }

    def participant_json(
        self, p: Participant, queue_time: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        with self.rt.conferences.cond:
            return {
                "account_sid": self.rt.config.account_sid,
                "call_sid": p.call_sid,
                "label": p.label,
                "call_sid_to_coach": p.call_sid_to_coach,
                "coaching": p.coaching,
                "conference_sid": p.conference.sid,
                "date_created": _rfc2822(p.date_created),
                "date_updated": _rfc2822(p.date_updated),
                "end_conference_on_exit": p.end_on_exit,
                "muted": p.muted,
                "hold": p.hold,
                "start_conference_on_enter": p.start_on_enter,
                "status": status or p.status,
                # Twilio returns queue_time only in the response to a create.
                "queue_time": queue_time,
                "uri": f"{self._base()}/Conferences/{p.conference.sid}/Participants/{p.call_sid}.json",
            }

    def _conference_or_404(self, request: Request, sid: str) -> Conference | Response:
        conference = self.rt.conferences.get(sid)
        return conference if conference is not None else self._not_found(request)

    def _list_conferences(self, request: Request, args: dict[str, str]) -> Response:
        conferences = self.rt.conferences.all()
        name, status = request.args.get("FriendlyName"), request.args.get("Status")
        if name:
            conferences = [c for c in conferences if c.friendly_name == name]
        if status:
            conferences = [c for c in conferences if c.status == status]
        # DateCreated=YYYY-MM-DD, and "DateCreated<=..."/"DateCreated>=..." (which arrive as the keys
        # "DateCreated<"/"DateCreated>"): on, on or before, on or after that UTC day.
        for field_name, attribute in (("DateCreated", "date_created"), ("DateUpdated", "date_updated")):
            for suffix, keep in (("", _on), ("<", _on_or_before), (">", _on_or_after)):
                value = request.args.get(field_name + suffix)
                if not value:
                    continue
                try:
                    day = date.fromisoformat(value.strip())
                except ValueError:
                    return twilio_error(400, 20001, f"Invalid {field_name}{suffix}: {value!r}")
                conferences = [c for c in conferences if keep(getattr(c, attribute), day)]
        conferences.sort(key=lambda c: c.date_created, reverse=True)
        items = [self.conference_json(c) for c in conferences]
        return _json(_page("conferences", items, request.full_path.rstrip("?")))

    def _fetch_conference(self, request: Request, args: dict[str, str]) -> Response:
        conference = self._conference_or_404(request, args["sid"])
        return conference if isinstance(conference, Response) else _json(self.conference_json(conference))

    def _update_conference(self, request: Request, args: dict[str, str]) -> Response:
        """``Status=completed`` ends the room; ``AnnounceUrl`` plays to everybody in it."""
        conference = self._conference_or_404(request, args["sid"])
        if isinstance(conference, Response):
            return conference
        form = request.form
        status = form.get("Status")
        if status and status != "completed":
            return twilio_error(400, 20001, f"Invalid Status {status!r}: only completed is allowed")
        announce = form.get("AnnounceUrl")
        if announce is not None:
            problem = _url_problem("AnnounceUrl", announce) or _method_problem("AnnounceMethod", form)
            if problem is not None:
                return problem
            self.rt.conferences.announce(conference, announce, (form.get("AnnounceMethod") or "POST").upper())
        if status == "completed":
            self.rt.conferences.end(conference)
        return _json(self.conference_json(conference))

    def _participant_or_404(self, request: Request, args: dict[str, str]) -> tuple[Conference, Participant] | Response:
        conference = self._conference_or_404(request, args["sid"])
        if isinstance(conference, Response):
            return conference
        p = self.rt.conferences.participant(conference, args["member"])
        return (conference, p) if p is not None else self._not_found(request)

    def _list_participants(self, request: Request, args: dict[str, str]) -> Response:
        conference = self._conference_or_404(request, args["sid"])
        if isinstance(conference, Response):
            return conference
        members = self.rt.conferences.members(conference)
        for param, attribute in (("Muted", "muted"), ("Hold", "hold"), ("Coaching", "coaching")):
            wanted = request.args.get(param)
            if wanted:
                members = [m for m in members if getattr(m, attribute) == (wanted.lower() == "true")]
        items = [self.participant_json(m) for m in members]
        return _json(_page("participants", items, request.full_path.rstrip("?")))

    def _fetch_participant(self, request: Request, args: dict[str, str]) -> Response:
        found = self._participant_or_404(request, args)
        return found if isinstance(found, Response) else _json(self.participant_json(found[1]))

    def _update_participant(self, request: Request, args: dict[str, str]) -> Response:
        found = self._participant_or_404(request, args)
        if isinstance(found, Response):
            return found
        p, form = found[1], request.form
        for url_param in ("HoldUrl", "AnnounceUrl"):
            value = form.get(url_param)
            problem = _url_problem(url_param, value) if value is not None else None
            if problem is not None:
                return problem
        wait_url = form.get("WaitUrl")
        if wait_url:  # "" is allowed: nothing plays while waiting
            problem = _url_problem("WaitUrl", wait_url)
            if problem is not None:
                return problem
        for method_param in ("HoldMethod", "AnnounceMethod", "WaitMethod"):
            problem = _method_problem(method_param, form)
            if problem is not None:
                return problem
        coach = form.get("CallSidToCoach")
        self.rt.conferences.update(
            p,
            ParticipantUpdate(
                muted=_form_bool(form.get("Muted")),
                hold=_form_bool(form.get("Hold")),
                hold_url=form.get("HoldUrl") or None,
                hold_method=(form.get("HoldMethod") or "GET").upper(),
                announce_url=form.get("AnnounceUrl") or None,
                announce_method=(form.get("AnnounceMethod") or "POST").upper(),
                wait_url=wait_url,
                wait_method=form["WaitMethod"].upper() if form.get("WaitMethod") else None,
                beep_on_exit=_form_bool(form.get("BeepOnExit")),
                end_on_exit=_form_bool(form.get("EndConferenceOnExit")),
                coaching=_form_bool(form.get("Coaching")) if form.get("Coaching") else (True if coach else None),
                call_sid_to_coach=coach or None,
            ),
        )
        return _json(self.participant_json(p))

    def _kick_participant(self, request: Request, args: dict[str, str]) -> Response:
        found = self._participant_or_404(request, args)
        if isinstance(found, Response):
            return found
        self.rt.conferences.kick(found[1])
        return Response(status=204)

    def _create_participant(self, request: Request, args: dict[str, str]) -> Response:
        """Dial ``To`` and put the call in the room (created on demand when addressed by name)."""
        form = request.form
        to, from_ = form.get("To", "").strip(), form.get("From", "").strip()
        if not to:
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not from_:
            return twilio_error(400, 21213, "No 'From' number is specified")
        label = form.get("Label") or None
        if label is not None and label_problem(label) is not None:
            return twilio_error(400, 16024, f"Invalid participant label: {label_problem(label)}")
        beep = BEEP_VALUES.get((form.get("Beep") or "true").strip().lower())
        if beep is None:
            return twilio_error(400, 20001, f"Invalid Beep {form.get('Beep')!r}: use true, false, onEnter or onExit")
        try:
            timeout = float(form.get("Timeout", "60"))
            max_participants = int(form.get("MaxParticipants", str(MAX_PARTICIPANTS)))
        except ValueError:
            return twilio_error(400, 20001, "Timeout and MaxParticipants must be integers")
        if not 2 <= max_participants <= MAX_PARTICIPANTS:
            return twilio_error(400, 20001, f"MaxParticipants must be 2..{MAX_PARTICIPANTS}")
        wait_url = form.get("WaitUrl")
        for url_param in ("StatusCallback", "ConferenceStatusCallback", "WaitUrl"):
            value = form.get(url_param)
            problem = _url_problem(url_param, value) if value else None
            if problem is not None:
                return problem
        for method_param in ("StatusCallbackMethod", "ConferenceStatusCallbackMethod", "WaitMethod"):
            problem = _method_problem(method_param, form)
            if problem is not None:
                return problem
        conference_callback = None
        if form.get("ConferenceStatusCallback"):
            events = frozenset(" ".join(form.getlist("ConferenceStatusCallbackEvent")).split())
            conference_callback = CallbackSpec(
                form["ConferenceStatusCallback"],
                (form.get("ConferenceStatusCallbackMethod") or "POST").upper(),
                (events & set(CONFERENCE_EVENTS)) or DEFAULT_CONFERENCE_EVENTS,
            )
        call_callback = None
        if form.get("StatusCallback"):
            events = frozenset(" ".join(form.getlist("StatusCallbackEvent")).split()) or frozenset({"completed"})
            call_callback = CallbackSpec(
                form["StatusCallback"], (form.get("StatusCallbackMethod") or "POST").upper(), events
            )
        coach = form.get("CallSidToCoach") or None
        coaching = _form_bool(form.get("Coaching"))
        options = JoinOptions(
            label=label,
            muted=_form_bool(form.get("Muted")) or False,
            beep=beep,
            start_on_enter=_form_bool(form.get("StartConferenceOnEnter")) is not False,
            end_on_exit=_form_bool(form.get("EndConferenceOnExit")) or False,
            wait_url=wait_url,
            wait_method=(form.get("WaitMethod") or "POST").upper(),
            max_participants=max_participants,
            coach=coach if coaching is not False else None,
            status_callback=conference_callback,
        )
        # EarlyMedia, Record, ConferenceRecord, Region, JitterBufferSize, machine detection ... are
        # accepted and have no effect in the emulator.
        call_sid = new_sid("CA")
        added = self.rt.conferences.add_connecting(args["sid"], call_sid, to, options, datetime.now(UTC))
        if isinstance(added, RestRefusal):
            return twilio_error(added.status, added.code, added.message)
        try:
            call = self._create_call(
                OutboundCallRequest(
                    to=to,
                    from_=form.get("CallerId") or from_,
                    url=None,
                    method="POST",
                    twiml=conference_twiml(added.conference.friendly_name, options),
                    status_callback=call_callback,
                    timeout=timeout,
                    sid=call_sid,
                )
            )
        except RuntimeError as exc:
            self.rt.conferences.abandon(added)
            return twilio_error(503, 20503, f"Service unavailable: {exc}")
        self.rt.conferences.attach_call(added, call.root_leg)
        # Twilio answers before it places the call (the emulator's call may already be further).
        return _json(self.participant_json(added, queue_time="0", status="queued"), 201)


def _absolute_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _url_problem(param: str, value: str) -> Response | None:
    if _absolute_http(value):
        return None
    return twilio_error(400, 21205, f"{param} is not a valid URL: {value}")


def _method_problem(param: str, form: Mapping[str, str]) -> Response | None:
    value = form.get(param)
    if not value or value.upper() in ("GET", "POST"):
        return None
    return twilio_error(400, 20001, f"Invalid {param} {value!r}: use GET or POST")


def _form_bool(value: str | None) -> bool | None:
    """A boolean form parameter: ``None`` when absent; anything but ``true`` is false (as on Twilio)."""
    if value is None or not value.strip():
        return None
    return value.strip().lower() == "true"


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _on(moment: datetime, day: date) -> bool:
    return _day(moment) == day


def _on_or_before(moment: datetime, day: date) -> bool:
    return _day(moment) <= day


def _on_or_after(moment: datetime, day: date) -> bool:
    return _day(moment) >= day
