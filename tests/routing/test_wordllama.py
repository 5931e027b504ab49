"""The WordLlama classifier: the default install's routing by meaning, and where ``auto`` puts it.

Skips, saying why, when ``requirements-routing.txt`` is not installed, or fails with WARMLINE_REQUIRE_EXTRAS=1;
``make test`` installs it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ivr_flows import Flow
from ivr_flows.routing.base import Classification, ClassifierUnavailable
from ivr_flows.routing.factory import ENGINE_ENV, build_classifier, build_flow_classifier
from ivr_flows.routing.tfidf import TfidfClassifier
from tests.conftest import skip_without_extra

from .test_minilm import FRESH, GIBBERISH, route_threshold

try:
    import numpy as np

    from ivr_flows.routing import minilm, wordllama
except ImportError as exc:
    _MISSING: str | None = f"routing packages not installed ({exc}); pip install --no-deps -r requirements-routing.txt"
else:
    _MISSING = None if wordllama.wordllama_installed() else "wordllama is not installed (requirements-routing.txt)"

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def encoder() -> wordllama.WordLlamaEncoder:
    if _MISSING is not None:
        skip_without_extra(_MISSING)
    return wordllama.get_wordllama_encoder()


@pytest.fixture(scope="session")
def classifier(encoder: wordllama.WordLlamaEncoder, sample_flow: Flow) -> wordllama.WordLlamaClassifier:
    """The sample flow's classifier as the service builds it (examples, names and descriptions)."""
    built = build_flow_classifier(sample_flow, engine="wordllama")
    assert isinstance(built, wordllama.WordLlamaClassifier)
    return built


def test_vectors_are_the_librarys_own(encoder: wordllama.WordLlamaEncoder) -> None:
    """Tokenising one by one and pooling here gives what ``WordLlamaInference.embed(norm=True)`` gives."""
    package = wordllama._import_wordllama()
    model = package.WordLlama.load(
        config=wordllama.MODEL_CONFIG,
        dim=wordllama.MODEL_DIM,
        cache_dir=Path(package.__file__).parent,
        disable_download=True,
    )
    texts = ["I was charged twice for my subscription", "my internet keeps dropping", "x", "refund please " * 30]
    expected = model.embed(texts, norm=True)
    np.testing.assert_allclose(encoder.encode(texts), expected, atol=1e-5)
    np.testing.assert_allclose(np.stack([encoder.encode_one(t) for t in texts]), expected, atol=1e-5)
    assert encoder.encode([""])[0].tolist() == [0.0] * encoder.dim  # no tokens: no direction, never NaN


def test_routes_by_meaning_where_words_do_not_match(
    classifier: wordllama.WordLlamaClassifier, sample_flow: Flow
) -> None:
    tfidf = build_flow_classifier(sample_flow, engine="tfidf")
    wrong = [
        (text, expected, got.department)
        for text, expected in FRESH
        if (got := classifier.classify(text)).department != expected
    ]
    assert not wrong
    threshold = route_threshold(sample_flow)
    sure = [text for text, _ in FRESH if classifier.classify(text).confidence >= threshold]
    assert len(sure) >= len(FRESH) - 2
    # Where TF-IDF has no word in common and sends the caller to general, meaning still finds the team.
    storm = "ever since the storm my connection has been dead"
    assert tfidf.classify(storm).confidence == 0.0
    assert classifier.classify(storm).department == "technical_support"


@pytest.mark.parametrize("text", [*GIBBERISH, "hello", "um", "yes okay thanks", "   ", ""])
def test_gibberish_and_filler_stay_below_the_flows_threshold(
    classifier: wordllama.WordLlamaClassifier, sample_flow: Flow, text: str
) -> None:
    assert classifier.classify(text).confidence < route_threshold(sample_flow)


def test_never_raises_and_is_fast(classifier: wordllama.WordLlamaClassifier) -> None:
    for odd in [None, 42, b"bytes", "\x00\x01", "🙂" * 50]:
        result = classifier.classify(odd)  # type: ignore[arg-type]
        assert isinstance(result, Classification) and 0.0 <= result.confidence <= 1.0
    assert classifier.classify("refund " * 2000).department == "billing"
    timings = []
    for text, _ in FRESH:
        begin = time.process_time()
        classifier.classify(text)
        timings.append(time.process_time() - begin)
    # ~0.05 ms of CPU here; the bound catches a pathology (a batch pool per call, a model reload), not noise.
    assert sorted(timings)[len(timings) // 2] < 0.005


def test_auto_prefers_minilm_then_wordllama_then_tfidf(
    encoder: wordllama.WordLlamaEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    phrases = {"billing": ["I was charged twice"], "general": ["operator"]}
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    monkeypatch.setitem(
        sys.modules, "ivr_flows.routing.mpnet", None
    )  # the heaviest extra missing (test_mpnet.py has it)
    monkeypatch.setitem(sys.modules, "ivr_flows.routing.onnx_minilm", None)  # and the ONNX one (its own tests)
    try:
        minilm.get_encoder()
    except ClassifierUnavailable:
        pass  # no MiniLM here: auto is already WordLlama
    else:
        assert isinstance(build_classifier(phrases, default="general"), minilm.MiniLMClassifier)

    def no_minilm() -> minilm.MiniLMEncoder:
        raise ClassifierUnavailable("model files missing")

    monkeypatch.setattr(minilm, "get_encoder", no_minilm)
    assert isinstance(build_classifier(phrases, default="general"), wordllama.WordLlamaClassifier)
    with pytest.raises(ClassifierUnavailable, match="model files missing"):
        build_classifier(phrases, default="general", engine="minilm")
    monkeypatch.setenv(ENGINE_ENV, "wordllama")
    assert isinstance(build_classifier(phrases, default="general"), wordllama.WordLlamaClassifier)
    monkeypatch.setenv(ENGINE_ENV, "tfidf")
    assert isinstance(build_classifier(phrases, default="general"), TfidfClassifier)


def test_loading_it_leaves_the_logging_setup_alone() -> None:
    """wordllama calls logging.basicConfig when imported; a CLI command must not gain a second stderr handler."""
    code = (
        "import logging\n"
        "from ivr_flows.routing.wordllama import get_wordllama_encoder, wordllama_installed\n"
        "assert wordllama_installed()\n"
        "get_wordllama_encoder()\n"
        "print(len(logging.getLogger().handlers), logging.getLogger().level)\n"
    )
    if _MISSING is not None:
        skip_without_extra(_MISSING)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["0", str(30)]  # no handler added, level still WARNING
