"""HubSpot (CRM v3 objects, v4 associations) through ``hubspot-api-client``.

A call is a Calls object and a follow-up a Tasks object, each created or updated with ``batch/upsert`` on a unique
property holding our key (the CallSid), so a retry after a timeout updates the record instead of adding a second
one; the call is associated with the caller's contact (HUBSPOT_DEFINED type 194, a task 204: the association PUT is
idempotent too). The contact is the one we know for the number, else the one HubSpot's search finds by ``phone`` /
``mobilephone``, else (``create_contacts``) one upserted on a unique property holding the number.

The client is built with urllib3 retries off: waits and retries are ours (``failures.with_request_retries`` and
the outbox), so that ``Retry-After`` is honoured and a POST is retried at all (urllib3 retries no POST by default).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3
from hubspot import HubSpot
from hubspot.crm.associations.v4 import AssociationSpec
from hubspot.crm.associations.v4.exceptions import ApiException as AssociationsApiException
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInputUpsert as ContactUpsertBatch,
)
from hubspot.crm.contacts import Filter, FilterGroup, PublicObjectSearchRequest
from hubspot.crm.contacts import (
    SimplePublicObjectBatchInputUpsert as ContactUpsert,
)
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.objects.calls import (
    BatchInputSimplePublicObjectBatchInputUpsert as CallUpsertBatch,
)
from hubspot.crm.objects.calls import (
    SimplePublicObjectBatchInputUpsert as CallUpsert,
)
from hubspot.crm.objects.calls.exceptions import ApiException as CallsApiException
from hubspot.crm.objects.tasks import (
    BatchInputSimplePublicObjectBatchInputUpsert as TaskUpsertBatch,
)
from hubspot.crm.objects.tasks import (
    SimplePublicObjectBatchInputUpsert as TaskUpsert,
)
from hubspot.crm.objects.tasks.exceptions import ApiException as TasksApiException

from crm_sync.phones import InvalidPhoneNumber, to_e164
from crm_sync.sync.failures import (
    Rejected,
    SyncFailure,
    TargetRefused,
    TryLater,
    retry_after_seconds,
    with_request_retries,
)
from crm_sync.sync.records import CallRecord, TaskRecord
from crm_sync.sync.settings import HUBSPOT, Behaviour, HubSpotConnection
from crm_sync.sync.targets import Delivery, RemoteContact

T = TypeVar("T")

#: HubSpot-defined association types (v4): call → contact, task → contact.
CALL_TO_CONTACT = 194
TASK_TO_CONTACT = 204
_API_ERRORS = (CallsApiException, TasksApiException, ContactsApiException, AssociationsApiException)
_CONTACT_PROPERTIES = ["firstname", "lastname", "email", "phone", "mobilephone", "lastmodifieddate"]
#: HubSpot's search answers at most 10,000 results per query; a pull starts a new query before that.
_SEARCH_WINDOW = 10_000
_PAGE = 100

_CALL_STATUS = {
    "answered": "COMPLETED",
    "callback": "COMPLETED",
    "voicemail": "NO_ANSWER",
    "no-rep": "NO_ANSWER",
    "callback-missed": "NO_ANSWER",
    "abandoned": "CANCELED",
    "failed": "FAILED",
}


class HubSpotTarget:
    name = HUBSPOT
    pulls = True

    def __init__(self, connection: HubSpotConnection, behaviour: Behaviour, *, sleep: Callable[[float], None]) -> None:
        self._connection = connection
        self._behaviour = behaviour
        self._sleep = sleep
        self._timeout = (behaviour.connect_timeout, behaviour.request_timeout)
        client = HubSpot(
            access_token=connection.access_token,
            host=connection.api_url.rstrip("/"),
            retry=urllib3.Retry(total=0, redirect=False, raise_on_status=False),
        )
        # Each of these holds its own connection pool: built once, reused for every record.
        self._calls = client.crm.objects.calls.batch_api
        self._tasks = client.crm.objects.tasks.batch_api
        self._contact_search = client.crm.contacts.search_api
        self._contacts = client.crm.contacts.batch_api
        self._associations = client.crm.associations.v4.basic_api

    # --- pushing -----------------------------------------------------------------------------------------------------

    def push_call(self, record: CallRecord, contact: RemoteContact | None, *, remote_id: str | None) -> Delivery:
        contact = contact or self._contact_for(record.customer_number, record.customer_name)
        key = self._connection.call_id_property
        inbound = record.direction == "inbound"
        properties = {
            key: record.key,
            "hs_timestamp": _iso(record.started_at),
            "hs_call_title": record.title,
            "hs_call_body": record.body,
            "hs_call_duration": str((record.duration_seconds or 0) * 1000),
            "hs_call_from_number": (record.customer_number if inbound else record.our_number) or "",
            "hs_call_to_number": (record.our_number if inbound else record.customer_number) or "",
            "hs_call_direction": "INBOUND" if inbound else "OUTBOUND",
            "hs_call_status": _CALL_STATUS.get(record.outcome or "", "COMPLETED"),
        }
        if record.recording_url and record.recording_url.startswith("https://"):  # HubSpot takes HTTPS links only
            properties["hs_call_recording_url"] = record.recording_url
        batch = CallUpsertBatch(inputs=[CallUpsert(id_property=key, id=record.key, properties=properties)])
        call_id = self._upserted(self._request(lambda: self._calls.upsert(batch, _request_timeout=self._timeout)))
        if contact is not None:
            spec = [AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=CALL_TO_CONTACT)]
            self._request(
                lambda: self._associations.create(
                    "calls", call_id, "contacts", contact.remote_id, spec, _request_timeout=self._timeout
                )
            )
        return Delivery(remote_id=call_id, contact=contact)

    def push_task(self, record: TaskRecord, contact: RemoteContact | None, *, remote_id: str | None) -> Delivery:
        contact = contact or self._contact_for(record.customer_number, record.customer_name)
        key = self._connection.task_id_property
        properties = {
            key: record.key,
            "hs_timestamp": _iso(record.due_at or record.created_at),
            "hs_task_subject": record.subject,
            "hs_task_body": record.body,
            "hs_task_status": "NOT_STARTED" if record.open else "COMPLETED",
            "hs_task_type": "CALL",
            "hs_task_priority": "HIGH" if record.kind == "callback" else "MEDIUM",
        }
        batch = TaskUpsertBatch(inputs=[TaskUpsert(id_property=key, id=record.key, properties=properties)])
        task_id = self._upserted(self._request(lambda: self._tasks.upsert(batch, _request_timeout=self._timeout)))
        if contact is not None:
            spec = [AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=TASK_TO_CONTACT)]
            self._request(
                lambda: self._associations.create(
                    "tasks", task_id, "contacts", contact.remote_id, spec, _request_timeout=self._timeout
                )
            )
        return Delivery(remote_id=task_id, contact=contact)

    def _contact_for(self, number: str, name: str | None) -> RemoteContact | None:
        if not number.startswith("+"):
            return None  # a withheld or unparsable number: the call is logged on no contact
        search = PublicObjectSearchRequest(
            filter_groups=[
                FilterGroup(filters=[Filter(property_name="phone", operator="EQ", value=number)]),
                FilterGroup(filters=[Filter(property_name="mobilephone", operator="EQ", value=number)]),
            ],
            sorts=[{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
            properties=_CONTACT_PROPERTIES,
            limit=1,
        )
        found = self._request(lambda: self._contact_search.do_search(search, _request_timeout=self._timeout))
        if found.results:
            return self._contact(found.results[0])
        if not self._behaviour.create_contacts:
            return None
        key = self._connection.contact_id_property
        first, _, last = (name or "").partition(" ")
        properties = {key: number, "phone": number}
        if first:
            properties["firstname"] = first
        if last:
            properties["lastname"] = last
        batch = ContactUpsertBatch(inputs=[ContactUpsert(id_property=key, id=number, properties=properties)])
        created = self._request(lambda: self._contacts.upsert(batch, _request_timeout=self._timeout))
        return RemoteContact(
            remote_id=self._upserted(created), kind="contact", phone=number, name=name, email=None, modified_at=None
        )

    # --- pulling -----------------------------------------------------------------------------------------------------

    def changed_contacts(self, since: datetime | None) -> Iterator[RemoteContact]:
        operator = "GT"
        after: str | None = None
        while True:
            filters = []
            if since is not None:
                filters = [
                    FilterGroup(
                        filters=[Filter(property_name="lastmodifieddate", operator=operator, value=_millis(since))]
                    )
                ]
            search = PublicObjectSearchRequest(
                filter_groups=filters,
                sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
                properties=_CONTACT_PROPERTIES,
                limit=_PAGE,
                after=after,
            )

            def page_of(request: PublicObjectSearchRequest = search) -> Any:
                return self._contact_search.do_search(request, _request_timeout=self._timeout)

            page = self._request(page_of)
            last: RemoteContact | None = None
            for result in page.results or []:
                last = self._contact(result)
                yield last
            following = page.paging.next.after if page.paging and page.paging.next else None
            if not following:
                return
            if int(following) + _PAGE > _SEARCH_WINDOW and last is not None and last.modified_at is not None:
                # A new query from the last change seen (GTE: a few contacts may come twice, none is skipped).
                since, operator, after = last.modified_at, "GTE", None
            else:
                after = following

    def _contact(self, found: Any) -> RemoteContact:
        properties = found.properties or {}
        name = " ".join(part for part in (properties.get("firstname"), properties.get("lastname")) if part) or None
        phone = _e164(properties.get("phone")) or _e164(properties.get("mobilephone"))
        modified = found.updated_at if isinstance(found.updated_at, datetime) else None
        return RemoteContact(
            remote_id=str(found.id),
            kind="contact",
            phone=phone,
            name=name,
            email=properties.get("email") or None,
            modified_at=modified.astimezone(UTC) if modified is not None else None,
        )

    # --- requests ----------------------------------------------------------------------------------------------------

    def _request(self, send: Callable[[], T]) -> T:
        def once() -> T:
            try:
                return send()
            except _API_ERRORS as error:
                raise self._failure(error) from None
            except urllib3.exceptions.HTTPError as error:  # refused, reset, timed out
                raise TryLater(f"HubSpot did not answer: {_first_line(error)}") from None

        return with_request_retries(
            once,
            attempts=self._behaviour.request_attempts,
            base=self._behaviour.request_backoff_base,
            inline_wait_cap=self._behaviour.inline_wait_cap,
            sleep=self._sleep,
        )

    def _failure(self, error: Any) -> SyncFailure:
        status = int(error.status or 0)
        message = _message(error.body) or str(error.reason or "")
        if status == 0:
            return TryLater(f"HubSpot did not answer: {_first_line(message)}")
        if status == 401:
            return TargetRefused(f"HubSpot refused the access token (HUBSPOT_ACCESS_TOKEN): {message}")
        if status == 403:
            return TargetRefused(f"HubSpot refused the request (does the app have the CRM scopes?): {message}")
        if status == 429 or status >= 500 or status in (408, 409):
            headers = error.headers or {}
            return TryLater(
                f"HubSpot answered {status}: {message}", retry_after=retry_after_seconds(headers.get("Retry-After"))
            )
        unique = (
            self._connection.call_id_property,
            self._connection.task_id_property,
            self._connection.contact_id_property,
        )
        if any(name in message for name in unique):
            return TargetRefused(
                f'HubSpot cannot upsert on the unique property ({message}): create it as README "Connect your CRM" says'
            )
        return Rejected(f"HubSpot refused the record ({status}): {message}")

    def _upserted(self, response: Any) -> str:
        errors = getattr(response, "errors", None)
        if errors:
            raise Rejected("HubSpot refused the record: " + "; ".join(str(error.message) for error in errors))
        results = response.results or []
        if not results:
            raise TryLater("HubSpot's upsert answered without a result")
        return str(results[0].id)

    def close(self) -> None:
        for api in (self._calls, self._tasks, self._contact_search, self._contacts, self._associations):
            api.api_client.rest_client.pool_manager.clear()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _millis(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def _e164(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return to_e164(value)
    except InvalidPhoneNumber:
        return None


def _message(body: Any) -> str:
    """HubSpot's error text: ``message`` of its JSON error body, with the first detail's when there are details."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return _first_line(body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body))
    if not isinstance(data, dict):
        return _first_line(str(data))
    message = str(data.get("message") or "")
    details = data.get("errors") or []
    if details and isinstance(details[0], dict) and details[0].get("message"):
        message = f"{message} ({details[0]['message']})" if message else str(details[0]["message"])
    return message


def _first_line(value: Any) -> str:
    return str(value).strip().splitlines()[0][:300] if str(value).strip() else ""
