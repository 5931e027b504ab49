"""Choosing and building a classifier (``ivr_flows.routing.factory``), and the import rules of the routing package.

None of these needs a model or NumPy: they always run.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ivr_flows import Flow
from ivr_flows.routing.base import Classifier, ClassifierUnavailable
from ivr_flows.routing.factory import (
    ENGINE_ENV,
    DeferredClassifier,
    build_classifier,
    build_flow_classifier,
)
from ivr_flows.routing.tfidf import TfidfClassifier

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = PROJECT_ROOT / "ivr_flows"


def test_tfidf_is_the_fallback_when_no_embedding_engine_can_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (
        "ivr_flows.routing.minilm",
        "ivr_flows.routing.mpnet",
        "ivr_flows.routing.onnx_minilm",
        "ivr_flows.routing.wordllama",
    ):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail as without NumPy and the extras
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    phrases = {"billing": ["I was charged twice"], "general": ["operator"]}
    classifier = build_classifier(phrases, names={"billing": "billing"}, default="general")
    assert isinstance(classifier, TfidfClassifier) and isinstance(classifier, Classifier)
    assert classifier.classify("billing please").department == "billing"  # the name is an example too
    with pytest.raises(ClassifierUnavailable, match=r"requirements-embeddings\.txt"):
        build_classifier(phrases, default="general", engine="minilm")
    with pytest.raises(ClassifierUnavailable, match=r"requirements-routing\.txt"):
        build_classifier(phrases, default="general", engine="wordllama")
    with pytest.raises(ValueError, match="unknown classifier engine"):
        build_classifier(phrases, default="general", engine="bert")  # type: ignore[arg-type]


def test_tfidf_engine_behaves_like_the_flows_classifier_always_did(sample_flow: Flow) -> None:
    built = build_classifier(
        {key: dept.examples for key, dept in sample_flow.departments.items()},
        names={key: sample_flow.department_name(key) for key in sample_flow.departments},
        default="general",
        engine="tfidf",
    )
    legacy = TfidfClassifier(
        {key: (sample_flow.department_name(key), *dept.examples) for key, dept in sample_flow.departments.items()},
        default="general",
    )
    for text in ["I was charged twice", "technical support", "my wifi is broken", "zzz", "sales please"]:
        assert built.classify(text) == legacy.classify(text)


def test_a_flows_classifier_learns_from_its_examples_names_and_descriptions(sample_flow: Flow) -> None:
    assert any(department.description for department in sample_flow.departments.values())
    built = build_flow_classifier(sample_flow, engine="tfidf")
    by_hand = build_classifier(
        {key: dept.examples for key, dept in sample_flow.departments.items()},
        names={key: sample_flow.department_name(key) for key in sample_flow.departments},
        descriptions={key: dept.description for key, dept in sample_flow.departments.items() if dept.description},
        default="general",
        engine="tfidf",
    )
    assert isinstance(built, TfidfClassifier)
    for text in ["I was charged twice", "technical support", "my wifi is broken", "zzz", "sales please"]:
        assert built.classify(text) == by_hand.classify(text)


def test_a_deferred_classifier_is_built_once_on_first_use_and_retried_after_a_failure() -> None:
    builds: list[int] = []
    failures = [ClassifierUnavailable("model still unpacking")]

    def build() -> TfidfClassifier:
        if failures:
            raise failures.pop()
        builds.append(1)
        return TfidfClassifier({"billing": ["I was charged twice"], "general": ["operator"]}, default="general")

    deferred = DeferredClassifier(build)
    assert not deferred.built and not builds
    with pytest.raises(ClassifierUnavailable, match="still unpacking"):
        deferred.classify("charged twice")
    assert not deferred.built
    answers: list[str] = []
    threads = [
        threading.Thread(target=lambda: answers.append(deferred.classify("I was charged twice").department))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["billing"] * 8 and builds == [1] and deferred.built


# --- import rules: the cycles and layers are checked project-wide (tests/unit/test_architecture.py, make lint) -


def test_a_tfidf_only_process_never_imports_numpy() -> None:
    """The engines' lazy imports are what keep NumPy (and a model) out of a process that routes with TF-IDF."""
    code = (
        "import sys\n"
        "from ivr_flows import CallerFacts, SpeechHeard, advance, build_flow_classifier, load_flow, start_call\n"
        "flow = load_flow('ivr_flows/main.yaml')\n"
        "words = build_flow_classifier(flow, engine='tfidf')\n"
        "state, _ = start_call(flow, CallerFacts(known=False), classifier=words)\n"
        "state, step = advance(flow, state, SpeechHeard('I was charged twice'), classifier=words)\n"
        "print(step.action.department, 'numpy' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["billing", "False"]
