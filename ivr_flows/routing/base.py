"""What every speech-routing engine shares: the answer, the protocol, and the text helpers.

The flow engine (``ivr_flows.engine``) depends only on :class:`Classifier`, and is handed one per call: a better
model (an LLM, an intent service) can replace the engines here without touching the engine or the webhook app.
Which engine a flow routes with is :mod:`ivr_flows.routing.factory`'s choice.

Nothing here imports NumPy or a model: a TF-IDF-only process (:mod:`ivr_flows.routing.tfidf`) needs no more.

What confidence means
    ``confidence`` is the winning department's score in [0, 1], not a calibrated probability. Each engine scales
    its own so that one route ``threshold`` sends about the same share of out-of-scope callers to ``general``
    whatever the engine (see :mod:`ivr_flows.routing.tfidf` and :mod:`ivr_flows.routing.embedding`), so a flow's
    ``threshold`` need not change with it. An utterance with no evidence at all scores 0 and goes to the route's
    fallback.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, Protocol, TypeVar, runtime_checkable

__all__ = [
    "Classification",
    "Classifier",
    "ClassifierUnavailable",
    "LoadOnce",
    "description_topics",
    "tokenize",
]


@dataclass(frozen=True)
class Classification:
    """The classifier's answer for one utterance."""

    department: str
    #: How sure the classifier is, in [0, 1]; see the module docstring for what it means.
    confidence: float
    #: Score for every department (same scale as ``confidence``), for logs and the rep's screen.
    scores: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    #: The winning department's example closest to the utterance, when the engine can tell (None otherwise).
    nearest_example: str | None = None
    #: That example was learned from a rep's correction (:mod:`ivr_flows.learning`), not written by the admin.
    matched_learned: bool = False


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
