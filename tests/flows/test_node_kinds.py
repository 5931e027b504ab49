"""Every node kind through the engine: hours, branch, language, voicemail, survey, transfer-after, goto.

Times are fixed instants (the engine never reads a clock), chosen around the edges that go wrong
in practice: local midnight in another time zone, the daylight-saving switch, holidays.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

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
    Record,
    Recorded,
    SpeechHeard,
    Step,
    Transfer,
    TransferEnded,
    advance,
    fill_queue_message,
    load_flow,
    parse_flow,
    start_call,
)
from tests.conftest import SAMPLE_FLOW, tfidf

SUPPORT_FLOW = SAMPLE_FLOW.with_name("support_hours.yaml")
STRANGER = CallerFacts(known=False)
NEW_YORK = ZoneInfo("America/New_York")
# Monday 10 March 2025, 10:00 in New York (EDT, UTC-4): open.
MONDAY_MORNING = datetime(2025, 3, 10, 14, 0, tzinfo=UTC)
# Saturday 15 March 2025, 16:00 in New York: closed (Saturday is 09:00-13:00).
SATURDAY_AFTERNOON = datetime(2025, 3, 15, 20, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def support() -> Flow:
    return load_flow(SUPPORT_FLOW)


def gather(step: Step) -> Gather:
    assert isinstance(step.action, Gather), step
    return step.action


def roundtrip(state: CallState) -> CallState:
    return CallState.model_validate(json.loads(json.dumps(state.model_dump(mode="json"))))


# --- hours ----------------------------------------------------------------------------------

HOURS = """\
company: Acme
start: when
departments: {general: {digit: 0}}
nodes:
  when:
    kind: hours
    timezone: America/New_York
    schedule:
      mon-thu: "09:00-17:00"
      fri: ["09:00-12:00", "13:00-24:00"]
      sat: "10:00-12:00"
    holidays: ["12-25", 2025-11-27]
    open: opened
    closed: shut
  opened: {kind: hangup, text: open}
  shut: {kind: hangup, text: closed}
"""


@pytest.fixture(scope="module")
def hours_flow() -> Flow:
    return parse_flow(HOURS, source="hours.yaml")


def said_at(flow: Flow, now: datetime) -> str:
    _, step = start_call(flow, STRANGER, now=now, classifier=tfidf(flow))
    assert isinstance(step.action, Hangup)
    return step.say[0]


def ny(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A New York wall-clock time (the tests below that matter use explicit UTC instants instead)."""
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (ny(2025, 3, 11, 9, 0), "open"),  # Tuesday opening minute
        (ny(2025, 3, 11, 16, 59), "open"),
        (ny(2025, 3, 11, 17, 0), "closed"),  # the end is exclusive
        (ny(2025, 3, 11, 8, 59), "closed"),
        (ny(2025, 3, 14, 12, 30), "closed"),  # Friday lunch break between two ranges
        (ny(2025, 3, 14, 13, 0), "open"),
        (ny(2025, 3, 16, 11, 0), "closed"),  # Sunday: not in the schedule
        (ny(2025, 3, 15, 11, 0), "open"),  # Saturday
    ],
)
def test_hours_open_and_closed_by_weekday(hours_flow: Flow, now: datetime, expected: str) -> None:
    assert said_at(hours_flow, now) == expected


def test_hours_use_the_local_day_not_the_utc_day_around_midnight(hours_flow: Flow) -> None:
    # Friday 23:59 in New York is already Saturday 04:59 in UTC: Friday's 13:00-24:00 applies.
    assert said_at(hours_flow, datetime(2025, 1, 11, 4, 59, tzinfo=UTC)) == "open"
    # One minute later it is Saturday 00:00 locally: closed until 10:00.
    assert said_at(hours_flow, datetime(2025, 1, 11, 5, 0, tzinfo=UTC)) == "closed"
    # The same instant given in another offset is the same local time.
    assert said_at(hours_flow, datetime(2025, 1, 11, 6, 0, tzinfo=timezone(timedelta(hours=1)))) == "closed"


def test_hours_follow_daylight_saving_time(hours_flow: Flow) -> None:
    # 13:30 UTC is 08:30 EST (closed) the Monday before the switch, 09:30 EDT (open) the Monday after.
    assert said_at(hours_flow, datetime(2025, 3, 3, 13, 30, tzinfo=UTC)) == "closed"
    assert said_at(hours_flow, datetime(2025, 3, 10, 13, 30, tzinfo=UTC)) == "open"
    # And back in November: 13:30 UTC is 09:30 EDT on Friday 31 October, 08:30 EST on Monday 3 November.
    assert said_at(hours_flow, datetime(2025, 10, 31, 13, 30, tzinfo=UTC)) == "open"
    assert said_at(hours_flow, datetime(2025, 11, 3, 13, 30, tzinfo=UTC)) == "closed"


def test_holidays_every_year_and_on_one_date(hours_flow: Flow) -> None:
    assert said_at(hours_flow, ny(2025, 12, 25, 14)) == "closed"  # a Thursday, yearly holiday
    assert said_at(hours_flow, ny(2026, 12, 25, 14)) == "closed"  # a Friday, the next year too
    assert said_at(hours_flow, ny(2025, 12, 24, 14)) == "open"
    assert said_at(hours_flow, ny(2025, 11, 27, 14)) == "closed"  # Thanksgiving 2025 only
    assert said_at(hours_flow, ny(2026, 11, 27, 14)) == "open"  # a Friday in 2026: not a holiday


def test_holiday_is_the_local_date(hours_flow: Flow) -> None:
    # Friday 26 December 2025 at 00:30 UTC is still Thursday 25 December (19:30) in New York.
    assert said_at(hours_flow, datetime(2025, 12, 26, 0, 30, tzinfo=UTC)) == "closed"
    # Friday 13:30 locally on the 26th: open.
    assert said_at(hours_flow, datetime(2025, 12, 26, 18, 30, tzinfo=UTC)) == "open"


def test_hours_need_an_aware_now(hours_flow: Flow) -> None:
    with pytest.raises(FlowRuntimeError, match="pass now="):
        start_call(hours_flow, STRANGER, classifier=tfidf(hours_flow))
    with pytest.raises(FlowRuntimeError, match="timezone-aware"):
        start_call(hours_flow, STRANGER, now=datetime(2025, 3, 10, 10, 0), classifier=tfidf(hours_flow))


# --- branch ---------------------------------------------------------------------------------

BRANCH = """\
company: Acme
start: triage
departments: {general: {digit: 0}}
nodes:
  triage:
    kind: branch
    rules:
      - when: {tier: [vip, platinum]}
        next: vip
      - when: {open_case: true, repeat_within_days: 7}
        next: repeat
      - when: {language: es}
        next: spanish
      - when: {custom: {plan: Enterprise}}
        next: enterprise
      - when: {known: true}
        next: known
    otherwise: stranger
  vip: {kind: hangup, text: vip}
  repeat: {kind: hangup, text: repeat}
  spanish: {kind: hangup, text: spanish}
  enterprise: {kind: hangup, text: enterprise}
  known: {kind: hangup, text: "known {first_name}"}
  stranger: {kind: hangup, text: stranger}
"""


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        (CallerFacts(known=True, first_name="Ann", tier="VIP", open_case=True, days_since_last_contact=1), "vip"),
        (CallerFacts(known=True, first_name="Ann", tier="Platinum "), "vip"),
        (CallerFacts(known=True, first_name="Ann", open_case=True, days_since_last_contact=7), "repeat"),
        (CallerFacts(known=True, first_name="Ann", open_case=True, days_since_last_contact=8), "known Ann"),
        (CallerFacts(known=True, first_name="Ann", open_case=False, days_since_last_contact=0), "known Ann"),
        (CallerFacts(known=True, first_name="Ann", open_case=True), "known Ann"),  # first contact
        (CallerFacts(known=False, language="es-MX"), "spanish"),
        (CallerFacts(known=False, language="ES"), "spanish"),
        (CallerFacts(known=False, language="en-US"), "stranger"),
        (CallerFacts(known=True, first_name="Bo", custom={"plan": "enterprise"}), "enterprise"),
        (CallerFacts(known=True, first_name="Bo", custom={"plan": "starter"}), "known Bo"),
        (CallerFacts(known=True, first_name=" "), "stranger"),  # no name to greet them by
        (STRANGER, "stranger"),
    ],
)
def test_branch_rules_are_tried_in_order(caller: CallerFacts, expected: str) -> None:
    flow = parse_flow(BRANCH, source="branch.yaml")
    _, step = start_call(flow, caller, classifier=tfidf(flow))
    assert step.say == (expected,)


# --- language -------------------------------------------------------------------------------


def test_language_choice_then_prompts_in_that_language_with_its_voice(support: Flow) -> None:
    state, step = start_call(support, STRANGER, now=MONDAY_MORNING, classifier=tfidf(support))
    assert gather(step).prompt == "Thanks for calling Acme. For English, press 1. Para español, oprima 2."
    assert (gather(step).input, step.language, step.voice) == ("dtmf", "en-US", "Polly.Joanna")

    state, step = advance(support, state, DigitsPressed("2"), now=MONDAY_MORNING, classifier=tfidf(support))
    assert state.language == "es-MX"
    assert (step.language, step.voice) == ("es-MX", "Polly.Mia")
    assert step.say == ()  # an unknown caller goes through the `greeting` goto, which says nothing
    assert gather(step).prompt == "En pocas palabras, ¿cuál es el motivo de su llamada?"
    assert "facturación" in gather(step).hints

    state, step = advance(support, roundtrip(state), NoInput(), now=MONDAY_MORNING, classifier=tfidf(support))
    state, step = advance(support, state, NoInput(), now=MONDAY_MORNING, classifier=tfidf(support))
    assert gather(step).prompt == (
        "Para facturación, oprima 1. Para soporte técnico, oprima 2. Para atención al cliente, oprima 0. "
        "Para dejar un mensaje, oprima 9."
    )
    state, step = advance(support, state, DigitsPressed("2"), now=MONDAY_MORNING, classifier=tfidf(support))
    assert isinstance(step.action, Transfer)
    assert (step.action.department, step.action.department_name) == ("technical_support", "soporte técnico")
    assert step.voice == "Polly.Mia"


def test_language_retry_then_the_default(support: Flow) -> None:
    state, _ = start_call(support, STRANGER, now=MONDAY_MORNING, classifier=tfidf(support))
    state, step = advance(support, state, DigitsPressed("7"), now=MONDAY_MORNING, classifier=tfidf(support))
    assert gather(step).prompt.endswith("Para español, oprima 2.") and state.attempts == 1
    state, step = advance(support, state, NoInput(), now=MONDAY_MORNING, classifier=tfidf(support))
    assert state.language is None and state.node == "reason"
    assert (step.language, step.voice) == ("en-US", "Polly.Joanna")
    assert gather(step).prompt == "In a few words, what are you calling about?"


def test_the_crm_language_skips_the_question(support: Flow) -> None:
    state, step = start_call(
        support, CallerFacts(known=True, first_name="Ana", language="es"), now=MONDAY_MORNING, classifier=tfidf(support)
    )
    assert state.language == "es-MX" and state.node == "reason"
    assert step.say == ("Hola Ana, qué gusto saludarle.",)


def test_use_known_false_asks_anyway() -> None:
    flow = parse_flow(
        """\
company: Acme
languages: {en-US: {}, fr-CA: {menu_option: "Pour {option}, faites le {digit}."}}
start: pick
departments: {general: {digit: 0}}
nodes:
  pick: {kind: language, use_known: false, choices: {fr-CA: 1, en-US: 2}, next: bye}
  bye:
    kind: hangup
    text: {en-US: Bye, fr-CA: Salut}
""",
        source="fr.yaml",
    )
    state, step = start_call(flow, CallerFacts(known=False, language="fr-CA"), classifier=tfidf(flow))
    assert gather(step).prompt == "Pour Français, faites le 1. For English, press 2."
    assert (step.language, step.voice) == ("en-US", None)
    state, step = advance(flow, state, DigitsPressed("1"), classifier=tfidf(flow))
    assert step.say == ("Salut",) and step.language == "fr-CA"


# --- voicemail ------------------------------------------------------------------------------


def test_after_hours_voicemail_records_then_continues(support: Flow) -> None:
    state, step = start_call(support, STRANGER, now=SATURDAY_AFTERNOON, classifier=tfidf(support))
    state, step = advance(support, state, DigitsPressed("1"), now=SATURDAY_AFTERNOON, classifier=tfidf(support))
    assert step.say[0].startswith("Our office is closed.")
    assert step.say[1].startswith("Please leave your name, number and a short message")
    assert step.action == Record(prompt_said_already=True, max_length=120, transcribe=True, reason="after_hours")
    assert state.node == "after_hours_message" and not state.finished

    state, step = advance(
        support, roundtrip(state), Recorded(" https://api.example/rec/RE1 ", 17), classifier=tfidf(support)
    )
    assert state.recording_url == "https://api.example/rec/RE1"
    assert step.say == ("Thanks, we've got your message and will call you back. Goodbye.",)
    assert isinstance(step.action, Hangup) and state.finished


@pytest.mark.parametrize("event", [NoInput(), Recorded("", 0), DigitsPressed("#")])
def test_no_recording_takes_on_no_input(support: Flow, event: NoInput | Recorded | DigitsPressed) -> None:
    state = CallState(node="after_hours_message", caller=STRANGER)
    state, step = advance(support, state, event, classifier=tfidf(support))
    assert state.recording_url is None
    assert step.say == ("Thanks for calling Acme. Goodbye.",)


def test_voicemail_from_the_menu_is_a_plain_voicemail(support: Flow) -> None:
    state = CallState(node="keypad", caller=STRANGER)
    state, step = advance(support, state, DigitsPressed("9"), classifier=tfidf(support))
    assert step.action == Record(reason="voicemail")
    assert step.say == ("Please leave your message after the tone.",)
    assert state.department is None  # this key chose no department


def test_a_spanish_caller_who_leaves_no_message_hears_so_in_spanish(support: Flow) -> None:
    state = CallState(node="keypad", caller=STRANGER, language="es-MX")
    state, step = advance(support, state, DigitsPressed("9"), classifier=tfidf(support))
    assert isinstance(step.action, Record) and step.language == "es-MX"
    assert step.action.no_message == "No recibimos ningún mensaje. Adiós."


# --- transfer, after, survey ----------------------------------------------------------------


def test_transfer_ended_goes_to_the_survey_which_stores_the_answers(support: Flow) -> None:
    state, _ = start_call(
        support, CallerFacts(known=True, first_name="Ann"), now=MONDAY_MORNING, classifier=tfidf(support)
    )
    state, _ = advance(support, state, DigitsPressed("1"), now=MONDAY_MORNING, classifier=tfidf(support))
    state, step = advance(
        support, state, SpeechHeard("I was charged twice"), now=MONDAY_MORNING, classifier=tfidf(support)
    )
    assert isinstance(step.action, Transfer) and step.action.after
    assert state.finished

    state, step = advance(support, roundtrip(state), TransferEnded(), classifier=tfidf(support))
    assert not state.finished and state.node == "survey"
    assert step.say == ("Before you go, two quick questions.",)
    assert gather(step).prompt == "Did we solve your problem? Press 1 for yes, 2 for no."
    assert (gather(step).input, gather(step).num_digits) == ("dtmf", 1)

    state, step = advance(support, roundtrip(state), DigitsPressed("1"), classifier=tfidf(support))
    assert step.say == () and gather(step).prompt == "How would you rate this call, from 1 to 5?"
    state, step = advance(support, roundtrip(state), DigitsPressed("5"), classifier=tfidf(support))
    assert state.survey == {"resolved": "1", "rating": "5"}
    assert step.say == ("Thanks for calling Acme. Goodbye.",)
    assert isinstance(step.action, Hangup) and state.finished
    assert roundtrip(state).survey == {"resolved": "1", "rating": "5"}


def test_a_key_that_is_no_answer_leaves_the_question_unanswered(support: Flow) -> None:
    state = CallState(node="transfer", caller=STRANGER, finished=True, department="billing")
    state, _ = advance(support, state, TransferEnded(), classifier=tfidf(support))
    state, _ = advance(support, state, DigitsPressed("3"), classifier=tfidf(support))  # resolved takes 1 or 2 only
    state, step = advance(support, state, NoInput(), classifier=tfidf(support))
    assert state.survey == {}
    assert isinstance(step.action, Hangup)


def test_main_flow_transfer_then_survey_then_goodbye(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    state, step = advance(sample_flow, state, DigitsPressed("1"), classifier=tfidf(sample_flow))
    assert isinstance(step.action, Transfer) and step.action.after
    assert step.action.queue_message is not None
    message = fill_queue_message(step.action.queue_message, estimated_wait="about 3 minutes", queue_position=2)
    assert message == "You are number 2 in line for billing. The wait is about 3 minutes."
    state, step = advance(sample_flow, state, TransferEnded(), classifier=tfidf(sample_flow))
    assert step.say == ("Before you go, one quick question about this call.",)
    state, step = advance(sample_flow, state, DigitsPressed("4"), classifier=tfidf(sample_flow))
    assert state.survey == {"satisfaction": "4"}
    assert step.say == ("Thanks for calling Acme. Goodbye.",) and isinstance(step.action, Hangup)


def test_transfer_without_after_ends_with_the_goodbye() -> None:
    flow = parse_flow(
        """\
company: "Acme {Labs}"
start: out
departments: {general: {digit: 0}}
nodes:
  out:
    kind: transfer
    department: general
    queue_message: "{company} {department}: number {queue_position}, about {estimated_wait}. {{ok}}"
""",
        source="t.yaml",
    )
    state, step = start_call(flow, STRANGER, classifier=tfidf(flow))
    assert step.action == Transfer(
        department="general",
        department_name="general",
        after=False,
        queue_message="Acme {{Labs}} general: number {queue_position}, about {estimated_wait}. {{ok}}",
    )
    assert isinstance(step.action, Transfer) and step.action.queue_message is not None
    filled = fill_queue_message(step.action.queue_message, estimated_wait="a minute", queue_position=1)
    assert filled == "Acme {Labs} general: number 1, about a minute. {ok}"
    state, step = advance(flow, state, TransferEnded(), classifier=tfidf(flow))
    assert step.say == ("Thanks for calling Acme {Labs}. Goodbye.",)
    assert isinstance(step.action, Hangup) and state.finished


def test_transfer_ended_anywhere_else_is_an_app_bug(sample_flow: Flow) -> None:
    state, _ = start_call(sample_flow, STRANGER, classifier=tfidf(sample_flow))
    with pytest.raises(FlowRuntimeError, match="TransferEnded at node 'reason'"):
        advance(sample_flow, state, TransferEnded(), classifier=tfidf(sample_flow))


# --- ask options, menu choices, goto --------------------------------------------------------

ASK = """\
company: Acme
start: q
departments: {billing: {digit: 1}, general: {digit: 0}}
nodes:
  q:
    kind: ask
    prompt: Press a key.
    input: keypad
    retries: 0
    on_no_input: silent
    on_no_match: wrong
    next: r
  r: {kind: route, threshold: 0.5, fallback: general, next: t}
  t: {kind: transfer}
  silent: {kind: goto, target: bye}
  wrong: {kind: hangup, text: wrong key}
  bye: {kind: hangup, text: silence}
"""


def test_keypad_only_ask_and_its_no_match_exit() -> None:
    flow = parse_flow(ASK, source="ask.yaml")
    state, step = start_call(flow, STRANGER, classifier=tfidf(flow))
    assert (gather(step).input, gather(step).num_digits, gather(step).hints) == ("dtmf", 1, ())
    assert advance(flow, state, DigitsPressed("7"), classifier=tfidf(flow))[1].say == ("wrong key",)
    assert advance(flow, state, SpeechHeard("billing please"), classifier=tfidf(flow))[1].say == (
        "wrong key",
    )  # words are no key
    assert advance(flow, state, NoInput(), classifier=tfidf(flow))[1].say == ("silence",)  # through the goto
    state, step = advance(flow, state, DigitsPressed("1"), classifier=tfidf(flow))
    assert isinstance(step.action, Transfer) and step.action.department == "billing"


def test_speech_only_ask_ignores_digits() -> None:
    flow = parse_flow(ASK.replace("input: keypad", "input: speech"), source="ask.yaml")
    state, step = start_call(flow, STRANGER, classifier=tfidf(flow))
    assert (gather(step).input, gather(step).num_digits) == ("speech", None)
    assert advance(flow, state, DigitsPressed("1"), classifier=tfidf(flow))[1].say == ("wrong key",)
    state, step = advance(flow, state, SpeechHeard("I was charged", 0.8), classifier=tfidf(flow))
    assert state.issue_text == "I was charged" and isinstance(step.action, Transfer)


def test_vip_path_of_main_ends_in_the_same_question(sample_flow: Flow) -> None:
    state, step = start_call(
        sample_flow, CallerFacts(known=True, first_name="Vic", tier="vip"), classifier=tfidf(sample_flow)
    )
    assert step.say == ("Hi Vic, welcome back to Acme. Thank you for being a VIP customer.",)
    assert state.node == "reason"
    assert gather(step).prompt == "In a few words, what are you calling about?"


def test_caller_facts_round_trip_inside_the_state() -> None:
    caller = CallerFacts(
        known=True,
        first_name="Ann",
        tier="gold",
        language="es-MX",
        open_case=True,
        days_since_last_contact=3,
        custom={"plan": "pro"},
    )
    state = CallState(node="reason", caller=caller, language="es-MX", survey={"q": "1"}, recording_url="u")
    assert roundtrip(state) == state
    assert roundtrip(state).caller.custom == {"plan": "pro"}
    hash(caller)  # still usable as a key, custom fields notwithstanding
    # A state stored before these fields existed still loads.
    old = CallState.model_validate({"node": "reason", "caller": {"known": False}})
    assert (old.language, old.survey, old.recording_url, old.caller.custom) == (None, {}, None, {})
