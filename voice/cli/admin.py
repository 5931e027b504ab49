"""`warmline db|crm|reps …`: the database, customers and interactions, reps and their presence."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from alembic.runtime.migration import MigrationContext
from flask import current_app

from crm_sync import csv_import, export
from crm_sync.db import Store
from crm_sync.errors import UnknownRep
from crm_sync.models import RepState
from crm_sync.phones import mask_phone
from voice.adapters.twilio_rest import InlineRunner
from voice.bootstrap import assemble
from voice.cli.context import warmline_parts, with_app
from voice.cli.serve import ServingRecord
from voice.cli.wording import plural
from voice.services.accounts import LINK_MINUTES

#: Where sign-in links point when neither WARMLINE_PUBLIC_URL nor a running `warmline serve` says otherwise.
DEFAULT_CONSOLE_BASE = "http://127.0.0.1:5000"


@click.group()
def db() -> None:
    """The CRM database."""


def _revision(store: Store) -> str:
    """The database's migration revision ("" when it has none yet: a new, empty database)."""
    with store.engine.connect() as connection:
        return ", ".join(sorted(MigrationContext.configure(connection).get_current_heads()))


@db.command("upgrade")
@with_app
def db_upgrade() -> None:
    """Apply pending migrations."""
    store = warmline_parts(require_schema=False).store
    before = _revision(store)
    store.upgrade()
    after = _revision(store)
    if not before:
        click.echo(f"created the database schema (revision {after})")
    elif before != after:
        click.echo(f"upgraded the database from revision {before} to {after}")
    else:
        click.echo(f"the database is already up to date at revision {after}")


@click.group()
def crm() -> None:
    """Customers and interactions."""


@crm.group("import")
def crm_import() -> None:
    """Load records from CSV."""


@crm_import.command("customers")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_app
def import_customers(file: Path) -> None:
    """Import customers (columns name,phone,email,tier,notes; extra columns become custom fields)."""
    warmline = warmline_parts()
    with file.open(encoding="utf-8-sig", newline="") as source:
        try:
            report = csv_import.import_customers(
                warmline.store, source, source_name=str(file), default_region=warmline.settings.default_region
            )
        except csv_import.CsvFormatError as exc:  # the message names the file, the columns and what was expected
            raise click.ClickException(f"{exc} (nothing was imported)") from None
    _print_report(report, "customers")


@crm.group("export")
def crm_export() -> None:
    """Write records out."""


@crm_export.command("interactions")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="default: stdout")
@with_app
def export_interactions(fmt: str, output: Path | None) -> None:
    """Every interaction with its outcome (json or csv)."""
    store = warmline_parts().store
    if output is None:
        count = export.export_interactions(store, sys.stdout, fmt=fmt)  # type: ignore[arg-type]
    else:
        with output.open("w", encoding="utf-8", newline="") as out:
            count = export.export_interactions(store, out, fmt=fmt)  # type: ignore[arg-type]
    click.echo(f"{plural(count, 'interaction')} exported", err=True)


@click.group()
def reps() -> None:
    """Reps and their presence."""


@reps.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--status",
    "status",
    type=click.Choice([state.value for state in (RepState.AVAILABLE, RepState.AWAY, RepState.OFFLINE)]),
    default=None,
    help="also set every imported rep to this presence",
)
@with_app
def import_reps(file: Path, status: str | None) -> None:
    """Import reps (columns name,phone,departments — ';'-separated — and optional languages)."""
    warmline = warmline_parts()
    departments = warmline.flows.current().departments.keys()
    with file.open(encoding="utf-8-sig", newline="") as source:
        try:
            report = csv_import.import_reps(
                warmline.store,
                source,
                source_name=str(file),
                known_departments=list(departments),
                default_region=warmline.settings.default_region,
            )
        except csv_import.CsvFormatError as exc:
            raise click.ClickException(f"{exc} (nothing was imported)") from None
    _print_report(report, "reps")
    if status:
        for name in report.names:
            warmline.presence.set_presence(name, RepState(status))
        click.echo(f"{plural(len(report.names), 'rep')} set to {status}")


@reps.command("status")
@click.argument("name")
@click.argument("state", type=click.Choice([RepState.AVAILABLE.value, RepState.AWAY.value, RepState.OFFLINE.value]))
@with_app
def rep_status(name: str, state: str) -> None:
    """Set a rep's presence. A rep who becomes available takes the longest-waiting caller at once."""
    warmline = warmline_parts()
    # The CLI has no webhook to keep fast: pull the caller right here, and see it fail if it does.
    inline = assemble(current_app, warmline.settings, runner=InlineRunner(), background=False)
    try:
        change = inline.presence.set_presence(name, RepState(state))
    except UnknownRep:
        raise click.ClickException(f"no rep named {name!r} (see `warmline reps list`)") from None
    finally:
        inline.close()
    if not change.immediate:
        click.echo(f"{change.rep.name}: {state} after the current call")
    else:
        click.echo(f"{change.rep.name}: {state}" + ("; connecting a waiting caller" if change.pulled else ""))


@reps.command("token")
@click.argument("name")
@with_app
def rep_token(name: str) -> None:
    """Issue a new API token for a rep's console (the JSON API); any earlier token stops working."""
    try:
        token = warmline_parts().presence.issue_token(name)
    except UnknownRep:
        raise click.ClickException(f"no rep named {name!r} (see `warmline reps list`)") from None
    click.echo(token)
    click.echo(f"(shown once: give it to {name}; send it as 'Authorization: Bearer <token>')", err=True)


@reps.command("login-link")
@click.argument("name")
@with_app
def rep_login_link(name: str) -> None:
    """Print a one-time sign-in URL for a rep's console (valid 15 minutes; the rep may then set a password)."""
    warmline = warmline_parts()
    try:
        token = warmline.accounts.issue_login_link(name)
    except UnknownRep:
        raise click.ClickException(f"no rep named {name!r} (see `warmline reps list`)") from None
    click.echo(f"{_console_base(warmline.settings.public_url, warmline.settings.instance_path)}/console/link/{token}")
    click.echo(f"(works once, for {LINK_MINUTES} minutes: give it to {name})", err=True)


def _console_base(public_url: str, instance_path: Path) -> str:
    """Where the console is browsed: WARMLINE_PUBLIC_URL, else the running `warmline serve`'s URL, else :5000."""
    if public_url:
        return public_url.rstrip("/")
    serving = ServingRecord.read(instance_path)
    return serving.url.rstrip("/") if serving is not None else DEFAULT_CONSOLE_BASE


@reps.command("list")
@with_app
def rep_list() -> None:
    """Reps, their skills and presence."""
    for rep in warmline_parts().presence.roster():
        click.echo(f"{rep.name:<24} {rep.state:<10} {mask_phone(rep.phone):<14} {', '.join(rep.departments)}")


def _print_report(report: csv_import.ImportReport, what: str) -> None:
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    click.echo(
        f"{what}: {report.created} created, {report.updated} updated, {plural(len(report.errors), 'row')} rejected"
    )
    if report.errors:
        sys.exit(1)
