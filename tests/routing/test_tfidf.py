"""The TF-IDF classifier (the floor every install has), on the sample flow: accuracy on fresh phrasings, fallbacks;
and the engine routing with whatever classifier it is handed."""

from __future__ import annotations

import pytest

from ivr_flows import (
    CallerFacts,
    Classification,
    Classifier,
    DigitsPressed,
    Flow,
    SpeechHeard,
    TfidfClassifier,
    Transfer,
    advance,
    start_call,
)
from ivr_flows.routing.base import description_topics, tokenize
from ivr_flows.routing.factory import build_classifier
from tests.conftest import tfidf

# Caller phrasings written independently of the examples in main.yaml (none of them appears
# there); they share vocabulary with the examples the way real callers do, no more.
HELD_OUT = [
    ("my card got charged two times this month", "billing"),
    ("there's a charge on my statement I don't recognise", "billing"),
    ("I'd like to get a refund for last month", "billing"),
    ("can you explain the fees on my latest bill", "billing"),
    ("I need to change the credit card you have on file", "billing"),
    ("the app keeps crashing when I log in", "technical_support"),
    ("my internet connection keeps dropping", "technical_support"),
    ("I'm seeing an error code on the screen", "technical_support"),
    ("nothing works since the update yesterday", "technical_support"),
    ("how do I set up the new router", "technical_support"),
    ("how much is the premium plan", "sales"),
    ("I'm thinking about upgrading to the business package", "sales"),
    ("I'd like to buy a few more licenses", "sales"),
    ("can someone show me a demo of the product", "sales"),
    ("what's the price for a family plan", "sales"),
    ("I got locked out and can't sign in", "account"),
    ("I don't remember my password", "account"),
    ("please update the address on my account", "account"),
    ("I want to delete my account", "account"),
    ("how do I change my username", "account"),
    ("I'd like to talk to a real person", "general"),
]

NO_REASON = [
    "hello",
    "hi there how are you",
    "um",
    "",
    "asdf qwerty zxcv",
    "blah blah blah",
    "yes okay",
    "my neighbor's dog keeps barking at the mailman every day",
    "I am calling because my daughter needs a ride to school tomorrow",
]


@pytest.fixture(scope="module")
def classifier(sample_flow: Flow) -> Classifier:
    return tfidf(sample_flow)


def route_by_speech(flow: Flow, speech: str, *, classifier: Classifier | None = None) -> str:
    """The department a caller saying ``speech`` is transferred to (through the real engine; the flow's TF-IDF
    classifier unless another is given)."""
    classifier = classifier or tfidf(flow)
    state, _ = start_call(flow, CallerFacts(known=False), classifier=classifier)
    _, step = advance(flow, state, SpeechHeard(speech, confidence=0.9), classifier=classifier)
    assert isinstance(step.action, Transfer)
    return step.action.department


def test_held_out_phrases_are_not_examples(sample_flow: Flow) -> None:
    examples = {e.casefold() for d in sample_flow.departments.values() for e in d.examples}
    assert not examples & {phrase.casefold() for phrase, _ in HELD_OUT}


def test_fresh_caller_phrasings_route_correctly(sample_flow: Flow) -> None:
    routed = [(phrase, expected, route_by_speech(sample_flow, phrase)) for phrase, expected in HELD_OUT]
    wrong = [(phrase, expected, got) for phrase, expected, got in routed if got != expected]
    accuracy = 1 - len(wrong) / len(routed)
    assert accuracy >= 0.85, f"accuracy {accuracy:.0%}; wrong: {wrong}"


@pytest.mark.parametrize("speech", NO_REASON)
def test_no_reason_given_goes_to_general(sample_flow: Flow, classifier: Classifier, speech: str) -> None:
    assert classifier.classify(speech).confidence < 0.3
    if speech.strip():
        assert route_by_speech(sample_flow, speech) == "general"


def test_scores_cover_every_department_and_stay_in_range(sample_flow: Flow, classifier: Classifier) -> None:
    result = classifier.classify("I need a refund for the upgrade I bought")
    assert set(result.scores) == set(sample_flow.departments)
    assert all(0.0 <= s <= 1.0 for s in result.scores.values())
    assert result.confidence == result.scores[result.department] == max(result.scores.values())
    with pytest.raises(TypeError):
        result.scores["billing"] = 1.0  # type: ignore[index]


def test_an_example_itself_is_matched_with_high_confidence(classifier: Classifier) -> None:
    result = classifier.classify("I forgot my password")
    assert result.department == "account" and result.confidence > 0.7


def test_one_matching_word_in_a_long_ramble_is_weak_evidence(classifier: Classifier) -> None:
    focused = classifier.classify("refund")
    ramble = classifier.classify("refund tomorrow grandmother birthday purple elephant garden")
    assert focused.department == ramble.department == "billing"
    assert ramble.confidence < focused.confidence - 0.2


def test_department_name_alone_routes(sample_flow: Flow) -> None:
    assert route_by_speech(sample_flow, "technical support") == "technical_support"
    assert route_by_speech(sample_flow, "sales please") == "sales"


def test_the_flows_tfidf_classifier_is_a_classifier(classifier: Classifier) -> None:
    assert isinstance(classifier, TfidfClassifier) and isinstance(classifier, Classifier)


def test_stemming_merges_inflections() -> None:
    assert tokenize("charge charges charged charging") == ["charg"] * 4
    assert tokenize("Bill billing bills billed") == ["bil"] * 4
    assert tokenize("address addresses") == ["addres"] * 2
    assert tokenize("I can't log in") == ["not", "log"]
    assert tokenize("Résumé — FACTURE!") == ["resum", "factur"]
    assert tokenize("the and of to") == []


class KeywordClassifier:
    """A stand-in implementation of the protocol: proves the engine uses whatever it is given."""

    def classify(self, text: str) -> Classification:
        hit = "pizza" in text
        return Classification(department="sales" if hit else "general", confidence=1.0 if hit else 0.0)


def test_engine_uses_the_classifier_it_is_given(sample_flow: Flow) -> None:
    keyword = KeywordClassifier()
    assert route_by_speech(sample_flow, "one pizza please", classifier=keyword) == "sales"
    assert route_by_speech(sample_flow, "I was charged twice", classifier=keyword) == "general"
    assert route_by_speech(sample_flow, "I was charged twice") == "billing"  # the flow itself holds no classifier


def test_classifier_naming_an_unknown_department_falls_back(sample_flow: Flow) -> None:
    class Rogue:
        def classify(self, text: str) -> Classification:
            return Classification(department="pizza_shop", confidence=0.99)

    assert route_by_speech(sample_flow, "anything", classifier=Rogue()) == "general"


def test_keypad_choice_is_never_reclassified(sample_flow: Flow) -> None:
    keyword = KeywordClassifier()
    state, _ = start_call(sample_flow, CallerFacts(known=False), classifier=keyword)
    _, step = advance(sample_flow, state, DigitsPressed("1"), classifier=keyword)
    assert isinstance(step.action, Transfer) and step.action.department == "billing"


def test_classifier_needs_departments() -> None:
    with pytest.raises(ValueError, match="at least one department"):
        TfidfClassifier({})
    only = TfidfClassifier({"general": ["operator"]})
    assert only.classify("zzz") == Classification("general", 0.0, {"general": 0.0})


def test_description_topics_are_the_listed_items() -> None:
    assert description_topics("banking: freeze account, routing; pin change\nbill due.") == [
        "freeze account",
        "routing",
        "pin change",
        "bill due",
    ]
    # No list after the colon: the whole line is one topic, label included.
    assert description_topics("Note: we handle money") == ["Note: we handle money"]
    assert description_topics("refunds, refunds , , invoices") == ["refunds", "invoices"]
    assert description_topics("") == []
    assert description_topics(None) == []  # type: ignore[arg-type]


def test_a_description_routes_topics_no_example_covers() -> None:
    phrases = {"billing": ["I was charged twice"], "travel": ["book me a flight to Paris"], "general": ["operator"]}
    descriptions = {"travel": "travel: lost luggage, passport and visa questions, hotel bookings"}
    plain = build_classifier(phrases, default="general", engine="tfidf")
    described = build_classifier(phrases, descriptions=descriptions, default="general", engine="tfidf")
    assert plain.classify("my luggage got lost").confidence == 0.0
    assert described.classify("my luggage got lost").department == "travel"
    assert described.classify("do I need a visa for Japan").department == "travel"
    assert described.classify("I was charged twice") == plain.classify("I was charged twice")
