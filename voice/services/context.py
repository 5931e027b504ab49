"""What every call-handling service works with, assembled once per app (``voice.bootstrap``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from crm_sync.db import Store
from crm_sync.models import Interaction, utcnow
from ivr_flows import CallState, Classifier, Event, Flow, Step, advance
from voice.config import Settings
from voice.domain.actions import Action, ActionSink
from voice.services.dispatch import Dispatcher


class Flows(Protocol):
    """The flows in service (``voice.adapters.flow_library.FlowLibrary`` in the app)."""

    def current(self, name: str | None = None) -> Flow: ...

    def for_number(self, called: str) -> Flow: ...

    def version(self, version: str, *, name: str) -> Flow: ...

    def classifier_for(self, flow: Flow) -> Classifier: ...


class Clock:
    """The time every service reads. Tests and the queue simulation replace ``source``."""

    def __init__(self, source: Callable[[], datetime] = utcnow) -> None:
        self.source = source

    def __call__(self) -> datetime:
        return self.source()


@dataclass(frozen=True)
class ServiceContext:
    store: Store
    flows: Flows
    settings: Settings
    dispatcher: Dispatcher
    #: Where REST actions go after a transaction commits (the background runner in the app).
    act: ActionSink
    clock: Clock


class Service:
    """Base of the call-handling services: their shared parts, and the two things each of them does the same way."""

    def __init__(self, context: ServiceContext) -> None:
        self._store = context.store
        self._flows = context.flows
        self._settings = context.settings
        self._dispatch = context.dispatcher
        self._act = context.act
        self._clock = context.clock

    def _after_commit(self, actions: Iterable[Action]) -> None:
        for action in actions:
            self._act(action)

    def _advance(self, flow: Flow, state: CallState, event: Event) -> tuple[CallState, Step]:
        """The flow engine's next step, with the flow's classifier as the service routes with it."""
        return advance(flow, state, event, now=self._clock(), classifier=self._flows.classifier_for(flow))

    def _flow_of(self, interaction: Interaction) -> Flow:
        """The flow version the call started on (calls in progress finish on it)."""
        return self._flows.version(interaction.flow_version, name=interaction.flow_name)
