"""Settings: config.yaml (behaviour) + the environment (secrets and deployment facts).

config.yaml holds only what is safe to commit; the auth token, account SID, public URL, database URL and REST base
come from the environment (names in ../shared/design.md), so a leaked config file leaks nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from crm_sync.phones import InvalidPhoneNumber, to_e164
from crm_sync.sync.settings import (
    DEFAULT_HUBSPOT_API_URL,
    Behaviour,
    HubSpotConnection,
    SalesforceConnection,
    SyncSettings,
    WebhookConnection,
)
from ivr_flows.yaml_positions import At, KeyPath, PositionIndex, YamlSyntaxError, allowed_keys, compose, explain
from voice.domain.errors import InvalidInput
from voice.domain.priority import PriorityWeights

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.yaml"
DEFAULT_TWILIO_API_URL = "https://api.twilio.com"
#: Where a setting came from when not from config.yaml: the overrides ``create_app`` was given (tests, the bench).
OVERRIDES = "create_app(test_config)"


@dataclass(frozen=True)
class ConfigProblem:
    """One bad setting: where it is (``line``/``col`` 1-based in ``source``; None for a value from the environment
    or the overrides, when ``source`` names those), its key path, and what is wrong with it."""

    source: str
    line: int | None
    col: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}:{self.col}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(InvalidInput):
    """The settings cannot be used; ``problems`` lists every one found, in file order, one per line of the
    message: ``path/to/config.yaml:LINE:COL: key.path: what is wrong``."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FlowsSettings(_Section):
    directory: Path = Path("ivr_flows")
    default: str = "main"
    # Called number → flow name, for numbers that answer with another flow than the default.
    numbers: dict[str, str] = {}
    # Seconds between looks for changed flow files (hot reload); 0 turns reloading off.
    reload_interval: float = Field(default=2.0, ge=0)
    # Speech routing engine: tfidf (words only, microseconds), wordllama (by meaning, ~0.07 ms, the default install's
    # requirements-routing.txt), minilm-onnx (the same MiniLM on ONNX Runtime, ~2x faster, requirements-onnx.txt),
    # minilm (by meaning, better, ~8 ms, needs requirements-embeddings.txt), minilm+mpnet
    # (two models averaged, the most accurate, ~0.1 s, also needs requirements-mpnet.txt), or auto (the best of
    # these that is installed).
    classifier: Literal["auto", "tfidf", "wordllama", "minilm", "minilm-onnx", "minilm+mpnet"] = "auto"

    @field_validator("numbers")
    @classmethod
    def _e164_keys(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            return {to_e164(number): flow for number, flow in value.items()}
        except InvalidPhoneNumber as exc:
            raise ValueError(str(exc)) from exc


class TransferSettings(_Section):
    ring_timeout: int = Field(default=20, ge=5, le=120)
    whisper_timeout: int = Field(default=6, ge=2, le=30)
    caller_id: str = "caller"


# Twilio's own hold music, public: callers hear music between announcements, never silence.
DEFAULT_HOLD_MUSIC = "https://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3"


class QueueSettings(_Section):
    hold_intro: str = (
        "All of our team members are helping other callers. Please stay on the line and we'll be with you shortly."
    )
    # Said at the start and then every announce_interval seconds; {position} and {estimated_wait} are filled in
    # (a flow's transfer `queue_message` replaces it for that flow).
    hold_message: str = "You are number {position} in line. Your wait is {estimated_wait}. Thanks for holding."
    # Said instead when nobody on duty can give an estimate yet.
    hold_message_no_estimate: str = "You are number {position} in line. Thanks for holding."
    hold_music_url: str = DEFAULT_HOLD_MUSIC
    # Seconds of hold audio per turn of the hold loop (a pause when hold_music_url is empty).
    hold_interval: int = Field(default=20, ge=1, le=600)
    # Seconds between announcements of position and estimated wait.
    announce_interval: int = Field(default=60, ge=10, le=3600)
    # Offer "press 1 and we'll call you back" when the estimated wait is at least this many seconds (0: always).
    callback_offer_after: int = Field(default=120, ge=0)
    # Used for estimates until a department has enough finished calls of its own (seconds of talk + wrap-up).
    default_handle_time: int = Field(default=240, ge=10)
    # After this many seconds in line the caller is offered a callback or voicemail.
    max_wait: int = Field(default=900, ge=30)


Strategy = Literal["longest_idle", "fewest_calls", "round_robin", "ring_all"]


class DepartmentRouting(_Section):
    strategy: Strategy | None = None  # None: routing.strategy
    # Reps of these departments take this department's callers who have waited `overflow_after` seconds.
    overflow_to: list[str] = []
    overflow_after: int = Field(default=120, ge=0)


class PrioritySettings(_Section):
    """Seconds of head start in line per reason (they add up); see README "Who goes first"."""

    tiers: dict[str, int] = {"vip": 300, "gold": 60}
    repeat_caller: int = Field(default=120, ge=0)
    repeat_within_days: int = Field(default=7, ge=0)
    frustrated: int = Field(default=90, ge=0)
    callback: int = Field(default=600, ge=0)
    # Extra words or phrases that mark a frustrated caller, on top of the built-in list.
    frustration_phrases: list[str] = []

    @field_validator("tiers")
    @classmethod
    def _tiers_are_head_starts(cls, value: dict[str, int]) -> dict[str, int]:
        # The routing's own rules (no negative head start, no two names that differ only in case), applied here so
        # that a bad tier is reported at its line in config.yaml rather than when the app assembles its dispatcher.
        PriorityWeights(tiers=value)
        return value


class RoutingSettings(_Section):
    strategy: Strategy = "longest_idle"
    departments: dict[str, DepartmentRouting] = {}
    # Seconds of after-call work before a rep is offered the next call (0: straight back to available).
    wrap_up: int = Field(default=30, ge=0, le=3600)
    # Offers in a row a rep lets ring out (or hears without answering) before they are set away.
    missed_offers_before_away: int = Field(default=3, ge=1)
    # The ring_all strategy rings at most this many free reps at once.
    ring_group_size: int = Field(default=5, ge=1, le=10)
    # Seconds between housekeeping passes: expired reservations, ended wrap-ups, due callbacks, overflow
    # (0 turns the background pass off; only for tests that drive it themselves).
    sweep_interval: float = Field(default=1.0, ge=0, le=60)
    # Open calls nothing was heard about for this many seconds are checked with Twilio (in the background), in
    # case their end was never reported: a status callback lost in an outage would otherwise keep the call open and
    # its rep "on a call". Each call is asked about at most once per this interval.
    check_calls_after: int = Field(default=60, ge=30)
    # Time zone of "calls today" (fewest_calls strategy).
    timezone: str = "UTC"
    priority: PrioritySettings = PrioritySettings()

    def for_department(self, department: str) -> DepartmentRouting:
        return self.departments.get(department) or DepartmentRouting()

    def strategy_for(self, department: str) -> Strategy:
        return self.for_department(department).strategy or self.strategy


class CallbackSettings(_Section):
    # Unanswered callbacks are tried again this many times, this many seconds apart, keeping the caller's place.
    retries: int = Field(default=2, ge=0, le=10)
    retry_after: int = Field(default=300, ge=10)
    # Seconds a callback rings the customer before counting as unanswered.
    ring_timeout: int = Field(default=30, ge=5, le=120)
    # Ask Twilio whether a person or a machine picked up (answering machine detection) before a rep is rung: a
    # voicemail box counts as an unanswered attempt instead of costing a rep a call with a recording.
    detect_machines: bool = True


class FallbackSettings(_Section):
    number: str = ""
    apology: str = "We're sorry, something went wrong on our side. Let me get you to someone who can help."
    voicemail_prompt: str = (
        "Please leave your name, number and a short message after the tone, and we'll call you back."
    )
    voicemail_max_length: int = Field(default=120, ge=10, le=3600)

    @field_validator("number")
    @classmethod
    def _e164(cls, value: str) -> str:
        if not value.strip():
            return ""
        try:
            return to_e164(value)
        except InvalidPhoneNumber as exc:
            raise ValueError(str(exc)) from exc


class SpeechSettings(_Section):
    # Engine that transcribes voicemails: "sphinx" (offline, default: PocketSphinx with a language model built from
    # the flow's own phrases) or another SpeechRecognition engine name ("vosk", "whisper", "google", …).
    engine: str = "sphinx"
    # Keyword options passed to that engine (e.g. {model: base} for whisper). Never put API keys here.
    options: dict[str, Any] = {}


class ProxySettings(_Section):
    trust_forwarded_headers: bool = False


#: How a call ended for the customer, as a rep records it at wrap-up (any department without a list of its own).
DEFAULT_DISPOSITIONS = (
    "resolved",
    "follow-up needed",
    "escalated",
    "callback scheduled",
    "information given",
    "wrong number",
    "no action needed",
)


class ConsoleSettings(_Section):
    # Wrap-up disposition codes: the default list, and per department a list of its own.
    dispositions: list[str] = Field(default_factory=lambda: list(DEFAULT_DISPOSITIONS), min_length=1)
    department_dispositions: dict[str, list[str]] = {}
    # Why a rep may be away.
    away_reasons: list[str] = Field(default_factory=lambda: ["break", "lunch", "training", "meeting"], min_length=1)
    # How long a console stays signed in without signing in again (hours).
    session_hours: int = Field(default=12, ge=1, le=24 * 14)
    # Failed sign-ins allowed per name (and, times three, per address) in 15 minutes before sign-in is paused.
    max_failed_sign_ins: int = Field(default=5, ge=1, le=100)
    # Where pages open the live-updates stream: "" = the events server `warmline serve` starts on the port after
    # the app's (same host name); a path (/console/events) or URL when a proxy routes it; "off" = pages poll.
    events_url: str = ""

    def dispositions_for(self, department: str | None) -> list[str]:
        return self.department_dispositions.get(department or "", self.dispositions)


class HubSpotSyncSettings(_Section):
    # Unique-value properties (created once in HubSpot) the records are upserted on.
    call_id_property: str = "warmline_call_id"
    task_id_property: str = "warmline_task_id"
    contact_id_property: str = "warmline_contact_id"


class SalesforceSyncSettings(_Section):
    api_version: str = Field(default="61.0", pattern=r"^\d+\.\d$")
    # The Task's External ID field (created once in Salesforce) every record is upserted on.
    external_id_field: str = Field(default="Warmline_Id__c", pattern=r"^[A-Za-z][A-Za-z0-9_]*__c$")


class CrmSyncSettings(_Section):
    """How CRM sync behaves (which CRMs: their credentials in the environment). Durations in seconds."""

    max_attempts: int = Field(default=10, ge=1, le=1000)
    backoff_base: float = Field(default=2.0, gt=0)
    backoff_cap: float = Field(default=600.0, gt=0)
    request_attempts: int = Field(default=3, ge=1, le=10)
    request_backoff_base: float = Field(default=0.2, gt=0)
    inline_wait_cap: float = Field(default=2.0, ge=0)
    retry_after_cap: float = Field(default=3600.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    request_timeout: float = Field(default=15.0, gt=0, le=300)
    down_after: int = Field(default=5, ge=1)
    lease: float = Field(default=120.0, gt=0)
    batch_size: int = Field(default=20, ge=1, le=500)
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    pull_interval: float = Field(default=300.0, ge=0)
    create_contacts: bool = False
    conflicts: Literal["newest", "crm", "local"] = "newest"
    hubspot: HubSpotSyncSettings = HubSpotSyncSettings()
    salesforce: SalesforceSyncSettings = SalesforceSyncSettings()


class Settings(_Section):
    """Everything the app is configured with. Built by ``load_settings``; tests pass overrides to create_app."""

    default_region: str = "US"
    flows: FlowsSettings = FlowsSettings()
    transfer: TransferSettings = TransferSettings()
    queue: QueueSettings = QueueSettings()
    routing: RoutingSettings = RoutingSettings()
    callbacks: CallbackSettings = CallbackSettings()
    fallback: FallbackSettings = FallbackSettings()
    proxy: ProxySettings = ProxySettings()
    speech: SpeechSettings = SpeechSettings()
    console: ConsoleSettings = ConsoleSettings()
    crm_sync: CrmSyncSettings = CrmSyncSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # From the environment (never from config.yaml).
    database_url: str = ""
    public_url: str = ""
    account_sid: str = ""
    auth_token: str = Field("", repr=False)
    # The secret of a Webhooks-configuration SharedKey, when a Webhook Rule makes Twilio sign with it (see
    # voice/signature.py); empty: every webhook must be signed with the Auth Token.
    webhook_shared_key: str = Field("", repr=False)
    twilio_api_url: str = DEFAULT_TWILIO_API_URL
    # Signs the console's session cookies (WARMLINE_SECRET_KEY; a random one kept in instance/ when unset).
    secret_key: str = Field("", repr=False)
    # CRM sync (README "Connect your CRM"): a CRM is synced when its credentials are set.
    hubspot_access_token: str = Field("", repr=False)
    hubspot_api_url: str = DEFAULT_HUBSPOT_API_URL
    salesforce_instance_url: str = ""
    salesforce_access_token: str = Field("", repr=False)
    salesforce_client_id: str = ""
    salesforce_client_secret: str = Field("", repr=False)
    sync_webhook_url: str = ""
    sync_webhook_secret: str = Field("", repr=False)
    config_path: Path = DEFAULT_CONFIG_PATH
    instance_path: Path = PROJECT_ROOT / "instance"
    # Set by load_settings, never by config.yaml: TWILIO_AUTH_TOKEN is unset, so the app signs and checks with the
    # development token and sends its REST requests to a loopback port where `warmline call` answers (see
    # development_rest_url). Real credentials never get this.
    development: bool = False

    @property
    def flows_directory(self) -> Path:
        directory = self.flows.directory
        return directory if directory.is_absolute() else self.config_path.parent / directory


_ENVIRONMENT_KEYS = {
    "database_url": "WARMLINE_DATABASE_URL",
    "public_url": "WARMLINE_PUBLIC_URL",
    "account_sid": "TWILIO_ACCOUNT_SID",
    "auth_token": "TWILIO_AUTH_TOKEN",
    "webhook_shared_key": "TWILIO_WEBHOOK_SHARED_KEY",
    "twilio_api_url": "TWILIO_API_URL",
    "secret_key": "WARMLINE_SECRET_KEY",
    "hubspot_access_token": "HUBSPOT_ACCESS_TOKEN",
    "hubspot_api_url": "HUBSPOT_API_URL",
    "salesforce_instance_url": "SALESFORCE_INSTANCE_URL",
    "salesforce_access_token": "SALESFORCE_ACCESS_TOKEN",
    "salesforce_client_id": "SALESFORCE_CLIENT_ID",
    "salesforce_client_secret": "SALESFORCE_CLIENT_SECRET",
    "sync_webhook_url": "WARMLINE_SYNC_WEBHOOK_URL",
    "sync_webhook_secret": "WARMLINE_SYNC_WEBHOOK_SECRET",
}
_SECRET_KEYS = {
    "hubspot_access_token",
    "hubspot_api_url",
    "salesforce_instance_url",
    "salesforce_access_token",
    "salesforce_client_id",
    "salesforce_client_secret",
    "sync_webhook_url",
    "sync_webhook_secret",
    "auth_token",
    "webhook_shared_key",
    "account_sid",
    "database_url",
    "public_url",
    "twilio_api_url",
    "secret_key",
}
#: Decided by Warmline from the environment, so a config file cannot claim it.
_DERIVED_KEYS = {"development"}


def load_settings(overrides: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None) -> Settings:
    """Read config.yaml (WARMLINE_CONFIG or ./config.yaml), then the environment, then ``overrides`` (tests).

    Raises :class:`ConfigError` listing every problem at once, each with its file:line:col.
    """
    env = dict(os.environ if environ is None else environ)
    overrides = dict(overrides or {})
    config_path = Path(overrides.pop("config_path", None) or env.get("WARMLINE_CONFIG") or DEFAULT_CONFIG_PATH)
    data: dict[str, Any] = {}
    index = PositionIndex(None)
    problems: list[ConfigProblem] = []
    if config_path.exists():
        index, loaded, problems = _read_config(config_path)
        data.update(loaded)
    elif "WARMLINE_CONFIG" in env:
        raise ConfigError([ConfigProblem("WARMLINE_CONFIG", None, None, "", f"{config_path} does not exist")])
    # Top-level keys whose value does not come from the file, and where it does come from.
    origins: dict[str, str] = {}
    for key, variable in _ENVIRONMENT_KEYS.items():
        if env.get(variable):
            data[key], origins[key] = env[variable], variable
    data.update(overrides)
    origins.update(dict.fromkeys(overrides, OVERRIDES))
    data["config_path"] = config_path
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problem(error, index, str(config_path), origins) for error in exc.errors())
    if problems:
        raise ConfigError(sorted(problems, key=lambda problem: (problem.line is None, problem.line, problem.col)))
    updates: dict[str, Any] = {}
    if not settings.database_url:
        updates["database_url"] = f"sqlite:///{settings.instance_path / 'warmline.sqlite3'}"
    if not settings.auth_token:
        updates["auth_token"] = development_auth_token(settings.instance_path)
        updates["development"] = True
        if "twilio_api_url" not in data:  # an explicit TWILIO_API_URL (or a test's override) always wins
            updates["twilio_api_url"] = development_rest_url(settings.instance_path)
    if not settings.account_sid:
        updates["account_sid"] = "AC" + "0" * 32
    if not settings.secret_key:
        # INFO, not a warning: one host's workers all read the same file, so the console works as it is; only
        # several hosts need one key set for all of them (README, "Pointing a real Twilio number at it").
        updates["secret_key"] = development_secret(
            settings.instance_path, "console-secret-key", "WARMLINE_SECRET_KEY", level=logging.INFO
        )
    return settings.model_copy(update=updates) if updates else settings


def sync_settings(settings: Settings) -> SyncSettings:
    """CRM sync's settings: a CRM is on when its credentials are in the environment (HubSpot: an access token;
    Salesforce: the instance URL and an access token or a connected app's client id and secret; the webhook: its URL
    and secret), and config.yaml's ``crm_sync:`` says how it behaves."""
    section = settings.crm_sync
    behaviour = Behaviour(
        max_attempts=section.max_attempts,
        backoff_base=section.backoff_base,
        backoff_cap=section.backoff_cap,
        request_attempts=section.request_attempts,
        request_backoff_base=section.request_backoff_base,
        inline_wait_cap=section.inline_wait_cap,
        retry_after_cap=section.retry_after_cap,
        connect_timeout=section.connect_timeout,
        request_timeout=section.request_timeout,
        down_after=section.down_after,
        lease=section.lease,
        batch_size=section.batch_size,
        poll_interval=section.poll_interval,
        pull_interval=section.pull_interval,
        create_contacts=section.create_contacts,
        conflicts=section.conflicts,
        default_region=settings.default_region,
    )
    hubspot = (
        HubSpotConnection(
            access_token=settings.hubspot_access_token,
            api_url=settings.hubspot_api_url or DEFAULT_HUBSPOT_API_URL,
            call_id_property=section.hubspot.call_id_property,
            task_id_property=section.hubspot.task_id_property,
            contact_id_property=section.hubspot.contact_id_property,
        )
        if settings.hubspot_access_token
        else None
    )
    salesforce_credentials = settings.salesforce_access_token or (
        settings.salesforce_client_id and settings.salesforce_client_secret
    )
    salesforce = (
        SalesforceConnection(
            instance_url=settings.salesforce_instance_url,
            access_token=settings.salesforce_access_token,
            client_id=settings.salesforce_client_id,
            client_secret=settings.salesforce_client_secret,
            api_version=section.salesforce.api_version,
            external_id_field=section.salesforce.external_id_field,
        )
        if settings.salesforce_instance_url and salesforce_credentials
        else None
    )
    webhook = (
        WebhookConnection(url=settings.sync_webhook_url, secret=settings.sync_webhook_secret)
        if settings.sync_webhook_url and settings.sync_webhook_secret
        else None
    )
    return SyncSettings(hubspot=hubspot, salesforce=salesforce, webhook=webhook, behaviour=behaviour)


def _read_config(path: Path) -> tuple[PositionIndex, dict[str, Any], list[ConfigProblem]]:
    """config.yaml's keys and where each is written; problems found before validation (duplicate keys, secrets).
    Raises :class:`ConfigError` when the file is not a YAML mapping at all."""
    source = str(path)
    try:
        composed = compose(path.read_text(encoding="utf-8"))
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigProblem(source, exc.line, exc.col, "", exc.message)]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(source, None, None, "", f"not UTF-8 text ({exc.reason})")]) from None
    index = PositionIndex(composed.root)
    loaded = {} if composed.data is None else composed.data  # an empty file: every default
    if not isinstance(loaded, dict):
        line, col = index.position((), "value")
        raise ConfigError([ConfigProblem(source, line, col, "", "the top level must be a mapping of keys")])
    problems = [
        ConfigProblem(source, *index.position(key_path, "key"), index.format_key(key_path), message)
        for key_path, message in composed.duplicates
    ]
    problems.extend(
        ConfigProblem(
            source,
            *index.position((key,), "key"),
            key,
            f"must come from the environment ({_ENVIRONMENT_KEYS[key]}), not from config.yaml",
        )
        for key in sorted(_SECRET_KEYS & set(loaded))
    )
    problems.extend(
        ConfigProblem(
            source,
            *index.position((key,), "key"),
            key,
            "cannot be set: development mode is on exactly when TWILIO_AUTH_TOKEN is unset",
        )
        for key in sorted(_DERIVED_KEYS & set(loaded))
    )
    return index, loaded, problems


def _problem(error: ErrorDetails, index: PositionIndex, source: str, origins: Mapping[str, str]) -> ConfigProblem:
    """One pydantic error at its place in config.yaml (or naming the variable or overrides its value came from)."""
    at: At = "value"
    path: KeyPath = ()
    for segment in error["loc"]:
        if segment == "[key]":  # the mapping key itself is invalid
            at = "key"
        else:
            path = (*path, segment)
    allowed = allowed_keys(Settings, path[:-1]) if error["type"] == "extra_forbidden" else []
    where, at, message = explain(error, path, at, allowed=allowed)
    origin = origins.get(str(where[0])) if where else None
    if origin is not None:
        return ConfigProblem(origin, None, None, index.format_key(where), message)
    line, col = index.position(where, at)
    return ConfigProblem(source, line, col, index.format_key(where), message)


def development_auth_token(instance_path: Path) -> str:
    """A random per-checkout token for local use when TWILIO_AUTH_TOKEN is unset.

    Real Twilio requests then fail signature checks (403) rather than being accepted unsigned, and the local
    emulator (`warmline call`) signs with the same token, read from this file. Never used when the variable is set.
    """
    return development_secret(instance_path, "dev-auth-token", "TWILIO_AUTH_TOKEN", nbytes=16)


def development_secret(
    instance_path: Path, name: str, variable: str, *, nbytes: int = 32, level: int = logging.WARNING
) -> str:
    """A random secret kept in ``instance/name`` (mode 600) for when ``variable`` is unset: every worker and
    command of one checkout shares it."""
    secret_file = instance_path / name
    if secret_file.exists():
        return secret_file.read_text(encoding="utf-8").strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(nbytes)
    secret_file.write_text(secret + "\n", encoding="utf-8")
    secret_file.chmod(0o600)
    log.log(level, "%s is not set: using a random secret kept in %s", variable, secret_file)
    return secret


def development_rest_url(instance_path: Path) -> str:
    """Where a development server (no TWILIO_AUTH_TOKEN) sends its Twilio REST requests: a loopback port, chosen
    once per instance folder and kept in ``dev-twilio-api-url``, on which ``warmline call`` serves the emulator's
    REST API while its call lasts.

    With the development token, api.twilio.com would refuse every request anyway (after a round trip to it); here
    a queued caller is pulled out, a callback placed, a hand-off made, all inside the emulated call. With no
    ``warmline call`` running the requests fail at once (connection refused) and are logged like any REST failure.
    """
    url_file = instance_path / "dev-twilio-api-url"
    if url_file.exists():
        return url_file.read_text(encoding="utf-8").strip()
    with socket.socket() as probe:  # a port free now; nothing but `warmline call` is meant to take it
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    instance_path.mkdir(parents=True, exist_ok=True)
    # Written whole, then linked into place: of two first commands at once, the first one's port wins and the
    # other never reads a half-written file.
    written = url_file.with_name(f"{url_file.name}.{os.getpid()}")
    written.write_text(url + "\n", encoding="utf-8")
    try:
        os.link(written, url_file)
    except FileExistsError:
        return url_file.read_text(encoding="utf-8").strip()
    finally:
        written.unlink()
    log.warning("TWILIO_AUTH_TOKEN is not set: Twilio REST requests go to %s (`warmline call`), from %s", url, url_file)
    return url
