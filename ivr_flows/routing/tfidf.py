"""TF-IDF over example phrases: the routing floor that runs anywhere (no NumPy, no model).

:class:`TfidfClassifier` is small, dependency-free and fast enough to run inside a Twilio webhook (tens of
microseconds per utterance on the sample flow). It learns from the example phrases an admin writes in the flow
file, so improving routing is a matter of adding phrasings there, not of retraining anything. It is what
:func:`ivr_flows.routing.factory.build_classifier` falls back to when no embedding engine can load.

How it scores
    Every example phrase (and the department's spoken name) is one document. Text is
    lower-cased, split into word tokens, stripped of stop words and reduced by a light suffix
    stemmer ("charged", "charges", "charging" -> "charg"; :func:`ivr_flows.routing.base.tokenize`). Each
    document becomes a TF-IDF
    vector (smoothed IDF, sub-linear TF, L2-normalised). An utterance is vectorised the same
    way and compared to every document by cosine similarity. A department's score is
    0.75 x its best document similarity + 0.25 x its second best (a department with a single
    document counts that one twice). Mostly "nearest example", which keeps a precise match
    strong, but an utterance resembling several examples of the same department beats one that
    shares a single word with one example. (On the held-out phrases in the tests this blend did
    as well as pure max or pure mean-of-top-two on the first set and slightly better on a
    second.)

What confidence means
    ``confidence`` is the winning department's score, a cosine in [0, 1]. It is not a
    calibrated probability: it measures how strongly the words overlap the examples (an
    example said word for word scores about 0.75-1). Words never seen in any example stay in
    the utterance vector at half the average weight, so the more of the utterance is
    unrelated to every example, the lower the score; an utterance with no known words
    ("hello", gibberish, small talk) scores 0 and goes to the route's fallback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from ivr_flows.routing.base import Classification, tokenize

__all__ = ["TfidfClassifier"]

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
        #: Each document's phrase, so that an answer can name the example it matched best.
        self._doc_text: list[str] = []
        for department, texts in phrases.items():
            for text in texts:
                tokens = tokenize(text)
                if tokens:
                    docs.append((department, tokens))
                    self._doc_text.append(text)
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
        nearest = max(
            (number for number in sims if self._doc_department[number] == winner), key=sims.__getitem__, default=None
        )
        # ``default`` may name a fallback that has no examples of its own (it then scores 0, not KeyError).
        return Classification(
            department=winner,
            confidence=scores.get(winner, 0.0),
            scores=MappingProxyType(scores),
            nearest_example=self._doc_text[nearest] if nearest is not None else None,
        )
