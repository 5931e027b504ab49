"""Load a flow file and report every problem in it with ``file:line:col``, node and key.

Admins edit flows by hand, and a flow that fails in production fails on a live caller, so the
loader is deliberately strict and deliberately chatty: it reports *all* the problems it can
find in one go (not just the first), each pointing at the exact place in the YAML, e.g.::

    ivr_flows/main.yaml:14:7 node 'pay': key 'next': points to unknown node 'pya' (did you mean 'pay'?)

How positions are found (the approach Dagster uses for its YAML configs, shared with
``config.yaml``'s loader in :mod:`ivr_flows.yaml_positions`): the text is *composed* with PyYAML
into a node tree, which keeps the line and column of every key and value, and the tree is
indexed by key path (``("nodes", "pay", "next")``). Pydantic's ``ValidationError`` locations and
the semantic checks below both produce key paths, which are looked up in that index: a bad value
points at the value, an unknown key at the key, a missing key at the mapping that should contain it.

Checks, in order:

1. YAML syntax, a single document, a mapping at the top, no duplicate keys in any mapping
   (PyYAML silently keeps the last one, which hides mistakes).
2. Shape, by the pydantic models in :mod:`ivr_flows.schema`.
3. Meaning: ``start`` and every exit name an existing node; every department named exists; a
   ``general`` department exists; keypad digits are unique (across departments, and within one
   menu); template variables are allowed where they are used; every declared language has its
   text wherever a caller who chose it can hear it; opening hours do not overlap; no loop of
   nodes that never asks the caller anything; a transfer without ``department:`` is only
   reachable once a department has been chosen; and (a *warning*, not an error) every node is
   reachable from ``start``.

Step 3 also runs on the parts of a flow that passed step 2 when other parts did not, so one
run shows both a typo'd key in one node and a dangling ``next`` in another.

:func:`load_flow` raises :class:`FlowError` with the errors only: warnings never keep a flow from
being served. :func:`check_flow` returns both, for ``warmline flows lint`` (:mod:`ivr_flows.lint`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from ivr_flows.schema import (
    BUILTIN_PHRASES,
    DEFAULT_GOODBYES,
    GENERAL_DEPARTMENT,
    NODE_KINDS,
    PHRASE_VARIABLES,
    Department,
    Flow,
    KeyPath,
    Language,
    LanguageNode,
    LanguageSpec,
    Node,
    Phrases,
    Prompt,
    TransferNode,
    builtin_phrase,
)
from ivr_flows.yaml_positions import (
    At,
    PositionIndex,
    YamlSyntaxError,
    compose,
    describe,
    explain,
    nested_model,
    suggest,
)

__all__ = [
    "FlowCheck",
    "FlowError",
    "FlowIssue",
    "Severity",
    "check_flow",
    "check_flow_text",
    "load_flow",
    "parse_flow",
]

#: An error keeps the flow from loading; a warning is shown by the linter but does not.
Severity = Literal["error", "warning"]

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
    severity: Severity = "error"

    def __str__(self) -> str:
        parts = [f"node '{self.node}'"] if self.node is not None else []
        if self.key:
            parts.append(f"key '{self.key}'")
        parts.append(self.message)
        return f"{self.source}:{self.line}:{self.col} " + ": ".join(parts)


class FlowError(Exception):
    """A flow file cannot be used; ``issues`` lists every error found, in file order."""

    def __init__(self, issues: Sequence[FlowIssue]) -> None:
        self.issues: list[FlowIssue] = list(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


@dataclass(frozen=True)
class _Problem:
    """An issue before it has a position: what the checks produce."""

    path: KeyPath
    at: At
    message: str
    severity: Severity = "error"


@dataclass(frozen=True)
class FlowCheck:
    """Everything the loader found in one flow file: the flow if it has no errors, and every issue."""

    source: str
    flow: Flow | None
    #: Errors and warnings, in file order.
    issues: list[FlowIssue]

    @property
    def errors(self) -> list[FlowIssue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    @property
    def warnings(self) -> list[FlowIssue]:
        return [issue for issue in self.issues if issue.severity == "warning"]


# --- public entry points --------------------------------------------------------------------


def load_flow(path: str | os.PathLike[str]) -> Flow:
    """Read, validate and return the flow at ``path``; raise :class:`FlowError` if it has errors.

    Warnings (an unreachable node) do not stop it; see :func:`check_flow` for them. ``OSError``
    (missing file, permissions) propagates unchanged: that is a deployment problem, not a
    problem in the flow.
    """
    return _require(check_flow(path))


def parse_flow(text: str, *, source: str) -> Flow:
    """Validate flow YAML given as text; ``source`` names it in errors and on the Flow."""
    return _require(check_flow_text(text, source=source))


def check_flow(path: str | os.PathLike[str]) -> FlowCheck:
    """Read and check the flow at ``path``: never raises :class:`FlowError`, returns every issue."""
    source = os.fspath(path)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        issue = FlowIssue(source, line, col, None, "", "the file is not valid UTF-8 text")
        return FlowCheck(source, None, [issue])
    return _check(text, source=source, version=_digest(raw), default_name=Path(path).stem)


def check_flow_text(text: str, *, source: str) -> FlowCheck:
    """:func:`check_flow` for YAML given as text."""
    return _check(text, source=source, version=_digest(text.encode()), default_name=Path(source).stem)


def _require(check: FlowCheck) -> Flow:
    if check.errors or check.flow is None:
        raise FlowError(check.errors)
    return check.flow


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:12]


def _check(text: str, *, source: str, version: str, default_name: str) -> FlowCheck:
    try:
        return _parse(text, source=source, version=version, default_name=default_name)
    except FlowError as exc:  # the file could not even be read as YAML
        return FlowCheck(source, None, exc.issues)


def _parse(text: str, *, source: str, version: str, default_name: str) -> FlowCheck:
    root, data, problems = _compose(text, source)
    index = PositionIndex(root)
    if not isinstance(data, dict):
        got = "nothing" if data is None else describe(data)
        problems.append(
            _Problem((), "value", f"a flow file must be a mapping of company, start, departments, nodes; got {got}")
        )
        return FlowCheck(source, None, _finalise(problems, index, source))
    if "name" not in data:
        data = {"name": default_name or "flow", **data}
    flow: Flow | None = None
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        problems.extend(_from_pydantic(error, data) for error in exc.errors())
    problems.extend(_semantic_problems(data, flow))
    issues = _finalise(problems, index, source)
    if flow is None or any(issue.severity == "error" for issue in issues):
        return FlowCheck(source, None, issues)
    flow._attach(source=source, version=version)
    return FlowCheck(source, flow, issues)


# --- YAML and positions ---------------------------------------------------------------------


def _compose(text: str, source: str) -> tuple[yaml.Node, Any, list[_Problem]]:
    """Parse ``text`` into (node tree, Python data, duplicate-key problems)."""
    try:
        composed = compose(text)
    except YamlSyntaxError as exc:
        raise FlowError([FlowIssue(source, exc.line, exc.col, None, "", exc.message)]) from None
    if composed.root is None:
        raise FlowError([FlowIssue(source, 1, 1, None, "", "the flow file is empty")])
    problems = [_Problem(path, "key", message) for path, message in composed.duplicates]
    return composed.root, composed.data, problems


def _finalise(problems: Iterable[_Problem], index: PositionIndex, source: str) -> list[FlowIssue]:
    issues: dict[FlowIssue, None] = {}
    for problem in problems:
        line, col = index.position(problem.path, problem.at)
        path = problem.path
        if len(path) >= 2 and path[0] == "nodes":
            node, key = str(path[1]), index.format_key(path, 2)
        else:
            node, key = None, index.format_key(path, 0)
        issues[FlowIssue(source, line, col, node, key, problem.message, problem.severity)] = None
    return sorted(issues, key=lambda issue: (issue.line, issue.col))


# --- pydantic errors -> problems ------------------------------------------------------------


def _from_pydantic(error: ErrorDetails, data: Mapping[Any, Any]) -> _Problem:
    path: list[str | int] = []
    at: At = "value"
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
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "union_tag_invalid":
        tag = ctx.get("tag", "")
        return _Problem(
            (*path, "kind"),
            "value",
            f"unknown node kind {tag!r}{suggest(str(tag), NODE_KINDS)}; expected one of: {', '.join(NODE_KINDS)}",
        )
    if kind == "union_tag_not_found":
        return _Problem(
            (*path, "kind"),
            "parent",
            f"required key is missing: every node needs a kind ({', '.join(NODE_KINDS)})",
        )
    allowed = _allowed_keys(tuple(path[:-1]), data) if kind == "extra_forbidden" else []
    where, at, message = explain(error, tuple(path), at, allowed=allowed)
    return _Problem(where, at, message)


def _allowed_keys(parent: KeyPath, data: Mapping[Any, Any]) -> list[str]:
    """The keys the model at ``parent`` accepts, for "did you mean" suggestions."""
    model: type[BaseModel] | None = None
    rest: KeyPath = ()
    if parent == ():
        model = Flow
    elif len(parent) >= 2 and parent[0] == "departments":
        model, rest = Department, parent[2:]
    elif len(parent) >= 2 and parent[0] == "languages":
        model, rest = LanguageSpec, parent[2:]
    elif parent == ("phrases",):
        model = Phrases
    elif len(parent) >= 2 and parent[0] == "nodes":
        nodes = data.get("nodes")
        raw = nodes.get(parent[1]) if isinstance(nodes, dict) else None
        kind = raw.get("kind") if isinstance(raw, dict) else None
        if isinstance(kind, str) and kind in NODE_KINDS:
            model, rest = NODE_KINDS[kind], parent[2:]
    for segment in rest:  # into nested models: a menu's choices, a branch rule's `when` ...
        if model is None:
            break
        if isinstance(segment, str):
            field = model.model_fields.get(segment)
            model = nested_model(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


# --- semantic checks ------------------------------------------------------------------------

_LANGUAGES_ADAPTER: TypeAdapter[dict[str, LanguageSpec]] = TypeAdapter(dict[Language, LanguageSpec])
_LANGUAGE_ADAPTER: TypeAdapter[str] = TypeAdapter(Language)
_PROMPT_ADAPTER: TypeAdapter[str | dict[str, str]] = TypeAdapter(Prompt)


@dataclass
class _Context:
    """What the semantic checks know about a flow, whole or in valid parts."""

    start: object
    nodes: dict[str, Node]
    departments: dict[str, Department]
    node_ids: set[str]
    department_ids: set[str]
    nodes_known: bool
    departments_known: bool
    #: Every node validated (so graph checks such as reachability see every edge).
    nodes_complete: bool
    #: Declared language tags, default first; None when `languages` itself is broken.
    languages: list[str] | None
    default_language: str
    language_specs: dict[str, LanguageSpec]
    goodbye: str | dict[str, str] | None


def _context(data: Mapping[Any, Any], flow: Flow | None) -> _Context:
    if flow is not None:
        spoken = flow.spoken_languages
        return _Context(
            start=flow.start,
            nodes=dict(flow.nodes),
            departments=dict(flow.departments),
            node_ids=set(flow.nodes),
            department_ids=set(flow.departments),
            nodes_known=True,
            departments_known=True,
            nodes_complete=True,
            languages=_ordered_languages(spoken, flow.language),
            default_language=flow.language,
            language_specs=spoken,
            goodbye=flow.goodbye,
        )
    raw_nodes, raw_departments = data.get("nodes"), data.get("departments")
    nodes = _valid_parts(raw_nodes, _NODE_ADAPTER.validate_python)
    # Ids of invalid nodes still count as existing: their own errors are already reported,
    # and "unknown node" for every reference to them would only be noise.
    node_ids = {k for k in raw_nodes if isinstance(k, str)} if isinstance(raw_nodes, dict) else set()
    default_language = _valid(_LANGUAGE_ADAPTER.validate_python, data.get("language", "en-US"))
    raw_languages = data.get("languages")
    specs: dict[str, LanguageSpec] | None = {}
    if raw_languages is not None:
        specs = _valid(_LANGUAGES_ADAPTER.validate_python, raw_languages)
    languages: list[str] | None = None
    language_specs: dict[str, LanguageSpec] = {}
    if default_language is not None and specs is not None:
        language_specs = specs or {default_language: LanguageSpec()}
        languages = _ordered_languages(language_specs, default_language)
    return _Context(
        start=data.get("start"),
        nodes=nodes,
        departments=_valid_parts(raw_departments, Department.model_validate),
        node_ids=node_ids,
        department_ids=(
            {k for k in raw_departments if isinstance(k, str)} if isinstance(raw_departments, dict) else set()
        ),
        nodes_known=isinstance(raw_nodes, dict),
        departments_known=isinstance(raw_departments, dict),
        nodes_complete=isinstance(raw_nodes, dict) and len(nodes) == len(raw_nodes),
        languages=languages,
        default_language=default_language or "en-US",
        language_specs=language_specs,
        goodbye=_valid(_PROMPT_ADAPTER.validate_python, data.get("goodbye")) if "goodbye" in data else None,
    )


def _ordered_languages(specs: Mapping[str, LanguageSpec], default: str) -> list[str]:
    return [default, *(code for code in specs if code != default)] if default in specs else list(specs)


def _valid(validate: Callable[[Any], _T], value: object) -> _T | None:
    try:
        return validate(value)
    except ValidationError:  # reported by the whole-flow validation already
        return None


def _semantic_problems(data: Mapping[Any, Any], flow: Flow | None) -> list[_Problem]:
    """Cross-reference checks, on the whole flow or on whichever parts of it were valid."""
    ctx = _context(data, flow)
    problems: list[_Problem] = []
    start = ctx.start
    if ctx.nodes_known and isinstance(start, str) and start not in ctx.node_ids:
        problems.append(
            _Problem(("start",), "value", f"points to unknown node {start!r}{suggest(start, ctx.node_ids)}")
        )
    for node_id, node in ctx.nodes.items():
        for edge in node.exits():
            if edge.target not in ctx.node_ids:
                problems.append(
                    _Problem(
                        ("nodes", node_id, *edge.path),
                        "value",
                        f"points to unknown node {edge.target!r}{suggest(edge.target, ctx.node_ids)}",
                    )
                )
        if ctx.departments_known:
            for rel, department in node.department_refs():
                if department not in ctx.department_ids:
                    problems.append(
                        _Problem(
                            ("nodes", node_id, *rel),
                            "value",
                            f"refers to unknown department {department!r}"
                            f"{suggest(department, ctx.department_ids)}; "
                            f"defined departments: {', '.join(_department_ids_in_order(data))}",
                        )
                    )
        if ctx.languages is not None:
            for rel, code in node.language_refs():
                if code not in ctx.languages:
                    problems.append(_Problem(("nodes", node_id, *rel), "key", _undeclared_language(code, ctx)))
        problems.extend(_Problem(("nodes", node_id, *rel), at, m) for rel, at, m in node.local_problems())
    if ctx.departments_known:
        problems.extend(_department_problems(ctx.departments, ctx.department_ids))
    problems.extend(_language_table_problems(data, ctx))

    start_id = start if isinstance(start, str) and start in ctx.node_ids else None
    problems.extend(_unreachable_problems(ctx, start_id))
    chosen = _must_hold(ctx.nodes, start_id, "department")
    known = _must_hold(ctx.nodes, start_id, "known")
    after_language = _after_language(ctx.nodes)
    for node_id, node in ctx.nodes.items():
        for rel, text, allowed in node.templates():
            if chosen.get(node_id, True):
                allowed = allowed | {"department"}
            if known.get(node_id, True):
                allowed = allowed | {"first_name"}
            picked_at = None if isinstance(node, LanguageNode) else after_language.get(node_id)
            problems.extend(_text_problems(("nodes", node_id, *rel), text, allowed, ctx, picked_at))
        if isinstance(node, TransferNode) and node.department is None and not chosen.get(node_id, True):
            problems.append(
                _Problem(
                    ("nodes", node_id, "department"),
                    "parent",
                    "this transfer can be reached before any menu or route node has chosen a department; "
                    "route the caller first or set `department:`",
                )
            )
        problems.extend(_goodbye_problems(node_id, node, ctx, after_language.get(node_id)))
    for key, dept in ctx.departments.items():
        if isinstance(dept.name, dict):
            problems.extend(_text_problems(("departments", key, "name"), dept.name, frozenset(), ctx, None))
    if ctx.goodbye is not None:
        problems.extend(_text_problems(("goodbye",), ctx.goodbye, frozenset({"company"}), ctx, None))
    problems.extend(_phrase_problems(data, flow, ctx))
    problems.extend(_loop_problems(ctx.nodes))
    return problems


def _phrase_problems(data: Mapping[Any, Any], flow: Flow | None, ctx: _Context) -> list[_Problem]:
    """The flow's ``phrases:`` (templates, languages), and whether every language it speaks has them all.

    The app says these after a transfer (connecting, on hold, the callback offer). They are built in for English
    and Spanish; a flow that transfers callers in any other language must give them, or those callers would hear
    English in the middle of their call.
    """
    phrases = flow.phrases if flow is not None else _valid(Phrases.model_validate, data.get("phrases") or {})
    problems: list[_Problem] = []
    own: dict[str, str | dict[str, str]] = {}
    if phrases is not None:
        own = {key: text for key, text in phrases if text is not None}
    for key, text in own.items():
        allowed = PHRASE_VARIABLES.get(key, frozenset()) | {"company"}
        variants: list[tuple[KeyPath, str]] = [(("phrases", key), text)] if isinstance(text, str) else []
        if isinstance(text, dict):
            for code, variant in text.items():
                if ctx.languages is not None and code not in ctx.languages:
                    problems.append(_Problem(("phrases", key, code), "key", _undeclared_language(code, ctx)))
                variants.append((("phrases", key, code), variant))
        for path, variant in variants:
            problems.extend(_Problem(path, "value", m) for m in _template_problems(variant, allowed))
    if ctx.languages is None or not any(isinstance(node, TransferNode) for node in ctx.nodes.values()):
        return problems
    for code in ctx.languages:
        missing = [
            key
            for key in BUILTIN_PHRASES
            if builtin_phrase(key, code) is None
            and not isinstance(own.get(key), str)
            and code not in (own.get(key) or {})
        ]
        if missing:
            where: KeyPath = ("languages", code) if "languages" in data else ("language",)
            problems.append(
                _Problem(
                    where,
                    "key" if "languages" in data else "value",
                    f"callers speaking {code!r} can be transferred, but the app's own phrases around a transfer "
                    f"are built in for English and Spanish only; give them in {code!r} under `phrases:`: "
                    + ", ".join(missing),
                )
            )
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


def _undeclared_language(code: str, ctx: _Context) -> str:
    declared = ctx.languages or []
    return (
        f"language {code!r} is not declared{suggest(code, declared)}; "
        f"declared languages: {', '.join(declared)} (add it under `languages:`)"
    )


def _language_table_problems(data: Mapping[Any, Any], ctx: _Context) -> list[_Problem]:
    """The default language must be declared; each language's option phrase must be a valid template."""
    problems: list[_Problem] = []
    raw = data.get("languages")
    if not isinstance(raw, dict) or not ctx.language_specs or ctx.languages is None:
        return problems
    if ctx.default_language not in ctx.language_specs:
        problems.append(
            _Problem(
                ("language",) if "language" in data else ("languages",),
                "value" if "language" in data else "key",
                f"the default language {ctx.default_language!r} is not among `languages` "
                f"({', '.join(ctx.language_specs)}); add it there or set `language:` to one of them",
            )
        )
    for code, spec in ctx.language_specs.items():
        problems.extend(
            _Problem(("languages", code, "menu_option"), "value", message)
            for message in _template_problems(spec.menu_option, frozenset({"option", "digit"}))
        )
    return problems


def _text_problems(
    path: KeyPath,
    text: str | dict[str, str],
    allowed: frozenset[str],
    ctx: _Context,
    picked_at: str | None,
) -> list[_Problem]:
    """Template and language problems of one spoken text (a string, or a mapping per language)."""
    problems: list[_Problem] = []
    variants: list[tuple[KeyPath, str]]
    if isinstance(text, str):
        variants = [(path, text)]
        languages = ctx.languages or []
        if picked_at is not None and len(languages) > 1 and _has_words(text):
            problems.append(
                _Problem(
                    path,
                    "value",
                    f"one text for every language, but a caller can hear it after choosing a language at "
                    f"node '{picked_at}'; give it per language: {', '.join(languages)}",
                )
            )
    else:
        variants = [((*path, code), value) for code, value in text.items()]
        if ctx.languages is not None:
            for code in text:
                if code not in ctx.languages:
                    problems.append(_Problem((*path, code), "key", _undeclared_language(code, ctx)))
            missing = [code for code in ctx.languages if code not in text]
            if missing:
                problems.append(
                    _Problem(
                        path,
                        "key",
                        f"missing prompt for declared language{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(m) for m in missing)}",
                    )
                )
    for variant_path, variant in variants:
        problems.extend(_Problem(variant_path, "value", m) for m in _template_problems(variant, allowed))
    return problems


def _has_words(text: str) -> bool:
    """Whether a text has words of its own (``"{menu_options}"`` has none: it speaks every language)."""
    try:
        literal = "".join(part for part, _, _, _ in string.Formatter().parse(text))
    except ValueError:
        return True
    return any(ch.isalpha() for ch in literal)


def _goodbye_problems(node_id: str, node: Node, ctx: _Context, picked_at: str | None) -> list[_Problem]:
    """A transfer without ``after`` ends in the flow's goodbye, which must exist in every language."""
    languages = ctx.languages or []
    if not isinstance(node, TransferNode) or node.after is not None or len(languages) < 2 or picked_at is None:
        return []
    if ctx.goodbye is not None and not isinstance(ctx.goodbye, str):
        return []  # a mapping: its own check lists any missing language
    if ctx.goodbye is None:
        if all(code.split("-")[0].lower() in DEFAULT_GOODBYES for code in languages):
            return []  # the built-in goodbye speaks each of them
        why = "which is built in for English and Spanish only"
    else:
        why = "which has no text per language"
    return [
        _Problem(
            ("nodes", node_id, "after"),
            "parent",
            f"if the rep hangs up first the caller hears the flow's goodbye, {why}: "
            f"set `after:` here, or a top-level `goodbye:` for each of {', '.join(languages)}",
        )
    ]


#: Variables that exist but only in some texts, and where (for the error message).
_ONLY_IN = {
    "first_name": "in a say node's known_caller_text, or in texts reached only after a branch rule with `known: true`",
    "menu_options": "in menu prompts",
    "language_options": "in language node prompts",
    "estimated_wait": "in a transfer node's queue_message",
    "queue_position": "in a transfer node's queue_message",
    "number_ending": "in phrases.callback_booked",
}


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
            problems.append(f"placeholder {{{field}...}} has a format or conversion; write plain {{name}} placeholders")
        elif field not in allowed:
            if field == "department":
                problems.append(
                    "{department} is not available here: not every path to this node goes through a menu "
                    f"or route node that chooses a department; allowed here: {listing}"
                )
            elif field in _ONLY_IN:
                problems.append(f"{{{field}}} can only be used {_ONLY_IN[field]}; allowed here: {listing}")
            else:
                hint = suggest(field, allowed)
                close = suggest(field, _ONLY_IN)
                if not hint and close:  # a typo of a variable that is not allowed here anyway
                    name = close.split("'")[1]
                    hint = f"{close[:-1]} It can only be used {_ONLY_IN[name]}.)"
                problems.append(f"unknown template variable {{{field}}}{hint}; allowed here: {listing}")
    return problems


def _must_hold(nodes: Mapping[str, Node], start: str | None, fact: str) -> dict[str, bool]:
    """For each node: does ``fact`` certainly hold whenever a call arrives there?

    A forward "must" data-flow analysis: false at ``start``; true after an exit that always
    establishes it (``Exit.sets``); otherwise inherited from the node the exit leaves. Unreachable
    nodes stay true, so they are not held to it.
    """
    incoming: dict[str, list[tuple[str, bool]]] = {node_id: [] for node_id in nodes}
    for node_id, node in nodes.items():
        for edge in node.exits():
            if edge.target in incoming:
                incoming[edge.target].append((node_id, fact in edge.sets))
    holds = dict.fromkeys(nodes, True)
    changed = True
    while changed:  # values only ever go from True to False, so this terminates
        changed = False
        for node_id in nodes:
            value = node_id != start and all(sets or holds[source] for source, sets in incoming[node_id])
            if value != holds[node_id]:
                holds[node_id] = value
                changed = True
    return holds


def _after_language(nodes: Mapping[str, Node]) -> dict[str, str]:
    """Nodes a call can reach after a ``language`` node, each with (one such) language node's id."""
    out: dict[str, str] = {}
    for node_id, node in nodes.items():
        if not isinstance(node, LanguageNode):
            continue
        queue = [edge.target for edge in node.exits()]
        while queue:
            current = queue.pop()
            if current in out or current not in nodes:
                continue
            out[current] = node_id
            queue.extend(edge.target for edge in nodes[current].exits())
    return out


def _unreachable_problems(ctx: _Context, start: str | None) -> list[_Problem]:
    """Nodes no path from ``start`` leads to: a warning (handy while editing, but never used)."""
    if start is None or not ctx.nodes_complete:
        return []  # without every edge, "unreachable" could be wrong
    seen = {start}
    queue = [start]
    while queue:
        for edge in ctx.nodes[queue.pop()].exits():
            if edge.target in ctx.nodes and edge.target not in seen:
                seen.add(edge.target)
                queue.append(edge.target)
    return [
        _Problem(
            ("nodes", node_id),
            "key",
            f"unreachable: no path from start node '{start}' leads here, so callers never get to it",
            "warning",
        )
        for node_id in ctx.nodes
        if node_id not in seen
    ]


def _loop_problems(nodes: Mapping[str, Node]) -> list[_Problem]:
    """Cycles of nodes that need not wait for the caller: the call would spin forever."""
    passing = {node_id for node_id, node in nodes.items() if not node.ASKS_CALLER and not node.TERMINAL}
    edges = {
        node_id: [(edge.path, edge.target) for edge in nodes[node_id].exits() if edge.target in passing]
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
