"""What one app instance is made of, assembled once by ``create_app``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask

from crm_sync.db import Store
from ivr_flows import Flow
from voice.calls import CallService, Pull, VoicemailJob
from voice.config import Settings
from voice.flow_library import FlowLibrary, FlowWatcher
from voice.twilio_rest import BackgroundRunner, TwilioRest
from voice.urls import url_builder

if TYPE_CHECKING:
    from voice.speech import Transcriber

# Used for pull URLs when WARMLINE_PUBLIC_URL is unset (local runs): where `warmline serve` listens by default.
LOCAL_BASE_URL = "http://127.0.0.1:5000"


class TranscriberCache:
    """One transcriber per flow version: the offline engine's language model is built from the flow's own words,
    so a changed flow gets a new one, and an unchanged flow reuses its decoder."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._by_version: dict[str, Transcriber] = {}

    def for_flow(self, flow: Flow) -> Transcriber:
        from voice.speech import make_transcriber  # numpy and pocketsphinx load only when a voicemail arrives

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
    calls: CallService
    rest: TwilioRest
    runner: BackgroundRunner
    watcher: FlowWatcher | None = None

    def close(self) -> None:
        """Stop background threads and close database connections (tests, CLI)."""
        if self.watcher is not None:
            self.watcher.stop()
        self.runner.shutdown(wait=True)
        self.store.dispose()


def assemble(app: Flask, settings: Settings, *, runner: BackgroundRunner | None = None) -> Warmline:
    store = Store(settings.database_url)
    flows = FlowLibrary(settings.flows_directory, default=settings.flows.default, numbers=settings.flows.numbers)
    flows.load_all()
    watcher = (
        FlowWatcher(flows, interval=settings.flows.reload_interval).start() if settings.flows.reload_interval else None
    )
    rest = TwilioRest(
        account_sid=settings.account_sid, auth_token=settings.auth_token, base_url=settings.twilio_api_url
    )
    runner = runner or BackgroundRunner()
    base_url = settings.public_url or LOCAL_BASE_URL

    def pull_caller(pull: Pull) -> None:
        url = url_builder(app.url_map, base_url)("voice.connect", offer=pull.offer_id)
        runner.submit(f"pull of {pull.call_sid}", rest.redirect_call, pull.call_sid, url)

    transcribers = TranscriberCache(settings)

    def transcribe(job: VoicemailJob) -> None:
        def run() -> None:
            from voice.recordings import transcribe_recording

            transcript = transcribe_recording(
                job.recording_url,
                transcriber=transcribers.for_flow(job.flow),
                account_sid=settings.account_sid,
                auth_token=settings.auth_token,
            )
            calls.store_transcript(job.call_sid, transcript)

        runner.submit(f"transcription of {job.call_sid}", run)

    calls = CallService(store=store, flows=flows, settings=settings, pull_caller=pull_caller, transcribe=transcribe)
    return Warmline(settings=settings, store=store, flows=flows, calls=calls, rest=rest, runner=runner, watcher=watcher)
