"""A process `warmline serve` runs beside gunicorn's workers (housekeeping, live events): started as a fresh
interpreter, stopped with the server."""

from __future__ import annotations

import logging
import subprocess

log = logging.getLogger(__name__)


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
