"""Building the adapters of the configured CRMs."""

from __future__ import annotations

import time
from collections.abc import Callable

from crm_sync.sync.hubspot import HubSpotTarget
from crm_sync.sync.salesforce import SalesforceTarget
from crm_sync.sync.settings import HUBSPOT, SALESFORCE, WEBHOOK, SyncSettings
from crm_sync.sync.targets import Target
from crm_sync.sync.webhook import WebhookTarget


def build_targets(settings: SyncSettings, *, sleep: Callable[[float], None] = time.sleep) -> dict[str, Target]:
    """The adapters of the configured CRMs, by name. Each delivery worker builds its own: they hold connections."""
    built: dict[str, Target] = {}
    if settings.hubspot is not None:
        built[HUBSPOT] = HubSpotTarget(settings.hubspot, settings.behaviour, sleep=sleep)
    if settings.salesforce is not None:
        built[SALESFORCE] = SalesforceTarget(settings.salesforce, settings.behaviour, sleep=sleep)
    if settings.webhook is not None:
        built[WEBHOOK] = WebhookTarget(settings.webhook, settings.behaviour, sleep=sleep)
    return built
