"""Routing that learns from the reps' corrections, and the guard that decides which corrections it learns from.

When a rep says at wrap-up that a call belonged to another department ("Wrong department?"), the caller's words and
the right department are a :class:`Correction`. :func:`admit` decides, for one flow's department set, which
corrections become :class:`LearnedExample` s: extra example phrases of their department, which
:func:`ivr_flows.routing.factory.build_flow_classifier` adds to the admin's own (and marks, so that a result can
say it came from a learned example). Nothing here touches a store or a model: the service hands the corrections
in and keeps what is learned; this module only decides, the same way for the live service, ``warmline flows try``
and the benchmarks.

Why a guard, and why this one
    A learned example changes where *every* later caller with similar words goes, so one wrong click, or one rep
    who wants fewer calls of some kind, must not be able to take a department over. The guard is made of checks
    that each stop one way that goes wrong, and none needs a person to approve each correction (routing must learn
    with nobody editing YAML; Rasa-style review of every prediction is what the issue asks us not to need):

    * **In the flow** (:attr:`Standing.INACTIVE`): only a department the flow has now counts. A flow whose
      departments change keeps every correction; those for a department that is gone are inactive, not deleted,
      and count again if the department comes back.
    * **The admin's own examples are evidence** (:attr:`Standing.REJECTED`): words (almost) the same as an admin
      example of *another* department contradict the flow file itself, which an admin wrote on purpose; such a
      correction is kept but never learned (fold it into the flow by hand if the admin agrees). Closeness is the
      overlap of content-word stems (:func:`similarity`), the same for every engine, so the decision never depends
      on which model a machine has.
    * **Agreement** (:attr:`Standing.DISPUTED`): corrections of similar words that name different departments are
      votes. Each rep's latest vote counts once, a supervisor's weighs :attr:`Guard.supervisor_weight` (the
      supervisor review: one supervisor outvotes two reps); a department with no more weight than another among
      similar words is held back until it has. An honest rep's occasional slip is thus undone by anyone who
      corrects the same kind of call the other way.
    * **A cap per rep** (:attr:`Standing.CAPPED`): in one department, one rep's learned examples never outnumber
      :attr:`Guard.rep_share` of everyone else's there (the admin's examples included), above a small floor
      (:attr:`Guard.rep_floor`) so that a new flow learns from its first rep. A rep who floods a department gets
      that many examples in and no more, so they hold at most a third of the department's examples; the earliest
      are the ones kept, so a later flood cannot push honest examples out. Supervisors are not capped.

    Nothing learned is ever silently deleted: :func:`admit` returns a :class:`Decision` for every correction, and
    an example an admin removes is kept, marked removed (``crm_sync.models.LearnedExample.remove``), out of the
    corrections handed in here.

What it does not do
    It does not judge a correction by the classifier's own scores: a correction exists because the classifier was
    wrong, so its confidence is the weakest evidence there is. And it does not retrain anything: learned examples
    are example phrases, so every engine, TF-IDF included, learns from them the same way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from ivr_flows.routing.base import tokenize
from ivr_flows.schema import Flow

__all__ = [
    "Admission",
    "Correction",
    "Decision",
    "Guard",
    "LearnedExample",
    "Standing",
    "admit",
    "admit_for_flow",
    "similarity",
]


@dataclass(frozen=True)
class Correction:
    """A rep's "Wrong department?" on one call: what the caller said, where the flow sent them, where they belonged."""

    #: Identifies the correction where it is kept (the store's learned example id; any unique key in tests).
    key: int | str
    #: The caller's words, as the speech recogniser heard them.
    words: str
    #: The department the flow detected (None when it routed nowhere, e.g. a pressed key).
    detected: str | None
    #: The department the rep says was right.
    department: str
    #: Who corrected it (a stable id: the cap and the agreement count people, not names).
    taught_by: str
    #: Supervisors' corrections weigh more and are not capped.
    supervisor: bool
    taught_at: datetime


@dataclass(frozen=True)
class LearnedExample:
    """An example phrase routing learned from a correction: it joins ``department``'s examples."""

    key: int | str
    text: str
    department: str
    taught_by: str
    taught_at: datetime


class Standing(Enum):
    """What became of a correction."""

    #: Routing learns from it.
    LEARNED = "learned"
    #: Its department is not in the flow (any more): kept, counts again if the department comes back.
    INACTIVE = "inactive"
    #: Its words are (almost) an admin example of another department: the flow file says otherwise.
    REJECTED = "rejected"
    #: Corrections of similar words by others name another department with at least as much weight.
    DISPUTED = "disputed"
    #: Its rep already taught this department as many examples as one rep may.
    CAPPED = "capped"
    #: No content words at all ("hello", silence): nothing to learn from.
    EMPTY = "empty"


@dataclass(frozen=True)
class Decision:
    correction: Correction
    standing: Standing
    #: Why, for people (``warmline flows learned``).
    reason: str = ""


@dataclass(frozen=True)
class Guard:
    """The guard's settings; see the module docstring for what each check stops."""

    #: How much a supervisor's vote weighs against a rep's (1).
    supervisor_weight: float = 3.0
    #: One rep's learned examples in a department may reach this share of everyone else's there (admin's included).
    rep_share: float = 0.5
    #: ... and at least this many, whatever the others have (a new flow learns from its first rep).
    rep_floor: int = 4
    #: Content-word overlap (:func:`similarity`) at which words count as the same as an admin example.
    admin_clash: float = 0.8
    #: Content-word overlap at which two corrections are about the same words (they vote together).
    agreement: float = 0.5


@dataclass(frozen=True)
class Admission:
    """:func:`admit`'s answer: a decision for every correction handed in, in the order given."""

    decisions: tuple[Decision, ...] = ()
    by_key: Mapping[int | str, Decision] = field(default_factory=dict)

    @property
    def learned(self) -> list[LearnedExample]:
        return [
            LearnedExample(
                key=d.correction.key,
                text=d.correction.words.strip(),
                department=d.correction.department,
                taught_by=d.correction.taught_by,
                taught_at=d.correction.taught_at,
            )
            for d in self.decisions
            if d.standing is Standing.LEARNED
        ]

    def phrases(self) -> dict[str, list[str]]:
        """Department -> learned phrases, for :func:`ivr_flows.routing.factory.build_classifier`'s ``learned``."""
        phrases: dict[str, list[str]] = defaultdict(list)
        for example in self.learned:
            phrases[example.department].append(example.text)
        return dict(phrases)


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Overlap (Jaccard) of two sets of content-word stems (:func:`ivr_flows.routing.base.tokenize`)."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _stems(text: str) -> frozenset[str]:
    return frozenset(tokenize(text)) if isinstance(text, str) else frozenset()


def admit_for_flow(flow: Flow, corrections: Iterable[Correction], guard: Guard | None = None) -> Admission:
    """:func:`admit` against ``flow``'s departments and the examples its admin wrote (names and descriptions are
    not examples an admin chose word by word, so they are not held against a correction)."""
    return admit(
        corrections,
        departments={key: department.examples for key, department in flow.departments.items()},
        guard=guard,
    )


def admit(
    corrections: Iterable[Correction],
    *,
    departments: Mapping[str, Sequence[str]],
    guard: Guard | None = None,
) -> Admission:
    """Decide which ``corrections`` routing learns from, for a flow whose departments (id -> the admin's example
    phrases) are ``departments``. Deterministic: the same corrections give the same answer in every worker.

    The checks run in the module docstring's order; each correction gets the first one it fails, or
    :attr:`Standing.LEARNED`.
    """
    rules = guard or Guard()
    items = sorted(corrections, key=lambda c: (c.taught_at, str(c.key)))
    stems = {c.key: _stems(c.words) for c in items}
    admin = [(department, _stems(text), text) for department, texts in departments.items() for text in texts]
    decided: dict[int | str, Decision] = {}

    candidates: list[Correction] = []
    for c in items:
        if c.department not in departments:
            decided[c.key] = Decision(c, Standing.INACTIVE, f"the flow has no department {c.department!r} now")
        elif not stems[c.key]:
            decided[c.key] = Decision(c, Standing.EMPTY, "no words to learn from")
        else:
            clash = _admin_clash(stems[c.key], c.department, admin, rules.admin_clash)
            if clash is not None:
                decided[c.key] = Decision(
                    c, Standing.REJECTED, f"the flow's own example {clash[1]!r} is for {clash[0]!r}"
                )
            else:
                candidates.append(c)

    # Agreement among corrections in the flow (inactive ones are no evidence about this department set).
    voters = [c for c in items if c.department in departments and stems[c.key]]
    neighbours = _neighbours(voters, stems, rules.agreement)
    agreed: list[Correction] = []
    for c in candidates:
        votes = _votes(neighbours[c.key], rules.supervisor_weight)
        mine = votes.get(c.department, 0.0)
        rival = max((weight for department, weight in votes.items() if department != c.department), default=0.0)
        if rival >= mine:
            winner = max(votes, key=lambda d: (votes[d], d != c.department))
            decided[c.key] = Decision(
                c, Standing.DISPUTED, f"others corrected similar words to {winner!r} ({rival:g} against {mine:g})"
            )
        else:
            agreed.append(c)

    # The cap: one rep's share of a department, counted in the order they taught (earliest kept).
    in_department: dict[str, int] = defaultdict(int)
    by_person: dict[tuple[str, str], int] = defaultdict(int)
    for c in agreed:
        in_department[c.department] += 1
        by_person[(c.taught_by, c.department)] += 1
    taught: dict[tuple[str, str], int] = defaultdict(int)
    for c in agreed:
        if not c.supervisor:
            mine_so_far = taught[(c.taught_by, c.department)]
            others = (
                len(departments[c.department]) + in_department[c.department] - by_person[(c.taught_by, c.department)]
            )
            cap = max(rules.rep_floor, math.floor(rules.rep_share * others))
            if mine_so_far >= cap:
                decided[c.key] = Decision(
                    c, Standing.CAPPED, f"{c.taught_by} already taught {c.department!r} {mine_so_far} examples"
                )
                continue
            taught[(c.taught_by, c.department)] += 1
        decided[c.key] = Decision(c, Standing.LEARNED)

    decisions = tuple(decided[c.key] for c in items)
    return Admission(decisions=decisions, by_key={d.correction.key: d for d in decisions})


def _admin_clash(
    words: frozenset[str], department: str, admin: Sequence[tuple[str, frozenset[str], str]], threshold: float
) -> tuple[str, str] | None:
    """The admin example of another department that ``words`` (almost) repeat, as (department, example)."""
    best: tuple[float, str, str] | None = None
    for other, example_stems, text in admin:
        if other == department:
            continue
        score = similarity(words, example_stems)
        if score >= threshold and (best is None or score > best[0]):
            best = (score, other, text)
    return (best[1], best[2]) if best else None


def _neighbours(
    voters: Sequence[Correction], stems: Mapping[int | str, frozenset[str]], threshold: float
) -> dict[int | str, list[Correction]]:
    """Each correction's similar corrections (itself included), found through shared stems, not all pairs."""
    index: dict[str, list[Correction]] = defaultdict(list)
    for c in voters:
        for stem in stems[c.key]:
            index[stem].append(c)
    result: dict[int | str, list[Correction]] = {}
    for c in voters:
        seen: dict[int | str, Correction] = {}
        for stem in stems[c.key]:
            for other in index[stem]:
                if other.key not in seen and similarity(stems[c.key], stems[other.key]) >= threshold:
                    seen[other.key] = other
        result[c.key] = list(seen.values())
    return result


def _votes(similar: Iterable[Correction], supervisor_weight: float) -> dict[str, float]:
    """Weight per department among similar corrections: each person's latest counts once."""
    latest: dict[str, Correction] = {}
    for c in sorted(similar, key=lambda c: (c.taught_at, str(c.key))):
        latest[c.taught_by] = c
    votes: dict[str, float] = defaultdict(float)
    for c in latest.values():
        votes[c.department] += supervisor_weight if c.supervisor else 1.0
    return dict(votes)
