"""YAML read with its positions kept, and pydantic's errors said in words at those positions.

Shared by every YAML file people edit by hand and Warmline validates with pydantic: flow files
(:mod:`ivr_flows.loader`) and ``config.yaml`` (:mod:`voice.config`). It lives here because ``ivr_flows`` may not
import ``voice``, while ``voice`` builds on ``ivr_flows``; nothing in it knows about flows.

How positions are found (the approach Dagster uses for its YAML configs): the text is *composed* with PyYAML into
a node tree, which keeps the line and column of every key and value, and the tree is indexed by key path
(``("routing", "wrap_up")``). Pydantic's ``ValidationError`` locations are key paths too, so each error is looked
up in that index: a bad value points at the value, an unknown key at the key, a missing key at the mapping that
should contain it.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic_core import ErrorDetails

__all__ = [
    "At",
    "Composed",
    "KeyPath",
    "LenientSafeLoader",
    "PositionIndex",
    "YamlSyntaxError",
    "allowed_keys",
    "compose",
    "describe",
    "duplicate_keys",
    "explain",
    "nested_model",
    "suggest",
]

#: A place in a YAML document: mapping keys and sequence indexes from the top.
KeyPath = tuple[str | int, ...]

#: Where on a key path a problem points: at the value, at the key itself, or at the mapping that holds the key
#: (for a key that is missing).
At = Literal["value", "key", "parent"]


class LenientSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a date-like scalar that is no date stays text.

    PyYAML resolves ``2025-13-01`` as a timestamp and then raises a bare ``ValueError`` with no position; kept as
    text, the schema reports it at its line and column like any bad value.
    """

    def construct_lenient_timestamp(self, node: yaml.ScalarNode) -> object:
        try:
            return self.construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


LenientSafeLoader.add_constructor("tag:yaml.org,2002:timestamp", LenientSafeLoader.construct_lenient_timestamp)


class YamlSyntaxError(Exception):
    """The text is not YAML (or not one document); ``line`` and ``col`` are 1-based."""

    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(f"{line}:{col}: {message}")
        self.line, self.col, self.message = line, col, message


@dataclass(frozen=True)
class Composed:
    """One YAML document: its node tree (``None`` when the text holds no document), the Python data built from
    it, and its duplicate keys (path, message), which PyYAML would otherwise silently resolve to the last one."""

    root: yaml.Node | None
    data: Any
    duplicates: list[tuple[KeyPath, str]]


def compose(text: str) -> Composed:
    """Parse ``text`` into a node tree and data; raise :class:`YamlSyntaxError` when it is not YAML."""
    loader = LenientSafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Composed(None, None, [])
        # Before construction: merge keys (`<<: *base`) are still visible as such here, so a key that overrides a
        # merged one is not mistaken for a duplicate.
        duplicates = list(duplicate_keys(root))
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise YamlSyntaxError(line, col, f"character {exc.character!r} is not allowed in YAML") from None
    except yaml.YAMLError as exc:  # anything else PyYAML can raise carries no position
        raise YamlSyntaxError(1, 1, f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    return Composed(root, data, duplicates)


def _syntax_error(exc: yaml.MarkedYAMLError) -> YamlSyntaxError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    # PyYAML's context reads as the first half of a sentence ("while parsing a flow sequence", "expected a single
    # document in the stream") and the problem as the second.
    message = f"YAML syntax error: {exc.problem or exc.context or 'cannot parse'}"
    if exc.context and exc.problem and exc.context_mark is not None:
        message = f"YAML syntax error: {exc.context} at line {exc.context_mark.line + 1}, {exc.problem}"
    return YamlSyntaxError(line, col, message)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def duplicate_keys(
    node: yaml.Node, path: KeyPath = (), _stack: frozenset[int] = frozenset()
) -> Iterator[tuple[KeyPath, str]]:
    """Every key given twice in one mapping, as (its path, what is wrong), at its second occurrence."""
    if id(node) in _stack:  # a recursive alias; the schema will reject the structure itself
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
                yield (
                    (*path, key_node.value),
                    f"duplicate key: already defined at line {first.start_mark.line + 1}; "
                    "YAML would silently keep only this last one",
                )
            seen[key_id] = key_node
            yield from duplicate_keys(value_node, (*path, key_node.value), stack)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from duplicate_keys(item, (*path, i), stack)


@dataclass(frozen=True)
class _Entry:
    key: tuple[int, int] | None  # where the key is written; None for sequence items and the root
    value: tuple[int, int]


class PositionIndex:
    """Key path -> 1-based (line, col) of the key and of its value in the composed YAML."""

    def __init__(self, root: yaml.Node | None) -> None:
        self._entries: dict[KeyPath, _Entry] = {}
        self._sequences: set[KeyPath] = set()
        self._constructor = yaml.constructor.SafeConstructor()
        if root is not None:
            self._walk(root, (), None, frozenset())

    @staticmethod
    def _mark(node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def _walk(self, node: yaml.Node, path: KeyPath, key: tuple[int, int] | None, stack: frozenset[int]) -> None:
        self._entries[path] = _Entry(key, self._mark(node))
        if id(node) in stack:
            return
        stack = stack | {id(node)}
        if isinstance(node, yaml.MappingNode):
            # After construction, merge keys have been flattened into node.value; later pairs win, as they do in
            # the constructed data.
            for key_node, value_node in node.value:
                try:
                    python_key = self._constructor.construct_object(key_node, deep=True)
                    hash(python_key)
                except (yaml.YAMLError, TypeError, ValueError):
                    continue
                self._walk(value_node, (*path, python_key), self._mark(key_node), stack)
        elif isinstance(node, yaml.SequenceNode):
            self._sequences.add(path)
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i), None, stack)

    def __contains__(self, path: KeyPath) -> bool:
        return path in self._entries

    def position(self, path: KeyPath, at: At) -> tuple[int, int]:
        if at == "parent":
            path, at = path[:-1], "value"
        while path not in self._entries and path:
            path, at = path[:-1], "value"  # not in the file (e.g. missing): point at the nearest parent
        entry = self._entries.get(path)
        if entry is None:
            return 1, 1
        return entry.key if at == "key" and entry.key is not None else entry.value

    def format_key(self, path: KeyPath, start: int = 0) -> str:
        """``("hints", 2)`` -> ``"hints[2]"``; sequence indexes in brackets, keys dotted."""
        out = ""
        for i in range(start, len(path)):
            segment = path[i]
            if path[:i] in self._sequences and isinstance(segment, int):
                out += f"[{segment}]"
            else:
                out += ("." if out else "") + str(segment)
        return out


# --- pydantic's errors in words ---------------------------------------------------------------------------------------

_EXPECTED = {
    "string_type": "expected text",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "dict_type": "expected a mapping of keys",
    "model_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
}


def explain(error: ErrorDetails, path: KeyPath, at: At, *, allowed: Sequence[str] = ()) -> tuple[KeyPath, At, str]:
    """One pydantic error as (where it points, at what, what is wrong in words). ``path`` and ``at``: the error's
    location as the caller read it from ``error["loc"]``; ``allowed``: the keys valid beside an unknown one."""
    kind, ctx, value = error["type"], error.get("ctx", {}), error["input"]
    if kind == "missing":
        return path, "parent", "required key is missing"
    if kind == "extra_forbidden":
        message = "unknown key" + suggest(str(path[-1]), allowed)
        if allowed:
            message += f"; allowed keys: {', '.join(allowed)}"
        return path, "key", message
    if kind in ("value_error", "assertion_error"):
        return path, at, str(ctx.get("error", error["msg"]))
    if kind == "too_short":
        return path, at, "must not be empty"
    if kind == "too_long":
        return path, at, f"too many items (at most {ctx.get('max_length')})"
    if kind == "greater_than_equal":
        message = f"must be at least {ctx.get('ge')}"
    elif kind == "less_than_equal":
        message = f"must be at most {ctx.get('le')}"
    elif kind in _EXPECTED:
        message = _EXPECTED[kind]
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    return path, at, f"{message}, got {describe(value)}"


def allowed_keys(model: type[BaseModel], parent: KeyPath) -> list[str]:
    """The keys the model at ``parent`` (a path from ``model``) accepts, for "did you mean" suggestions; through
    nested models and the values of mappings of models (``departments: {billing: {...}}``)."""
    current: type[BaseModel] | None = model
    mapping_key_next = False
    for segment in parent:
        if current is None:
            break
        if mapping_key_next:  # a key of a mapping of models: the model stays the same
            mapping_key_next = False
            continue
        field = current.model_fields.get(str(segment))
        if field is None:
            return []
        mapping_key_next = typing.get_origin(field.annotation) is dict
        current = nested_model(field.annotation)
    return list(current.model_fields) if current is not None and not mapping_key_next else []


def nested_model(annotation: object) -> type[BaseModel] | None:
    """The model class inside a field's type (``tuple[MenuChoice, ...] | None`` -> MenuChoice)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = nested_model(arg)
        if found is not None:
            return found
    return None


def describe(value: object) -> str:
    """A value as an error message quotes it: short, and saying what it is."""
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


def suggest(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or nothing."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
