"""Pick a department's example phrases from past callers' words: the handful that route those words best.

Admins write a few examples per department, and which ones matters more than how many (``ivr_flows/README.md``).
When past calls are at hand, each labelled with the department that handled it, the best handful can be chosen
rather than guessed: ``warmline flows suggest-examples`` does that, and ``bench/routing_accuracy.py`` uses the same
procedure on CLINC150's training split.

How
    1. Cover: in each department, greedy facility location over the sentence vectors of its phrases (each pick
       maximises the sum, over the department's phrases, of the cosine to the closest pick): typical phrasings of
       as many different reasons as the handful allows. This looks at one department at a time.
    2. Discriminate: then, slot by slot, each pick is replaced by the department phrase that makes the most of all
       the labelled phrases route to their own department (the classifier's own rule: mean of the two best cosines
       per department, the department's name and description topics counting as examples too). A phrase is never
       its own example (leave-one-out), so a pick must earn its place on the others. Two sweeps over all slots.
       Step 2 sees the other departments: an example that also attracts another department's callers loses to one
       that does not.

    On CLINC150 (``bench/routing_accuracy.py``, 8 per department, with topic descriptions), step 1 alone routes
    87.2 % of the test callers right with MiniLM at the benchmark's threshold, steps 1+2 91.4 % (top-1 without a
    threshold: 89.8 % -> 93.7 %); WordLlama 79.0 % -> 82.2 %. Out-of-scope callers sent to ``general`` barely move
    (58.6 % -> 58.3 % with MiniLM): this chooses between departments, not against off-topic words. The examples
    suit the model that chose them: pick with the engine that will route. ~30 s for 7,500 phrases with MiniLM
    (mostly embedding them), ~10 s for 12,000 with WordLlama, on one core.

Cost is bounded whatever the history: at most :data:`MAX_PHRASES` phrases are scored (a deterministic sample)
and at most :data:`MAX_CANDIDATES` per department compete for a slot.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ivr_flows.routing.embedding import SentenceEncoder

__all__ = ["MAX_CANDIDATES", "MAX_PHRASES", "Suggestion", "cover", "suggest_examples"]

#: Labelled phrases looked at, at most (sampled deterministically beyond): bounds memory (phrases x candidates).
MAX_PHRASES = 12_000
#: Phrases of one department that may become its examples, at most (a deterministic sample beyond).
MAX_CANDIDATES = 1_000
SWEEPS = 2

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Suggestion:
    """The chosen examples per department, and how well they route the labelled phrases (leave-one-out)."""

    examples: Mapping[str, tuple[str, ...]]
    routed_right_before: float  # share of labelled phrases routed to their department by the covering picks
    routed_right: float  # ... by the chosen examples
    phrases_scored: int


def cover(vectors: Matrix, count: int) -> list[int]:
    """Greedy facility location over unit row vectors: indices of ``count`` rows that best cover all rows, in the
    order picked (each step adds the row that most raises the sum of every row's cosine to its closest pick)."""
    similarity = vectors @ vectors.T
    best = np.full(similarity.shape[0], -1.0, dtype=similarity.dtype)
    chosen: list[int] = []
    for _ in range(min(count, similarity.shape[0])):
        gains = np.maximum(similarity, best[None, :]).sum(axis=1)
        gains[chosen] = -np.inf
        pick = int(np.argmax(gains))
        chosen.append(pick)
        best = np.maximum(best, similarity[pick])
    return chosen


def _top2_mean(columns: Matrix) -> Matrix:
    """Per row, the mean of the two largest values (the one value twice when there is only one column)."""
    if columns.shape[1] == 1:
        return columns[:, 0].copy()
    top: Matrix = -np.partition(-columns, 1, axis=1)[:, :2]
    result: Matrix = top.mean(axis=1)
    return result


def suggest_examples(
    phrases: Sequence[str],
    labels: Sequence[str],
    *,
    encoder: SentenceEncoder,
    per_department: int = 8,
    extras: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
) -> Suggestion:
    """``per_department`` examples for each department that labels at least one phrase (see the module docstring).

    ``extras``: department -> texts that count as its examples but are not chosen (its spoken name, the topics of
    its description), as the classifier adds them. Departments with no phrase get no suggestion.
    """
    if len(phrases) != len(labels):
        raise ValueError("one label per phrase")
    if per_department < 1:
        raise ValueError("per_department must be at least 1")
    pairs = list(dict.fromkeys((text.strip(), label) for text, label in zip(phrases, labels, strict=True)))
    pairs = [(text, label) for text, label in pairs if text]
    if len(pairs) > MAX_PHRASES:
        pairs = random.Random(seed).sample(pairs, MAX_PHRASES)
    departments = list(dict.fromkeys(label for _, label in pairs))
    if not departments:
        return Suggestion({}, 0.0, 0.0, 0)
    texts = [text for text, _ in pairs]
    owner = np.array([departments.index(label) for _, label in pairs])
    vectors = encoder.encode(texts)

    # Candidates: each department's phrases (a deterministic sample beyond MAX_CANDIDATES); step 1 picks among them.
    candidates: list[npt.NDArray[np.intp]] = []
    picks: list[list[int]] = []  # positions in candidates[i]
    sampler = random.Random(seed)
    for number in range(len(departments)):
        rows = np.flatnonzero(owner == number)
        if len(rows) > MAX_CANDIDATES:
            rows = np.sort(np.asarray(sampler.sample(list(rows), MAX_CANDIDATES)))
        candidates.append(rows)
        picks.append(cover(vectors[rows], min(per_department, len(rows))))
    extra_sims = []
    for department in departments:
        extra = [text for text in dict.fromkeys((extras or {}).get(department, ())) if text.strip()]
        extra_sims.append(vectors @ encoder.encode_cached(extra).T if extra else np.empty((len(texts), 0), np.float32))

    def similarity(number: int, positions: Sequence[int] | None = None) -> Matrix:
        """Phrases x the department's candidates (or those at ``positions``), a phrase never its own example.
        Computed when needed rather than kept: all departments' at once would be phrases x all phrases."""
        rows = candidates[number] if positions is None else candidates[number][list(positions)]
        sims: Matrix = vectors @ vectors[rows].T
        sims[rows, np.arange(len(rows))] = -1.0  # leave-one-out
        return sims

    def department_scores(number: int, chosen: Sequence[int]) -> Matrix:
        return _top2_mean(np.concatenate([similarity(number, chosen), extra_sims[number]], axis=1))

    scores = np.stack([department_scores(i, picks[i]) for i in range(len(departments))], axis=1)
    routed_before = float((scores.argmax(axis=1) == owner).mean())
    for _sweep in range(SWEEPS):
        for number in range(len(departments)):
            others = np.delete(scores, number, axis=1)
            best_other = others.max(axis=1)[:, None]
            other_winner = np.delete(np.arange(len(departments)), number)[others.argmax(axis=1)][:, None]
            mine = (owner == number)[:, None]
            trial = similarity(number)  # every candidate for a slot at once: phrases x candidates
            for slot in range(len(picks[number])):
                kept = [p for k, p in enumerate(picks[number]) if k != slot]
                fixed = np.concatenate([trial[:, kept], extra_sims[number]], axis=1)
                if fixed.shape[1] >= 2:
                    top = -np.partition(-fixed, 1, axis=1)[:, :2]
                    first, second = top[:, :1], top[:, 1:2]
                elif fixed.shape[1] == 1:  # with a candidate: the mean of the two, whichever is larger
                    first, second = fixed, np.full((len(texts), 1), -np.inf, dtype=np.float32)
                else:  # the candidate alone: its own similarity (counted twice, as the classifier does)
                    first = second = np.full((len(texts), 1), -np.inf, dtype=np.float32)
                score = np.where(
                    trial > first,
                    (trial + np.where(np.isfinite(first), first, trial)) / 2,
                    np.where(trial > second, (first + trial) / 2, (first + second) / 2),
                )
                right = np.where(mine, score > best_other, (score < best_other) & (other_winner == owner[:, None]))
                counts = right.sum(axis=0)
                counts[kept] = -1  # one phrase, one slot
                current = picks[number][slot]
                best = int(np.argmax(counts))
                if counts[best] > counts[current]:  # ties keep the covering pick: no churn for nothing
                    picks[number][slot] = best
            scores[:, number] = department_scores(number, picks[number])
    routed = float((scores.argmax(axis=1) == owner).mean())
    examples = {
        department: tuple(texts[candidates[number][p]] for p in picks[number])
        for number, department in enumerate(departments)
    }
    return Suggestion(examples, routed_before, routed, len(texts))
