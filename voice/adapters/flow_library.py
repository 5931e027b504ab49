"""The flows the service answers with, by name and by version, reloaded when their files change.

Admins deploy by saving a file. A file that validates is swapped in atomically; one that does not is logged and
kept out (the last good version keeps serving). Every interaction records the version (content hash) that started
it and keeps it to the end, even if a newer version is loaded meanwhile.

Each version has its speech classifier, kept here beside it (:meth:`FlowLibrary.classifier_for`): the flow itself is
only the flow language, and the engine is handed the classifier with every call.

Routing learns from the reps' corrections (``ivr_flows.learning``) without a restart: at every poll of the flow
watcher (``flows.reload_interval``), in every worker, the library asks the store whether a flow's learned examples
changed (one small aggregate) and, if so, rebuilds that flow's classifiers with them (:meth:`FlowLibrary.relearn`),
swapped in like a reloaded flow. The corrections belong to the flow by name, so a new version of the flow file
keeps them; the guard decides afresh, for the version's department set, which ones count.

Every version that goes live is also kept in the store (``voice.adapters.flow_archive``). A worker that boots while
a flow file is broken or missing serves the last version that went live (a gunicorn worker that fails to boot takes
the whole service down with it), and with none at all, ``BUILT_IN_FLOW``: every caller is put through to the
general line. Either way the library says it is degraded (``problems``), loudly in the log and on ``/healthz``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from crm_sync.queries.learned import Revision
from ivr_flows import Flow, FlowError, parse_flow
from ivr_flows.learning import Correction
from ivr_flows.routing.base import Classifier
from ivr_flows.routing.factory import DeferredClassifier, Engine, build_flow_classifier
from voice.adapters.flow_archive import FlowArchive
from voice.adapters.learned_examples import LearnedExamples

log = logging.getLogger(__name__)

#: What answers when the default flow's file is broken or missing and no version of it ever went live: a greeting,
#: then the general line (reps, or voicemail when nobody is on duty). Checked by the same loader as any flow.
BUILT_IN_FLOW = """
company: us
language: en-US
start: welcome
departments:
  general:
    name: customer service
    digit: 0
    description: anything
    examples: [I'd like to speak to a person]
nodes:
  welcome:
    kind: say
    text: "Thanks for calling. Let me get you to someone who can help."
    next: route
  route:
    kind: route
    threshold: 0
    fallback: general
    next: transfer
  transfer:
    kind: transfer
"""


class NoSuchFlow(LookupError):
    """The configured flow name has no valid file."""


@dataclass(frozen=True)
class _Seen:
    mtime_ns: int
    size: int


class FlowLibrary:
    def __init__(
        self,
        directory: Path,
        *,
        default: str,
        numbers: Mapping[str, str] | None = None,
        classifier: Engine = "tfidf",
        defer_classifiers: bool = False,
        archive: FlowArchive | None = None,
        learned: LearnedExamples | None = None,
    ) -> None:
        self.directory = directory
        self.default = default
        # Which speech classifier the flows in service route with (config.yaml flows.classifier).
        self.classifier = classifier
        # Build each flow's classifier on its first caller instead of on load: for CLI commands, which load the
        # app but route nobody. The service builds them on load, so no caller waits for a model and a pinned
        # engine that cannot load stops start-up.
        self.defer_classifiers = defer_classifiers
        # Called number (E.164) → flow name, for lines that answer with another flow than the default.
        self.numbers = dict(numbers or {})
        self._lock = threading.Lock()
        self._by_name: dict[str, Flow] = {}
        self._by_version: dict[str, Flow] = {}
        #: Flow version -> the classifier its callers are routed with (kept as long as the version is).
        self._classifiers: dict[str, Classifier] = {}
        self._seen: dict[Path, _Seen] = {}
        #: Files that do not validate, with why: kept out of service until fixed.
        self.errors: dict[Path, str] = {}
        self._archive = archive
        #: Flows serving from the archive or built in because their file is broken or missing.
        self.stand_ins: dict[str, str] = {}
        self._learned = learned
        #: Flow name -> the reps' corrections its classifiers learn from, and the store's revision they are of.
        self._corrections: dict[str, tuple[Correction, ...]] = {}
        self._revisions: dict[str, Revision] = {}

    def close(self) -> None:
        """Finish archiving the versions that went live (see ``voice.adapters.flow_archive``)."""
        if self._archive is not None:
            self._archive.close()

    @property
    def problems(self) -> list[str]:
        """What is wrong, for people: files kept out of service, and flows answering with a stand-in."""
        return [f"{path.name}: {error.splitlines()[0]}" for path, error in self.errors.items()] + [
            f"flow {name!r} {how}" for name, how in self.stand_ins.items()
        ]

    def load_all(self) -> None:
        """Load every *.yaml flow. The default flow (and every flow a number is configured for) always answers: from
        its file, else from the archive, else (the default) the built-in flow."""
        self.refresh()
        for name in {self.default, *self.numbers.values()}:
            if name not in self._by_name:
                self._stand_in(name)

    def _stand_in(self, name: str) -> None:
        problem = next((error for path, error in self.errors.items() if path.stem == name), "its file is missing")
        kept = self._archive.latest(name) if self._archive is not None else None
        if kept is not None:
            flow = parse_flow(kept.text, source=kept.source)
            how = f"serves its last good version {flow.version}, kept when it went live from {kept.source}"
        elif name == self.default:
            # Named like the flow it stands in for (a flow's name defaults to its file's stem).
            flow = parse_flow(BUILT_IN_FLOW, source=f"<built-in>/{name}.yaml")
            how = "answers with the built-in flow: every caller goes to the general line"
        else:
            log.error("flow %s is broken or missing and was never live: its numbers get the default flow", name)
            return
        self.add(flow)
        self.stand_ins[name] = how
        log.error("FLOW %s IS BROKEN OR MISSING (%s): it %s", name, problem.splitlines()[0], how)

    def refresh(self) -> list[str]:
        """Reload the files that changed since the last look, and relearn the flows whose learned examples changed.
        Returns the names of the flows swapped in (from their files)."""
        self.relearn()
        swapped: list[str] = []
        current = {path: _stat(path) for path in sorted(self.directory.glob("*.yaml"))}
        for path, seen in current.items():
            if seen is None or self._seen.get(path) == seen:
                continue
            self._seen[path] = seen
            try:
                text = path.read_text(encoding="utf-8")
                flow = parse_flow(text, source=str(path))
            except (FlowError, OSError, UnicodeDecodeError) as exc:
                self.errors[path] = str(exc)
                log.error("flow %s not loaded, the last good version keeps serving:\n%s", path, exc)
                continue
            self.errors.pop(path, None)
            self.stand_ins.pop(flow.name, None)
            previous = self._by_name.get(flow.name)
            if previous is not None and previous.version == flow.version:
                continue
            self.add(flow)
            if self._archive is not None:
                self._archive.keep(version=flow.version, name=flow.name, source=str(path), text=text)
            swapped.append(flow.name)
            log.info("flow %s@%s loaded from %s", flow.name, flow.version, path)
        return swapped

    def relearn(self) -> list[str]:
        """Rebuild the classifiers of every version of the flows whose learned examples changed in the store since
        the last look (each swapped in when built, so no caller waits). Returns those flows' names."""
        if self._learned is None:
            return []
        changes = self._learned.changes(self._revisions)
        if changes is None:
            return []
        self._corrections.update(changes.corrections)
        self._revisions = dict(changes.revisions)
        for name in changes.corrections:
            for flow in [flow for flow in list(self._by_version.values()) if flow.name == name]:
                classifier = self._build_classifier(flow)
                with self._lock:
                    self._classifiers[flow.version] = classifier
            if any(flow.name == name for flow in self._by_version.values()):
                log.info("flow %s relearned: %d corrections", name, len(changes.corrections[name]))
        return sorted(changes.corrections)

    def corrections(self, name: str) -> tuple[Correction, ...]:
        """The reps' corrections flow ``name`` learns from now (not removed; the guard decides which count)."""
        return self._corrections.get(name, ())

    def add(self, flow: Flow) -> None:
        # Built before the flow is swapped in, so no caller of the new version waits for it (the service); a version
        # seen before (a file changed and changed back) keeps the classifier it had.
        classifier = self._classifiers.get(flow.version) or self._build_classifier(flow)
        with self._lock:
            self._classifiers.setdefault(flow.version, classifier)
            self._by_name[flow.name] = flow
            self._by_version[flow.version] = flow

    def classifier_for(self, flow: Flow) -> Classifier:
        """The speech classifier of ``flow``'s version: the one built when it was loaded. A flow this library did
        not load (a test's, a tool's) gets one built now and kept like the others."""
        classifier = self._classifiers.get(flow.version)
        if classifier is None:
            built = self._build_classifier(flow)
            with self._lock:
                classifier = self._classifiers.setdefault(flow.version, built)
        return classifier

    def _build_classifier(self, flow: Flow) -> Classifier:
        build = partial(build_flow_classifier, flow, engine=self.classifier, corrections=self.corrections(flow.name))
        if self.defer_classifiers and self.classifier != "tfidf":  # TF-IDF costs next to nothing: built now
            return DeferredClassifier(build)
        return build()

    def current(self, name: str | None = None) -> Flow:
        flow = self._by_name.get(name or self.default)
        if flow is None:
            raise NoSuchFlow(name or self.default)
        return flow

    def for_number(self, called: str) -> Flow:
        """The flow that answers this number: its own if configured (and valid), else the default."""
        name = self.numbers.get(called)
        if name is not None and name in self._by_name:
            return self._by_name[name]
        return self.current()

    def version(self, version: str, *, name: str) -> Flow:
        """The exact version a call started on (from the archive when this worker never loaded it: it started
        before this worker did, or on another host); the current one of that name if it is not known at all."""
        flow = self._by_version.get(version)
        if flow is None and self._archive is not None:
            kept = self._archive.version(version)
            if kept is not None:
                flow = parse_flow(kept.text, source=kept.source)
                classifier = self._classifiers.get(flow.version) or self._build_classifier(flow)
                with self._lock:
                    self._classifiers.setdefault(flow.version, classifier)
                    self._by_version.setdefault(flow.version, flow)
        return flow or self.current(name)


def _stat(path: Path) -> _Seen | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return _Seen(status.st_mtime_ns, status.st_size)


class FlowWatcher:
    """Polls the flow folder and reloads changed files: a handful of stat() calls a second, no extra dependency,
    and it works the same on every filesystem (inotify does not see changes made through some bind mounts)."""

    def __init__(self, library: FlowLibrary, *, interval: float) -> None:
        self._library = library
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flow-watcher", daemon=True)

    def start(self) -> FlowWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._library.refresh()
            except Exception:  # the watcher must outlive any one bad file or filesystem hiccup
                log.exception("flow reload failed")
