"""A process `warmline serve` runs beside gunicorn's workers (housekeeping, live events): started as a fresh
interpreter, stopped with the server."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys

log = logging.getLogger(__name__)


def freeze_the_loaded_app() -> None:
    """A process has loaded the app: its objects (modules, models, flows, classifiers) live as long as the process,
    so they leave the collector's generations (``gc.freeze``) and a full collection no longer walks them. Walking
    them took 70-290 ms of CPU: in a worker it held up every request behind it (the other worker's too when it came
    while holding SQLite's writers' lock); in the live-events process, whose CPU budget charges a reading with the
    CPU used since the last one, it held the next change back by up to two seconds (ARCHITECTURE.md, "GC after the
    app is loaded")."""
    gc.collect()
    gc.freeze()


def python_running(module: str, function: str) -> list[str]:
    """The command of a fresh interpreter that calls ``module.function()``. Not ``python -m module``: the module
    belongs to ``voice.cli``, whose ``__init__`` imports it first, and ``-m`` would then run a second copy of it
    as ``__main__`` (with a RuntimeWarning in the server's log)."""
    return [sys.executable, "-c", f"from {module} import {function}; {function}()"]


class ChildProcess:
    """The server's side of one such process: start it, stop it (terminate, then kill after ``timeout``)."""

    #: How the logs name it.
    label = "child"

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _spawn(self, command: list[str]) -> None:
        # A fresh interpreter, not a fork: the server process has loaded the app and may hold threads and
        # connections that a forked child must not share. It inherits the environment, working directory and output.
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        log.info("%s process %s started", self.label, self._process.pid)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s process %s did not stop in %.0f s: killed", self.label, process.pid, timeout)
            process.kill()
            process.wait()
