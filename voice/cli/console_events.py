"""`warmline console-events`: the console's live-events server (``voice.live.server``) in a process of its own, and
the server side of starting and stopping it (``warmline serve`` runs one on the port after the app's, started
once gunicorn listens and stopped when it exits, as the housekeeping process is).

The process builds the app's parts as a one-shot command does (same settings, environment and config file; no
flow watcher, no sweep), then serves on an asyncio loop until SIGTERM/SIGINT, or until the server that named itself
with ``--parent`` is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import time
from typing import cast
from urllib.parse import urlsplit

import click
from aiohttp import web

from voice.cli.child_process import ChildProcess, freeze_the_loaded_app, python_running
from voice.cli.context import AppSource, CommandApp, warmline_parts
from voice.live.feeds import feed_for
from voice.live.server import LiveEvents

log = logging.getLogger(__name__)

#: Seconds between two looks at whether the server that started the process is still there.
PARENT_CHECK_INTERVAL = 1.0
#: How much lower than the webhooks' the process's CPU priority is (``nice``): when the host is short of CPU, the
#: kernel serves gunicorn's workers and the housekeeping process first, and the consoles' updates slow down
#: instead of the calls (a nice-10 process weighs about a tenth of a nice-0 one with Linux's scheduler).
NICENESS = 10
#: Seconds `warmline serve`'s events process waits before building the app: the workers and the housekeeping
#: process start first (measured: starting beside it delayed the housekeeping's first pass by seconds on a busy
#: 2-core host). Pages opened meanwhile poll and try the stream again (console.js).
START_AFTER = 3.0


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def lower_priority() -> None:
    if os.getpriority(os.PRIO_PROCESS, 0) < NICENESS:
        os.nice(NICENESS - os.getpriority(os.PRIO_PROCESS, 0))


@click.command("console-events")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@click.option("--parent", type=int, default=None, help="stop when this process is gone (`warmline serve` names itself)")
@click.option(
    "--allow-origin",
    multiple=True,
    help="a page origin allowed to follow the stream besides the public URL's and this host name's (repeatable)",
)
@click.option(
    "--start-after",
    type=float,
    default=0.0,
    help="seconds to wait before building the app (`warmline serve`: the workers and housekeeping start first)",
)
@click.pass_context
def console_events(
    ctx: click.Context, host: str, port: int, parent: int | None, allow_origin: tuple[str, ...], start_after: float
) -> None:
    """Serve the rep console's live updates (Server-Sent Events on /console/events), at a lower CPU priority than
    the webhooks' (nice +10)."""
    lower_priority()
    time.sleep(start_after)  # pages opened meanwhile poll, and try the stream again later
    with cast(AppSource, ctx.find_root().obj).load_app().app_context():
        _serve(host, port, parent, allow_origin)


def _serve(host: str, port: int, parent: int | None, allow_origin: tuple[str, ...]) -> None:
    warmline = warmline_parts()
    settings = warmline.settings
    logging.getLogger("voice.live").setLevel(settings.log_level)
    origins = (origin_of(settings.public_url), *allow_origin)
    events = LiveEvents(warmline, feed_for(settings.database_url), allowed_origins=origins)
    app = events.application()
    if parent is not None:
        app.on_startup.append(lambda _app: _watch_parent(parent))
    click.echo(f"console live events on http://{host}:{port}/console/events")
    freeze_the_loaded_app()
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=2.0, access_log=None)


async def _watch_parent(parent: int) -> None:
    async def watch() -> None:
        while True:
            await asyncio.sleep(PARENT_CHECK_INTERVAL)
            if os.getppid() != parent:
                log.warning("the server that started the live-events process is gone: stopping")
                os.kill(os.getpid(), signal.SIGTERM)  # run_app's own graceful exit
                return

    asyncio.get_running_loop().create_task(watch())


class EventsProcess(ChildProcess):
    """The server's side: start the process on ``host:port``, stop it."""

    label = "live-events"

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host, self.port = host, port

    def start(self) -> None:
        command = [
            *python_running(__name__, "run"),
            "--host", self.host, "--port", str(self.port), "--parent", str(os.getpid()),
            "--start-after", str(START_AFTER),
        ]  # fmt: skip
        # At its lower priority from its first instruction (nice(1) execs it, same pid): its start-up, which builds
        # the app, then comes after the housekeeping process's and the workers'.
        nice = shutil.which("nice")
        if nice is not None:
            command = [nice, "-n", str(NICENESS), *command]
        self._spawn(command)


def run() -> None:
    """The process's entry point (``python_running``)."""
    lower_priority()  # before the app is built: its start-up must not hold back the workers' and housekeeping's
    console_events.main(args=sys.argv[1:], prog_name="warmline console-events", obj=CommandApp())
