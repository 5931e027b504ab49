"""The pure IVR engine: (flow, call state, caller event) -> (new call state, what to do next).

Pure on purpose: no Flask, no database, no clock, no I/O. The webhook app stores the
``CallState`` as JSON between Twilio requests, turns each request into an event, calls
:func:`advance`, and renders the returned :class:`Step` as TwiML. That keeps every decision
about the caller's path testable without Twilio, and lets a call survive a process restart
(any worker can continue any call from its stored state).

The engine walks pass-through nodes (``say``, ``route``) on its own, collecting what to say,
until it reaches a node that needs the caller (``ask``/``menu`` -> :class:`Gather`) or ends
the flow (``transfer`` -> :class:`Transfer`, ``hangup`` -> :class:`Hangup`).

It never raises on anything a caller can do (silence, odd digits, empty or huge or strange
speech). :class:`FlowRuntimeError` is only for app bugs: an event for a call that is already
finished, a state that names a node the flow does not have, or a flow that loops without ever
asking the caller (which the loader rejects, so only an unvalidated flow can do it).
"""

from __future__ import annotations

import math
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ivr_flows.schema import (
    GENERAL_DEPARTMENT,
    AskNode,
    Flow,
    HangupNode,
    MenuNode,
    Node,
    RouteNode,
    SayNode,
    TransferNode,
)

__all__ = [
    "CallState",
    "CallerFacts",
    "DigitsPressed",
    "Event",
    "FlowRuntimeError",
    "Gather",
    "Hangup",
    "NoInput",
    "SpeechHeard",
    "Step",
    "Transfer",
    "advance",
    "start_call",
]

#: Longest caller text kept in the state (and shown to the rep); the reason comes first anyway.
MAX_ISSUE_CHARS = 500
#: Speech hints per <Gather>: Twilio allows 500, but long lists slow recognition down.
MAX_HINTS = 100
#: Example phrases become hints only when short: a hint is a phrase, not a sentence.
_MAX_EXAMPLE_HINT_WORDS = 5


class FlowRuntimeError(Exception):
    """The app asked the engine something that cannot happen in a valid call (a bug, not the caller)."""


# --- state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallerFacts:
    """What the CRM knows about the caller when the call starts."""

    known: bool
    first_name: str | None = None
    tier: str | None = None


class CallState(BaseModel):
    """Everything the engine needs to continue a call; stored as JSON between webhooks.

    Round-trips with ``model_dump(mode="json")`` / ``model_validate``. Frozen, so a transition
    can only produce a new state. Unknown keys are ignored (not forbidden, unlike the flow
    models) so a state stored by a newer release still loads during a rollback.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    node: str
    #: Failed tries at the current ask/menu node.
    attempts: int = 0
    #: The caller's own words, truncated to ``MAX_ISSUE_CHARS``.
    issue_text: str | None = None
    #: How the department (or the issue) was captured: spoken, keyed, or not at all (fallback).
    capture: Literal["speech", "dtmf", "none"] | None = None
    department: str | None = None
    #: 1.0 for a keypad choice, the classifier's confidence for speech, 0.0 for a fallback.
    confidence: float | None = None
    #: Twilio's speech-recognition confidence for ``issue_text``.
    speech_confidence: float | None = None
    caller: CallerFacts
    finished: bool = False


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechHeard:
    """Twilio recognised speech (``SpeechResult`` and ``Confidence``)."""

    text: str
    confidence: float | None = None


@dataclass(frozen=True)
class DigitsPressed:
    """The caller pressed keys (``Digits``)."""

    digits: str


@dataclass(frozen=True)
class NoInput:
    """The <Gather> timed out with nothing heard or pressed."""


Event = SpeechHeard | DigitsPressed | NoInput


# --- steps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gather:
    """Ask the caller: render as ``<Gather>`` with ``prompt`` said inside it (so callers can barge in)."""

    prompt: str
    input: Literal["speech dtmf", "dtmf", "speech"]
    timeout: int
    num_digits: int | None
    hints: tuple[str, ...]
    speech_timeout: str = "auto"


@dataclass(frozen=True)
class Transfer:
    """Hand the caller to a rep or queue of ``department`` (id; ``department_name`` is how it is spoken)."""

    department: str
    department_name: str


@dataclass(frozen=True)
class Hangup:
    """End the call (after saying ``Step.say``)."""


@dataclass(frozen=True)
class Step:
    """What the app renders now: say each text in order, then perform ``action``."""

    say: tuple[str, ...]
    action: Gather | Transfer | Hangup
    language: str
    voice: str | None


# --- entry points ---------------------------------------------------------------------------


def start_call(flow: Flow, caller: CallerFacts) -> tuple[CallState, Step]:
    """The state and first step of a new call (greeting, first question)."""
    return _walk(flow, CallState(node=flow.start, caller=caller), say=[])


def advance(flow: Flow, state: CallState, event: Event) -> tuple[CallState, Step]:
    """Apply what the caller did at the node the call is waiting on; return the next step."""
    if state.finished:
        raise FlowRuntimeError(
            f"call already finished at node {state.node!r}; no more caller events expected"
        )
    node = _node(flow, state.node)
    if isinstance(node, AskNode):
        return _answer_ask(flow, state, node, event)
    if isinstance(node, MenuNode):
        return _answer_menu(flow, state, node, event)
    raise FlowRuntimeError(f"node {state.node!r} ({node.kind}) does not wait for the caller")


# --- node handlers --------------------------------------------------------------------------


def _answer_ask(flow: Flow, state: CallState, node: AskNode, event: Event) -> tuple[CallState, Step]:
    if isinstance(event, SpeechHeard):
        text = _clean_speech(event.text)
        if text:
            state = state.model_copy(
                update={
                    "issue_text": text,
                    "capture": "speech",
                    "speech_confidence": _unit_interval(event.confidence),
                    "attempts": 0,
                    "node": node.next,
                }
            )
            return _walk(flow, state, say=[])
    elif isinstance(event, DigitsPressed):
        department = _department_for_digits(flow, event.digits, tuple(flow.departments))
        if department is not None:
            state = state.model_copy(
                update={
                    "department": department,
                    "capture": "dtmf",
                    "confidence": 1.0,
                    "attempts": 0,
                    "node": node.next,
                }
            )
            return _walk(flow, state, say=[])
    elif not isinstance(event, NoInput):
        raise FlowRuntimeError(f"unknown event {event!r}")
    # Silence, blank speech or a digit that means nothing here.
    attempts = state.attempts + 1
    if attempts <= node.retries:
        state = state.model_copy(update={"attempts": attempts})
        return state, _step(flow, say=[], action=_ask_gather(flow, state, node, retry=True))
    return _walk(flow, state.model_copy(update={"attempts": 0, "node": node.on_no_input}), say=[])


def _answer_menu(flow: Flow, state: CallState, node: MenuNode, event: Event) -> tuple[CallState, Step]:
    if not isinstance(event, SpeechHeard | DigitsPressed | NoInput):
        raise FlowRuntimeError(f"unknown event {event!r}")
    offered = _menu_departments(flow, node)
    department = (
        _department_for_digits(flow, event.digits, offered) if isinstance(event, DigitsPressed) else None
    )
    if department is not None:
        update: dict[str, Any] = {"department": department, "capture": "dtmf", "confidence": 1.0}
    else:
        attempts = state.attempts + 1
        if attempts <= node.retries:
            state = state.model_copy(update={"attempts": attempts})
            return state, _step(flow, say=[], action=_menu_gather(flow, state, node, retry=True))
        update = {"department": node.fallback, "capture": "none", "confidence": 0.0}
    return _walk(flow, state.model_copy(update={**update, "attempts": 0, "node": node.next}), say=[])


def _route(flow: Flow, state: CallState, node: RouteNode) -> CallState:
    if state.department is not None:  # already chosen (a keypad digit during an ask)
        return state.model_copy(update={"node": node.next})
    result = flow.classifier.classify(state.issue_text or "")
    confidence = _unit_interval(result.confidence) or 0.0
    if confidence >= node.threshold and result.department in flow.departments:
        department = result.department
    else:
        department = node.fallback
    return state.model_copy(update={"department": department, "confidence": confidence, "node": node.next})


def _walk(flow: Flow, state: CallState, *, say: list[str]) -> tuple[CallState, Step]:
    """Follow pass-through nodes from ``state.node`` until the caller is asked or the call ends."""
    for _ in range(len(flow.nodes) + 1):
        node = _node(flow, state.node)
        if isinstance(node, SayNode):
            text = node.text
            if node.known_caller_text is not None and state.caller.known and _first_name(state):
                text = node.known_caller_text
            say.append(_render(text, _variables(flow, state)))
            state = state.model_copy(update={"node": node.next, "attempts": 0})
        elif isinstance(node, RouteNode):
            state = _route(flow, state, node)
        elif isinstance(node, AskNode):
            return state, _step(flow, say=say, action=_ask_gather(flow, state, node, retry=False))
        elif isinstance(node, MenuNode):
            return state, _step(flow, say=say, action=_menu_gather(flow, state, node, retry=False))
        elif isinstance(node, TransferNode):
            department = node.department or state.department or GENERAL_DEPARTMENT
            state = state.model_copy(update={"department": department, "finished": True})
            action = Transfer(department=department, department_name=flow.department_name(department))
            return state, _step(flow, say=say, action=action)
        elif isinstance(node, HangupNode):
            if node.text is not None:
                say.append(_render(node.text, _variables(flow, state)))
            return state.model_copy(update={"finished": True}), _step(flow, say=say, action=Hangup())
        else:  # pragma: no cover - a node kind added to the schema but not here
            raise FlowRuntimeError(f"node {state.node!r}: kind {node.kind!r} is not supported by the engine")
    raise FlowRuntimeError(
        f"walked {len(flow.nodes) + 1} nodes from {state.node!r} without asking the caller or ending the call"
    )


# --- helpers --------------------------------------------------------------------------------


def _node(flow: Flow, node_id: str) -> Node:
    node = flow.nodes.get(node_id)
    if node is None:
        raise FlowRuntimeError(f"flow {flow.name!r}@{flow.version} has no node {node_id!r}")
    return node


def _step(flow: Flow, *, say: list[str], action: Gather | Transfer | Hangup) -> Step:
    return Step(say=tuple(s for s in say if s), action=action, language=flow.language, voice=flow.voice)


def _ask_gather(flow: Flow, state: CallState, node: AskNode, *, retry: bool) -> Gather:
    text = node.reprompt if retry and node.reprompt is not None else node.prompt
    return Gather(
        prompt=_render(text, _variables(flow, state)),
        input="speech dtmf",
        timeout=node.timeout,
        num_digits=1,
        hints=_speech_hints(flow, node),
    )


def _menu_gather(flow: Flow, state: CallState, node: MenuNode, *, retry: bool) -> Gather:
    text = node.reprompt if retry and node.reprompt is not None else node.prompt
    variables = {**_variables(flow, state), "menu_options": _menu_options(flow, node)}
    return Gather(prompt=_render(text, variables), input="dtmf", timeout=node.timeout, num_digits=1, hints=())


def _menu_departments(flow: Flow, node: MenuNode) -> tuple[str, ...]:
    return node.departments if node.departments is not None else tuple(flow.departments)


def _menu_options(flow: Flow, node: MenuNode) -> str:
    """``For billing, press 1. For technical support, press 2.`` for the menu's departments."""
    parts = []
    for key in _menu_departments(flow, node):
        department = flow.departments.get(key)
        if department is not None:
            parts.append(f"For {flow.department_name(key)}, press {department.digit}.")
    return " ".join(parts)


def _department_for_digits(flow: Flow, digits: str, allowed: tuple[str, ...]) -> str | None:
    pressed = digits.strip() if isinstance(digits, str) else ""
    for key in allowed:
        department = flow.departments.get(key)
        if department is not None and department.digit == pressed:
            return key
    return None


def _speech_hints(flow: Flow, node: AskNode) -> tuple[str, ...]:
    """The ask's own hints, then department names, then short example phrases; deduplicated."""
    candidates = [*node.hints, *(flow.department_name(key) for key in flow.departments)]
    for department in flow.departments.values():
        candidates.extend(e for e in department.examples if len(e.split()) <= _MAX_EXAMPLE_HINT_WORDS)
    hints: dict[str, str] = {}
    for candidate in candidates:
        hint = candidate.replace(",", " ").strip()[:100]
        if hint and hint.casefold() not in hints:
            hints[hint.casefold()] = hint
    return tuple(hints.values())[:MAX_HINTS]


def _first_name(state: CallState) -> str | None:
    name = state.caller.first_name
    return (name.strip() or None) if isinstance(name, str) else None


def _variables(flow: Flow, state: CallState) -> dict[str, str]:
    return {
        "company": flow.company,
        "first_name": _first_name(state) or "",
        "department": flow.department_name(state.department) if state.department else "",
    }


class _LenientFormatter(string.Formatter):
    """``str.format`` for whole-name placeholders only; a missing variable renders as ""."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        # No attribute or index access ("{company.__class__}"): look the whole name up.
        return kwargs.get(field_name, ""), field_name


_FORMATTER = _LenientFormatter()


def _render(template: str, variables: Mapping[str, str]) -> str:
    """Fill ``{variable}``s; never raises (the loader already checked the templates)."""
    try:
        return _FORMATTER.vformat(template, (), dict(variables)).strip()
    except (ValueError, TypeError, KeyError, IndexError):
        return template.strip()


def _clean_speech(text: object) -> str:
    """Printable, whitespace-collapsed, bounded caller text ("" if there is nothing in it)."""
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFC", text[: MAX_ISSUE_CHARS * 4])
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = " ".join(text.split())
    if len(text) > MAX_ISSUE_CHARS:
        cut = text[:MAX_ISSUE_CHARS]
        text = cut.rsplit(" ", 1)[0] if " " in cut[MAX_ISSUE_CHARS // 2 :] else cut
    return text


def _unit_interval(value: object) -> float | None:
    """Clamp a confidence to [0, 1]; None for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, float(value)))
