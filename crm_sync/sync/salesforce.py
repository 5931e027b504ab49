"""Salesforce (REST API) through ``simple-salesforce``.

A call is a Task with ``TaskSubtype = 'Call'`` (the general route: ``VoiceCall`` needs Salesforce Voice licences),
upserted on an External ID field holding our key (``PATCH /sobjects/Task/<field>/<CallSid>``), so a retry after a
timeout updates the Task instead of adding a second one. ``TaskSubtype`` can be set when a Task is created, not
updated: it is sent only until the Task is known to exist, and dropped at once if Salesforce says the Task is there
already (an earlier attempt created it and timed out). ``WhoId`` is the Contact (else Lead) we know for the number,
else the one SOSL finds in the phone fields. A follow-up is a plain Task upserted the same way.

Authentication: ``SALESFORCE_ACCESS_TOKEN`` as is, or a connected app's client credentials (``SALESFORCE_CLIENT_ID``
and ``SALESFORCE_CLIENT_SECRET``), exchanged for a token at the instance's ``/services/oauth2/token`` and exchanged
again when it expires. simple-salesforce's own client-credentials login only knows ``*.salesforce.com`` domains, so
that one request is made here; everything else goes through the client, on a session whose requests time out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.exceptions import SalesforceError

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
from crm_sync.sync.settings import SALESFORCE, Behaviour, SalesforceConnection
from crm_sync.sync.targets import Delivery, RemoteContact

T = TypeVar("T")

#: SOSL's reserved characters, escaped with a backslash in a FIND clause.
_SOSL_RESERVED = re.compile(r"([?&|!{}\[\]()^~*:\\\"'+\-])")
_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
_NOT_UPDATABLE = "INVALID_FIELD_FOR_INSERT_UPDATE"


class _TimedAdapter(HTTPAdapter):
    """Every request through it times out: simple-salesforce passes no timeout of its own to most calls."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        return super().send(
            request, stream=stream, timeout=timeout or self._timeout, verify=verify, cert=cert, proxies=proxies
        )


class SalesforceTarget:
    name = SALESFORCE
    pulls = True

    def __init__(
        self, connection: SalesforceConnection, behaviour: Behaviour, *, sleep: Callable[[float], None]
    ) -> None:
        self._connection = connection
        self._behaviour = behaviour
        self._sleep = sleep
        self._instance_url = connection.instance_url.rstrip("/")
        self._session = requests.Session()
        adapter = _TimedAdapter((behaviour.connect_timeout, behaviour.request_timeout))
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        # The last response's headers: simple-salesforce's errors carry the body only, and Retry-After is a header.
        self._last_response: requests.Response | None = None
        self._session.hooks["response"].append(self._remember)
        self._client: Salesforce | None = None

    def _remember(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        self._last_response = response

    # --- pushing -----------------------------------------------------------------------------------------------------

    def push_call(self, record: CallRecord, contact: RemoteContact | None, *, remote_id: str | None) -> Delivery:
        contact = contact or self._contact_for(record.customer_number)
        disposition = ", ".join(part for part in (record.disposition, record.outcome) if part)
        fields: dict[str, Any] = {
            "Subject": record.title[:255],
            "CallType": "Inbound" if record.direction == "inbound" else "Outbound",
            "CallDurationInSeconds": record.duration_seconds or 0,
            "CallDisposition": disposition[:255] or None,
            "CallObject": record.key[:255],
            "Description": record.body[:32000],
            "Status": "Completed",
            "ActivityDate": record.started_at.astimezone(UTC).date().isoformat(),
        }
        if contact is not None:
            fields["WhoId"] = contact.remote_id
        task_id = self._upsert(record.key, fields, subtype=None if remote_id else "Call")
        return Delivery(remote_id=task_id or remote_id, contact=contact)

    def push_task(self, record: TaskRecord, contact: RemoteContact | None, *, remote_id: str | None) -> Delivery:
        contact = contact or self._contact_for(record.customer_number)
        fields: dict[str, Any] = {
            "Subject": record.subject[:255],
            "Description": record.body[:32000],
            "Status": "Not Started" if record.open else "Completed",
            "Priority": "High" if record.kind == "callback" else "Normal",
            "ActivityDate": (record.due_at or record.created_at).astimezone(UTC).date().isoformat(),
        }
        if contact is not None:
            fields["WhoId"] = contact.remote_id
        task_id = self._upsert(record.key, fields, subtype=None)
        return Delivery(remote_id=task_id or remote_id, contact=contact)

    def _upsert(self, key: str, fields: dict[str, Any], *, subtype: str | None) -> str | None:
        """Create or update the Task whose External ID is ``key``; its Id when Salesforce says it."""
        path = f"{self._connection.external_id_field}/{key}"
        body = {**fields, "TaskSubtype": subtype} if subtype else fields
        try:
            response = self._request(lambda: self._task_type().upsert(path, body, raw_response=True))
        except Rejected as refusal:
            if not subtype or _NOT_UPDATABLE not in str(refusal) or "TaskSubtype" not in str(refusal):
                raise
            # An earlier attempt created the Task (its answer was lost): update it without the create-only field.
            response = self._request(lambda: self._task_type().upsert(path, fields, raw_response=True))
        if not response.content:
            return None
        answer = response.json()
        return str(answer["id"]) if isinstance(answer, dict) and answer.get("id") else None

    def _contact_for(self, number: str) -> RemoteContact | None:
        if not number.startswith("+"):
            return None
        columns = "Id, Name, Email, Phone, LastModifiedDate ORDER BY LastModifiedDate DESC LIMIT 1"
        escaped = _SOSL_RESERVED.sub(r"\\\1", number)
        search = f"FIND {{{escaped}}} IN PHONE FIELDS RETURNING Contact({columns}), Lead({columns})"
        answer = self._request(lambda: self._sf().search(search)) or {}
        records = answer.get("searchRecords", []) if isinstance(answer, dict) else []
        for kind in ("Contact", "Lead"):
            for found in records:
                if found.get("attributes", {}).get("type") == kind:
                    return self._contact(found, kind)
        return None

    # --- pulling -----------------------------------------------------------------------------------------------------

    def changed_contacts(self, since: datetime | None) -> Iterator[RemoteContact]:
        where = ""
        if since is not None:
            # SOQL datetime literals have whole seconds: from the second of `since` (a contact may come twice).
            where = f" WHERE LastModifiedDate >= {since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        columns = "Id, Name, Email, Phone, MobilePhone, LastModifiedDate"
        soql = f"SELECT {columns} FROM Contact{where} ORDER BY LastModifiedDate, Id"
        page = self._request(lambda: self._sf().query(soql))
        while True:
            for found in page.get("records", []):
                yield self._contact(found, "Contact")
            following = page.get("nextRecordsUrl")
            if page.get("done", True) or not following:
                return

            def next_page(url: str = following) -> Any:
                return self._sf().query_more(url, identifier_is_url=True)

            page = self._request(next_page)

    def _contact(self, found: Mapping[str, Any], kind: str) -> RemoteContact:
        return RemoteContact(
            remote_id=str(found["Id"]),
            kind=kind,
            phone=self._e164(found.get("Phone")) or self._e164(found.get("MobilePhone")),
            name=found.get("Name") or None,
            email=found.get("Email") or None,
            modified_at=_salesforce_time(found.get("LastModifiedDate")),
        )

    def _e164(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return to_e164(value, default_region=self._behaviour.default_region)
        except InvalidPhoneNumber:
            return None

    # --- the client and its requests ---------------------------------------------------------------------------------

    def _sf(self) -> Salesforce:
        if self._client is None:
            token = self._connection.access_token or self._token_for_client_credentials()
            self._client = Salesforce(
                instance_url=self._instance_url,
                session_id=token,
                version=self._connection.api_version,
                session=self._session,
            )
        return self._client

    def _task_type(self) -> SFType:
        return cast(SFType, self._sf().Task)

    def _token_for_client_credentials(self) -> str:
        """OAuth 2.0 client credentials flow against the instance (My Domain) URL."""
        if not (self._connection.client_id and self._connection.client_secret):
            raise TargetRefused(
                "Salesforce needs SALESFORCE_ACCESS_TOKEN, or SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET"
            )
        try:
            response = self._session.post(
                f"{self._instance_url}/services/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._connection.client_id,
                    "client_secret": self._connection.client_secret,
                },
            )
        except requests.RequestException as error:
            raise TryLater(f"Salesforce's token endpoint did not answer: {error}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TryLater(f"Salesforce's token endpoint answered {response.status_code}")
        answer = _json(response.text)
        if response.status_code != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
            detail = answer.get("error_description") or answer.get("error") if isinstance(answer, dict) else answer
            raise TargetRefused(
                "Salesforce refused the connected app's client credentials (SALESFORCE_CLIENT_ID, "
                f"SALESFORCE_CLIENT_SECRET): {detail or response.status_code}"
            )
        return str(answer["access_token"])

    def _request(self, send: Callable[[], T]) -> T:
        def once() -> T:
            try:
                return self._translated(send)
            except _Expired as expired:
                if self._connection.access_token:
                    raise TargetRefused(f"{expired} (SALESFORCE_ACCESS_TOKEN)") from None
                self._client = None  # the client-credentials token expired: ask for another, once
                try:
                    return self._translated(send)
                except _Expired as again:
                    raise TargetRefused(str(again)) from None

        return with_request_retries(
            once,
            attempts=self._behaviour.request_attempts,
            base=self._behaviour.request_backoff_base,
            inline_wait_cap=self._behaviour.inline_wait_cap,
            sleep=self._sleep,
        )

    def _translated(self, send: Callable[[], T]) -> T:
        try:
            return send()
        except SalesforceError as error:
            raise self._failure(error) from None
        except requests.RequestException as error:
            raise TryLater(f"Salesforce did not answer: {_first_line(error)}") from None

    def _failure(self, error: SalesforceError) -> SyncFailure:
        status = int(error.status)
        code, message = _error_of(error.content)
        headers = self._last_response.headers if self._last_response is not None else {}
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        if status == 401:
            return _Expired(f"Salesforce refused the access token ({code or status}): {message}")
        if status == 403 and code == _LIMIT_EXCEEDED:
            return TryLater(f"Salesforce's API limit is reached: {message}", retry_after=retry_after)
        if status == 403:
            return TargetRefused(f"Salesforce refused the request ({code or status}): {message}")
        if status == 429 or status >= 500:
            return TryLater(f"Salesforce answered {status}: {message}", retry_after=retry_after)
        if status == 404 and self._connection.external_id_field in message:
            return TargetRefused(
                f"Salesforce has no External ID field {self._connection.external_id_field} on Task ({message}): "
                'create it as README "Connect your CRM" says'
            )
        return Rejected(f"Salesforce refused the record ({code or status}): {message}")

    def close(self) -> None:
        self._session.close()


class _Expired(TargetRefused):
    """401: an expired client-credentials token is renewed once; anything else is a refusal."""


def _error_of(content: Any) -> tuple[str, str]:
    """(errorCode, message) of Salesforce's error body: a list of {message, errorCode, fields}."""
    data = content
    if isinstance(content, (bytes, str)):
        data = _json(content.decode("utf-8", "replace") if isinstance(content, bytes) else content)
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        first = data[0]
        fields = first.get("fields") or []
        message = str(first.get("message") or "")
        if fields:
            message = f"{message} (fields: {', '.join(map(str, fields))})"
        return str(first.get("errorCode") or ""), message
    return "", _first_line(data)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _salesforce_time(value: str | None) -> datetime | None:
    """Salesforce's datetimes: ``2026-12-07T10:00:00.000+0000``."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC)
    except ValueError:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return None


def _first_line(value: Any) -> str:
    return str(value).strip().splitlines()[0][:300] if str(value).strip() else ""
