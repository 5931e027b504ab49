"""Choosing and building a classifier (``ivr_flows.routing.factory``), and the import rules of the routing package.

None of these needs a model or NumPy: they always run.
"""

from __future__ import annotations

import ast
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
    for module in ("ivr_flows.routing.minilm", "ivr_flows.routing.mpnet", "ivr_flows.routing.wordllama"):
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


# --- import rules ------------------------------------------------------------------------------------------------


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """Every module ``path`` imports, with whether the import sits inside a function (``TYPE_CHECKING`` blocks,
    which never run, left out)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, in_function))
            found.extend((f"{node.module}.{alias.name}", in_function) for alias in node.names)
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_flow_language_and_the_classifiers_import_without_a_cycle() -> None:
    """No cycle among ``ivr_flows``'s modules, imports inside functions included; the flow schema knows nothing of
    routing and the engine only the protocol. Package ``__init__`` re-exports are not edges back (a package's
    modules never import the package itself)."""
    modules = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    edges = {
        name: {target for target, _ in imports_of(path) if target in modules and target != name}
        for name, path in modules.items()
    }
    assert not any("ivr_flows" in targets for name, targets in edges.items() if name != "ivr_flows")
    assert not any(target.startswith("ivr_flows.routing") for target in edges["ivr_flows.schema"])
    assert {t for t in edges["ivr_flows.engine"] if t.startswith("ivr_flows.routing")} == {"ivr_flows.routing.base"}
    assert not edges["ivr_flows.routing"], "importing the routing package must not import the factory or NumPy"
    for name in modules:
        if name in ("ivr_flows", "ivr_flows.routing"):
            continue
        seen: set[str] = set()
        stack = [*edges[name]]
        while stack:
            target = stack.pop()
            assert target != name, f"{name} imports itself back through {target}"
            if target not in seen and target not in ("ivr_flows", "ivr_flows.routing"):
                seen.add(target)
                stack.extend(edges[target])
    # What the factory imports lazily (the engines) never imports the factory, at all.
    factory_lazy = {target for target, lazy in imports_of(modules["ivr_flows.routing.factory"]) if lazy}
    for target in factory_lazy & set(modules):
        assert "ivr_flows.routing.factory" not in {t for t, _ in imports_of(modules[target])}


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
