"""A fake HubSpot on loopback, answering the CRM v3 objects and v4 associations endpoints Warmline uses with the
documented request and response shapes (batch upsert by a unique property, contact search, associations)."""

from __future__ import annotations

import itertools
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.fakes.crm_server import FakeCrmServer, digits, json_response

UNIQUE_PROPERTIES = {"calls": "warmline_call_id", "tasks": "warmline_task_id", "contacts": "warmline_contact_id"}
_ASSOCIATION = re.compile(r"^/crm/v4/objects/(calls|tasks)/(\w+)/associations/contacts/(\w+)$")
_OBJECT_TYPE_IDS = {"calls": "0-48", "tasks": "0-27", "contacts": "0-1"}


@dataclass
class HubSpotObject:
    id: str
    properties: dict[str, str]
    created_at: datetime
    updated_at: datetime
    associations: set[tuple[str, int]] = field(default_factory=set)  # (contact id, association type id)

    def as_json(self, *, new: bool | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "properties": {**self.properties, "hs_object_id": self.id, "lastmodifieddate": _iso(self.updated_at)},
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
            "archived": False,
        }
        if new is not None:
            body["new"] = new
        return body


class FakeHubSpot(FakeCrmServer):
    def __init__(self, *, token: str = "hubspot-test-token") -> None:
        super().__init__(token=token)
        self.objects: dict[str, dict[str, HubSpotObject]] = {"calls": {}, "tasks": {}, "contacts": {}}
        self.creations: dict[str, int] = {"calls": 0, "tasks": 0, "contacts": 0}
        #: Keys (unique property values) whose upsert fails validation, with HubSpot's message.
        self.invalid: dict[str, str] = {}
        self.unique_properties = dict(UNIQUE_PROPERTIES)
        self._ids = itertools.count(1001)

    # --- what tests look at ------------------------------------------------------------------------------------------

    def calls_by_key(self) -> dict[str, list[HubSpotObject]]:
        keyed: dict[str, list[HubSpotObject]] = {}
        for call in self.objects["calls"].values():
            keyed.setdefault(call.properties.get(UNIQUE_PROPERTIES["calls"], ""), []).append(call)
        return keyed

    def call(self, key: str) -> HubSpotObject:
        [found] = self.calls_by_key()[key]
        return found

    def add_contact(self, *, phone: str, first: str, last: str, email: str = "", when: datetime | None = None) -> str:
        moment = when or datetime.now(UTC)
        contact = HubSpotObject(
            id=str(next(self._ids)),
            properties={"phone": phone, "firstname": first, "lastname": last, "email": email},
            created_at=moment,
            updated_at=moment,
        )
        self.objects["contacts"][contact.id] = contact
        return contact.id

    # --- the API -----------------------------------------------------------------------------------------------------

    def unauthorised(self) -> Response:
        return json_response(
            401,
            {
                "status": "error",
                "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                "correlationId": str(uuid.uuid4()),
                "category": "INVALID_AUTHENTICATION",
            },
        )

    def failure_body(self, status: int) -> Any:
        if status == 429:
            return {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": "TEN_SECONDLY_ROLLING",
            }
        return {"status": "error", "message": "internal error", "correlationId": str(uuid.uuid4())}

    def route(self, request: Request) -> Response:
        path = request.path
        if request.method == "POST" and (
            match := re.fullmatch(r"/crm/v3/objects/(calls|tasks|contacts)/batch/upsert", path)
        ):
            return self._upsert(match.group(1), request.get_json())
        if request.method == "POST" and path == "/crm/v3/objects/contacts/search":
            return self._search(request.get_json())
        if request.method == "PUT" and (match := _ASSOCIATION.match(path)):
            return self._associate(match.group(1), match.group(2), match.group(3), request.get_json())
        return json_response(404, {"status": "error", "message": f"no route for {request.method} {path}"})

    def _upsert(self, kind: str, body: dict[str, Any]) -> Response:
        now = datetime.now(UTC)
        started = _iso(now)
        results = []
        for item in body.get("inputs", []):
            id_property = item.get("idProperty")
            if id_property != self.unique_properties[kind]:
                return _validation(f"Property {id_property} does not exist or does not have unique values")
            key = str(item.get("id"))
            properties = {name: str(value) for name, value in (item.get("properties") or {}).items()}
            if kind in ("calls", "tasks") and "hs_timestamp" not in properties:
                return _validation("Property hs_timestamp is required")
            if key in self.invalid:
                return _validation(self.invalid[key])
            existing = next(
                (found for found in self.objects[kind].values() if found.properties.get(id_property) == key), None
            )
            if existing is None:
                existing = HubSpotObject(
                    id=str(next(self._ids)), properties={id_property: key}, created_at=now, updated_at=now
                )
                self.objects[kind][existing.id] = existing
                self.creations[kind] += 1
                new = True
            else:
                new = False
            existing.properties.update(properties)
            existing.updated_at = now
            results.append(existing.as_json(new=new))
        return json_response(
            200,
            {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _iso(datetime.now(UTC))},
        )

    def _search(self, body: dict[str, Any]) -> Response:
        groups = body.get("filterGroups") or []
        found = [
            contact
            for contact in self.objects["contacts"].values()
            if not groups or any(all(_matches(contact, rule) for rule in group.get("filters", [])) for group in groups)
        ]
        for sort in reversed(body.get("sorts") or []):
            name = sort["propertyName"] if isinstance(sort, dict) else str(sort).lstrip("-")
            descending = sort.get("direction") == "DESCENDING" if isinstance(sort, dict) else str(sort).startswith("-")
            found.sort(key=partial(_sort_value, name=name), reverse=descending)
        start = int(body.get("after") or 0)
        limit = int(body.get("limit") or 10)
        page = found[start : start + limit]
        answer: dict[str, Any] = {"total": len(found), "results": [contact.as_json() for contact in page]}
        if start + limit < len(found):
            answer["paging"] = {"next": {"after": str(start + limit), "link": "?after=" + str(start + limit)}}
        return json_response(200, answer)

    def _associate(self, kind: str, object_id: str, contact_id: str, body: list[dict[str, Any]]) -> Response:
        record = self.objects[kind].get(object_id)
        contact = self.objects["contacts"].get(contact_id)
        if record is None or contact is None:
            return json_response(
                404, {"status": "error", "message": "Object not found", "category": "OBJECT_NOT_FOUND"}
            )
        for spec in body:
            record.associations.add((contact_id, int(spec["associationTypeId"])))
        return json_response(
            201,
            {
                "fromObjectTypeId": _OBJECT_TYPE_IDS[kind],
                "fromObjectId": int(object_id),
                "toObjectTypeId": _OBJECT_TYPE_IDS["contacts"],
                "toObjectId": int(contact_id),
                "labels": [],
            },
        )


def _matches(contact: HubSpotObject, rule: dict[str, Any]) -> bool:
    name, operator, value = rule["propertyName"], rule["operator"], str(rule.get("value", ""))
    if name == "lastmodifieddate":
        moment = int(contact.updated_at.timestamp() * 1000)
        return {"GT": moment > int(value), "GTE": moment >= int(value), "EQ": moment == int(value)}[operator]
    if operator == "EQ" and name in ("phone", "mobilephone"):
        return bool(digits(contact.properties.get(name))) and digits(contact.properties.get(name)) == digits(value)
    if operator == "EQ":
        return contact.properties.get(name) == value
    raise ValueError(f"the fake does not know the operator {operator}")


def _sort_value(contact: HubSpotObject, *, name: str) -> Any:
    return contact.updated_at if name == "lastmodifieddate" else contact.properties.get(name, "")


def _validation(message: str) -> Response:
    return json_response(
        400,
        {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": "VALIDATION_ERROR",
        },
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
