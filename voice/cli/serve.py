"""`warmline serve`: migrate, then serve the webhooks with gunicorn; and the note it leaves for `warmline call`.

While it runs, the server records in the instance folder (``serving.json``) the URL it answers on, the base URL it
builds its own webhook URLs from, and where it sends its Twilio REST requests, so that `warmline call` finds it
(whatever port `make run` was given) without being told.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from voice import create_app
from voice.cli.child_process import freeze_the_loaded_app
from voice.cli.console_events import EventsProcess
from voice.cli.context import warmline_parts, with_app
from voice.cli.housekeeping_process import HousekeepingProcess
from voice.web.console.app import EVENTS_PORT_CONFIG

SERVING_FILE = "serving.json"


@dataclass(frozen=True)
class ServingRecord:
    """What a running `warmline serve` answers on, as ``serving.json`` in its instance folder says."""

    #: Where to send requests: the bound address, with a wildcard host (0.0.0.0) replaced by loopback.
    url: str
    #: What the server checks signatures against and builds its own webhook URLs from ("" : each request's URL).
    public_url: str
    #: Where the server sends its Twilio REST requests.
    twilio_api_url: str
    pid: int

    def write(self, instance_path: Path) -> Path:
        instance_path.mkdir(parents=True, exist_ok=True)
        path = instance_path / SERVING_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, instance_path: Path) -> ServingRecord | None:
        """The record of a server that is still running, or None (none written, unreadable, or its process gone)."""
        try:
            record = cls(**json.loads((instance_path / SERVING_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None
        return record if _running(record.pid) else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def loopback_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches a server bound to ``host:port`` at."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@click.command()
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
@with_app
def serve(host: str, port: int, workers: int, worker_class: str, threads: int) -> None:
    """Apply pending migrations, then serve the webhooks with gunicorn."""
    from gunicorn.app.base import BaseApplication

    warmline = warmline_parts(require_schema=False)
    settings = warmline.settings
    warmline.store.upgrade()
    warmline.store.dispose()  # the workers open their own connections after fork

    # The housekeeping pass runs in one process beside the workers, not in a thread of each (see its module).
    housekeeping = HousekeepingProcess() if settings.routing.sweep_interval else None
    # The console's live updates: an asyncio process of their own on the next port, so that an open console never
    # holds a worker webhooks need (voice/live/server.py); "off" leaves the pages polling.
    events = EventsProcess(host, port + 1) if settings.console.events_url.strip().lower() != "off" else None
    url = loopback_url(host, port)
    overrides: dict[str, Any] = {}
    if settings.development and not settings.public_url:
        # The URLs the app gives the REST API (where a caller pulled out of line goes next) must reach this server,
        # not :5000. Only in development: with real credentials the public URL is WARMLINE_PUBLIC_URL's business.
        overrides["public_url"] = url

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", worker_class)
            if worker_class == "gthread":
                self.cfg.set("threads", threads)
            self.cfg.set("control_socket_disable", True)  # several servers on one host must not share one socket
            self.cfg.set("accesslog", "-")
            self.cfg.set("post_worker_init", lambda _worker: freeze_the_loaded_app())
            # The helper processes start once gunicorn listens and stop when it exits.
            helpers = [process for process in (housekeeping, events) if process is not None]
            self.cfg.set("when_ready", lambda _arbiter: [process.start() for process in helpers])
            self.cfg.set("on_exit", lambda _arbiter: [process.stop() for process in helpers])

        def load(self) -> Any:
            app = create_app(overrides, housekeeping=False)
            if events is not None:
                app.config[EVENTS_PORT_CONFIG] = events.port
            return app

    record = ServingRecord(
        url=url,
        public_url=overrides.get("public_url", settings.public_url),
        twilio_api_url=settings.twilio_api_url,
        pid=os.getpid(),
    )
    written = record.write(settings.instance_path)
    click.echo(f"Warmline answering on {url}/voice/incoming (status: /voice/status)")
    if events is not None:
        click.echo(f"console live updates on {loopback_url(host, events.port)}/console/events")
    if settings.development:
        click.echo(
            "development mode (no TWILIO_AUTH_TOKEN): try a call with `warmline call`, which also answers the REST "
            f"requests this server sends to {settings.twilio_api_url}"
        )
    try:
        Server().run()
    finally:
        # Workers are forked from here and leave through this frame too: only the master takes its record away,
        # and only its own (a newer server may have written one since).
        if os.getpid() == record.pid and ServingRecord.read(settings.instance_path) == record:
            written.unlink(missing_ok=True)
