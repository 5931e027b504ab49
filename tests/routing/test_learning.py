"""The learning guard (``ivr_flows.learning.admit``) and learned examples in a flow's classifier, without a store."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from ivr_flows.learning import Correction, Guard, Standing, admit
from ivr_flows.routing.factory import build_classifier

DEPARTMENTS = {
    "billing": ("I was charged twice", "question about my invoice", "refund my payment"),
    "support": ("my internet is not working", "the router keeps dropping", "error message on the screen"),
    "sales": ("I want to buy a new plan", "pricing for an upgrade", "add a line to my account"),
    "general": ("I'd like to speak to a person",),
}
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def correction(
    key: int, words: str, department: str, *, by: str = "ann", supervisor: bool = False, detected: str = "general"
) -> Correction:
    return Correction(
        key=key,
        words=words,
        detected=detected,
        department=department,
        taught_by=by,
        supervisor=supervisor,
        taught_at=START + timedelta(minutes=key),
    )


def standings(corrections: list[Correction], guard: Guard | None = None) -> dict[int | str, Standing]:
    admission = admit(corrections, departments=DEPARTMENTS, guard=guard)
    return {d.correction.key: d.standing for d in admission.decisions}


def test_a_lone_correction_is_learned_and_routes_the_next_caller() -> None:
    words = "the payment portal rejected my card"
    admission = admit([correction(1, words, "billing", detected="support")], departments=DEPARTMENTS)
    assert [(e.text, e.department) for e in admission.learned] == [(words, "billing")]

    before = build_classifier(DEPARTMENTS, default="general", engine="tfidf").classify("portal rejected my card")
    after = build_classifier(DEPARTMENTS, default="general", engine="tfidf", learned=admission.phrases())
    result = after.classify("portal rejected my card")
    assert before.department != "billing"
    assert result.department == "billing"
    assert result.matched_learned and result.nearest_example == words
    # The admin's own examples are still the admin's.
    admin_match = after.classify("I was charged twice")
    assert admin_match.department == "billing" and not admin_match.matched_learned


def test_a_department_the_flow_no_longer_has_is_inactive_and_comes_back_with_it() -> None:
    kept = correction(1, "where is my parcel", "shipping")
    assert standings([kept]) == {1: Standing.INACTIVE}
    with_shipping = {**DEPARTMENTS, "shipping": ("track my order",)}
    assert admit([kept], departments=with_shipping).decisions[0].standing is Standing.LEARNED


def test_words_the_admin_gave_another_department_are_rejected() -> None:
    decision = admit([correction(1, "I was charged twice!", "sales")], departments=DEPARTMENTS).decisions[0]
    assert decision.standing is Standing.REJECTED
    assert "'billing'" in decision.reason


def test_nothing_to_learn_from_filler() -> None:
    assert standings([correction(1, "hello um yes", "billing")]) == {1: Standing.EMPTY}


def test_reps_who_disagree_are_held_back_until_a_majority_agrees() -> None:
    ann = correction(1, "my bill shows a roaming fee", "billing", by="ann")
    bob = correction(2, "bill shows roaming fee", "sales", by="bob")
    assert standings([ann, bob]) == {1: Standing.DISPUTED, 2: Standing.DISPUTED}
    cid = correction(3, "why does my bill show a roaming fee", "billing", by="cid")
    assert standings([ann, bob, cid]) == {1: Standing.LEARNED, 2: Standing.DISPUTED, 3: Standing.LEARNED}


def test_one_rep_saying_it_again_and_again_is_one_vote() -> None:
    ann = correction(1, "my bill shows a roaming fee", "billing", by="ann")
    bob_again = [correction(2 + i, "bill shows roaming fee", "sales", by="bob") for i in range(5)]
    result = standings([ann, *bob_again])
    assert set(result.values()) == {Standing.DISPUTED}


def test_a_supervisor_outweighs_two_reps() -> None:
    reps = [
        correction(1, "roaming fee on my bill", "sales", by="ann"),
        correction(2, "roaming fee bill", "sales", by="bob"),
    ]
    supervisor = correction(3, "bill with a roaming fee", "billing", by="sue", supervisor=True)
    result = standings([*reps, supervisor])
    assert result == {1: Standing.DISPUTED, 2: Standing.DISPUTED, 3: Standing.LEARNED}
    # Weighed like a rep, the supervisor would be outvoted.
    assert standings([*reps, supervisor], Guard(supervisor_weight=1.0))[3] is Standing.DISPUTED


def test_a_flooding_rep_is_capped_and_never_holds_more_than_a_third_of_a_department() -> None:
    flood = [
        correction(i, f"question number {i} about my subscription {i * 7}", "sales", by="mallory") for i in range(100)
    ]
    result = admit(flood, departments=DEPARTMENTS)
    learned = [d for d in result.decisions if d.standing is Standing.LEARNED]
    capped = [d for d in result.decisions if d.standing is Standing.CAPPED]
    assert len(learned) == Guard().rep_floor and len(capped) == 100 - Guard().rep_floor
    assert learned == list(result.decisions[: len(learned)])  # the earliest are kept, not the latest

    # With honest colleagues teaching sales too, the flooder's allowance grows with theirs, at half their count.
    honest = [
        correction(1000 + i, f"upgrade offer {i} for my family plan {i * 3}", "sales", by=f"rep{i % 4}")
        for i in range(20)
    ]
    mixed = admit([*flood, *honest], departments=DEPARTMENTS)
    by_mallory = sum(1 for e in mixed.learned if e.taught_by == "mallory")
    in_sales = len(DEPARTMENTS["sales"]) + sum(1 for e in mixed.learned if e.department == "sales")
    assert sum(1 for e in mixed.learned if e.taught_by.startswith("rep")) == 20
    assert by_mallory == (3 + 20) // 2
    assert by_mallory <= in_sales / 3


def test_supervisors_are_not_capped() -> None:
    many = [
        correction(i, f"topic {i} of subscriptions {i * 11}", "sales", by="sue", supervisor=True) for i in range(20)
    ]
    assert set(standings(many).values()) == {Standing.LEARNED}


def test_the_same_corrections_give_the_same_answer_in_any_order() -> None:
    items = [
        correction(1, "my bill shows a roaming fee", "billing", by="ann"),
        correction(2, "bill shows roaming fee", "sales", by="bob"),
        correction(3, "why does my bill show a roaming fee", "billing", by="cid"),
    ]
    assert admit(items, departments=DEPARTMENTS) == admit(list(reversed(items)), departments=DEPARTMENTS)


# --- 10 % of the corrections deliberately wrong --------------------------------------------------------------------

# Callers' words per department, beyond the admin's examples: what the reps correct and what later callers say.
CALLS = {
    "billing": [
        "there is a late fee on my statement",
        "I need a copy of last month's bill",
        "my autopay did not go through",
        "why is my bill so high this month",
        "update the card you charge every month",
        "I was billed after I cancelled",
        "can I get a receipt for my payment",
        "dispute a charge on my statement",
        "set up a payment plan for my balance",
        "my direct debit failed",
    ],
    "support": [
        "the app crashes when I open it",
        "I cannot log in to my account",
        "my phone has no signal at home",
        "the tv box shows a black screen",
        "reset my password please",
        "voicemail is not working on my phone",
        "the connection is very slow in the evening",
        "my email stopped syncing",
        "the modem lights are blinking red",
        "calls drop after a minute",
    ],
    "sales": [
        "what deals do you have for new customers",
        "I want to switch from another provider",
        "do you sell phones with the plan",
        "how much is unlimited data",
        "I'd like to add tv to my package",
        "is there a student discount",
        "upgrade my phone to the newest model",
        "what does the family bundle include",
        "get a second line for my daughter",
        "compare your fibre packages",
    ],
}


def reps_correct(wrong_share: float, seed: int) -> tuple[list[Correction], list[tuple[str, str]]]:
    """Eight reps correct every department's calls (each twice, by different reps, with a slip rate of
    ``wrong_share`` all sent to one department); returns the corrections and held-out (words, department) pairs."""
    rng = random.Random(seed)
    corrections: list[Correction] = []
    held_out: list[tuple[str, str]] = []
    key = 0
    for department, calls in CALLS.items():
        taught, later = calls[:7], calls[7:]
        held_out += [(words, department) for words in later]
        for words in taught:
            for _ in range(2):
                key += 1
                right = department if rng.random() >= wrong_share else "sales" if department != "sales" else "billing"
                corrections.append(correction(key, words, right, by=f"rep{rng.randrange(8)}"))
    return corrections, held_out


@pytest.mark.parametrize("seed", range(5))
def test_ten_percent_wrong_corrections_do_not_take_a_department_over(seed: int) -> None:
    corrections, _held_out = reps_correct(0.10, seed)
    admission = admit(corrections, departments=DEPARTMENTS)
    wrong = [d for d in admission.decisions if d.correction.department not in _departments_of(d.correction.words)]
    learned_wrong = [d for d in wrong if d.standing is Standing.LEARNED]
    # A slip is learned only when nobody else corrected the same words; the rest are held back by agreement.
    assert len(learned_wrong) <= len(wrong) / 2
    calls = [(words, department) for department, texts in CALLS.items() for words in texts]
    before = build_classifier(DEPARTMENTS, default="general", engine="tfidf")
    after = build_classifier(DEPARTMENTS, default="general", engine="tfidf", learned=admission.phrases())
    right_before = sum(before.classify(words).department == department for words, department in calls)
    right_after = sum(after.classify(words).department == department for words, department in calls)
    # The department the slips went to gains no more callers than the slips that got through.
    taken_before = sum(before.classify(w).department == "sales" != d for w, d in calls)
    taken_after = sum(after.classify(w).department == "sales" != d for w, d in calls)
    print(
        f"seed {seed}: {len(wrong)} wrong corrections, {len(learned_wrong)} learned; calls routed right "
        f"{right_before}/{len(calls)} -> {right_after}/{len(calls)}; wrongly to sales {taken_before} -> {taken_after}"
    )
    assert right_after > right_before
    assert taken_after <= taken_before + len(learned_wrong)


def _departments_of(words: str) -> set[str]:
    return {department for department, calls in CALLS.items() if words in calls}
