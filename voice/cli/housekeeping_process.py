"""The housekeeping pass in a process of its own: one per host, started by ``warmline serve`` beside gunicorn's
workers, which then run no sweep thread of their own.

In every worker, the sweep thread (``voice.services.housekeeping.SweepThread``, every ``routing.sweep_interval``)
took the worker's GIL away from the request it was serving, and with two workers the pass and its WAL checkpoint ran
twice as often as needed; here the pass runs once per interval per host, and no request waits for it (measured in
ARCHITECTURE.md, "Housekeeping runs in a process of its own"). Several hosts may each run one: every step of the
pass is a guarded transition on a locked row.

The process builds the app as a worker does (same settings, from the same environment and config file) with its
sweep thread, and keeps the main thread for listening: it ends on SIGTERM or SIGINT (``warmline serve`` stops it
when gunicorn exits), and on its own when the server that started it is gone (killed without a chance to stop it),
so it never outlives the server.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from voice import create_app
from voice.cli.child_process import ChildProcess, freeze_the_loaded_app, python_running

log = logging.getLogger(__name__)

#: Seconds between two looks at whether the server that started the process is still there.
PARENT_CHECK_INTERVAL = 1.0


class HousekeepingProcess(ChildProcess):
    """The server's side: start the process, stop it."""

    label = "housekeeping"

    def start(self) -> None:
        self._spawn([*python_running(__name__, "run"), str(os.getpid())])


def main() -> int:
    """The process itself: returns once told to stop or once its parent is gone."""
    # The server names itself: by the time this line runs (after the imports) it may already be gone, and then
    # getppid() would name whoever adopted this process, which would never change.
    parent = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    app = create_app()  # with its sweep thread and flow watcher, as a single-process app runs
    warmline = app.extensions["warmline"]
    freeze_the_loaded_app()
    try:
        while not stop.wait(PARENT_CHECK_INTERVAL):
            if os.getppid() != parent:
                log.warning("the server that started the housekeeping process is gone: stopping")
                break
    finally:
        warmline.close()
    return 0


def run() -> None:
    """The process's entry point (``python_running``)."""
    sys.exit(main())
