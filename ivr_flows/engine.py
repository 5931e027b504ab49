"""The pure IVR engine: (flow, call state, caller event, time) -> (new call state, what to do next).

Pure on purpose: no Flask, no database, no clock, no I/O. The webhook app stores the
``CallState`` as JSON between Twilio requests, turns each request into an event, calls
:func:`advance` with the current time, and renders the returned :class:`Step` as TwiML. That
keeps every decision about the caller's path testable without Twilio (and at any time of day),
and lets a call survive a process restart (any worker can continue any call from its stored
state).

The engine walks pass-through nodes (``say``, ``route``, ``branch``, ``hours``, ``goto``, and a
``language`` node whose answer the CRM already knows) on its own, collecting what to say, until
it reaches a node that needs the caller (``ask``/``menu``/``language``/``survey`` ->
:class:`Gather`, ``voicemail`` -> :class:`Record`) or hands the call off (``transfer`` ->
:class:`Transfer`) or ends it (``hangup`` -> :class:`Hangup`).

It never raises on anything a caller can do (silence, odd digits, empty or huge or strange
speech, an empty recording). :class:`FlowRuntimeError` is only for app bugs: an event for a call
that is already finished, a state that names a node the flow does not have, a missing or naive
``now`` where the flow needs the time, or a flow that loops without ever asking the caller
(which the loader rejects, so only an unvalidated flow can do it).
"""

from __future__ import annotations

import math
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ivr_flows.routing.base import Classifier
from ivr_flows.schema import (
    BUILTIN_PHRASES,
    GENERAL_DEPARTMENT,
    AskNode,
    BranchNode,
    Condition,
    Flow,
    GotoNode,
    HangupNode,
    HoursNode,
    LanguageNode,
    LanguageSpec,
    MenuChoice,
    MenuNode,
    Node,
    RouteNode,
    SayNode,
    SurveyNode,
    TransferNode,
    VoicemailNode,
    localized,
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
    "Record",
    "Recorded",
    "SpeechHeard",
    "Step",
    "Transfer",
    "TransferEnded",
    "advance",
    "fill_queue_message",
    "queue_message",
    "start_call",
]

#: Longest caller text kept in the state (and shown to the rep); the reason comes first anyway.
MAX_ISSUE_CHARS = 500
#: Speech hints per <Gather>: Twilio allows 500, but long lists slow recognition down.
MAX_HINTS = 100
#: Example phrases become hints only when short: a hint is a phrase, not a sentence.
_MAX_EXAMPLE_HINT_WORDS = 5
#: Filled in by the app, not the engine: left in a transfer's ``queue_message`` as placeholders.
QUEUE_VARIABLES = ("estimated_wait", "queue_position")


class FlowRuntimeError(Exception):
    """The app asked the engine something that cannot happen in a valid call (a bug, not the caller)."""


# --- state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallerFacts:
    """What the CRM knows about the caller when the call starts (``branch`` nodes decide on it)."""

    known: bool
    first_name: str | None = None
    tier: str | None = None
    #: The caller's preferred language tag from the CRM (``es-MX``, or just ``es``).
    language: str | None = None
    open_case: bool = False
    #: Days since the caller's previous contact; None for a first contact.
    days_since_last_contact: int | None = None
    #: Where the call comes from, as the carrier says (Twilio's ``FromCity``), for the rep's whisper; None if unsaid.
    city: str | None = None
    #: Custom CRM fields as text. Excluded from the hash (a dict cannot be hashed); equality
    #: still compares it.
    custom: Mapping[str, str] = field(default_factory=dict, hash=False)


#: Where states stored by older releases kept the caller's city (beside the engine's own keys).
_LEGACY_CITY_KEY = "_caller_city"


class CallState(BaseModel):
    """Everything the engine needs to continue a call; stored as JSON between webhooks.

    Round-trips with ``model_dump(mode="json")`` / ``model_validate``. Frozen, so a transition
    can only produce a new state. Unknown keys are ignored (not forbidden, unlike the flow
    models) so a state stored by a newer release still loads during a rollback; every field
    added since has a default, so an older state loads too.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _city_from_older_states(cls, data: Any) -> Any:
        """States stored before :attr:`CallerFacts.city` kept the city beside the state, as ``_caller_city``: it
        becomes the caller's city (unless the caller already has one), so a call in progress across the upgrade
        keeps it."""
        if not isinstance(data, Mapping) or _LEGACY_CITY_KEY not in data:
            return data
        data = dict(data)
        city = data.pop(_LEGACY_CITY_KEY)
        caller = data.get("caller")
        if isinstance(city, str) and city:
            if isinstance(caller, Mapping) and not caller.get("city"):
                data["caller"] = {**caller, "city": city}
            elif isinstance(caller, CallerFacts) and not caller.city:
                data["caller"] = replace(caller, city=city)
        return data

    node: str
    #: Failed tries at the current ask/menu/language node.
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
    #: The flow has handed the call off (transfer) or ended it (hangup). Only ``TransferEnded``
    #: at a transfer continues a finished call.
    finished: bool = False
    #: The language chosen at a ``language`` node; None: the flow's default language.
    language: str | None = None
    #: Survey answers: question id -> key pressed (unanswered questions are absent).
    survey: dict[str, str] = Field(default_factory=dict)
    #: The voicemail's recording, once ``Recorded``.
    recording_url: str | None = None
    #: Index of the survey question being asked, at a survey node.
    question: int = 0


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
    """The <Gather> timed out with nothing heard or pressed (or the <Record> got nothing)."""


@dataclass(frozen=True)
class Recorded:
    """The voicemail's <Record> finished (``RecordingUrl``, ``RecordingDuration``)."""

    recording_url: str
    duration_seconds: int


@dataclass(frozen=True)
class TransferEnded:
    """The rep's side of a transfer ended and the caller is still on the line."""


Event = SpeechHeard | DigitsPressed | NoInput | Recorded | TransferEnded


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
    """Hand the caller to a rep or queue of ``department`` (id; ``department_name`` is how it is spoken).

    ``after``: the flow continues when the rep hangs up first (send :class:`TransferEnded`).
    ``queue_message``: said while the caller waits in line, already rendered except for
    ``{estimated_wait}`` and ``{queue_position}``, which :func:`fill_queue_message` fills in.
    """

    department: str
    department_name: str
    after: bool = False
    queue_message: str | None = None


@dataclass(frozen=True)
class Hangup:
    """End the call (after saying ``Step.say``)."""


@dataclass(frozen=True)
class Record:
    """Record a message: render as ``<Record>`` after saying ``Step.say``; then send :class:`Recorded`.

    ``prompt_said_already``: the instructions are in ``Step.say``; the app adds nothing but the beep.
    ``reason``: why the caller is leaving a message, for the follow-up task it becomes.
    ``no_message``: said (in the step's language) when the caller leaves no message and Twilio goes on.
    """

    prompt_said_already: bool = True
    max_length: int = 120
    transcribe: bool = True
    reason: Literal["voicemail", "after_hours"] = "voicemail"
    no_message: str = BUILTIN_PHRASES["no_message"]["en"]


@dataclass(frozen=True)
class Step:
    """What the app renders now: say each text in order, then perform ``action``.

    ``language`` and ``voice`` are the call's current language (chosen at a ``language`` node,
    else the flow's default) and its voice: use them for every ``<Say>`` and ``<Gather language>``.
    """

    say: tuple[str, ...]
    action: Gather | Transfer | Hangup | Record
    language: str
    voice: str | None


# --- entry points ---------------------------------------------------------------------------


def start_call(
    flow: Flow, caller: CallerFacts, *, now: datetime | None = None, classifier: Classifier
) -> tuple[CallState, Step]:
    """The state and first step of a new call (greeting, first question).

    ``now`` (timezone-aware) is needed by ``hours`` nodes; a flow without one may leave it out. ``classifier`` routes
    the caller's words at ``route`` nodes: the caller builds it for the flow (``ivr_flows.routing.factory``) and
    keeps it; the engine only asks it.
    """
    return _walk(flow, CallState(node=flow.start, caller=caller), say=[], now=now, classifier=classifier)


def advance(
    flow: Flow, state: CallState, event: Event, *, now: datetime | None = None, classifier: Classifier
) -> tuple[CallState, Step]:
    """Apply what happened at the node the call is waiting on; return the next step (``now`` and ``classifier`` as
    for :func:`start_call`: the same classifier for the whole call)."""
    if isinstance(event, TransferEnded):
        node = _node(flow, state.node)
        if not (state.finished and isinstance(node, TransferNode)):
            raise FlowRuntimeError(f"TransferEnded at node {state.node!r}, which is not a finished transfer")
        return _after_transfer(flow, state, node, now=now, classifier=classifier)
    if state.finished:
        raise FlowRuntimeError(f"call already finished at node {state.node!r}; no more caller events expected")
    node = _node(flow, state.node)
    if isinstance(node, AskNode):
        return _answer_ask(flow, state, node, event, now=now, classifier=classifier)
    if isinstance(node, MenuNode):
        return _answer_menu(flow, state, node, event, now=now, classifier=classifier)
    if isinstance(node, LanguageNode):
        return _answer_language(flow, state, node, event, now=now, classifier=classifier)
    if isinstance(node, VoicemailNode):
        return _answer_voicemail(flow, state, node, event, now=now, classifier=classifier)
    if isinstance(node, SurveyNode):
        return _answer_survey(flow, state, node, event, now=now, classifier=classifier)
    raise FlowRuntimeError(f"node {state.node!r} ({node.kind}) does not wait for the caller")


def queue_message(flow: Flow, state: CallState) -> str | None:
    """The queue message of the transfer the call stands at, rendered except for the queue variables (see
    :attr:`Transfer.queue_message`); None when the call is not at a transfer or it has none."""
    node = flow.nodes.get(state.node)
    if not isinstance(node, TransferNode) or node.queue_message is None:
        return None
    return _render(_localize(flow, state, node.queue_message), _variables(flow, state), keep=True)


def fill_queue_message(text: str, *, estimated_wait: str, queue_position: int | str) -> str:
    """Fill a :attr:`Transfer.queue_message`'s ``{estimated_wait}`` and ``{queue_position}``; never raises."""
    return _render(text, {"estimated_wait": str(estimated_wait), "queue_position": str(queue_position)})


# --- node handlers --------------------------------------------------------------------------


def _answer_ask(
    flow: Flow, state: CallState, node: AskNode, event: Event, *, now: datetime | None, classifier: Classifier
) -> tuple[CallState, Step]:
    no_match = False
    if isinstance(event, SpeechHeard):
        text = _clean_speech(event.text)
        if text and node.input != "keypad":
            state = state.model_copy(
                update={
                    "issue_text": text,
                    "capture": "speech",
                    "speech_confidence": _unit_interval(event.confidence),
                    "attempts": 0,
                    "node": node.next,
                }
            )
            return _walk(flow, state, say=[], now=now, classifier=classifier)
        no_match = bool(text)
    elif isinstance(event, DigitsPressed):
        department = _department_for_digits(flow, event.digits, tuple(flow.departments))
        if department is not None and node.input != "speech":
            state = state.model_copy(
                update={
                    "department": department,
                    "capture": "dtmf",
                    "confidence": 1.0,
                    "attempts": 0,
                    "node": node.next,
                }
            )
            return _walk(flow, state, say=[], now=now, classifier=classifier)
        no_match = bool(event.digits.strip()) if isinstance(event.digits, str) else False
    elif not isinstance(event, NoInput):
        raise FlowRuntimeError(f"unexpected event {event!r} at ask node {state.node!r}")
    # Silence, blank speech, or something that means nothing here.
    attempts = state.attempts + 1
    if attempts <= node.retries:
        state = state.model_copy(update={"attempts": attempts})
        return state, _step(flow, state, say=[], action=_ask_gather(flow, state, node, retry=True))
    target = node.on_no_match if no_match and node.on_no_match is not None else node.on_no_input
    return _walk(flow, state.model_copy(update={"attempts": 0, "node": target}), say=[], now=now, classifier=classifier)


def _answer_menu(
    flow: Flow, state: CallState, node: MenuNode, event: Event, *, now: datetime | None, classifier: Classifier
) -> tuple[CallState, Step]:
    if not isinstance(event, SpeechHeard | DigitsPressed | NoInput):
        raise FlowRuntimeError(f"unexpected event {event!r} at menu node {state.node!r}")
    pressed = event.digits.strip() if isinstance(event, DigitsPressed) and isinstance(event.digits, str) else ""
    update: dict[str, Any]
    target = node.next
    choice = _menu_choice(flow, node, pressed) if pressed else None
    if choice is not None:
        update = {"department": choice.department, "capture": "dtmf", "confidence": 1.0}
        if choice.department is None:
            update = {}
        target = choice.next or node.next
    else:
        attempts = state.attempts + 1
        if attempts <= node.retries:
            state = state.model_copy(update={"attempts": attempts})
            return state, _step(flow, state, say=[], action=_menu_gather(flow, state, node, retry=True))
        update = {"department": node.fallback, "capture": "none", "confidence": 0.0}
    state = state.model_copy(update={**update, "attempts": 0, "node": target})
    return _walk(flow, state, say=[], now=now, classifier=classifier)


def _answer_language(
    flow: Flow, state: CallState, node: LanguageNode, event: Event, *, now: datetime | None, classifier: Classifier
) -> tuple[CallState, Step]:
    if not isinstance(event, SpeechHeard | DigitsPressed | NoInput):
        raise FlowRuntimeError(f"unexpected event {event!r} at language node {state.node!r}")
    pressed = event.digits.strip() if isinstance(event, DigitsPressed) and isinstance(event.digits, str) else ""
    chosen = next((code for code, digit in _language_choices(flow, node) if digit == pressed), None)
    if chosen is None:
        attempts = state.attempts + 1
        if attempts <= node.retries:
            state = state.model_copy(update={"attempts": attempts})
            return state, _step(flow, state, say=[], action=_language_gather(flow, state, node, retry=True))
    update: dict[str, Any] = {"attempts": 0, "node": node.next}
    if chosen is not None:
        update["language"] = chosen
    # Nothing chosen after the retries: carry on in the language the call is already in.
    return _walk(flow, state.model_copy(update=update), say=[], now=now, classifier=classifier)


def _answer_voicemail(
    flow: Flow, state: CallState, node: VoicemailNode, event: Event, *, now: datetime | None, classifier: Classifier
) -> tuple[CallState, Step]:
    url = event.recording_url.strip() if isinstance(event, Recorded) and isinstance(event.recording_url, str) else ""
    if url:
        state = state.model_copy(update={"recording_url": url, "node": node.next})
    else:
        # Silence, hang-up-before-the-beep, or the caller pressed a key instead: no message.
        state = state.model_copy(update={"node": node.on_no_input or node.next})
    return _walk(flow, state, say=[], now=now, classifier=classifier)


def _answer_survey(
    flow: Flow, state: CallState, node: SurveyNode, event: Event, *, now: datetime | None, classifier: Classifier
) -> tuple[CallState, Step]:
    if not isinstance(event, SpeechHeard | DigitsPressed | NoInput):
        raise FlowRuntimeError(f"unexpected event {event!r} at survey node {state.node!r}")
    index = min(max(state.question, 0), len(node.questions) - 1)
    question = node.questions[index]
    survey = dict(state.survey)
    pressed = event.digits.strip() if isinstance(event, DigitsPressed) and isinstance(event.digits, str) else ""
    if pressed in question.keys:
        survey[question.id] = pressed
    # Each question is asked once: a caller who does not answer is not pestered.
    if index + 1 < len(node.questions):
        state = state.model_copy(update={"survey": survey, "question": index + 1})
        return state, _step(flow, state, say=[], action=_survey_gather(flow, state, node))
    state = state.model_copy(update={"survey": survey, "question": 0, "node": node.next})
    return _walk(flow, state, say=[], now=now, classifier=classifier)


def _after_transfer(
    flow: Flow, state: CallState, node: TransferNode, *, now: datetime | None, classifier: Classifier
) -> tuple[CallState, Step]:
    if node.after is not None:
        state = state.model_copy(update={"node": node.after, "finished": False, "attempts": 0})
        return _walk(flow, state, say=[], now=now, classifier=classifier)
    goodbye = _text(flow, state, flow.goodbye_template(state.language))
    return state, _step(flow, state, say=[goodbye], action=Hangup())


def _route(flow: Flow, state: CallState, node: RouteNode, classifier: Classifier) -> CallState:
    if state.department is not None:  # already chosen (a keypad digit during an ask)
        return state.model_copy(update={"node": node.next})
    result = classifier.classify(state.issue_text or "")
    confidence = _unit_interval(result.confidence) or 0.0
    if confidence >= node.threshold and result.department in flow.departments:
        department = result.department
    else:
        department = node.fallback
    return state.model_copy(update={"department": department, "confidence": confidence, "node": node.next})


def _branch(state: CallState, node: BranchNode) -> str:
    for rule in node.rules:
        if _matches(rule.when, state.caller):
            return rule.next
    return node.otherwise


def _hours(state: CallState, node: HoursNode, now: datetime | None) -> str:
    if now is None:
        raise FlowRuntimeError(f"hours node {state.node!r} needs the time: pass now= to start_call/advance")
    if now.tzinfo is None or now.utcoffset() is None:
        raise FlowRuntimeError(f"hours node {state.node!r}: now must be timezone-aware, got {now!r}")
    return node.open if node.is_open(now.astimezone(node.zone)) else node.closed


def _walk(
    flow: Flow, state: CallState, *, say: list[str], now: datetime | None, classifier: Classifier
) -> tuple[CallState, Step]:
    """Follow pass-through nodes from ``state.node`` until the caller is asked or the call ends."""
    for _ in range(len(flow.nodes) + 1):
        node = _node(flow, state.node)
        if isinstance(node, SayNode):
            text = node.text
            if node.known_caller_text is not None and _known(state.caller):
                text = node.known_caller_text
            say.append(_text(flow, state, text))
            state = state.model_copy(update={"node": node.next, "attempts": 0})
        elif isinstance(node, RouteNode):
            state = _route(flow, state, node, classifier)
        elif isinstance(node, BranchNode):
            state = state.model_copy(update={"node": _branch(state, node)})
        elif isinstance(node, HoursNode):
            state = state.model_copy(update={"node": _hours(state, node, now)})
        elif isinstance(node, GotoNode):
            state = state.model_copy(update={"node": node.target})
        elif isinstance(node, LanguageNode):
            known = _known_language(flow, node, state.caller) if node.use_known else None
            if known is None:
                return state, _step(flow, state, say=say, action=_language_gather(flow, state, node, retry=False))
            state = state.model_copy(update={"language": known, "node": node.next, "attempts": 0})
        elif isinstance(node, AskNode):
            return state, _step(flow, state, say=say, action=_ask_gather(flow, state, node, retry=False))
        elif isinstance(node, MenuNode):
            return state, _step(flow, state, say=say, action=_menu_gather(flow, state, node, retry=False))
        elif isinstance(node, SurveyNode):
            state = state.model_copy(update={"question": 0})
            if node.intro is not None:
                say.append(_text(flow, state, node.intro))
            return state, _step(flow, state, say=say, action=_survey_gather(flow, state, node))
        elif isinstance(node, VoicemailNode):
            say.append(_text(flow, state, node.prompt))
            action = Record(
                max_length=node.max_length,
                transcribe=node.transcribe,
                reason=node.reason,
                no_message=flow.phrase("no_message", _language(flow, state)),
            )
            return state, _step(flow, state, say=say, action=action)
        elif isinstance(node, TransferNode):
            department = node.department or state.department or GENERAL_DEPARTMENT
            state = state.model_copy(update={"department": department, "finished": True})
            transfer = Transfer(
                department=department,
                department_name=flow.department_name(department, _language(flow, state)),
                after=node.after is not None,
                queue_message=queue_message(flow, state),
            )
            return state, _step(flow, state, say=say, action=transfer)
        elif isinstance(node, HangupNode):
            if node.text is not None:
                say.append(_text(flow, state, node.text))
            return state.model_copy(update={"finished": True}), _step(flow, state, say=say, action=Hangup())
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


def _language(flow: Flow, state: CallState) -> str:
    return state.language or flow.language


def _step(flow: Flow, state: CallState, *, say: list[str], action: Gather | Transfer | Hangup | Record) -> Step:
    language = _language(flow, state)
    return Step(say=tuple(s for s in say if s), action=action, language=language, voice=flow.voice_for(language))


def _localize(flow: Flow, state: CallState, text: str | Mapping[str, str]) -> str:
    return localized(text, _language(flow, state), flow.language)


def _text(flow: Flow, state: CallState, text: str | Mapping[str, str], **extra: str) -> str:
    """A node's text in the call's language, with its variables filled in."""
    return _render(_localize(flow, state, text), {**_variables(flow, state), **extra})


def _ask_gather(flow: Flow, state: CallState, node: AskNode, *, retry: bool) -> Gather:
    text = node.reprompt if retry and node.reprompt is not None else node.prompt
    kinds: dict[str, Literal["speech dtmf", "dtmf", "speech"]] = {
        "both": "speech dtmf",
        "keypad": "dtmf",
        "speech": "speech",
    }
    return Gather(
        prompt=_text(flow, state, text),
        input=kinds[node.input],
        timeout=node.timeout,
        num_digits=None if node.input == "speech" else 1,
        hints=() if node.input == "keypad" else _speech_hints(flow, node, _language(flow, state)),
    )


def _menu_gather(flow: Flow, state: CallState, node: MenuNode, *, retry: bool) -> Gather:
    text = node.reprompt if retry and node.reprompt is not None else node.prompt
    prompt = _text(flow, state, text, menu_options=_menu_options(flow, state, node))
    return Gather(prompt=prompt, input="dtmf", timeout=node.timeout, num_digits=1, hints=())


def _language_gather(flow: Flow, state: CallState, node: LanguageNode, *, retry: bool) -> Gather:
    text = node.reprompt if retry and node.reprompt is not None else node.prompt
    prompt = _text(flow, state, text, language_options=_language_options(flow, node))
    return Gather(prompt=prompt, input="dtmf", timeout=node.timeout, num_digits=1, hints=())


def _survey_gather(flow: Flow, state: CallState, node: SurveyNode) -> Gather:
    question = node.questions[min(max(state.question, 0), len(node.questions) - 1)]
    return Gather(
        prompt=_text(flow, state, question.prompt), input="dtmf", timeout=node.timeout, num_digits=1, hints=()
    )


def _menu_departments(flow: Flow, node: MenuNode) -> tuple[str, ...]:
    return node.departments if node.departments is not None else tuple(flow.departments)


def _menu_entries(flow: Flow, node: MenuNode) -> list[MenuChoice]:
    """The menu's keypad options: its ``choices``, or the offered departments with their digits."""
    if node.choices is not None:
        return list(node.choices)
    return [
        MenuChoice(digit=flow.departments[key].digit, department=key)
        for key in _menu_departments(flow, node)
        if key in flow.departments
    ]


def _menu_choice(flow: Flow, node: MenuNode, pressed: str) -> MenuChoice | None:
    return next((c for c in _menu_entries(flow, node) if c.digit == pressed), None)


def _option_phrase(flow: Flow, language: str, option: str, digit: str) -> str:
    spec = flow.spoken_languages.get(language) or LanguageSpec()
    return _render(spec.menu_option, {"option": option, "digit": digit})


def _menu_options(flow: Flow, state: CallState, node: MenuNode) -> str:
    """``For billing, press 1. For technical support, press 2.`` in the call's language."""
    language = _language(flow, state)
    parts = []
    for choice in _menu_entries(flow, node):
        if choice.label is not None:
            label = _text(flow, state, choice.label)
        else:
            label = flow.department_name(choice.department or GENERAL_DEPARTMENT, language)
        parts.append(_option_phrase(flow, language, label, choice.digit))
    return " ".join(parts)


def _language_choices(flow: Flow, node: LanguageNode) -> list[tuple[str, str]]:
    """(language tag, digit) offered by a language node; default: every language, digits 1, 2, …"""
    if node.choices is not None:
        return list(node.choices.items())
    return [(code, str(i)) for i, code in enumerate(flow.spoken_languages, start=1) if i <= 9]


def _language_options(flow: Flow, node: LanguageNode) -> str:
    """Each option in its own language: ``For English, press 1. Para español, oprima 2.``"""
    return " ".join(
        _option_phrase(flow, code, flow.language_name(code), digit) for code, digit in _language_choices(flow, node)
    )


def _known_language(flow: Flow, node: LanguageNode, caller: CallerFacts) -> str | None:
    """The offered language matching the CRM's (exactly, else by its first part: ``es`` -> ``es-MX``)."""
    wanted = caller.language.strip().casefold() if isinstance(caller.language, str) else ""
    if not wanted:
        return None
    offered = [code for code, _ in _language_choices(flow, node)]
    for code in offered:
        if code.casefold() == wanted:
            return code
    for code in offered:
        if code.split("-")[0].casefold() == wanted.split("-")[0]:
            return code
    return None


def _department_for_digits(flow: Flow, digits: str, allowed: tuple[str, ...]) -> str | None:
    pressed = digits.strip() if isinstance(digits, str) else ""
    for key in allowed:
        department = flow.departments.get(key)
        if department is not None and department.digit == pressed:
            return key
    return None


# Hints depend only on the flow, the node and the language, and every ask of every call needs them: computed once.
# Keyed by object ids with the objects kept in the value, so an id cannot be reused by another flow while cached.
_HINTS: dict[tuple[int, int, str], tuple[Flow, AskNode, tuple[str, ...]]] = {}
_HINTS_MAX = 1024


def _speech_hints(flow: Flow, node: AskNode, language: str) -> tuple[str, ...]:
    key = (id(flow), id(node), language)
    cached = _HINTS.get(key)
    if cached is not None and cached[0] is flow and cached[1] is node:
        return cached[2]
    hints = _compute_speech_hints(flow, node, language)
    if len(_HINTS) >= _HINTS_MAX:
        _HINTS.clear()
    _HINTS[key] = (flow, node, hints)
    return hints


def _compute_speech_hints(flow: Flow, node: AskNode, language: str) -> tuple[str, ...]:
    """The ask's own hints, then department names, then short example phrases; deduplicated."""
    candidates = [*node.hints, *(flow.department_name(key, language) for key in flow.departments)]
    for department in flow.departments.values():
        candidates.extend(e for e in department.examples if len(e.split()) <= _MAX_EXAMPLE_HINT_WORDS)
    hints: dict[str, str] = {}
    for candidate in candidates:
        hint = candidate.replace(",", " ").strip()[:100]
        if hint and hint.casefold() not in hints:
            hints[hint.casefold()] = hint
    return tuple(hints.values())[:MAX_HINTS]


def _first_name(caller: CallerFacts) -> str | None:
    name = caller.first_name
    return (name.strip() or None) if isinstance(name, str) else None


def _known(caller: CallerFacts) -> bool:
    """Known to the CRM *and* with a first name: only then can a text greet them by name."""
    return caller.known is True and _first_name(caller) is not None


def _matches(condition: Condition, caller: CallerFacts) -> bool:
    """Whether every condition of a branch rule holds for ``caller``."""
    if condition.known is not None and _known(caller) != condition.known:
        return False
    if condition.tier is not None and _fold(caller.tier) not in {_fold(t) for t in condition.tier}:
        return False
    if condition.open_case is not None and bool(caller.open_case) != condition.open_case:
        return False
    if condition.repeat_within_days is not None:
        days = caller.days_since_last_contact
        if not isinstance(days, int) or not 0 <= days <= condition.repeat_within_days:
            return False
    if condition.language is not None:
        spoken = _fold(caller.language)
        if not any(spoken == _fold(code) or spoken.split("-")[0] == _fold(code) for code in condition.language):
            return False
    for name, values in (condition.custom or {}).items():
        value = caller.custom.get(name) if isinstance(caller.custom, Mapping) else None
        if _fold(value) not in {_fold(v) for v in values}:
            return False
    return True


def _fold(value: object) -> str:
    return value.strip().casefold() if isinstance(value, str) else "\0"  # "\0" matches nothing written


def _variables(flow: Flow, state: CallState) -> dict[str, str]:
    language = _language(flow, state)
    return {
        "company": flow.company,
        "first_name": _first_name(state.caller) or "",
        "department": flow.department_name(state.department, language) if state.department else "",
    }


class _LenientFormatter(string.Formatter):
    """``str.format`` for whole-name placeholders only; a missing variable renders as ""."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        # No attribute or index access ("{company.__class__}"): look the whole name up.
        return kwargs.get(field_name, ""), field_name


_FORMATTER = _LenientFormatter()


def _render(template: str, variables: Mapping[str, str], *, keep: bool = False) -> str:
    """Fill ``{variable}``s; never raises (the loader already checked the templates).

    ``keep``: leave :data:`QUEUE_VARIABLES` as placeholders and escape every other brace, so
    the result is itself a template the app can fill with :func:`fill_queue_message`.
    """
    try:
        if not keep:
            return _FORMATTER.vformat(template, (), dict(variables)).strip()
        out = []
        for literal, name, _spec, _conversion in string.Formatter().parse(template):
            out.append(_escape(literal))
            if name in QUEUE_VARIABLES:
                out.append("{" + name + "}")
            elif name is not None:
                out.append(_escape(variables.get(name, "")))
        return "".join(out).strip()
    except (ValueError, TypeError, KeyError, IndexError):
        return template.strip()


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


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
