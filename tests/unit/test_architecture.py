"""The rules the tree shows, checked: no import cycle anywhere, no state field written outside the domain model, and
no path in ARCHITECTURE.md that does not exist.

The layers themselves (``web -> services -> domain``; ``ivr_flows`` and ``crm_sync`` never import ``voice``) are
import-linter contracts in ``pyproject.toml``, run by ``make lint``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("voice", "ivr_flows", "crm_sync")

#: The lifecycle fields of the models: an interaction's status and outcome, an offer's, a rep's, a hand-off's, a
#: callback's and a task's state, and the fields a rep's reservation and wrap-up hang on. Only ``crm_sync/models.py``
#: (their methods) assigns them.
STATE_FIELDS = frozenset(
    {"status", "state", "outcome", "after_call_state", "current_offer_id", "reserved_until", "wrap_up_until"}
)
#: Code that is not the app's: the Twilio emulator keeps its own call states.
NOT_THE_APP = ("voice/emulator/", "crm_sync/migrations/")


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively (the graph has hundreds of modules): the cycles are the components with more
    than one module, or one that imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph[successor])))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports, every import statement counted (inside functions and
    ``TYPE_CHECKING`` blocks too: an import moved into a function to dodge a cycle is still a cycle). A package's
    ``__init__`` importing its own submodules is how packages work, not a cycle, so edges from a submodule to its
    own ancestors' ``__init__`` are left out."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        edges[module] = {
            imported
            for imported in graph.find_modules_directly_imported_by(module)
            if not module.startswith(imported + ".")
        }
    return edges


def test_no_import_cycle_anywhere() -> None:
    cycles = [sorted(component) for component in _strongly_connected(_import_graph()) if len(component) > 1]
    assert cycles == [], f"import cycles (imports inside functions included): {cycles}"


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [sorted(component) for component in _strongly_connected(graph) if len(component) > 1] == [["a", "b", "c"]]


def _app_modules() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative != "crm_sync/models.py" and not relative.startswith(NOT_THE_APP):
                yield path


def state_field_writes(source: str) -> list[tuple[int, str]]:
    """Where ``source`` writes a lifecycle field: ``x.state = …``, ``x.status += …``, ``setattr(x, "state", …)``,
    or a Core ``update(...).values(state=…)`` / ``insert(...).values(status=…)``. A class other than a model setting
    its own attribute of that name in ``__init__`` (an exception's HTTP ``status``) is not one."""
    tree = ast.parse(source)
    own_init_fields = {
        id(target)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef) and function.name == "__init__"
        for statement in ast.walk(function)
        if isinstance(statement, ast.Assign)
        for target in statement.targets
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                if (
                    isinstance(element, ast.Attribute)
                    and element.attr in STATE_FIELDS
                    and id(element) not in own_init_fields
                ):
                    found.append((element.lineno, f".{element.attr} ="))
        if isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id == "setattr" and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and name.value in STATE_FIELDS:
                    found.append((node.lineno, f"setattr(…, {name.value!r})"))
            if isinstance(function, ast.Attribute) and function.attr == "values":
                found += [(node.lineno, f".values({kw.arg}=…)") for kw in node.keywords if kw.arg in STATE_FIELDS]
    return found


def test_no_state_field_is_written_outside_the_domain_model() -> None:
    writes = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _app_modules()
        for line, what in state_field_writes(path.read_text(encoding="utf-8"))
    ]
    assert writes == [], "state changes belong in a method of their model (crm_sync/models.py):\n" + "\n".join(writes)


@pytest.mark.parametrize(
    "source",
    [
        "offer.state = OfferState.DECLINED",
        "rep.state, changed = RepState.AWAY, True",
        "interaction.outcome = None",
        "setattr(interaction, 'status', 'ended')",
        "session.execute(update(Rep).values(state=RepState.AVAILABLE))",
    ],
)
def test_the_state_field_check_sees_every_way_of_writing_one(source: str) -> None:
    assert state_field_writes(source)


def test_the_state_field_check_leaves_reads_and_other_fields_alone() -> None:
    assert (
        state_field_writes("if offer.state is OfferState.RINGING:\n    offer.rep_call_sid = sid\nx = rep.state") == []
    )
    assert (
        state_field_writes("class Gone(Exception):\n    def __init__(self, status):\n        self.status = status")
        == []
    )


def test_every_path_architecture_md_names_exists() -> None:
    # ARCHITECTURE.md is the map from concept to path: a path that moved without it is a wrong map.
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:voice|crm_sync|ivr_flows|tests|bench|scripts)/[\w./-]*)`", text))
    assert named, "ARCHITECTURE.md names no paths"
    missing = sorted(path for path in named if not (ROOT / path.rstrip("/")).exists())
    assert missing == [], f"ARCHITECTURE.md names paths that do not exist: {missing}"
