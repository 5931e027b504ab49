"""What the HTTP edge uses of the assembled app, as a protocol: the edge sits below the composition
(``voice.bootstrap.Warmline``, which satisfies it; tests/web/test_routes.py has mypy check that) and may not import
it, so it names the parts it needs and their types instead."""

from __future__ import annotations

from typing import Protocol

from flask import current_app

from crm_sync.db import Store
from ivr_flows import Flow
from voice.config import Settings
from voice.services.accounts import AccountService
from voice.services.calls import CallService
from voice.services.context import Clock
from voice.services.customers import CustomerService
from voice.services.floor import FloorService
from voice.services.handoffs import HandoffService
from voice.services.presence import PresenceService
from voice.services.queue import QueueService
from voice.services.voicemail import VoicemailService
from voice.services.worklist import WorkService
from voice.services.wrapup import WrapUpService


class Flows(Protocol):
    def current(self, name: str | None = None) -> Flow: ...

    @property
    def problems(self) -> list[str]: ...


class WebParts(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    @property
    def flows(self) -> Flows: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def calls(self) -> CallService: ...

    @property
    def queue(self) -> QueueService: ...

    @property
    def voicemail(self) -> VoicemailService: ...

    @property
    def presence(self) -> PresenceService: ...

    @property
    def handoffs(self) -> HandoffService: ...

    # The rep console's (and the reps' API's) services.
    @property
    def accounts(self) -> AccountService: ...

    @property
    def wrap_ups(self) -> WrapUpService: ...

    @property
    def work(self) -> WorkService: ...

    @property
    def customers(self) -> CustomerService: ...

    @property
    def floor(self) -> FloorService: ...


def app_parts() -> WebParts:
    """The parts of the app serving this request (``create_app`` put them there)."""
    parts: WebParts = current_app.extensions["warmline"]
    return parts
