"""Outgoing webhooks: URL resolution, Twilio request signing, HTTP, and TwiML document checks.

Signing goes through :class:`twilio.request_validator.RequestValidator` itself, over the exact
absolute URL Twilio would have requested (public URL, query string included), so an app that
validates signatures here validates them against real Twilio too.  When the app sits behind a
TLS-terminating proxy the HTTP request physically goes to ``connect_url`` while the signature
still covers the public URL, which is exactly the situation that breaks naive validators.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from twilio.request_validator import HMAC_SHA256, SIGNATURE_SETTINGS_HEADER, RequestValidator

__all__ = ["Document", "DocumentProblem", "HttpResult", "WebhookClient", "new_session", "parse_document"]

#: Seconds Twilio waits for a webhook response before giving up (error 11205/11200).
WEBHOOK_TIMEOUT = 15.0

#: Content types Twilio runs as TwiML (Twilio's "Twilio understands MIME types" table).
TWIML_CONTENT_TYPES = frozenset({"text/xml", "application/xml", "text/html"})


@dataclass(frozen=True)
class HttpResult:
    """What came back from one webhook request (``status_code`` 0: no HTTP response at all)."""

    url: str
    method: str
    params: dict[str, str]
    status_code: int
    body: str
    raw: bytes
    content_type: str
    failure: str | None = None

    def delivery_problem(self) -> DocumentProblem | None:
        """The Twilio error for a request that got no usable HTTP answer (11205: none at all, 11200: not 2xx)."""
        if self.status_code == 0:
            return DocumentProblem(11205, f"HTTP connection failure: {self.failure}")
        if not 200 <= self.status_code < 300:
            return DocumentProblem(11200, f"HTTP retrieval failure: status {self.status_code}")
        return None


@dataclass(frozen=True)
class Document:
    """A parsed TwiML ``<Response>``; ``url`` is the base for the relative URLs inside it."""

    url: str
    verbs: tuple[ET.Element, ...]


@dataclass(frozen=True)
class DocumentProblem:
    """Why a response could not be run as TwiML, as a Twilio error code."""

    code: int
    message: str


@dataclass(frozen=True)
class SharedKey:
    """A Webhooks-configuration SharedKey: Twilio signs matching webhooks with its secret instead of the Auth Token."""

    secret: str
    sid: str = "KS" + "0" * 32
    algorithm: str = HMAC_SHA256


class WebhookClient:
    """Resolves, signs and sends webhook requests the way Twilio does."""

    def __init__(
        self,
        *,
        public_url: str,
        auth_token: str,
        connect_url: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float = WEBHOOK_TIMEOUT,
        shared_key: SharedKey | None = None,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.connect_url = connect_url.rstrip("/") if connect_url else None
        self.extra_headers = dict(extra_headers or {})
        self.timeout = timeout
        # Signed like a Webhook Rule makes Twilio sign: the shared key's secret and algorithm, named in a header.
        self._shared_key = shared_key
        self._validator = RequestValidator(shared_key.secret if shared_key else auth_token)

    # -- URLs ----------------------------------------------------------------------------------
    def absolute(self, ref: str, base: str | None = None) -> str:
        """Resolve ``ref`` like Twilio: relative to the document it came from (or the public URL)."""
        return urljoin(base or self.public_url + "/", ref.strip())

    def transport_url(self, url: str) -> str:
        """Where the bytes really go: URLs under the public URL are re-rooted onto ``connect_url``."""
        if not self.connect_url:
            return url
        public = urlsplit(self.public_url)
        target = urlsplit(url)
        same_origin = (target.scheme, target.netloc.lower()) == (public.scheme, public.netloc.lower())
        if same_origin and target.path.startswith(public.path):
            rest = url[len(f"{target.scheme}://{target.netloc}") + len(public.path) :]
            return self.connect_url + rest
        return url

    # -- signing -------------------------------------------------------------------------------
    def sign(self, url: str, params: Mapping[str, str]) -> str:
        """The ``X-Twilio-Signature`` value for a request to ``url`` carrying ``params``."""
        algorithm = self._shared_key.algorithm if self._shared_key else None
        return str(self._validator.compute_signature(url, dict(params), algorithm))

    def headers(self, signature: str) -> dict[str, str]:
        headers = {
            "X-Twilio-Signature": signature,
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "Accept": "*/*",
        }
        if self._shared_key:
            headers[SIGNATURE_SETTINGS_HEADER] = f"key={self._shared_key.sid},algorithm={self._shared_key.algorithm}"
        headers.update(self.extra_headers)
        return headers

    # -- sending -------------------------------------------------------------------------------
    def send(self, session: requests.Session, url: str, method: str, params: Mapping[str, str]) -> HttpResult:
        """Send one signed webhook.  Never raises for network trouble: the failure is in the result.

        For GET, Twilio moves the parameters into the query string and signs the full URL with no
        body parameters; for POST it signs the URL plus the sorted form parameters.
        """
        method = (method or "POST").upper()
        params = dict(params)
        if method == "GET":
            sep = "&" if urlsplit(url).query else "?"
            full_url = url + (sep + urlencode(params) if params else "")
            signature = self.sign(full_url, {})
            request_url, data = full_url, None
        else:
            method = "POST"
            full_url = url
            signature = self.sign(url, params)
            request_url, data = url, params
        try:
            response = session.request(
                method,
                self.transport_url(request_url),
                data=data,
                headers=self.headers(signature),
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            return HttpResult(full_url, method, params, 0, "", b"", "", failure=f"{type(exc).__name__}: {exc}")
        content_type = response.headers.get("Content-Type", "")
        return HttpResult(full_url, method, params, response.status_code, response.text, response.content, content_type)


def new_session() -> requests.Session:
    """One cookie jar per leg (Twilio keeps cookies per call); never pick up proxy settings."""
    session = requests.Session()
    session.trust_env = False
    return session


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_document(result: HttpResult) -> Document | DocumentProblem | str:
    """Interpret a webhook response as Twilio would.

    Returns the parsed :class:`Document`, a :class:`DocumentProblem` (the Twilio error), or, for a
    ``text/plain`` or audio response, the string Twilio would say/play before hanging up.
    """
    problem = result.delivery_problem()
    if problem is not None:
        return problem
    kind = media_type(result.content_type)
    if kind == "text/plain":
        return result.body
    if kind.startswith("audio/"):
        return f"[play {result.url}]"
    if kind not in TWIML_CONTENT_TYPES:
        return DocumentProblem(12300, f"Invalid Content-Type: {result.content_type or '(none)'}")
    return parse_twiml(result.raw, result.url)


def parse_twiml(text: bytes | str, url: str) -> Document | DocumentProblem:
    """Parse TwiML text; the root element must be ``<Response>``."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return DocumentProblem(12100, f"Document parse failure: {exc}")
    if root.tag != "Response":
        return DocumentProblem(12102, f"The root element must be Response, not <{root.tag}>")
    return Document(url, tuple(root))
