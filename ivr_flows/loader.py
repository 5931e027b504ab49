"""Load a flow file and report every problem in it with ``file:line:col``, node and key.

Admins edit flows by hand, and a flow that fails in production fails on a live caller, so the
loader is deliberately strict and deliberately chatty: it reports *all* the problems it can
find in one go (not just the first), each pointing at the exact place in the YAML, e.g.::

    ivr_flows/main.yaml:14:7 node 'pay': key 'next': points to unknown node 'pya' (did you mean 'pay'?)

How positions are found (the approach Dagster uses for its YAML configs): the text is
*composed* with PyYAML into a node tree, which keeps the line and column of every key and
value, and the tree is indexed by key path (``("nodes", "pay", "next")``). Pydantic's
``ValidationError`` locations and the semantic checks below both produce key paths, which are
looked up in that index: a bad value points at the value, an unknown key at the key, a missing
key at the mapping that should contain it.

Checks, in order:

1. YAML syntax, a single document, a mapping at the top, no duplicate keys in any mapping
   (PyYAML silently keeps the last one, which hides mistakes).
2. Shape, by the pydantic models in :mod:`ivr_flows.schema`.
3. Meaning: ``start`` and every exit name an existing node; every department named exists; a
   ``general`` department exists; keypad digits are unique; template variables are allowed
   where they are used; no loop of nodes that never asks the caller anything; a transfer
   without ``department:`` is only reachable once a department has been chosen.

Step 3 also runs on the parts of a flow that passed step 2 when other parts did not, so one
run shows both a typo'd key in one node and a dangling ``next`` in another.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from ivr_flows.schema import (
    GENERAL_DEPARTMENT,
    NODE_KINDS,
    Department,
    Flow,
    KeyPath,
    MenuNode,
    Node,
    TransferNode,
)

__all__ = ["FlowError", "FlowIssue", "load_flow", "parse_flow"]

#: Where on a key path an issue points: at the value, at the key itself, or at the mapping
#: that holds the key (for a key that is missing).
_At = Literal["value", "key", "parent"]

_NODE_ADAPTER: TypeAdapter[Node] = TypeAdapter(Node)
_T = TypeVar("_T")


@dataclass(frozen=True)
class FlowIssue:
    """One problem in a flow file, with where it is (1-based line and column)."""

    source: str
    line: int
    col: int
    #: The node the problem is in, if it is inside ``nodes:``.
    node: str | None
    #: The bad key's path, relative to the node when there is one (``"hints[2]"``), else from
    #: the top of the file (``"departments.billing.digit"``); empty for file-level problems.
    key: str
    message: str

    def __str__(self) -> str:
        parts = [f"node '{self.node}'"] if self.node is not None else []
        if self.key:
            parts.append(f"key '{self.key}'")
        parts.append(self.message)
        return f"{self.source}:{self.line}:{self.col} " + ": ".join(parts)


class FlowError(Exception):
    """A flow file cannot be used; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Sequence[FlowIssue]) -> None:
        self.issues: list[FlowIssue] = list(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


@dataclass(frozen=True)
class _Problem:
    """An issue before it has a position: what the checks produce."""

    path: KeyPath
    at: _At
    message: str


# --- public entry points --------------------------------------------------------------------


def load_flow(path: str | os.PathLike[str]) -> Flow:
    """Read, validate and return the flow at ``path``; raise :class:`FlowError` if it is broken.

    ``OSError`` (missing file, permissions) propagates unchanged: that is a deployment
    problem, not a problem in the flow.
    """
    source = os.fspath(path)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        issue = FlowIssue(source, line, col, None, "", "the file is not valid UTF-8 text")
        raise FlowError([issue]) from None
    return _parse(text, source=source, version=_digest(raw), default_name=Path(path).stem)


def parse_flow(text: str, *, source: str) -> Flow:
    """Validate flow YAML given as text; ``source`` names it in errors and on the Flow."""
    return _parse(text, source=source, version=_digest(text.encode()), default_name=Path(source).stem)


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:12]


def _parse(text: str, *, source: str, version: str, default_name: str) -> Flow:
    root, data, problems = _compose(text, source)
    index = _PositionIndex(root)
    if not isinstance(data, dict):
        got = "nothing" if data is None else _describe(data)
        problems.append(
            _Problem(
                (), "value", f"a flow file must be a mapping of company, start, departments, nodes; got {got}"
            )
        )
        raise FlowError(_finalise(problems, index, source))
    if "name" not in data:
        data = {"name": default_name or "flow", **data}
    flow: Flow | None = None
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        problems.extend(_from_pydantic(error, data) for error in exc.errors())
    problems.extend(_semantic_problems(data, flow))
    if problems or flow is None:
        raise FlowError(_finalise(problems, index, source))
    flow._attach(source=source, version=version)
    _ = flow.classifier  # build it now, not on the first caller's webhook
    return flow


# --- YAML and positions ---------------------------------------------------------------------


def _compose(text: str, source: str) -> tuple[yaml.Node, Any, list[_Problem]]:
    """Parse ``text`` into (node tree, Python data, duplicate-key problems)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise FlowError([FlowIssue(source, 1, 1, None, "", "the flow file is empty")])
        # Before construction: merge keys (`<<: *base`) are still visible as such here, so a key
        # that overrides a merged one is not mistaken for a duplicate.
        problems = list(_duplicate_keys(root, ()))
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise FlowError([_yaml_issue(exc, source)]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        issue = FlowIssue(source, line, col, None, "", f"character {exc.character!r} is not allowed in YAML")
        raise FlowError([issue]) from None
    except yaml.YAMLError as exc:  # anything else PyYAML can raise carries no position
        raise FlowError([FlowIssue(source, 1, 1, None, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    return root, data, problems


def _yaml_issue(exc: yaml.MarkedYAMLError, source: str) -> FlowIssue:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    # PyYAML's context reads as the first half of a sentence ("while parsing a flow sequence",
    # "expected a single document in the stream") and the problem as the second.
    message = f"YAML syntax error: {exc.problem or exc.context or 'cannot parse'}"
    if exc.context and exc.problem and exc.context_mark is not None:
        message = f"YAML syntax error: {exc.context} at line {exc.context_mark.line + 1}, {exc.problem}"
    return FlowIssue(source, line, col, None, "", message)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _duplicate_keys(
    node: yaml.Node, path: KeyPath, _stack: frozenset[int] = frozenset()
) -> Iterator[_Problem]:
    if id(node) in _stack:  # a recursive alias; pydantic will reject the structure itself
        return
    stack = _stack | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.tag == _MERGE_TAG:
                continue
            key_id = (key_node.tag, key_node.value)
            first = seen.get(key_id)
            if first is not None:
                yield _Problem(
                    (*path, key_node.value),
                    "key",
                    f"duplicate key: already defined at line {first.start_mark.line + 1}; "
                    "YAML would silently keep only this last one",
                )
            seen[key_id] = key_node
            yield from _duplicate_keys(value_node, (*path, key_node.value), stack)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, i), stack)


@dataclass(frozen=True)
class _Entry:
    key: tuple[int, int] | None  # where the key is written; None for sequence items and the root
    value: tuple[int, int]


class _PositionIndex:
    """Key path -> 1-based (line, col) of the key and of its value in the composed YAML."""

    def __init__(self, root: yaml.Node) -> None:
        self._entries: dict[KeyPath, _Entry] = {}
        self._sequences: set[KeyPath] = set()
        self._constructor = yaml.constructor.SafeConstructor()
        self._walk(root, (), None, frozenset())

    @staticmethod
    def _mark(node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def _walk(
        self, node: yaml.Node, path: KeyPath, key: tuple[int, int] | None, stack: frozenset[int]
    ) -> None:
        self._entries[path] = _Entry(key, self._mark(node))
        if id(node) in stack:
            return
        stack = stack | {id(node)}
        if isinstance(node, yaml.MappingNode):
            # After construction, merge keys have been flattened into node.value; later pairs
            # win, as they do in the constructed data.
            for key_node, value_node in node.value:
                try:
                    python_key = self._constructor.construct_object(key_node, deep=True)
                    hash(python_key)
                except (yaml.YAMLError, TypeError):
                    continue
                self._walk(value_node, (*path, python_key), self._mark(key_node), stack)
        elif isinstance(node, yaml.SequenceNode):
            self._sequences.add(path)
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i), None, stack)

    def position(self, path: KeyPath, at: _At) -> tuple[int, int]:
        if at == "parent":
            path, at = path[:-1], "value"
        while path not in self._entries and path:
            path, at = path[:-1], "value"  # not in the file (e.g. missing): point at the nearest parent
        entry = self._entries.get(path)
        if entry is None:
            return 1, 1
        return entry.key if at == "key" and entry.key is not None else entry.value

    def format_key(self, path: KeyPath, start: int) -> str:
        """``("hints", 2)`` -> ``"hints[2]"``; sequence indexes in brackets, keys dotted."""
        out = ""
        for i in range(start, len(path)):
            segment = path[i]
            if path[:i] in self._sequences and isinstance(segment, int):
                out += f"[{segment}]"
            else:
                out += ("." if out else "") + str(segment)
        return out


def _finalise(problems: Iterable[_Problem], index: _PositionIndex, source: str) -> list[FlowIssue]:
    issues: dict[FlowIssue, None] = {}
    for problem in problems:
        line, col = index.position(problem.path, problem.at)
        path = problem.path
        if len(path) >= 2 and path[0] == "nodes":
            node, key = str(path[1]), index.format_key(path, 2)
        else:
            node, key = None, index.format_key(path, 0)
        issues[FlowIssue(source, line, col, node, key, problem.message)] = None
    return sorted(issues, key=lambda issue: (issue.line, issue.col))


# --- pydantic errors -> problems ------------------------------------------------------------

_EXPECTED = {
    "string_type": "expected text",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "dict_type": "expected a mapping of keys",
    "model_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
}


def _from_pydantic(error: ErrorDetails, data: Mapping[Any, Any]) -> _Problem:
    path: list[str | int] = []
    at: _At = "value"
    cursor: Any = data
    for segment in error["loc"]:
        if segment == "[key]":  # the mapping key itself is invalid (e.g. a bad node name)
            at = "key"
            continue
        if (
            len(path) == 2
            and path[0] == "nodes"
            and segment in NODE_KINDS
            and isinstance(cursor, dict)
            and cursor.get("kind") == segment
        ):
            continue  # the discriminator tag pydantic inserts: nodes.<id>.<kind>.<field>
        path.append(segment)
        cursor = cursor.get(segment) if isinstance(cursor, dict) else None
    kind, ctx, value = error["type"], error.get("ctx", {}), error["input"]

    if kind == "missing":
        return _Problem(tuple(path), "parent", "required key is missing")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(tuple(path[:-1]), data)
        message = "unknown key" + _suggest(str(path[-1]), allowed)
        if allowed:
            message += f"; allowed keys: {', '.join(allowed)}"
        return _Problem(tuple(path), "key", message)
    if kind == "union_tag_invalid":
        tag = ctx.get("tag", "")
        return _Problem(
            (*path, "kind"),
            "value",
            f"unknown node kind {tag!r}{_suggest(str(tag), NODE_KINDS)}; "
            f"expected one of: {', '.join(NODE_KINDS)}",
        )
    if kind == "union_tag_not_found":
        return _Problem(
            (*path, "kind"),
            "parent",
            f"required key is missing: every node needs a kind ({', '.join(NODE_KINDS)})",
        )
    if kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", error["msg"]))
        return _Problem(tuple(path), at, message)
    if kind == "greater_than_equal":
        message = f"must be at least {ctx.get('ge')}"
    elif kind == "less_than_equal":
        message = f"must be at most {ctx.get('le')}"
    elif kind == "too_short":
        return _Problem(tuple(path), at, "must not be empty")
    elif kind == "too_long":
        return _Problem(tuple(path), at, f"too many items (at most {ctx.get('max_length')})")
    elif kind in _EXPECTED:
        message = _EXPECTED[kind]
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    return _Problem(tuple(path), at, f"{message}, got {_describe(value)}")


def _allowed_keys(parent: KeyPath, data: Mapping[Any, Any]) -> list[str]:
    """The keys the model at ``parent`` accepts, for "did you mean" suggestions."""
    if parent == ():
        return list(Flow.model_fields)
    if len(parent) == 2 and parent[0] == "departments":
        return list(Department.model_fields)
    if len(parent) == 2 and parent[0] == "nodes":
        nodes = data.get("nodes")
        raw = nodes.get(parent[1]) if isinstance(nodes, dict) else None
        kind = raw.get("kind") if isinstance(raw, dict) else None
        if isinstance(kind, str) and kind in NODE_KINDS:
            return list(NODE_KINDS[kind].model_fields)
    return []


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {value}"


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- semantic checks ------------------------------------------------------------------------


def _semantic_problems(data: Mapping[Any, Any], flow: Flow | None) -> list[_Problem]:
    """Cross-reference checks, on the whole flow or on whichever parts of it were valid."""
    if flow is not None:
        start: object = flow.start
        nodes: dict[str, Node] = dict(flow.nodes)
        departments: dict[str, Department] = dict(flow.departments)
        node_ids, department_ids = set(nodes), set(departments)
        nodes_known = departments_known = True
    else:
        start = data.get("start")
        raw_nodes, raw_departments = data.get("nodes"), data.get("departments")
        nodes_known, departments_known = isinstance(raw_nodes, dict), isinstance(raw_departments, dict)
        nodes = _valid_parts(raw_nodes, _NODE_ADAPTER.validate_python)
        departments = _valid_parts(raw_departments, Department.model_validate)
        # Ids of invalid nodes still count as existing: their own errors are already reported,
        # and "unknown node" for every reference to them would only be noise.
        node_ids = {k for k in raw_nodes if isinstance(k, str)} if isinstance(raw_nodes, dict) else set()
        department_ids = (
            {k for k in raw_departments if isinstance(k, str)} if isinstance(raw_departments, dict) else set()
        )

    problems: list[_Problem] = []
    if nodes_known and isinstance(start, str) and start not in node_ids:
        problems.append(
            _Problem(("start",), "value", f"points to unknown node {start!r}{_suggest(start, node_ids)}")
        )
    for node_id, node in nodes.items():
        for rel, target in node.exits():
            if target not in node_ids:
                problems.append(
                    _Problem(
                        ("nodes", node_id, *rel),
                        "value",
                        f"points to unknown node {target!r}{_suggest(target, node_ids)}",
                    )
                )
        if departments_known:
            for rel, department in node.department_refs():
                if department not in department_ids:
                    problems.append(
                        _Problem(
                            ("nodes", node_id, *rel),
                            "value",
                            f"refers to unknown department {department!r}"
                            f"{_suggest(department, department_ids)}; "
                            f"defined departments: {', '.join(_department_ids_in_order(data))}",
                        )
                    )
        if isinstance(node, MenuNode) and node.departments:
            listed: set[str] = set()
            for i, department in enumerate(node.departments):
                if department in listed:
                    problems.append(
                        _Problem(
                            ("nodes", node_id, "departments", i),
                            "value",
                            f"department {department!r} is listed twice",
                        )
                    )
                listed.add(department)
    if departments_known:
        problems.extend(_department_problems(departments, department_ids))
    chosen = _department_chosen(nodes, start if isinstance(start, str) else None)
    for node_id, node in nodes.items():
        for rel, text, allowed in node.templates():
            if chosen.get(node_id, True):
                allowed = allowed | {"department"}
            problems.extend(
                _Problem(("nodes", node_id, *rel), "value", m) for m in _template_problems(text, allowed)
            )
        if isinstance(node, TransferNode) and node.department is None and not chosen.get(node_id, True):
            problems.append(
                _Problem(
                    ("nodes", node_id, "department"),
                    "parent",
                    "this transfer can be reached before any menu or route node has chosen a department; "
                    "route the caller first or set `department:`",
                )
            )
    problems.extend(_loop_problems(nodes))
    return problems


def _department_ids_in_order(data: Mapping[Any, Any]) -> list[str]:
    raw = data.get("departments")
    return [k for k in raw if isinstance(k, str)] if isinstance(raw, dict) else []


def _valid_parts(raw: object, validate: Callable[[Any], _T]) -> dict[str, _T]:
    """The entries of mapping ``raw`` that validate on their own (for partial checking)."""
    out: dict[str, _T] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            if isinstance(key, str):
                with contextlib.suppress(ValidationError):  # its errors are reported already
                    out[key] = validate(value)
    return out


def _department_problems(departments: Mapping[str, Department], department_ids: set[str]) -> list[_Problem]:
    problems: list[_Problem] = []
    if GENERAL_DEPARTMENT not in department_ids:
        problems.append(
            _Problem(
                ("departments",),
                "value",
                f"a '{GENERAL_DEPARTMENT}' department is required: callers whose reason cannot be "
                "understood, or who press nothing, are sent there",
            )
        )
    digits: dict[str, str] = {}
    for key, department in departments.items():
        other = digits.get(department.digit)
        if other is not None:
            problems.append(
                _Problem(
                    ("departments", key, "digit"),
                    "value",
                    f"digit '{department.digit}' is already used by department '{other}'",
                )
            )
        else:
            digits[department.digit] = key
    return problems


#: Variables that exist but only in some texts, and where (for the error message).
_ONLY_IN = {"first_name": "in a say node's known_caller_text", "menu_options": "in menu prompts"}


def _template_problems(text: str, allowed: frozenset[str]) -> list[str]:
    """Problems with the ``{variable}`` placeholders in one spoken text."""
    listing = ", ".join("{" + v + "}" for v in sorted(allowed))
    try:
        placeholders = [
            (field, spec, conversion)
            for _, field, spec, conversion in string.Formatter().parse(text)
            if field is not None
        ]
    except ValueError as exc:
        return [f"invalid template ({exc}); write {{{{ and }}}} for literal braces"]
    problems: list[str] = []
    for field, spec, conversion in placeholders:
        if field == "":
            problems.append(f"empty placeholder {{}}; name a variable: {listing}")
        elif spec or conversion:
            problems.append(
                f"placeholder {{{field}...}} has a format or conversion; write plain {{name}} placeholders"
            )
        elif field not in allowed:
            if field == "department":
                problems.append(
                    "{department} is not available here: not every path to this node goes through a menu "
                    f"or route node that chooses a department; allowed here: {listing}"
                )
            elif field in _ONLY_IN:
                problems.append(f"{{{field}}} can only be used {_ONLY_IN[field]}; allowed here: {listing}")
            else:
                hint = _suggest(field, allowed)
                problems.append(f"unknown template variable {{{field}}}{hint}; allowed here: {listing}")
    return problems


def _department_chosen(nodes: Mapping[str, Node], start: str | None) -> dict[str, bool]:
    """For each node: is a department certainly chosen whenever a call arrives there?

    A forward "must" data-flow analysis: false at ``start``; true after an exit that always
    chooses one (menu/route ``next``); otherwise inherited from the node the exit leaves.
    Unreachable nodes stay true, so they are not held to it.
    """
    incoming: dict[str, list[tuple[str, bool]]] = {node_id: [] for node_id in nodes}
    for node_id, node in nodes.items():
        for rel, target in node.exits():
            if target in incoming:
                incoming[target].append((node_id, rel[0] in node.SETS_DEPARTMENT_ON))
    chosen = dict.fromkeys(nodes, True)
    changed = True
    while changed:  # values only ever go from True to False, so this terminates
        changed = False
        for node_id in nodes:
            value = node_id != start and all(sets or chosen[source] for source, sets in incoming[node_id])
            if value != chosen[node_id]:
                chosen[node_id] = value
                changed = True
    return chosen


def _loop_problems(nodes: Mapping[str, Node]) -> list[_Problem]:
    """Cycles of nodes that never wait for the caller (say, route): the call would spin forever."""
    passing = {node_id for node_id, node in nodes.items() if not node.ASKS_CALLER and not node.TERMINAL}
    edges = {
        node_id: [(rel, target) for rel, target in nodes[node_id].exits() if target in passing]
        for node_id in passing
    }
    problems: list[_Problem] = []
    reported: set[str] = set()
    for first in nodes:  # file order, so the report is stable
        if first not in passing or first in reported:
            continue
        # Breadth-first from `first`, remembering how each node was reached, until we are back.
        came_from: dict[str, tuple[str, KeyPath]] = {}
        queue, closing = [first], None
        while queue and closing is None:
            current = queue.pop(0)
            for rel, target in edges[current]:
                if target == first:
                    closing = (current, rel)
                    break
                if target not in came_from:
                    came_from[target] = (current, rel)
                    queue.append(target)
        if closing is None:
            continue
        cycle = [closing[0]]
        while cycle[-1] != first:
            cycle.append(came_from[cycle[-1]][0])
        cycle.reverse()
        reported.update(cycle)
        route = " -> ".join([*cycle, first])
        problems.append(
            _Problem(
                ("nodes", closing[0], *closing[1]),
                "value",
                f"loops back to {first!r} ({route}) without ever asking the caller anything; "
                "the call would never progress",
            )
        )
    return problems
