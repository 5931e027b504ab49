"""The pure engine, driven through every path of the sample flow and a few purpose-built flows."""

from __future__ import annotations

import json

import pytest

from ivr_flows import (
    CallerFacts,
    CallState,
    DigitsPressed,
    Flow,
    FlowRuntimeError,
    Gather,
    Hangup,
    NoInput,
    SpeechHeard,
    Step,
    Transfer,
    advance,
    parse_flow,
    start_call,
)
from tests.conftest import tfidf

STRANGER = CallerFacts(known=False)
ANN = CallerFacts(known=True, first_name="Ann", tier="gold")

MENU_TEXT = (
    "For billing, press 1. For technical support, press 2. For sales, press 3. "
    "For account services, press 4. For customer service, press 0."
)


def gather(step: Step) -> Gather:
    assert isinstance(step.action, Gather), step
    return step.action


def transfer(step: Step) -> Transfer:
    assert isinstance(step.action, Transfer), step
    return step.action


def queued(department: str, name: str) -> Transfer:
    """The sample flow's transfer: a survey follows it, and the app fills in the queue message."""
    return Transfer(
        department=department,
        department_name=name,
        after=True,
        queue_message=(f"You are number {{queue_position}} in line for {name}. The wait is {{estimated_wait}}."),
    )


def roundtrip(state: CallState) -> CallState:
    """What the app does between webhooks: JSON into the database and back."""
    return CallState.model_validate(json.loads(json.dumps(state.model_dump(mode="json"))))


# --- greeting -------------------------------------------------------------------------------


def test_unknown_caller_gets_the_plain_greeting_and_the_open_question(sample_flow: Flow) -> None:
    state, step = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    assert step.say == ("Thanks for calling Acme.",)
    ask = gather(step)
    assert ask.prompt == "In a few words, what are you calling about?"
    assert (ask.input, ask.num_digits, ask.timeout, ask.speech_timeout) == ("speech dtmf", 1, 5, "auto")
    assert (step.language, step.voice) == ("en-US", "Polly.Joanna")
    assert state == CallState(node="reason", caller=STRANGER)


def test_known_caller_is_greeted_by_first_name(sample_flow: Flow) -> None:
    _, step = start_call(sample_flow, ANN, classifier=tfidf(sample_flow))
    assert step.say == ("Hi Ann, thanks for calling Acme.",)


def test_known_caller_without_a_first_name_gets_the_plain_greeting(sample_flow: Flow) -> None:
    _, step = start_call(sample_flow, CallerFacts(known=True, first_name="  "), classifier=tfidf(sample_flow))
    assert step.say == ("Thanks for calling Acme.",)


def test_a_name_alone_does_not_make_a_caller_known(sample_flow: Flow) -> None:
    _, step = start_call(sample_flow, CallerFacts(known=False, first_name="Ann"), classifier=tfidf(sample_flow))
    assert step.say == ("Thanks for calling Acme.",)


def test_speech_hints_are_bounded_and_comma_free(sample_flow: Flow) -> None:
    hints = gather(start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))[1]).hints
    assert hints[:4] == ("Acme", "invoice", "password", "outage")  # the ask's own hints first
    assert {"billing", "technical support", "account services", "operator"} <= set(hints)
    assert len(hints) <= 100
    assert all(h and "," not in h and len(h) <= 100 for h in hints)
    assert len({h.casefold() for h in hints}) == len(hints)


# --- speech -> route -> transfer ------------------------------------------------------------


def test_speech_is_routed_and_transferred(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, step = advance(
        sample_flow,
        state,
        SpeechHeard("I was charged twice on my card", confidence=0.91),
        classifier=tfidf(sample_flow),
    )
    assert transfer(step) == queued("billing", "billing")
    assert step.say == ()
    assert state.issue_text == "I was charged twice on my card"
    assert (state.capture, state.department, state.speech_confidence) == ("speech", "billing", 0.91)
    assert state.confidence is not None and state.confidence >= 0.3
    assert state.finished and state.node == "transfer"


def test_unclear_speech_goes_to_the_fallback_keeping_the_confidence(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, step = advance(sample_flow, state, SpeechHeard("hello there", confidence=0.5), classifier=tfidf(sample_flow))
    assert transfer(step) == queued("general", "customer service")
    assert state.confidence == 0.0
    assert state.capture == "speech" and state.issue_text == "hello there"


def test_digit_during_the_open_question_picks_the_department(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, step = advance(sample_flow, state, DigitsPressed("2"), classifier=tfidf(sample_flow))
    assert transfer(step).department == "technical_support"
    # The route node passed through without classifying: the keypad choice is kept.
    assert (state.capture, state.confidence, state.issue_text) == ("dtmf", 1.0, None)


# --- silence, retries, the keypad menu ------------------------------------------------------


def test_silence_reprompts_then_falls_back_to_the_menu_then_a_digit_transfers(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, ANN, classifier=tfidf(sample_flow))
    state, step = advance(sample_flow, state, NoInput(), classifier=tfidf(sample_flow))
    assert step.say == ()
    assert gather(step).prompt == "Sorry, I didn't catch that. In a few words, what are you calling about?"
    assert (state.node, state.attempts) == ("reason", 1)

    state, step = advance(sample_flow, state, NoInput(), classifier=tfidf(sample_flow))
    menu = gather(step)
    assert (menu.input, menu.num_digits, menu.hints) == ("dtmf", 1, ())
    assert menu.prompt == MENU_TEXT
    assert (state.node, state.attempts) == ("keypad", 0)

    state, step = advance(sample_flow, state, DigitsPressed("4"), classifier=tfidf(sample_flow))
    assert transfer(step) == queued("account", "account services")
    assert (state.capture, state.confidence, state.finished) == ("dtmf", 1.0, True)


def test_silence_all_the_way_through_ends_with_general(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    for _ in range(3):  # reprompt, menu, menu has no retries
        state, step = advance(sample_flow, state, NoInput(), classifier=tfidf(sample_flow))
    assert transfer(step).department == "general"
    assert (state.capture, state.confidence, state.department) == ("none", 0.0, "general")


@pytest.mark.parametrize("digits", ["9", "*", "#", "12", "", " ", "٣"])
def test_a_digit_that_is_no_department_counts_as_a_failed_try(sample_flow: Flow, digits: str) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, step = advance(sample_flow, state, DigitsPressed(digits), classifier=tfidf(sample_flow))
    assert gather(step).input == "speech dtmf"  # asked again
    assert state.attempts == 1 and state.department is None


def test_invalid_digit_in_the_menu_uses_the_fallback(sample_flow: Flow) -> None:
    state = CallState(node="keypad", caller=STRANGER)
    state, step = advance(sample_flow, state, DigitsPressed("7"), classifier=tfidf(sample_flow))
    assert transfer(step).department == "general"
    assert state.capture == "none"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\x00\x1b"])
def test_blank_speech_is_no_input(sample_flow: Flow, text: str) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, step = advance(sample_flow, state, SpeechHeard(text, confidence=0.2), classifier=tfidf(sample_flow))
    assert gather(step).prompt.startswith("Sorry")
    assert state.attempts == 1 and state.issue_text is None


# --- state between webhooks -----------------------------------------------------------------


def test_state_survives_a_json_round_trip_mid_call(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, ANN, classifier=tfidf(sample_flow))
    state, _ = advance(sample_flow, state, NoInput(), classifier=tfidf(sample_flow))
    restored = roundtrip(state)
    assert restored == state
    assert restored.caller == ANN
    assert advance(sample_flow, restored, NoInput(), classifier=tfidf(sample_flow)) == advance(
        sample_flow, state, NoInput(), classifier=tfidf(sample_flow)
    )


def test_finished_state_round_trips_too(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, _ = advance(
        sample_flow, state, SpeechHeard("my internet is down again", confidence=None), classifier=tfidf(sample_flow)
    )
    assert roundtrip(state) == state


def test_stored_state_with_extra_keys_still_loads() -> None:
    data = {"node": "reason", "caller": {"known": False}, "added_by_a_newer_release": 1}
    assert CallState.model_validate(data).node == "reason"


def test_the_callers_city_travels_with_the_state(sample_flow: Flow) -> None:
    caller = CallerFacts(known=False, city="Leeds")
    state, _ = start_call(sample_flow, caller, classifier=tfidf(sample_flow))
    state, _ = advance(sample_flow, roundtrip(state), SpeechHeard("I was charged twice"), classifier=tfidf(sample_flow))
    assert state.caller.city == "Leeds"
    assert state.model_dump(mode="json")["caller"]["city"] == "Leeds"


def test_a_state_stored_with_the_city_beside_it_keeps_the_city() -> None:
    """Older releases stored the city next to the engine's keys, as ``_caller_city``: it becomes the caller's."""
    older = {"node": "reason", "caller": {"known": True, "first_name": "Ann"}, "_caller_city": "Leeds"}
    state = CallState.model_validate(older)
    assert state.caller == CallerFacts(known=True, first_name="Ann", city="Leeds")
    assert "_caller_city" not in state.model_dump(mode="json")
    assert CallState.model_validate(json.loads(json.dumps(older))) == state
    # The caller's own city wins; a blank or odd legacy value is dropped, never an error.
    both = {**older, "caller": {"known": False, "city": "York"}}
    assert CallState.model_validate(both).caller.city == "York"
    for odd in ("", None, 42):
        assert CallState.model_validate({**older, "_caller_city": odd}).caller.city is None
    # Also when the caller is given as facts rather than as JSON.
    given = CallState.model_validate({"node": "reason", "caller": CallerFacts(known=False), "_caller_city": "Hull"})
    assert given.caller.city == "Hull"


def test_advance_does_not_change_the_given_state(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    before = state.model_dump()
    advance(sample_flow, state, NoInput(), classifier=tfidf(sample_flow))
    assert state.model_dump() == before
    with pytest.raises(ValueError, match="frozen"):
        state.attempts = 3


# --- caller input never breaks the engine ---------------------------------------------------


def test_very_long_speech_is_truncated(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    speech = "my bill is wrong " * 2000
    state, step = advance(sample_flow, state, SpeechHeard(speech, confidence=0.8), classifier=tfidf(sample_flow))
    assert state.issue_text is not None and 0 < len(state.issue_text) <= 500
    assert state.issue_text.startswith("my bill is wrong")
    assert transfer(step).department == "billing"


@pytest.mark.parametrize(
    "speech",
    [
        "ça ne marche pas 🙁",
        "\u202eevil\u202c text",
        "\uff29\uff2e\uff36\uff2f\uff29\uff23\uff25",
        "😀" * 50,
        "???!!!",
    ],
)
def test_odd_unicode_is_handled(sample_flow: Flow, speech: str) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, step = advance(sample_flow, state, SpeechHeard(speech, confidence=0.4), classifier=tfidf(sample_flow))
    assert isinstance(step.action, Transfer)
    assert state.issue_text and "\u202e" not in state.issue_text


@pytest.mark.parametrize(("given", "stored"), [(float("nan"), None), (7.0, 1.0), (-1, 0.0), (None, None)])
def test_speech_confidence_is_sanitised(sample_flow: Flow, given: float | None, stored: float | None) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, _ = advance(
        sample_flow, state, SpeechHeard("refund please", confidence=given), classifier=tfidf(sample_flow)
    )
    assert state.speech_confidence == stored


# --- misuse by the app is a named error -----------------------------------------------------


def test_event_after_the_call_finished_raises(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, _ = advance(sample_flow, state, DigitsPressed("1"), classifier=tfidf(sample_flow))
    with pytest.raises(FlowRuntimeError, match="already finished"):
        advance(sample_flow, state, NoInput(), classifier=tfidf(sample_flow))


def test_state_naming_an_unknown_node_raises(sample_flow: Flow) -> None:
    with pytest.raises(FlowRuntimeError, match="no node 'gone'"):
        advance(sample_flow, CallState(node="gone", caller=STRANGER), NoInput(), classifier=tfidf(sample_flow))


def test_event_at_a_node_that_does_not_wait_raises(sample_flow: Flow) -> None:
    with pytest.raises(FlowRuntimeError, match="does not wait"):
        advance(sample_flow, CallState(node="route_reason", caller=STRANGER), NoInput(), classifier=tfidf(sample_flow))


def test_an_unvalidated_looping_flow_raises_instead_of_spinning() -> None:
    flow = Flow.model_validate(
        {
            "company": "Acme",
            "start": "a",
            "departments": {"general": {"digit": 0}},
            "nodes": {
                "a": {"kind": "say", "text": "A", "next": "b"},
                "b": {"kind": "say", "text": "B", "next": "a"},
            },
        }
    )
    with pytest.raises(FlowRuntimeError, match="without asking the caller"):
        start_call(flow, STRANGER, classifier=tfidf(flow))


# --- other node kinds and options -----------------------------------------------------------

SMALL = """\
company: Bolt
language: es-MX
start: hello
departments:
  billing: {name: facturación, digit: 1, examples: [factura, cobro]}
  sales: {digit: 3}
  general: {digit: 0}
nodes:
  hello:
    kind: say
    text: Hola.
    next: menu
  menu:
    kind: menu
    prompt: "Para {company}: {menu_options}"
    reprompt: "Opción no válida. {menu_options}"
    departments: [sales, billing]
    retries: 1
    timeout: 8
    fallback: general
    next: confirm
  confirm:
    kind: say
    text: "Le comunico con {department}."
    next: done
  done:
    kind: hangup
    text: "Adiós de {company}."
"""


@pytest.fixture(scope="module")
def small_flow() -> Flow:
    return parse_flow(SMALL, source="small.yaml")


def test_menu_subset_order_retry_text_and_hangup(small_flow: Flow) -> None:
    state, step = start_call(small_flow, STRANGER, classifier=tfidf(small_flow))
    assert step.say == ("Hola.",)
    assert gather(step).prompt == "Para Bolt: For sales, press 3. For facturación, press 1."
    assert gather(step).timeout == 8
    assert (step.language, step.voice) == ("es-MX", None)

    state, step = advance(
        small_flow, state, DigitsPressed("0"), classifier=tfidf(small_flow)
    )  # general exists but is not offered
    assert gather(step).prompt == "Opción no válida. For sales, press 3. For facturación, press 1."
    assert state.attempts == 1

    state, step = advance(small_flow, state, DigitsPressed("1"), classifier=tfidf(small_flow))
    assert step.say == ("Le comunico con facturación.", "Adiós de Bolt.")
    assert isinstance(step.action, Hangup)
    assert state.finished and state.department == "billing"


def test_department_without_a_name_is_spoken_from_its_id(small_flow: Flow) -> None:
    assert small_flow.department_name("sales") == "sales"
    assert small_flow.department_name("after_hours_team") == "after hours team"  # unknown: humanised


def test_speech_in_a_keypad_menu_is_a_failed_try(small_flow: Flow) -> None:
    state = CallState(node="menu", caller=STRANGER)
    state, step = advance(small_flow, state, SpeechHeard("sales please", confidence=0.9), classifier=tfidf(small_flow))
    assert isinstance(step.action, Gather) and state.attempts == 1


def test_transfer_with_a_fixed_department_overrides_the_choice() -> None:
    flow = parse_flow(
        """\
company: Acme
start: pick
departments: {billing: {digit: 1}, general: {digit: 0}}
nodes:
  pick: {kind: menu, prompt: "{menu_options}", fallback: general, next: out}
  out: {kind: transfer, department: billing}
""",
        source="fixed.yaml",
    )
    state, step = advance(flow, CallState(node="pick", caller=STRANGER), DigitsPressed("0"), classifier=tfidf(flow))
    assert transfer(step) == Transfer(department="billing", department_name="billing")
    assert state.department == "billing"


def test_on_no_input_can_lead_to_a_goodbye() -> None:
    flow = parse_flow(
        """\
company: Acme
start: q
departments: {general: {digit: 0}}
nodes:
  q: {kind: ask, prompt: "Yes?", retries: 0, on_no_input: bye, next: r}
  r: {kind: route, threshold: 0.5, fallback: general, next: t}
  t: {kind: transfer}
  bye: {kind: hangup, text: "Goodbye from {company}."}
""",
        source="bye.yaml",
    )
    state, step = advance(
        flow, start_call(flow, STRANGER, classifier=tfidf(flow))[0], NoInput(), classifier=tfidf(flow)
    )
    assert step.say == ("Goodbye from Acme.",)
    assert isinstance(step.action, Hangup) and state.finished
