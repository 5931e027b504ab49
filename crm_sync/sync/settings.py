"""What CRM sync is configured with: which CRMs (from the environment's credentials) and how it behaves
(config.yaml's ``crm_sync:`` section). Built by the app (``voice.config.sync_settings``) or by tests."""

from __future__ import annotations

from dataclasses import dataclass, field

HUBSPOT = "hubspot"
SALESFORCE = "salesforce"
WEBHOOK = "webhook"
#: Every kind of target, in the order they are listed and delivered.
TARGET_NAMES = (HUBSPOT, SALESFORCE, WEBHOOK)

DEFAULT_HUBSPOT_API_URL = "https://api.hubapi.com"


@dataclass(frozen=True)
class HubSpotConnection:
    access_token: str = field(repr=False)
    api_url: str = DEFAULT_HUBSPOT_API_URL
    # Unique-value properties the records are upserted on (an admin creates them once; README "Connect your CRM").
    call_id_property: str = "warmline_call_id"
    task_id_property: str = "warmline_task_id"
    contact_id_property: str = "warmline_contact_id"


@dataclass(frozen=True)
class SalesforceConnection:
    instance_url: str
    access_token: str = field(default="", repr=False)
    # A connected app's client credentials, when no access token is given: a token is asked for and renewed.
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    api_version: str = "61.0"
    # The Task's External ID field every record is upserted on (a custom field an admin creates once).
    external_id_field: str = "Warmline_Id__c"


@dataclass(frozen=True)
class WebhookConnection:
    url: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Behaviour:
    """How delivery and pulls behave (config.yaml ``crm_sync:``; every duration in seconds)."""

    # Failures charged to one record before it is parked (a CRM that is down for everyone charges nobody).
    max_attempts: int = 10
    # Full-jitter backoff between a record's attempts: a random wait in [0, min(cap, base * 2**failures)].
    backoff_base: float = 2.0
    backoff_cap: float = 600.0
    # Requests retried at once, inside one attempt, on 429/5xx/timeouts (Retry-After honoured up to inline_wait_cap).
    request_attempts: int = 3
    request_backoff_base: float = 0.2
    inline_wait_cap: float = 2.0
    # Longest Retry-After honoured (a CRM asking for longer is asked again then).
    retry_after_cap: float = 3600.0
    connect_timeout: float = 5.0
    request_timeout: float = 15.0
    # Consecutive failures on every record of a CRM before it counts as down (its rows wait, uncharged).
    down_after: int = 5
    # A claimed row is someone else's to send once this lease has run out (its worker died).
    lease: float = 120.0
    batch_size: int = 20
    poll_interval: float = 1.0
    # Seconds between contact pulls (0: only `warmline crm sync pull`).
    pull_interval: float = 300.0
    # File calls of unknown numbers on a new contact (else on none: the call is still logged).
    create_contacts: bool = False
    # Where the local store and a pulled contact disagree, and both changed since the last pull: "newest" keeps
    # whichever changed last, "crm" always takes the CRM's, "local" always keeps ours. Logged either way.
    conflicts: str = "newest"
    default_region: str = "US"


@dataclass(frozen=True)
class SyncSettings:
    hubspot: HubSpotConnection | None = None
    salesforce: SalesforceConnection | None = None
    webhook: WebhookConnection | None = None
    behaviour: Behaviour = Behaviour()

    @property
    def targets(self) -> tuple[str, ...]:
        """The CRMs configured (credentials present), in delivery order: the outbox writes a row for each."""
        configured = {HUBSPOT: self.hubspot, SALESFORCE: self.salesforce, WEBHOOK: self.webhook}
        return tuple(name for name in TARGET_NAMES if configured[name] is not None)
