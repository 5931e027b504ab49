"""`warmline crm sync status|retry|pull|run`: the CRM outbox, seen and worked from the command line.

The server delivers on its own (voice/bootstrap.py starts the same worker on a thread where housekeeping runs);
`run` is for a host that should deliver without serving.
"""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from types import FrameType

import click

from crm_sync.models import utcnow
from crm_sync.queries import sync as sync_queries
from crm_sync.sync.failures import SyncFailure
from crm_sync.sync.settings import TARGET_NAMES
from crm_sync.sync.worker import DeliveryWorker
from voice.cli.context import warmline_parts, with_app
from voice.cli.wording import plural
from voice.config import sync_settings

NOT_CONFIGURED = (
    "no CRM is configured: set HUBSPOT_ACCESS_TOKEN, SALESFORCE_INSTANCE_URL with SALESFORCE_ACCESS_TOKEN (or "
    "SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET), or WARMLINE_SYNC_WEBHOOK_URL with "
    'WARMLINE_SYNC_WEBHOOK_SECRET (README "Connect your CRM")'
)


@click.group("sync")
def sync() -> None:
    """Sync with HubSpot, Salesforce or a signed webhook (README "Connect your CRM")."""


@sync.command("status")
@with_app
def sync_status() -> None:
    """Records by state for each CRM, the oldest still waiting, the last error, credentials refused."""
    warmline = warmline_parts()
    configured = sync_settings(warmline.settings).targets
    with warmline.store.unit_of_work(read_only=True) as session:
        report = sync_queries.status(session, targets=configured)
    if not configured:
        click.echo(NOT_CONFIGURED)
    now = utcnow()
    for target in report:
        counts = ", ".join(f"{number} {state}" for state, number in target.counts.items())
        off = "" if target.target in configured else " (not configured now)"
        click.echo(f"{target.target}{off}: {counts}; {plural(target.attempts, 'send')} in all")
        if target.oldest_open_at is not None:
            click.echo(f"  oldest waiting: {_ago(target.oldest_open_at, now)} ({_at(target.oldest_open_at)})")
        if target.refused_since is not None:
            click.echo(f"  REFUSED since {_at(target.refused_since)}: {target.refusal}")
        if target.last_error:
            click.echo(f"  last error ({_at(target.last_error_at)}): {target.last_error}")
        if target.pulled_at is not None:
            click.echo(f"  contacts pulled {_ago(target.pulled_at, now)} (changed up to {_at(target.pulled_until)})")
        if target.pull_error:
            click.echo(f"  last pull failed: {target.pull_error}")


@sync.command("retry")
@click.argument("row_id", type=int, required=False)
@click.option("--all-failed", is_flag=True, help="every parked record")
@with_app
def sync_retry(row_id: int | None, all_failed: bool) -> None:
    """Send parked records again: one by its ID (from `status` or the console), or --all-failed."""
    if (row_id is None) == (not all_failed):
        raise click.UsageError("give one outbox row ID, or --all-failed")
    warmline = warmline_parts()
    with warmline.store.unit_of_work() as session:
        rows = sync_queries.parked(session, row_id=row_id)
        if row_id is not None and not rows:
            row = sync_queries.outbox_row(session, row_id)
            state = "no such outbox row" if row is None else f"row {row_id} is {row.state.value}, not parked"
            raise click.ClickException(state)
        retried = sum(row.retry(now=utcnow()) for row in rows)
    click.echo(f"{plural(retried, 'record')} queued to be sent again")


@sync.command("pull")
@click.option("--target", type=click.Choice(list(TARGET_NAMES)), default=None, help="only this CRM")
@click.option("--full", is_flag=True, help="every contact, not only those changed since the last pull")
@with_app
def sync_pull(target: str | None, full: bool) -> None:
    """Bring the CRMs' contacts (changed since the last pull) into the local store now."""
    warmline = warmline_parts()
    configured = sync_settings(warmline.settings)
    if not configured.targets:
        raise click.ClickException(NOT_CONFIGURED)
    if target is not None and target not in configured.targets:
        raise click.ClickException(f"{target} is not configured")
    worker = DeliveryWorker(warmline.store, configured)
    try:
        names = [target] if target else list(configured.targets)
        for name in names:
            try:
                reports = worker.pull([name], full=full)
            except SyncFailure as failure:
                raise click.ClickException(f"{name}: {failure}") from None
            for pulled in reports:
                click.echo(
                    f"{pulled.target}: {plural(pulled.seen, 'contact')} pulled, {pulled.created} new customers, "
                    f"{pulled.updated} updated, {plural(pulled.conflicts, 'conflict')} (logged)"
                )
    finally:
        worker.close()


@sync.command("run")
@click.option("--once", is_flag=True, help="one pass over what is due, then exit")
@with_app
def sync_run(once: bool) -> None:
    """Deliver the outbox in the foreground until interrupted (several may run at once, on any hosts)."""
    warmline = warmline_parts()
    configured = sync_settings(warmline.settings)
    if not configured.targets:
        raise click.ClickException(NOT_CONFIGURED)
    worker = DeliveryWorker(warmline.store, configured)
    try:
        if once:
            report = worker.run_once()
            click.echo(
                f"{plural(report.claimed, 'record')} claimed: {report.delivered} delivered, {report.retried} to retry, "
                f"{report.parked} parked"
            )
            return
        stop = threading.Event()
        _stop_on_signals(stop)
        click.echo(f"delivering to {', '.join(configured.targets)} (Ctrl-C stops)", err=True)
        worker.run(stop)
    finally:
        worker.close()


def _stop_on_signals(stop: threading.Event) -> None:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)


def _at(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "never"


def _ago(moment: datetime, now: datetime) -> str:
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{plural(seconds, 'second')} ago"
    if seconds < 7200:
        return f"{plural(seconds // 60, 'minute')} ago"
    return f"{plural(seconds // 3600, 'hour')} ago"
