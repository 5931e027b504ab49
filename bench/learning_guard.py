"""Does routing still get better when some of the reps' corrections are wrong? The learning guard on CLINC150.

Protocol (``../shared/data/clinc150/``, the routing benchmark's departments):

* departments are CLINC150's 10 domains, each with 8 example phrases drawn at random from ``train`` (one per
  intent, ``bench.routing_accuracy.pick_random_examples``), its spoken name and its one-line topic description;
* calls come from the rest of ``train`` in a seeded order; the ones the flow's classifier (without learning)
  routes to a wrong department are the calls a rep corrects, in that order. Eight reps take the calls at random;
  a share of the corrections (``--wrong``, 10 %) is deliberately wrong: a department drawn at random among the
  other nine;
* after N corrections (``--steps``) the classifier is rebuilt with what was learned, once through the guard
  (``ivr_flows.learning.admit``) and once taking every correction as it comes, and scored on ``test``
  (4,500 in-scope utterances, top-1, no threshold);
* the flood: on top of the last step's corrections, one rep teaches ``--flood`` corrections naming one department
  for calls that belonged elsewhere; scored the same way, and by the share of other departments' test callers
  that the flooded department takes.

Every row is the mean over ``--seeds`` seeds (examples, call order, reps and the wrong corrections all change).
Run: ``.venv/bin/python bench/learning_guard.py`` (~1 min with WordLlama, the default install's engine).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast, get_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.routing_accuracy import (
    DEFAULT_DATA,
    GENERAL,
    Dataset,
    classify_all,
    load_dataset,
    pick_random_examples,
    topic_descriptions,
)
from ivr_flows.learning import Correction, Standing, admit
from ivr_flows.routing.factory import Engine, build_classifier

START = datetime(2026, 12, 1, tzinfo=UTC)
REPS = 8


@dataclass(frozen=True)
class Scenario:
    examples: dict[str, list[str]]
    descriptions: dict[str, str]
    corrections: list[Correction]
    wrong_keys: frozenset[int]
    flood: list[Correction]
    flood_target: str


def scenario(data: Dataset, engine: Engine, *, seed: int, wrong: float, count: int, flood: int) -> Scenario:
    examples = pick_random_examples(data, 8, seed)
    descriptions = topic_descriptions(data)
    base = build_classifier(examples, names=_names(examples), descriptions=descriptions, default=GENERAL, engine=engine)
    rng = random.Random(seed)
    used = {text for texts in examples.values() for text in texts}
    domain_of = {intent: domain for domain, intents in data.domains.items() for intent in intents}
    pool = [
        (text, domain_of[intent])
        for intent, texts in sorted(data.train_by_intent.items())
        if intent in domain_of
        for text in texts
        if text not in used
    ]
    rng.shuffle(pool)
    routed = classify_all(base, [text for text, _ in pool])
    misrouted = [
        (text, truth) for (text, truth), result in zip(pool, routed, strict=True) if result.department != truth
    ]
    departments = sorted(examples)
    corrections: list[Correction] = []
    wrong_keys: set[int] = set()
    for key, (text, truth) in enumerate(misrouted[:count]):
        department = truth
        if rng.random() < wrong:
            department = rng.choice([d for d in departments if d != truth])
            wrong_keys.add(key)
        corrections.append(_correction(key, text, department, f"rep{rng.randrange(REPS)}"))
    target = rng.choice(departments)
    others = [(text, truth) for text, truth in misrouted[count:] if truth != target][:flood]
    flooded = [_correction(100_000 + i, text, target, "mallory") for i, (text, _) in enumerate(others)]
    return Scenario(examples, descriptions, corrections, frozenset(wrong_keys), flooded, target)


def _names(examples: dict[str, list[str]]) -> dict[str, str]:
    return {domain: domain.replace("_", " ") for domain in examples}


def _correction(key: int, text: str, department: str, rep: str) -> Correction:
    return Correction(
        key=key,
        words=text,
        detected=None,
        department=department,
        taught_by=rep,
        supervisor=False,
        taught_at=START + timedelta(minutes=key),
    )


def score(
    data: Dataset, engine: Engine, case: Scenario, corrections: Sequence[Correction], *, guarded: bool
) -> tuple[float, float, int]:
    """(test top-1, share of other departments' test callers sent to the flood's target, examples learned)."""
    if guarded:
        learned = admit(corrections, departments=case.examples).phrases()
    else:
        learned = {}
        for c in corrections:
            learned.setdefault(c.department, []).append(c.words)
    classifier = build_classifier(
        case.examples,
        names=_names(case.examples),
        descriptions=case.descriptions,
        default=GENERAL,
        engine=engine,
        learned=learned,
    )
    test = data.splits["test"]
    results = classify_all(classifier, [text for text, _ in test])
    right = sum(result.department == truth for (_, truth), result in zip(test, results, strict=True))
    others = [(truth, result) for (_, truth), result in zip(test, results, strict=True) if truth != case.flood_target]
    taken = sum(result.department == case.flood_target for _, result in others)
    return right / len(test), taken / len(others), sum(len(texts) for texts in learned.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--engine", choices=[e for e in get_args(Engine) if e != "auto"], default="wordllama")
    parser.add_argument("--wrong", type=float, default=0.10, help="share of deliberately wrong corrections")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 50, 100, 200])
    parser.add_argument("--flood", type=int, default=100, help="corrections of the one flooding rep")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    engine = cast(Engine, args.engine)
    data = load_dataset(args.data)
    rows: dict[str, list[tuple[float, float, int]]] = {}
    held: list[float] = []
    for seed in range(args.seeds):
        case = scenario(data, engine, seed=seed, wrong=args.wrong, count=max(args.steps), flood=args.flood)
        for step in args.steps:
            for guarded in (True, False):
                label = f"{step} corrections, {'guard' if guarded else 'no guard'}"
                rows.setdefault(label, []).append(score(data, engine, case, case.corrections[:step], guarded=guarded))
        admission = admit(case.corrections, departments=case.examples)
        wrong = [d for d in admission.decisions if d.correction.key in case.wrong_keys]
        if wrong:
            held.append(sum(d.standing is not Standing.LEARNED for d in wrong) / len(wrong))
        flooded = [*case.corrections, *case.flood]
        for guarded in (True, False):
            label = f"{max(args.steps)} + a {len(case.flood)}-correction flood, {'guard' if guarded else 'no guard'}"
            rows.setdefault(label, []).append(score(data, engine, case, flooded, guarded=guarded))
    print(
        f"# {args.engine}, 10 CLINC150 domains x 8 random examples, {args.wrong:.0%} of corrections wrong, "
        f"mean of {args.seeds} seeds; test in-scope top-1 (4,500), no threshold"
    )
    print(f"{'':<48} {'top-1':>7} {'to flood target':>16} {'learned':>8}")
    for label, values in rows.items():
        top1 = statistics.mean(v[0] for v in values)
        taken = statistics.mean(v[1] for v in values)
        learned = statistics.mean(v[2] for v in values)
        print(f"{label:<48} {top1:>7.1%} {taken:>16.1%} {learned:>8.0f}")
    if held:
        print(f"# wrong corrections the guard kept out: {statistics.mean(held):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
