"""Who jumps the line, and why. Pure: no clock, no database — the queue stores the numbers this returns.

Callers waiting for a rep are ordered by one number, :func:`rank_at` = ``enqueued_at - head_start_seconds``. A head
start is a bounded number of seconds, never a separate "priority class", so priority cannot starve anyone: a caller
who has waited longer than another caller's head start stays ahead of them. With equal head starts the order is
first come, first served, because ``rank_at`` then orders by ``enqueued_at``.

Head starts add up over reasons (tier, repeat caller, frustration, callback), and every reason is spelled out in
:attr:`Priority.reasons` so a rep — or anyone reading the interaction later — can see why a caller went first.

Frustration is read from the caller's own words (the issue they described) by :func:`frustration_cue`: asking for a
human, having called before, anger, swearing. Matching is on whole words, case-insensitive, and tolerant of
punctuation and stretched letters ("AGENT!!", "ridiculousss"). Words that name a person ("agent", "human",
"representative", "operator", …) are ambiguous in support calls — "my travel agent", "user agent", "human
resources" — so on their own they count only as a request: a short utterance ("agent please", "an agent"), or after a
request ("talk to an agent", "get me a representative", "I want a human"). Negation ("I'm not angry") is not
understood; a wrongly given head start costs the other callers seconds, not their place in line for long.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

__all__ = [
    "DEFAULT_FRUSTRATION_PHRASES",
    "CallerSignals",
    "InvalidCallerSignals",
    "InvalidPriorityWeights",
    "Priority",
    "PriorityWeights",
    "caller_priority",
    "frustration_cue",
    "rank_at",
]


class InvalidPriorityWeights(ValueError):
    """Head starts that are negative or not finite, or tier names that clash once case is ignored."""


class InvalidCallerSignals(ValueError):
    """Caller facts that cannot be true (e.g. a last contact in the future)."""


DEFAULT_FRUSTRATION_PHRASES: tuple[str, ...] = (
    # Asking for a human. The single person-words need request context (see module docstring).
    "agent",
    "human",
    "representative",
    "operator",
    "real person",
    "live person",
    "actual person",
    "speak to someone",
    "talk to someone",
    "speak with someone",
    "talk with someone",
    "speak to a person",
    "talk to a person",
    # Repeated contact: the issue survived earlier calls.
    "third time",
    "fourth time",
    "fifth time",
    "umpteenth time",
    "again and again",
    "over and over",
    "still not fixed",
    "still not resolved",
    "still not working",
    "still doesn't work",
    "still does not work",
    "still broken",
    "keep calling",
    "kept calling",
    "keep having to call",
    "called before",
    "already called",
    "called three times",
    "called twice",
    # Anger.
    "ridiculous",
    "unacceptable",
    "fed up",
    "sick of",
    "sick and tired",
    "furious",
    "outrageous",
    "absurd",
    "pathetic",
    "useless",
    "livid",
    "angry",
    "frustrated",
    "frustrating",
    # Swearing (whole words only, so "Amsterdam" or "shiitake" never match).
    "damn",
    "dammit",
    "goddamn",
    "crap",
    "shit",
    "bullshit",
    "fuck",
    "fucking",
    "wtf",
    "pissed",
    "bloody",
    "the hell",
)


def _check_head_start(value: float, what: str) -> None:
    if isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise InvalidPriorityWeights(f"{what} must be a finite number of seconds ≥ 0, got {value!r}")


@dataclass(frozen=True)
class PriorityWeights:
    """Seconds of head start per reason. Built from config.yaml; tier names are matched case-insensitively."""

    tiers: Mapping[str, float]  # e.g. {"vip": 300, "gold": 60}
    repeat_caller: float = 120  # the caller was in contact within repeat_within_days
    repeat_within_days: int = 7
    frustrated: float = 90
    callback: float = 600  # a callback whose turn has come: it keeps its place and goes first
    frustration_phrases: tuple[str, ...] = DEFAULT_FRUSTRATION_PHRASES

    def __post_init__(self) -> None:
        by_folded_name: dict[str, float] = {}
        for name, seconds in self.tiers.items():
            _check_head_start(seconds, f"tier {name!r} head start")
            folded = _fold_tier(name)
            if folded in by_folded_name and by_folded_name[folded] != seconds:
                raise InvalidPriorityWeights(f"tier {name!r} is given twice (names ignore case) with different values")
            by_folded_name[folded] = seconds
        # Stored folded and read-only, so lookups are a plain dict access and nobody mutates the config afterwards.
        object.__setattr__(self, "tiers", MappingProxyType(by_folded_name))
        for what in ("repeat_caller", "frustrated", "callback"):
            _check_head_start(getattr(self, what), what)
        if isinstance(self.repeat_within_days, bool) or self.repeat_within_days < 0:
            raise InvalidPriorityWeights(f"repeat_within_days must be an int ≥ 0, got {self.repeat_within_days!r}")
        object.__setattr__(self, "frustration_phrases", tuple(self.frustration_phrases))


@dataclass(frozen=True)
class CallerSignals:
    """What we know about a caller when they join the queue."""

    tier: str | None  # from the CRM, e.g. "VIP"
    days_since_last_contact: int | None  # whole days since the previous interaction; None: first contact
    issue_text: str | None  # the caller's own words (transcribed)
    is_callback: bool = False

    def __post_init__(self) -> None:
        if self.days_since_last_contact is not None and self.days_since_last_contact < 0:
            raise InvalidCallerSignals(
                f"days_since_last_contact cannot be negative (got {self.days_since_last_contact}); clamp clock skew"
            )


@dataclass(frozen=True)
class Priority:
    head_start_seconds: float
    reasons: tuple[str, ...]  # e.g. ("tier vip", "repeat caller", "frustrated: 'third time'"); shown and stored


def _fold_tier(name: str) -> str:
    return " ".join(name.split()).casefold()


def caller_priority(signals: CallerSignals, weights: PriorityWeights) -> Priority:
    """The caller's head start: the sum over every reason that applies, each reason named.

    A reason worth 0 seconds is left out of ``reasons``: reasons explain the head start.
    """
    parts: list[tuple[str, float]] = []
    if signals.tier is not None:
        tier = _fold_tier(signals.tier)
        if tier in weights.tiers:
            parts.append((f"tier {tier}", weights.tiers[tier]))
    if signals.days_since_last_contact is not None and signals.days_since_last_contact <= weights.repeat_within_days:
        parts.append(("repeat caller", weights.repeat_caller))
    cue = frustration_cue(signals.issue_text, weights.frustration_phrases)
    if cue is not None:
        parts.append((f"frustrated: '{cue}'", weights.frustrated))
    if signals.is_callback:
        parts.append(("callback", weights.callback))
    counted = [(reason, seconds) for reason, seconds in parts if seconds > 0]
    return Priority(
        head_start_seconds=float(sum(seconds for _, seconds in counted)),
        reasons=tuple(reason for reason, _ in counted),
    )


def rank_at(*, enqueued_at: float, head_start_seconds: float) -> float:
    """The queue's sort key (smaller goes first): when the caller counts as having joined the line.

    Order ties by ``enqueued_at`` too (the caller who really waited longer first), e.g. ``ORDER BY rank_at,
    enqueued_at``.
    """
    return enqueued_at - head_start_seconds


# --- reading frustration from the caller's words -------------------------------------------------------------------

# Person-words: alone, they are only a request for a human when the utterance is about asking for one.
_PERSON_WORDS = frozenset(
    {"agent", "human", "representative", "rep", "operator", "person", "someone", "somebody", "advisor", "adviser"}
)
# A transcribed utterance this short that contains a person-word is asking for one ("agent", "an agent please").
_SHORT_UTTERANCE_WORDS = 3
# Words that may stand between a request and the person-word: "talk to [one of your real live] agent(s)".
_FILLERS = frozenset(
    {"a", "an", "the", "your", "some", "one", "of", "real", "live", "actual", "human", "customer", "service",
     "support", "proper", "another", "different", "any", "just"}
)  # fmt: skip
# What ends right before the (fillers and) person-word when it is a request: "speak to", "get me", "I'd like".
# Deliberately not a bare "to" ("I sent the form to the agent") or bare "like" ("looks like the agent forgot").
_REQUEST_LEADS: frozenset[tuple[str, ...]] = frozenset(
    {("talk", "to"), ("talk", "with"), ("talking", "to"), ("speak", "to"), ("speak", "with"), ("speaking", "to"),
     ("speaking", "with"), ("chat", "with"), ("through", "to"), ("me", "to"), ("me", "with"), ("get", "me"),
     ("give", "me"), ("find", "me"), ("id", "like"), ("would", "like"), ("want",), ("need",), ("get",),
     ("request",), ("requesting",), ("please",)}
)  # fmt: skip
# Words after the person-word that make it a request on their own: "agent please", "human now".
_REQUEST_TAILS = frozenset({"please", "pls", "now", "immediately", "asap"})
# Words after a person-word that make it part of a thing, not a person: "agent id", "human resources".
_COMPOUND_TAILS = frozenset(
    {"id", "number", "code", "string", "name", "resources", "error", "errors", "portal", "login", "app", "fee", "fees",
     "commission", "license", "licence", "software", "version", "body", "rights", "settings", "mode", "status",
     "hours"}
)  # fmt: skip

_STRETCHED_LETTER = re.compile(r"([a-z])\1{2,}")  # "ridiculousss" → "ridiculous"; doubles like "called" survive
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    # Apostrophes are dropped rather than split on, so "don't" stays one word ("dont") in text and phrases alike.
    folded = text.casefold().replace("\u2019", "").replace("'", "")
    return _WORD.findall(_STRETCHED_LETTER.sub(r"\1", folded))


@lru_cache(maxsize=32)
def _compiled(phrases: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((phrase, words) for phrase in phrases if (words := tuple(_words(phrase))))


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and word[:-1] in _PERSON_WORDS else word


def _asks_for_person(words: list[str], at: int) -> bool:
    """Is the person-word at ``words[at]`` a request for a human rather than part of a sentence about something?"""
    tail = words[at + 1] if at + 1 < len(words) else None
    if tail in _COMPOUND_TAILS:
        return False  # part of a thing: "agent id", "human resources"
    before = at
    while before > 0 and words[before - 1] in _FILLERS:
        before -= 1
    if any(tuple(words[max(0, before - len(lead)) : before]) == lead for lead in _REQUEST_LEADS):
        return True  # "talk to an agent", "get me a representative", "I want a human"
    if before > 0 and words[before - 1] not in _PERSON_WORDS:
        return False  # a modifier or a sentence around it: "travel agent", "the agent said", "my mobile operator"
    return tail in _REQUEST_TAILS or len(words) <= _SHORT_UTTERANCE_WORDS  # "agent please", "an agent", "AGENT!!"


@lru_cache(maxsize=32)
def _by_first_word(phrases: tuple[str, ...]) -> dict[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """The phrases' word patterns keyed by their first word, longest first (then by phrase), for one pass over text."""
    index: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for phrase, pattern in _compiled(phrases):
        index.setdefault(pattern[0], []).append((phrase, pattern))
    return {word: tuple(sorted(found, key=lambda item: (-len(item[1]), item[0]))) for word, found in index.items()}


def _is_person_word(pattern: tuple[str, ...]) -> bool:
    return len(pattern) == 1 and pattern[0] in _PERSON_WORDS


def frustration_cue(text: str | None, phrases: Sequence[str]) -> str | None:
    """The phrase (as given in ``phrases``) that shows the caller is frustrated, or None.

    When several match, the one that starts earliest in the text wins (longest first at the same word), so the
    reason shown to the rep quotes what the caller said first. One pass over the words, looking up the phrases that
    start with each (this runs on every gather).
    """
    if not text:
        return None
    words = _words(text)
    index = _by_first_word(tuple(phrases))
    for start, word in enumerate(words):
        singular = _singular(word)
        found: list[tuple[str, tuple[str, ...]]] = []
        for phrase, pattern in index.get(word, ()):
            if _is_person_word(pattern) or tuple(words[start : start + len(pattern)]) == pattern:
                found.append((phrase, pattern))
        if singular != word:  # "agents": only the person-word "agent" matches it
            found.extend((phrase, pattern) for phrase, pattern in index.get(singular, ()) if _is_person_word(pattern))
        for phrase, pattern in sorted(found, key=lambda item: (-len(item[1]), item[0])):
            if not _is_person_word(pattern) or _asks_for_person(words, start):
                return phrase
    return None
