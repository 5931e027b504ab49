"""The `warmline` command: serve the app, manage the CRM store and reps, place an emulated call."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from crm_sync import csv_import, export
from crm_sync.errors import UnknownRep
from crm_sync.models import RepState
from crm_sync.phones import mask_phone
from ivr_flows.cli import flows
from voice import create_app
from voice.adapters.housekeeping_process import HousekeepingProcess
from voice.adapters.twilio_rest import InlineRunner
from voice.bootstrap import LOCAL_BASE_URL, Warmline, assemble
from voice.cli.flows_suggest import suggest_examples_command
from voice.cli.flows_try import try_flow
from voice.emulator import RepScript


def _warmline(*, require_schema: bool = True) -> Warmline:
    """The app's parts; with ``require_schema``, first makes sure the database has been migrated, so that a new
    admin who runs a command before ``warmline db upgrade`` hears what to do instead of a SQL traceback."""
    warmline: Warmline = current_app.extensions["warmline"]
    if require_schema and not warmline.store.is_migrated():
        raise click.ClickException(
            f"the database {warmline.store.engine.url.render_as_string(hide_password=True)} is not set up for this "
            "version of Warmline: run `warmline db upgrade` first (`make run` does)"
        )
    return warmline


def _make_app() -> Flask:
    # One-shot commands need no flow watcher or housekeeping thread (`serve` runs the app in gunicorn workers).
    return create_app(background=False)


@click.group(cls=FlaskGroup, create_app=_make_app, add_default_commands=False, add_version_option=False)
def main() -> None:
    """Warmline: the phone front door of a support team."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
@click.option(
    "--worker-class",
    type=click.Choice(["sync", "gthread"]),
    default="sync",
    show_default=True,
    help="sync measured faster on SQLite (no GIL and write-lock convoys); gthread suits PostgreSQL behind slow links",
)
@click.option("--threads", default=4, show_default=True, type=int, help="threads per worker (gthread only)")
@with_appcontext
def serve(host: str, port: int, workers: int, worker_class: str, threads: int) -> None:
    """Apply pending migrations, then serve the webhooks with gunicorn."""
    from gunicorn.app.base import BaseApplication

    warmline = _warmline(require_schema=False)
    warmline.store.upgrade()
    warmline.store.dispose()  # the workers open their own connections after fork
    # The housekeeping pass runs in one process beside the workers, not in a thread of each (see its module).
    housekeeping = HousekeepingProcess() if warmline.settings.routing.sweep_interval else None

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", worker_class)
            if worker_class == "gthread":
                self.cfg.set("threads", threads)
            self.cfg.set("control_socket_disable", True)  # several servers on one host must not share one socket
            self.cfg.set("accesslog", "-")
            self.cfg.set("post_worker_init", _freeze_the_loaded_app)
            if housekeeping is not None:  # started once gunicorn listens, stopped when it exits
                self.cfg.set("when_ready", lambda _arbiter: housekeeping.start())
                self.cfg.set("on_exit", lambda _arbiter: housekeeping.stop())

        def load(self) -> Any:
            return create_app(housekeeping=False)

    click.echo(f"Warmline answering on http://{host}:{port}/voice/incoming (status: /voice/status)")
    Server().run()


def _freeze_the_loaded_app(_worker: Any) -> None:
    """A worker has loaded the app: its objects (modules, models, flows, classifiers) live as long as the worker, so
    they leave the collector's generations (``gc.freeze``) and a full collection no longer walks them; walking them
    held up every request behind it, the other worker's too when it came while holding SQLite's writers' lock
    (ARCHITECTURE.md, "GC after the app is loaded")."""
    gc.collect()
    gc.freeze()


main.add_command(flows)
flows.add_command(try_flow)
flows.add_command(suggest_examples_command)


@main.group()
def db() -> None:
    """The CRM database."""


@db.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply pending migrations."""
    _warmline(require_schema=False).store.upgrade()
    click.echo("database is up to date")


@main.group()
def crm() -> None:
    """Customers and interactions."""


@crm.group("import")
def crm_import() -> None:
    """Load records from CSV."""


@crm_import.command("customers")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def import_customers(file: Path) -> None:
    """Import customers (columns name,phone,email,tier,notes; extra columns become custom fields)."""
    warmline = _warmline()
    with file.open(encoding="utf-8-sig", newline="") as source:
        report = csv_import.import_customers(
            warmline.store, source, source_name=str(file), default_region=warmline.settings.default_region
        )
    _print_report(report, "customers")


@main.group()
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
@with_appcontext
def import_reps(file: Path, status: str | None) -> None:
    """Import reps (columns name,phone,departments — ';'-separated — and optional languages)."""
    warmline = _warmline()
    departments = warmline.flows.current().departments.keys()
    with file.open(encoding="utf-8-sig", newline="") as source:
        report = csv_import.import_reps(
            warmline.store,
            source,
            source_name=str(file),
            known_departments=list(departments),
            default_region=warmline.settings.default_region,
        )
    _print_report(report, "reps")
    if status:
        for name in report.names:
            warmline.presence.set_presence(name, RepState(status))
        click.echo(f"{len(report.names)} reps set to {status}")


@reps.command("status")
@click.argument("name")
@click.argument("state", type=click.Choice([RepState.AVAILABLE.value, RepState.AWAY.value, RepState.OFFLINE.value]))
@with_appcontext
def rep_status(name: str, state: str) -> None:
    """Set a rep's presence. A rep who becomes available takes the longest-waiting caller at once."""
    warmline = _warmline()
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
@with_appcontext
def rep_token(name: str) -> None:
    """Issue a new API token for a rep's console (the JSON API); any earlier token stops working."""
    try:
        token = _warmline().presence.issue_token(name)
    except UnknownRep:
        raise click.ClickException(f"no rep named {name!r} (see `warmline reps list`)") from None
    click.echo(token)
    click.echo(f"(shown once: give it to {name}; send it as 'Authorization: Bearer <token>')", err=True)


@reps.command("list")
@with_appcontext
def rep_list() -> None:
    """Reps, their skills and presence."""
    for rep in _warmline().presence.roster():
        click.echo(f"{rep.name:<24} {rep.state:<10} {mask_phone(rep.phone):<14} {', '.join(rep.departments)}")


@crm.group("export")
def crm_export() -> None:
    """Write records out."""


@crm_export.command("interactions")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="default: stdout")
@with_appcontext
def export_interactions(fmt: str, output: Path | None) -> None:
    """Every interaction with its outcome (json or csv)."""
    store = _warmline().store
    if output is None:
        count = export.export_interactions(store, sys.stdout, fmt=fmt)  # type: ignore[arg-type]
    else:
        with output.open("w", encoding="utf-8", newline="") as out:
            count = export.export_interactions(store, out, fmt=fmt)  # type: ignore[arg-type]
    click.echo(f"{count} interactions exported", err=True)


@main.command("call")
@click.option("--from", "caller", default="+15551230001", show_default=True, help="the caller's number")
@click.option("--to", "called", default="+15550009999", show_default=True, help="the number dialled")
@click.option("--url", "base_url", default=None, help="where the app answers [default: WARMLINE_PUBLIC_URL or :5000]")
@click.option(
    "--rep",
    "rep_behaviour",
    type=click.Choice(["accepts", "declines", "no-answer"]),
    default="accepts",
    show_default=True,
    help="what every rep does when their phone rings",
)
@click.argument("inputs", nargs=-1)
@with_appcontext
def call(caller: str, called: str, base_url: str | None, rep_behaviour: str, inputs: tuple[str, ...]) -> None:
    """Place an emulated call into the running app and print what the caller and the rep heard.

    INPUTS answer the app's questions in order: words are spoken, `press:N` presses keys, `silence` says nothing.
    """
    from voice.emulator import CallerScript, Digits, RepScript, Silence, Speech, TwilioEmulator

    warmline = _warmline()
    settings = warmline.settings
    script = {"accepts": RepScript.accepts(talk_seconds=20), "declines": RepScript.declines()}.get(
        rep_behaviour, RepScript.no_answer()
    )
    answers: list[Speech | Digits | Silence] = []
    for item in inputs:
        if item.startswith("press:"):
            answers.append(Digits(item.removeprefix("press:")))
        elif item == "silence":
            answers.append(Silence())
        else:
            answers.append(Speech(item))
    with TwilioEmulator(
        public_url=base_url or settings.public_url or LOCAL_BASE_URL,
        account_sid=settings.account_sid,
        auth_token=settings.auth_token,
    ) as twilio:
        for rep in warmline.presence.roster():
            twilio.register_rep(rep.phone, script)
        placed = twilio.place_call(
            from_=caller, to=called, script=CallerScript(answers), status_callback="/voice/status"
        )
        if not placed.wait_finished(timeout=60):
            raise click.ClickException("the call did not finish within 60 s")
    for entry in placed.transcript:
        if entry.verb in ("Say", "Play"):
            who = "caller" if entry.party == "caller" else f"rep {mask_phone(entry.party.removeprefix('rep:'))}"
            click.echo(f"{who:>20} hears: {entry.text}")
    for error in placed.errors:
        click.echo(f"twilio error: {error}", err=True)
    click.echo(f"call {placed.sid} ended: {placed.status}, {placed.duration} s")


@main.command("simulate")
@click.option("--from", "caller_number", default="+15551230001", show_default=True, help="the number you call from")
@click.option("--to", "called", default="+15550009999", show_default=True, help="the number you dial")
@click.option(
    "--flow",
    "flow_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="try this flow file instead of the configured default",
)
@click.option(
    "--rep",
    "rep_behaviour",
    type=click.Choice(["accepts", "declines", "no-answer"]),
    default="accepts",
    show_default=True,
    help="what every rep does when their phone rings",
)
@click.option("--mute", is_flag=True, help="only print the prompts, do not speak them")
@with_appcontext
def simulate(caller_number: str, called: str, flow_file: Path | None, rep_behaviour: str, mute: bool) -> None:
    """A terminal phone: call the flow, type what you would say (words, keypad digits, or a .wav file to transcribe,
    empty for silence), hear the prompts, and see the interaction as recorded in the CRM."""
    from voice.cli.simulate import TerminalCaller, run_simulation, speaker

    warmline = _warmline()
    settings = warmline.settings
    warmline.store.upgrade()
    overrides: dict[str, Any] = {"flows": {"reload_interval": 0, "default": settings.flows.default}}
    if flow_file is not None:
        overrides["flows"] = {"reload_interval": 0, "directory": str(flow_file.parent), "default": flow_file.stem}

    def make_app(public_url: str, rest_url: str) -> Flask:
        return create_app({**overrides, "public_url": public_url, "twilio_api_url": rest_url, "log_level": "WARNING"})

    def transcribe(audio: bytes) -> str:
        from voice.adapters.speech import TranscriptionFailed, make_transcriber

        flow = warmline.flows.current()
        try:
            return make_transcriber("sphinx", flow, workdir=settings.instance_path / "speech").transcribe(audio).text
        except TranscriptionFailed as exc:
            click.echo(f"(could not transcribe: {exc})")
            return ""

    script = {"accepts": RepScript.accepts(talk_seconds=10), "declines": RepScript.declines()}.get(
        rep_behaviour, RepScript.no_answer()
    )
    caller = TerminalCaller(
        ask=lambda prompt: click.prompt(prompt.strip(), default="", show_default=False),
        say=speaker(mute=mute),
        transcribe=transcribe,
    )
    call = run_simulation(
        make_app,
        caller=caller,
        from_=caller_number,
        to=called,
        account_sid=settings.account_sid,
        auth_token=settings.auth_token,
        rep_script=script,
        rep_phones=[rep.phone for rep in warmline.presence.roster()],
    )
    click.echo(f"-- call ended: {call.status}, {call.duration} s")
    record = warmline.calls.interaction_summary(call.sid)
    for key, value in record.items():
        click.echo(f"   {key}: {value}")


def _print_report(report: csv_import.ImportReport, what: str) -> None:
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    click.echo(f"{what}: {report.created} created, {report.updated} updated, {len(report.errors)} rows rejected")
    if report.errors:
        sys.exit(1)
