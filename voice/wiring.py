"""What one app instance is made of, assembled once by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from crm_sync.db import Store
from voice.calls import CallService, Pull
from voice.config import Settings
from voice.flow_library import FlowLibrary
from voice.twilio_rest import BackgroundRunner, TwilioRest
from voice.urls import url_builder

# Used for pull URLs when WARMLINE_PUBLIC_URL is unset (local runs): where `warmline serve` listens by default.
LOCAL_BASE_URL = "http://127.0.0.1:5000"


@dataclass
class Warmline:
    settings: Settings
    store: Store
    flows: FlowLibrary
    calls: CallService
    rest: TwilioRest
    runner: BackgroundRunner


def assemble(app: Flask, settings: Settings, *, runner: BackgroundRunner | None = None) -> Warmline:
    store = Store(settings.database_url)
    flows = FlowLibrary(settings.flows_directory, default=settings.flows.default)
    flows.load_all()
    rest = TwilioRest(
        account_sid=settings.account_sid, auth_token=settings.auth_token, base_url=settings.twilio_api_url
    )
    runner = runner or BackgroundRunner()
    base_url = settings.public_url or LOCAL_BASE_URL

    def pull_caller(pull: Pull) -> None:
        url = url_builder(app.url_map, base_url)("voice.connect", offer=pull.offer_id)
        runner.submit(f"pull of {pull.call_sid}", rest.redirect_call, pull.call_sid, url)

    calls = CallService(store=store, flows=flows, settings=settings, pull_caller=pull_caller)
    return Warmline(settings=settings, store=store, flows=flows, calls=calls, rest=rest, runner=runner)
