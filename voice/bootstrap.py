"""What one app instance is made of, assembled once by ``create_app``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask

from crm_sync.db import Store
from ivr_flows import Flow
from voice.adapters.action_runner import RestActions, describe
from voice.adapters.flow_library import FlowLibrary, FlowWatcher
from voice.adapters.twilio_rest import BackgroundRunner, TwilioRest
from voice.config import Settings
from voice.domain.actions import Action, ActionRelay
from voice.services.calls import CallService, VoicemailJob
from voice.services.context import Clock, ServiceContext
from voice.services.dispatch import Dispatcher
from voice.services.handoffs import HandoffService
from voice.services.presence import Housekeeper, PresenceService, SweepThread
from voice.services.queue import QueueService
from voice.web.urls import url_builder

if TYPE_CHECKING:
    from voice.adapters.speech import Transcriber

# Used for pull URLs when WARMLINE_PUBLIC_URL is unset (local runs): where `warmline serve` listens by default.
LOCAL_BASE_URL = "http://127.0.0.1:5000"
#: Longest sweep interval (s) at which the sweep thread, not webhooks' commits, checkpoints the WAL: beyond it the
#: WAL would grow for too long between checkpoints (several MB a second under bench/webhook.py's load).
MAX_CHECKPOINT_INTERVAL = 5.0


class TranscriberCache:
    """One transcriber per flow version: the offline engine's language model is built from the flow's own words,
    so a changed flow gets a new one, and an unchanged flow reuses its decoder."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._by_version: dict[str, Transcriber] = {}

    def for_flow(self, flow: Flow) -> Transcriber:
        from voice.adapters.speech import make_transcriber  # numpy and pocketsphinx load only when a voicemail arrives

        with self._lock:
            transcriber = self._by_version.get(flow.version)
            if transcriber is None:
                transcriber = self._by_version[flow.version] = make_transcriber(
                    self._settings.speech.engine,
                    flow,
                    workdir=self._settings.instance_path / "speech",
                    options=self._settings.speech.options,
                )
            return transcriber


@dataclass
class Warmline:
    settings: Settings
    store: Store
    flows: FlowLibrary
    clock: Clock
    actions: ActionRelay
    calls: CallService
    queue: QueueService
    presence: PresenceService
    handoffs: HandoffService
    housekeeper: Housekeeper
    rest: TwilioRest
    runner: BackgroundRunner
    watcher: FlowWatcher | None = None
    sweeper: SweepThread | None = None

    def close(self) -> None:
        """Stop background threads and close database connections (tests, CLI)."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        self.runner.shutdown(wait=True)
        self.store.dispose()


def assemble(
    app: Flask, settings: Settings, *, runner: BackgroundRunner | None = None, background: bool = True
) -> Warmline:
    """One app instance's parts. ``background=False``: no flow watcher, no housekeeping thread (the CLI)."""
    # With a housekeeping thread sweeping at least every few seconds, it also checkpoints SQLite's WAL, so that
    # no webhook's commit does (see Store); with none (the CLI, or sweeping switched off) commits do, as usual.
    sweeping = background and 0 < settings.routing.sweep_interval <= MAX_CHECKPOINT_INTERVAL
    store = Store(settings.database_url, background_checkpoints=sweeping)
    flows = FlowLibrary(
        settings.flows_directory,
        default=settings.flows.default,
        numbers=settings.flows.numbers,
        classifier=settings.flows.classifier,
        defer_classifiers=not background,
    )
    flows.load_all()
    watcher = (
        FlowWatcher(flows, interval=settings.flows.reload_interval).start()
        if background and settings.flows.reload_interval
        else None
    )
    rest = TwilioRest(
        account_sid=settings.account_sid, auth_token=settings.auth_token, base_url=settings.twilio_api_url
    )
    runner = runner or BackgroundRunner()
    urls = url_builder(app.url_map, settings.public_url or LOCAL_BASE_URL)
    clock = Clock()
    dispatcher = Dispatcher(settings=settings, clock=clock)
    transcribers = TranscriberCache(settings)

    def run_in_background(action: Action) -> None:
        runner.submit(describe(action), perform, action)

    act = ActionRelay(run_in_background)

    def perform(action: Action) -> None:
        rest_actions.perform(action)

    def transcribe(job: VoicemailJob) -> None:
        def run() -> None:
            from voice.adapters.recordings import transcribe_recording

            transcript = transcribe_recording(
                job.recording_url,
                transcriber=transcribers.for_flow(job.flow),
                account_sid=settings.account_sid,
                auth_token=settings.auth_token,
            )
            calls.store_transcript(job.call_sid, transcript)

        runner.submit(f"transcription of {job.call_sid}", run)

    context = ServiceContext(
        store=store, flows=flows, settings=settings, dispatcher=dispatcher, act=act, clock=clock
    )
    calls = CallService(context, transcribe=transcribe)
    queue = QueueService(context, calls=calls)
    presence = PresenceService(context)
    handoffs = HandoffService(context, calls=calls)
    housekeeper = Housekeeper(context, queue=queue)
    # Built after the services it reports failures to; `perform` only runs once requests are being served.
    rest_actions = RestActions(rest=rest, urls=urls, queue=queue, calls=calls, handoffs=handoffs, settings=settings)
    sweeper = (
        SweepThread(housekeeper, interval=settings.routing.sweep_interval, store=store).start()
        if background and settings.routing.sweep_interval
        else None
    )
    return Warmline(
        settings=settings,
        store=store,
        flows=flows,
        clock=clock,
        actions=act,
        calls=calls,
        queue=queue,
        presence=presence,
        handoffs=handoffs,
        housekeeper=housekeeper,
        rest=rest,
        runner=runner,
        watcher=watcher,
        sweeper=sweeper,
    )
