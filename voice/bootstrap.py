"""What one app instance is made of, assembled once by ``create_app``: plain construction, in dependency order."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from crm_sync.db import Store
from crm_sync.sync.worker import DeliveryThread
from voice.adapters.action_runner import ActionRunner
from voice.adapters.flow_archive import FlowArchive
from voice.adapters.flow_library import FlowLibrary, FlowWatcher
from voice.adapters.learned_examples import LearnedExamples
from voice.adapters.transcription import Transcription
from voice.adapters.twilio_rest import BackgroundRunner, TwilioRest
from voice.config import Settings, sync_settings
from voice.domain.actions import ActionRelay
from voice.services.accounts import AccountService
from voice.services.calls import CallService
from voice.services.context import Clock, ServiceContext
from voice.services.customers import CustomerService
from voice.services.dispatch import Dispatcher
from voice.services.floor import FloorService
from voice.services.handoffs import HandoffService
from voice.services.housekeeping import Housekeeper, SweepThread
from voice.services.presence import PresenceService
from voice.services.queue import QueueService
from voice.services.voicemail import VoicemailService
from voice.services.worklist import WorkService
from voice.services.wrapup import WrapUpService
from voice.web.urls import callback_urls

# Used for pull URLs when WARMLINE_PUBLIC_URL is unset (local runs): where `warmline serve` listens by default.
LOCAL_BASE_URL = "http://127.0.0.1:5000"
#: Longest sweep interval (s) at which the sweep thread, not webhooks' commits, checkpoints the WAL: beyond it the
#: WAL would grow for too long between checkpoints (several MB a second under bench/webhook.py's load).
MAX_CHECKPOINT_INTERVAL = 5.0


@dataclass
class Warmline:
    settings: Settings
    store: Store
    flows: FlowLibrary
    clock: Clock
    actions: ActionRelay
    calls: CallService
    queue: QueueService
    voicemail: VoicemailService
    presence: PresenceService
    handoffs: HandoffService
    accounts: AccountService
    wrap_ups: WrapUpService
    work: WorkService
    customers: CustomerService
    floor: FloorService
    housekeeper: Housekeeper
    rest: TwilioRest
    runner: BackgroundRunner
    watcher: FlowWatcher | None = None
    sweeper: SweepThread | None = None
    delivery: DeliveryThread | None = None

    def close(self) -> None:
        """Stop background threads and close database connections (tests, CLI)."""
        if self.watcher is not None:
            self.watcher.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.delivery is not None:
            self.delivery.stop()
        self.runner.shutdown(wait=True)
        self.flows.close()
        self.store.dispose()


def assemble(
    app: Flask,
    settings: Settings,
    *,
    runner: BackgroundRunner | None = None,
    background: bool = True,
    housekeeping: bool = True,
) -> Warmline:
    """One app instance's parts. ``background=False``: no flow watcher, no housekeeping thread (the CLI).
    ``housekeeping=False``: no housekeeping thread, another process of the host runs it (``warmline serve``'s
    workers; voice/cli/housekeeping_process.py)."""
    # With a housekeeping thread sweeping at least every few seconds (here or in the host's housekeeping process),
    # it also checkpoints SQLite's WAL, so that no webhook's commit does (see Store); with none (the CLI, or
    # sweeping switched off) commits do, as usual.
    sweeping = background and 0 < settings.routing.sweep_interval <= MAX_CHECKPOINT_INTERVAL
    # The CRMs configured for sync: every change they must hear of gets an outbox row in its own transaction.
    crm = sync_settings(settings)
    store = Store(settings.database_url, background_checkpoints=sweeping, announce_to=crm.targets)
    flows = FlowLibrary(
        settings.flows_directory,
        default=settings.flows.default,
        numbers=settings.flows.numbers,
        classifier=settings.flows.classifier,
        defer_classifiers=not background,
        # The service keeps every version that goes live; one-shot commands read files only.
        archive=FlowArchive(store) if background else None,
        # What the reps' corrections taught routing: the service relearns at every reload poll, a command once.
        learned=LearnedExamples(store),
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
    clock = Clock()
    # Services hand their REST actions to the relay; the runner that carries them out reports failures back to the
    # services, so it is built after them and connected to the relay last.
    relay = ActionRelay()
    context = ServiceContext(
        store=store,
        flows=flows,
        settings=settings,
        dispatcher=Dispatcher(settings=settings, clock=clock),
        act=relay,
        clock=clock,
    )
    calls = CallService(context)
    queue = QueueService(context, calls=calls)
    voicemail = VoicemailService(context)
    presence = PresenceService(context)
    handoffs = HandoffService(context, calls=calls)
    housekeeper = Housekeeper(context, queue=queue)
    accounts = AccountService(context)
    wrap_ups = WrapUpService(context)
    work = WorkService(context)
    customers = CustomerService(context)
    floor = FloorService(context)
    action_runner = ActionRunner(
        pool=runner,
        rest=rest,
        urls=callback_urls(settings.public_url or LOCAL_BASE_URL),
        flows=flows,
        transcription=Transcription(settings),
        queue=queue,
        calls=calls,
        handoffs=handoffs,
        voicemail=voicemail,
    )
    relay.connect(action_runner.submit)
    sweeper = (
        SweepThread(housekeeper, interval=settings.routing.sweep_interval, store=store).start()
        if background and housekeeping and settings.routing.sweep_interval
        else None
    )
    # The outbox is delivered where housekeeping runs (the host's housekeeping process under `warmline serve`, the app
    # itself in a single process): the same worker as `warmline crm sync run`, so no webhook's worker waits on a CRM.
    # Several hosts may each run one (rows are claimed with SKIP LOCKED).
    delivery = DeliveryThread(store, crm).start() if background and housekeeping and crm.targets else None
    return Warmline(
        settings=settings,
        store=store,
        flows=flows,
        clock=clock,
        actions=relay,
        calls=calls,
        queue=queue,
        voicemail=voicemail,
        presence=presence,
        handoffs=handoffs,
        accounts=accounts,
        wrap_ups=wrap_ups,
        work=work,
        customers=customers,
        floor=floor,
        housekeeper=housekeeper,
        rest=rest,
        runner=runner,
        watcher=watcher,
        sweeper=sweeper,
        delivery=delivery,
    )
