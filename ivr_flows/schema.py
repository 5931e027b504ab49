"""Pydantic models of the IVR flow language (the shape of a ``ivr_flows/*.yaml`` file).

The models only check *shape*: types, required keys, ranges. Cross-references (does ``next``
name an existing node? is the department defined? are the template variables allowed?) are
checked by :mod:`ivr_flows.loader`, because only the loader knows where in the YAML file each
value came from and can report the problem with a ``file:line:col``. Always build a
:class:`Flow` with :func:`ivr_flows.loader.load_flow` / :func:`~ivr_flows.loader.parse_flow`;
``Flow.model_validate`` alone skips those checks.

Every model is ``extra="forbid"`` (a typo'd key is an error, not silently ignored, so an admin
never ships a flow whose ``on_no_imput`` does nothing) and ``frozen`` (one ``Flow`` is shared by
every concurrent call in the webhook process; nothing may change it).

Adding a node kind: write a ``_NodeBase`` subclass with a ``kind: Literal[...]`` tag, implement
the hooks it needs (``exits``, ``department_refs``, ``templates``, class flags), add it to
:data:`Node` and :data:`NODE_KINDS`, and teach ``engine._walk`` (or ``advance``) what it does.
The loader's reference, template, loop and data-flow checks work off the hooks alone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr

from ivr_flows.classifier import Classifier, TfidfClassifier

__all__ = [
    "GENERAL_DEPARTMENT",
    "NODE_KINDS",
    "AskNode",
    "Department",
    "Flow",
    "HangupNode",
    "KeyPath",
    "MenuNode",
    "Node",
    "RouteNode",
    "SayNode",
    "TransferNode",
]

#: The department every flow must define: the fallback when nothing else fits.
GENERAL_DEPARTMENT = "general"

#: A path into the YAML document relative to some mapping, e.g. ``("hints", 2)``.
KeyPath = tuple[str | int, ...]

# Twilio <Gather hints>: at most 500 phrases of at most 100 characters, comma-separated on the
# wire. Leave room for the department names and example phrases the engine adds.
MAX_ADMIN_HINTS = 300
MAX_HINT_CHARS = 100

_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_DEPARTMENT_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


# --- reusable field types -------------------------------------------------------------------


def _node_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid node name: use letters, digits, '_' or '-', starting with a letter"
        )
    return value


def _department_id(value: str) -> str:
    # Department ids double as the reps' skill names in the database, so keep them boring.
    if not _DEPARTMENT_ID_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid department id: use lower-case letters, digits and '_', "
            "starting with a letter (e.g. technical_support)"
        )
    return value


def _keypad_digit(value: object) -> object:
    """Accept ``digit: 1`` as well as ``digit: "1"``: YAML turns a bare 1 into an int."""
    if isinstance(value, bool):  # YAML 1.1 reads `yes`/`no`/`on`/`off` as booleans
        raise ValueError(f'must be a single keypad digit "0"-"9", got {str(value).lower()}')
    if isinstance(value, int) and 0 <= value <= 9:
        return str(value)
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().isdigit():
        return value.strip()
    raise ValueError(f'must be a single keypad digit "0"-"9", got {value!r}')


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _hint(value: str) -> str:
    value = _non_blank(value)
    if "," in value:
        # Twilio receives hints as one comma-separated string; a comma would split this one.
        raise ValueError(f"speech hints must not contain commas, got {value!r}")
    if len(value) > MAX_HINT_CHARS:
        raise ValueError(f"speech hints are at most {MAX_HINT_CHARS} characters, this one has {len(value)}")
    return value


def _language(value: str) -> str:
    if not _LANGUAGE_RE.match(value):
        raise ValueError(f"must be a language tag such as en-US or es-MX, got {value!r}")
    return value


NodeId = Annotated[str, AfterValidator(_node_id)]
DepartmentId = Annotated[str, AfterValidator(_department_id)]
Digit = Annotated[str, BeforeValidator(_keypad_digit)]
Text = Annotated[str, AfterValidator(_non_blank)]
Hint = Annotated[str, AfterValidator(_hint)]
Language = Annotated[str, AfterValidator(_language)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- departments ----------------------------------------------------------------------------


class Department(_Model):
    """A team that calls can be transferred to; its id (the mapping key) is the reps' skill."""

    #: How the department is spoken ("transferring you to technical support"). Defaults to the
    #: id with underscores as spaces; see :meth:`Flow.department_name`.
    name: Text | None = None
    #: Keypad digit offered by menus and accepted during open questions.
    digit: Digit
    #: Typical caller phrasings; the speech classifier learns from these.
    examples: tuple[Text, ...] = ()


# --- nodes ----------------------------------------------------------------------------------


class _NodeBase(_Model):
    """Hooks the loader and engine use, so a new node kind only has to describe itself."""

    #: The engine stops and waits for the caller at this node (renders a <Gather>).
    ASKS_CALLER: ClassVar[bool] = False
    #: The call ends at this node (transfer or hangup); it has no exits.
    TERMINAL: ClassVar[bool] = False
    #: Exit keys that are only taken after a department has been chosen.
    SETS_DEPARTMENT_ON: ClassVar[frozenset[str]] = frozenset()

    def exits(self) -> list[tuple[KeyPath, str]]:
        """(key path, target node id) for every edge out of this node."""
        return []

    def department_refs(self) -> list[tuple[KeyPath, str]]:
        """(key path, department id) for every department this node names."""
        return []

    def templates(self) -> list[tuple[KeyPath, str, frozenset[str]]]:
        """(key path, template text, variables always allowed there) for every spoken text.

        ``{department}`` is not listed: the loader allows it wherever a department is certainly
        chosen on every path into the node.
        """
        return []


_COMMON_VARIABLES = frozenset({"company"})


class SayNode(_NodeBase):
    """Speak a text and move on without waiting for the caller."""

    kind: Literal["say"]
    text: Text
    #: Used instead of ``text`` when the caller is recognised and their first name is known.
    known_caller_text: Text | None = None
    next: NodeId

    def exits(self) -> list[tuple[KeyPath, str]]:
        return [(("next",), self.next)]

    def templates(self) -> list[tuple[KeyPath, str, frozenset[str]]]:
        out: list[tuple[KeyPath, str, frozenset[str]]] = [(("text",), self.text, _COMMON_VARIABLES)]
        if self.known_caller_text is not None:
            out.append((("known_caller_text",), self.known_caller_text, _COMMON_VARIABLES | {"first_name"}))
        return out


class AskNode(_NodeBase):
    """Open question: the caller may speak, or press a department's digit."""

    ASKS_CALLER: ClassVar[bool] = True

    kind: Literal["ask"]
    prompt: Text
    #: Said instead of ``prompt`` on a retry; defaults to the prompt.
    reprompt: Text | None = None
    #: How many times to ask again after silence / nothing understood / an unknown digit.
    retries: int = Field(default=1, ge=0, le=5)
    #: Seconds of silence Twilio waits before giving up on the caller.
    timeout: int = Field(default=5, ge=1, le=60)
    #: Extra phrases for Twilio's speech recogniser (product names, jargon).
    hints: tuple[Hint, ...] = Field(default=(), max_length=MAX_ADMIN_HINTS)
    on_no_input: NodeId
    next: NodeId

    def exits(self) -> list[tuple[KeyPath, str]]:
        return [(("next",), self.next), (("on_no_input",), self.on_no_input)]

    def templates(self) -> list[tuple[KeyPath, str, frozenset[str]]]:
        out: list[tuple[KeyPath, str, frozenset[str]]] = [(("prompt",), self.prompt, _COMMON_VARIABLES)]
        if self.reprompt is not None:
            out.append((("reprompt",), self.reprompt, _COMMON_VARIABLES))
        return out


class MenuNode(_NodeBase):
    """Keypad menu over the departments' digits; always ends with a department chosen."""

    ASKS_CALLER: ClassVar[bool] = True
    SETS_DEPARTMENT_ON: ClassVar[frozenset[str]] = frozenset({"next"})

    kind: Literal["menu"]
    prompt: Text
    #: Said instead of ``prompt`` on a retry; defaults to the prompt.
    reprompt: Text | None = None
    #: Which departments to offer, in this order; default: all, in definition order.
    departments: tuple[DepartmentId, ...] | None = Field(default=None, min_length=1)
    retries: int = Field(default=0, ge=0, le=5)
    timeout: int = Field(default=5, ge=1, le=60)
    #: Department chosen when the caller presses nothing valid before the retries run out.
    fallback: DepartmentId
    next: NodeId

    def exits(self) -> list[tuple[KeyPath, str]]:
        return [(("next",), self.next)]

    def department_refs(self) -> list[tuple[KeyPath, str]]:
        refs: list[tuple[KeyPath, str]] = [
            (("departments", i), d) for i, d in enumerate(self.departments or ())
        ]
        refs.append((("fallback",), self.fallback))
        return refs

    def templates(self) -> list[tuple[KeyPath, str, frozenset[str]]]:
        allowed = _COMMON_VARIABLES | {"menu_options"}
        out: list[tuple[KeyPath, str, frozenset[str]]] = [(("prompt",), self.prompt, allowed)]
        if self.reprompt is not None:
            out.append((("reprompt",), self.reprompt, allowed))
        return out


class RouteNode(_NodeBase):
    """Classify the caller's words into a department (unless one is already chosen)."""

    SETS_DEPARTMENT_ON: ClassVar[frozenset[str]] = frozenset({"next"})

    kind: Literal["route"]
    #: Minimum classifier confidence (0-1) to trust its answer; below it, ``fallback`` is used.
    threshold: float = Field(ge=0.0, le=1.0)
    fallback: DepartmentId
    next: NodeId

    def exits(self) -> list[tuple[KeyPath, str]]:
        return [(("next",), self.next)]

    def department_refs(self) -> list[tuple[KeyPath, str]]:
        return [(("fallback",), self.fallback)]


class TransferNode(_NodeBase):
    """Hand the call to the app, which picks a rep or queue for the department."""

    TERMINAL: ClassVar[bool] = True

    kind: Literal["transfer"]
    #: Fixed department; default: the one chosen earlier in the call.
    department: DepartmentId | None = None

    def department_refs(self) -> list[tuple[KeyPath, str]]:
        return [] if self.department is None else [(("department",), self.department)]


class HangupNode(_NodeBase):
    """Optionally say something, then end the call."""

    TERMINAL: ClassVar[bool] = True

    kind: Literal["hangup"]
    text: Text | None = None

    def templates(self) -> list[tuple[KeyPath, str, frozenset[str]]]:
        return [] if self.text is None else [(("text",), self.text, _COMMON_VARIABLES)]


#: Any node; pydantic picks the class from the ``kind`` key.
Node = Annotated[
    SayNode | AskNode | MenuNode | RouteNode | TransferNode | HangupNode,
    Field(discriminator="kind"),
]

#: kind tag -> node class, in the order they are documented.
NODE_KINDS: Mapping[str, type[_NodeBase]] = {
    "say": SayNode,
    "ask": AskNode,
    "menu": MenuNode,
    "route": RouteNode,
    "transfer": TransferNode,
    "hangup": HangupNode,
}

# --- the flow -------------------------------------------------------------------------------


class Flow(_Model):
    """One validated call flow. Shared read-only by every call; build it with the loader."""

    #: Identifies the flow in logs and stored call states; the loader defaults it to the file stem.
    name: Text = "flow"
    company: Text
    language: Language = "en-US"
    voice: Text | None = None
    start: NodeId
    departments: dict[DepartmentId, Department] = Field(min_length=1)
    nodes: dict[NodeId, Node] = Field(min_length=1)

    _source: str = PrivateAttr(default="<memory>")
    _version: str | None = PrivateAttr(default=None)
    _classifier: Classifier | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        """Where the flow was loaded from (the path as given to the loader)."""
        return self._source

    @property
    def version(self) -> str:
        """First 12 hex digits of the SHA-256 of the file bytes: tells which flow a call ran."""
        if self._version is None:
            # Built without the loader (tests): hash the canonical JSON instead of the file.
            self._version = hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]
        return self._version

    @property
    def classifier(self) -> Classifier:
        """The speech classifier for this flow's departments, built once and then reused.

        The loader builds it eagerly so the first caller does not pay for it; building twice
        under a race is harmless (same result, last write wins).
        """
        if self._classifier is None:
            self._classifier = TfidfClassifier(
                {key: (self.department_name(key), *dept.examples) for key, dept in self.departments.items()},
                default=GENERAL_DEPARTMENT if GENERAL_DEPARTMENT in self.departments else None,
            )
        return self._classifier

    def with_classifier(self, classifier: Classifier) -> Flow:
        """A copy of this flow that routes speech with another :class:`Classifier`."""
        copy = self.model_copy()
        copy._classifier = classifier
        return copy

    def department_name(self, key: str) -> str:
        """How department ``key`` is spoken; an unknown key is humanised rather than raising,
        because this runs on the caller's path (e.g. a call state stored by an older flow)."""
        dept = self.departments.get(key)
        if dept is not None and dept.name is not None:
            return dept.name
        return key.replace("_", " ")

    def _attach(self, *, source: str, version: str) -> None:
        """Record provenance; called by the loader right after validation."""
        self._source = source
        self._version = version
