"""A fake Salesforce REST API on loopback over TLS (simple-salesforce builds https:// URLs), answering the calls
Warmline makes with the documented shapes: Task upsert on an External ID field (201 created / 200 updated, and
TaskSubtype refused on update), SOSL phone search, SOQL contact queries with ``nextRecordsUrl`` paging, and the
OAuth 2.0 client credentials token endpoint."""

from __future__ import annotations

import itertools
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from werkzeug.wrappers import Request, Response

from tests.fakes.crm_server import FakeCrmServer, digits, json_response

EXTERNAL_ID_FIELD = "Warmline_Id__c"
#: Task fields that can be set when the Task is created and never changed by an update.
CREATE_ONLY = {"TaskSubtype"}
_UPSERT = re.compile(r"^/services/data/v[\d.]+/sobjects/Task/(\w+)/(.+)$")
_SOSL = re.compile(r"FIND \{(.+?)\} IN PHONE FIELDS")
_SINCE = re.compile(r"LastModifiedDate >= (\S+)")
_PAGE = 2000


@dataclass
class Record:
    id: str
    kind: str
    fields: dict[str, Any]
    modified_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "attributes": {"type": self.kind, "url": f"/services/data/v61.0/sobjects/{self.kind}/{self.id}"},
            "Id": self.id,
            **self.fields,
            "LastModifiedDate": self.modified_at.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{self.modified_at.microsecond // 1000:03d}+0000",
        }


class FakeSalesforce(FakeCrmServer):
    def __init__(self, *, ssl_context: ssl.SSLContext, token: str = "salesforce-test-token") -> None:
        super().__init__(token=token, ssl_context=ssl_context)
        self.tasks: dict[str, Record] = {}
        self.people: dict[str, Record] = {}  # Contacts and Leads
        self.creations = 0
        self.client_id = "warmline-app"
        self.client_secret = "app-secret"
        self.issued_tokens = 0
        #: External ID values whose upsert fails a validation rule, with its message.
        self.invalid: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._last_query = ""

    def tasks_by_key(self) -> dict[str, list[Record]]:
        keyed: dict[str, list[Record]] = {}
        for task in self.tasks.values():
            keyed.setdefault(str(task.fields.get(EXTERNAL_ID_FIELD)), []).append(task)
        return keyed

    def task(self, key: str) -> Record:
        [found] = self.tasks_by_key()[key]
        return found

    def add_person(self, kind: str, *, name: str, phone: str, email: str = "", when: datetime | None = None) -> str:
        record = Record(
            id=self._new_id("003" if kind == "Contact" else "00Q"),
            kind=kind,
            fields={"Name": name, "Phone": phone, "Email": email or None, "MobilePhone": None},
            modified_at=when or datetime.now(UTC),
        )
        self.people[record.id] = record
        return record.id

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):015d}"

    # --- the API -----------------------------------------------------------------------------------------------------

    def authorised(self, request: Request) -> bool:
        return request.path == "/services/oauth2/token" or super().authorised(request)

    def unauthorised(self) -> Response:
        return json_response(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])

    def failure_body(self, status: int) -> Any:
        if status == 503:
            return [{"message": "Server Unavailable", "errorCode": "SERVER_UNAVAILABLE"}]
        if status == 429:
            return [{"message": "Too many requests", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
        return [{"message": "An unexpected error occurred", "errorCode": "UNKNOWN_EXCEPTION"}]

    def route(self, request: Request) -> Response:
        path = request.path
        if path == "/services/oauth2/token" and request.method == "POST":
            return self._token(request)
        if request.method == "PATCH" and (match := _UPSERT.match(path)):
            return self._upsert(match.group(1), match.group(2), request.get_json())
        if request.method == "GET" and re.fullmatch(r"/services/data/v[\d.]+/search/?", path):
            return self._search(request.args.get("q", ""))
        if request.method == "GET" and re.fullmatch(r"/services/data/v[\d.]+/query(/[\w-]+)?/?", path):
            return self._query(request.args.get("q", ""), path)
        return json_response(404, [{"message": f"no route for {request.method} {path}", "errorCode": "NOT_FOUND"}])

    def _token(self, request: Request) -> Response:
        form = parse_qs(request.get_data(as_text=True))
        if (
            form.get("grant_type") != ["client_credentials"]
            or form.get("client_id") != [self.client_id]
            or form.get("client_secret") != [self.client_secret]
        ):
            return json_response(400, {"error": "invalid_client", "error_description": "invalid client credentials"})
        self.issued_tokens += 1
        return json_response(
            200,
            {
                "access_token": self.token,
                "instance_url": self.url,
                "id": f"{self.url}/id/00D000000000001/005000000000001",
                "token_type": "Bearer",
                "issued_at": str(int(datetime.now(UTC).timestamp() * 1000)),
                "signature": "fake",
            },
        )

    def _upsert(self, field_name: str, value: str, body: dict[str, Any]) -> Response:
        if field_name != EXTERNAL_ID_FIELD:
            return json_response(
                404,
                [
                    {
                        "errorCode": "NOT_FOUND",
                        "message": f"Provided external ID field does not exist or is not accessible: {field_name}",
                    }
                ],
            )
        if value in self.invalid:
            return json_response(
                400, [{"message": self.invalid[value], "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": []}]
            )
        who = body.get("WhoId")
        if who is not None and who not in self.people:
            return json_response(
                400,
                [
                    {
                        "message": "Related To ID: id value of incorrect type",
                        "errorCode": "FIELD_INTEGRITY_EXCEPTION",
                        "fields": ["WhoId"],
                    }
                ],
            )
        existing = next((task for task in self.tasks.values() if task.fields.get(field_name) == value), None)
        now = datetime.now(UTC)
        if existing is not None:
            refused = sorted(CREATE_ONLY & body.keys())
            if refused:
                return json_response(
                    400,
                    [
                        {
                            "message": f"Unable to create/update fields: {', '.join(refused)}. Please check the "
                            "security settings of this field and verify that it is read/write for your profile or "
                            "permission set.",
                            "errorCode": "INVALID_FIELD_FOR_INSERT_UPDATE",
                            "fields": refused,
                        }
                    ],
                )
            existing.fields.update(body)
            existing.modified_at = now
            return json_response(200, {"id": existing.id, "success": True, "errors": [], "created": False})
        task = Record(
            id=self._new_id("00T"),
            kind="Task",
            fields={"TaskSubtype": "Task", **body, field_name: value},
            modified_at=now,
        )
        self.tasks[task.id] = task
        self.creations += 1
        return json_response(201, {"id": task.id, "success": True, "errors": [], "created": True})

    def _search(self, sosl: str) -> Response:
        match = _SOSL.search(sosl)
        if match is None:
            return json_response(400, [{"message": "unexpected search", "errorCode": "MALFORMED_SEARCH"}])
        wanted = digits(match.group(1).replace("\\", ""))
        found = [
            person.as_json()
            for person in sorted(self.people.values(), key=lambda person: person.modified_at, reverse=True)
            if wanted and digits(person.fields.get("Phone")) == wanted
        ]
        return json_response(200, {"searchRecords": found})

    def _query(self, soql: str, path: str) -> Response:
        page_start = int(path.rstrip("/").rsplit("-", 1)[-1]) if "-" in path else 0
        if page_start:
            soql = self._last_query
        self._last_query = soql
        since_match = _SINCE.search(soql)
        since = (
            datetime.strptime(since_match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if since_match else None
        )
        contacts = sorted(
            (person for person in self.people.values() if person.kind == "Contact"),
            key=lambda person: (person.modified_at, person.id),
        )
        if since is not None:
            contacts = [person for person in contacts if person.modified_at >= since]
        page = contacts[page_start : page_start + _PAGE]
        answer: dict[str, Any] = {
            "totalSize": len(contacts),
            "done": page_start + _PAGE >= len(contacts),
            "records": [person.as_json() for person in page],
        }
        if not answer["done"]:
            answer["nextRecordsUrl"] = f"/services/data/v61.0/query/01gD0000002HU6KIAW-{page_start + _PAGE}"
        return json_response(200, answer)


def _error(message: str, code: str, fields: list[str]) -> dict[str, Any]:
    return {"message": message, "errorCode": code, "fields": fields}
