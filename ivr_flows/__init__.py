"""Warmline's IVR flow language: YAML call flows, their loader, and the pure engine that runs them.

Typical use by the webhook app::

    flow = load_flow("ivr_flows/main.yaml")            # once, at start-up; FlowError lists every problem
    state, step = start_call(flow, CallerFacts(known=True, first_name="Ann"))
    ...                                                # store state.model_dump(mode="json"), render step
    state, step = advance(flow, CallState.model_validate(stored), SpeechHeard("I was charged twice", 0.9))

See ``ivr_flows/README.md`` for the flow language itself.
"""

from ivr_flows.classifier import Classification, Classifier, TfidfClassifier
from ivr_flows.engine import (
    CallerFacts,
    CallState,
    DigitsPressed,
    Event,
    FlowRuntimeError,
    Gather,
    Hangup,
    NoInput,
    SpeechHeard,
    Step,
    Transfer,
    advance,
    start_call,
)
from ivr_flows.loader import FlowError, FlowIssue, load_flow, parse_flow
from ivr_flows.schema import (
    AskNode,
    Department,
    Flow,
    HangupNode,
    MenuNode,
    Node,
    RouteNode,
    SayNode,
    TransferNode,
)

__all__ = [
    "AskNode",
    "CallState",
    "CallerFacts",
    "Classification",
    "Classifier",
    "Department",
    "DigitsPressed",
    "Event",
    "Flow",
    "FlowError",
    "FlowIssue",
    "FlowRuntimeError",
    "Gather",
    "Hangup",
    "HangupNode",
    "MenuNode",
    "NoInput",
    "Node",
    "RouteNode",
    "SayNode",
    "SpeechHeard",
    "Step",
    "TfidfClassifier",
    "Transfer",
    "TransferNode",
    "advance",
    "load_flow",
    "parse_flow",
    "start_call",
]
