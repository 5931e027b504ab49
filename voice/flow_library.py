"""The flows the service answers with, by name and by version.

Every interaction remembers the version (content hash) of the flow that started it, so a call keeps the flow it
began with even if a newer version is loaded meanwhile.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ivr_flows import Flow, FlowError, load_flow

log = logging.getLogger(__name__)


class NoSuchFlow(LookupError):
    """The configured flow name has no valid file."""


class FlowLibrary:
    def __init__(self, directory: Path, *, default: str) -> None:
        self.directory = directory
        self.default = default
        self._lock = threading.Lock()
        self._by_name: dict[str, Flow] = {}
        self._by_version: dict[str, Flow] = {}
        self.errors: dict[Path, FlowError] = {}

    def load_all(self) -> None:
        """Load every *.yaml flow; a file that does not validate is reported and skipped, never served."""
        for path in sorted(self.directory.glob("*.yaml")):
            try:
                flow = load_flow(path)
            except FlowError as exc:
                self.errors[path] = exc
                log.error("flow %s not loaded:\n%s", path, exc)
                continue
            self.add(flow)
        if self.default not in self._by_name:
            raise NoSuchFlow(f"default flow {self.default!r} not found (or invalid) in {self.directory}")

    def add(self, flow: Flow) -> None:
        with self._lock:
            self._by_name[flow.name] = flow
            self._by_version[flow.version] = flow

    def current(self, name: str | None = None) -> Flow:
        flow = self._by_name.get(name or self.default)
        if flow is None:
            raise NoSuchFlow(name or self.default)
        return flow

    def version(self, version: str, *, name: str) -> Flow:
        """The exact version a call started on; the current one of that name if it is no longer known."""
        return self._by_version.get(version) or self.current(name)
