"""Warmline's IVR flow language: YAML call flows, their loader, and the pure engine that runs them.

Typical use by the webhook app::

    flow = load_flow("ivr_flows/main.yaml")            # once, at start-up; FlowError lists every problem
    words = build_flow_classifier(flow, engine="auto")   # once per flow version: may load a model
    state, step = start_call(flow, CallerFacts(known=True, first_name="Ann"), now=now, classifier=words)
    ...                                                # store state.model_dump(mode="json"), render step
    stored_state, heard = CallState.model_validate(stored), SpeechHeard("I was charged twice", 0.9)
    state, step = advance(flow, stored_state, heard, now=now, classifier=words)

See ``ivr_flows/README.md`` for the flow language itself. Speech routing (the classifiers and the choice between
them) is ``ivr_flows.routing``; the engine is only handed a classifier. ``ivr_flows.lint`` checks flow files
(``warmline flows lint``) and ``ivr_flows.graph`` draws them (needs the ``graphviz`` package, so it is not imported
here).
"""

from ivr_flows.engine import (
    CallerFacts,
    CallState,
    DigitsPressed,
    Event,
    FlowRuntimeError,
    Gather,
    Hangup,
    NoInput,
    Record,
    Recorded,
    SpeechHeard,
    Step,
    Transfer,
    TransferEnded,
    advance,
    fill_queue_message,
    queue_message,
    start_call,
)
from ivr_flows.loader import FlowCheck, FlowError, FlowIssue, check_flow, check_flow_text, load_flow, parse_flow
from ivr_flows.routing.base import Classification, Classifier
from ivr_flows.routing.factory import Engine, build_flow_classifier
from ivr_flows.routing.tfidf import TfidfClassifier
from ivr_flows.schema import (
    AskNode,
    BranchNode,
    Department,
    Flow,
    GotoNode,
    HangupNode,
    HoursNode,
    LanguageNode,
    LanguageSpec,
    MenuNode,
    Node,
    RouteNode,
    SayNode,
    SurveyNode,
    TransferNode,
    VoicemailNode,
)

__all__ = [
    "AskNode",
    "BranchNode",
    "CallState",
    "CallerFacts",
    "Classification",
    "Classifier",
    "Department",
    "DigitsPressed",
    "Engine",
    "Event",
    "Flow",
    "FlowCheck",
    "FlowError",
    "FlowIssue",
    "FlowRuntimeError",
    "Gather",
    "GotoNode",
    "Hangup",
    "HangupNode",
    "HoursNode",
    "LanguageNode",
    "LanguageSpec",
    "MenuNode",
    "NoInput",
    "Node",
    "Record",
    "Recorded",
    "RouteNode",
    "SayNode",
    "SpeechHeard",
    "Step",
    "SurveyNode",
    "TfidfClassifier",
    "Transfer",
    "TransferEnded",
    "TransferNode",
    "VoicemailNode",
    "advance",
    "build_flow_classifier",
    "check_flow",
    "check_flow_text",
    "fill_queue_message",
    "load_flow",
    "parse_flow",
    "queue_message",
    "start_call",
]
