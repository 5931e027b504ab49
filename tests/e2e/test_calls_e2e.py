"""Whole calls, end to end: the Twilio emulator rings the app over loopback HTTP and follows its TwiML."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crm_sync.models import CHOSEN_STATES, Interaction, InteractionStatus, Offer, OfferState, Outcome, RepState, utcnow
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.reps import find_rep
from crm_sync.queries.tasks import tasks_for_interaction
from ivr_flows.routing.base import ClassifierUnavailable
from ivr_flows.routing.factory import sentence_encoder
from tests.conftest import PhoneSystem, seed_demo, skip_without_extra
from voice.cli import main
from voice.emulator import CallerScript, Digits, EmulatedCall, Recording, RepScript, Silence, Speech

ALICE, BOB, CARMEN = "+15550100001", "+15550100002", "+15550100003"
JANE = "+15551230001"
WAIT = 15


def interaction(system: PhoneSystem, call_sid: str) -> Interaction:
    with system.store.unit_of_work() as session:
        record = require_interaction(session, call_sid)
        _ = (record.customer, record.rep)  # load them while the session is open
        return record


def rep_state(system: PhoneSystem, name: str) -> RepState:
    with system.store.unit_of_work() as session:
        return find_rep(session, name).state


def set_presence(system: PhoneSystem, name: str, state: RepState) -> None:
    with system.store.unit_of_work() as session:
        rep = find_rep(session, name)
        if state in CHOSEN_STATES:
            rep.choose_presence(state, now=utcnow())
        else:  # on the phone outside Warmline: set directly, as no Warmline call would
            rep.state = state


def test_known_caller_reaches_a_rep_who_already_knows_the_story(phone_system: PhoneSystem) -> None:
    phone_system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=40))
    call = phone_system.call(JANE, Speech("I was charged twice for my subscription this month", confidence=0.91))
    assert call.wait_finished(timeout=WAIT)
    assert call.errors == []

    heard = call.heard("caller")
    assert heard[0] == "Hi Jane, thanks for calling Acme."
    assert heard[1] == "In a few words, what are you calling about?"
    assert "Connecting you to billing." in heard
    whisper = " ".join(call.heard("rep"))
    assert "Jane Doe, gold customer, calling about billing." in whisper
    assert "I was charged twice for my subscription this month." in whisper
    assert "Press 1 to take the call." in whisper

    record = interaction(phone_system, call.sid)
    assert record.status is InteractionStatus.ENDED
    assert record.outcome is Outcome.ANSWERED
    assert record.caller_number == JANE
    assert record.customer is not None and record.customer.name == "Jane Doe"
    assert record.issue_text == "I was charged twice for my subscription this month"
    assert record.capture_method == "speech"
    assert record.department == "billing" and record.confidence is not None and record.confidence > 0.3
    assert record.rep is not None and record.rep.name == "Alice Rivera"
    assert record.summary == whisper
    assert record.answered_at is not None and record.ended_at is not None
    assert record.duration_seconds is not None and record.duration_seconds >= 40
    assert record.hold_seconds == 0
    assert rep_state(phone_system, "Alice Rivera") is RepState.AVAILABLE


def test_unknown_caller_is_greeted_generically_and_whispered_by_city(phone_system: PhoneSystem) -> None:
    phone_system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=10))
    call = phone_system.twilio.place_call(
        from_="+1 (555) 765-4321",
        to="+15550009999",
        script=CallerScript([Speech("the app keeps crashing when I open it")]),
        status_callback="/voice/status",
    )
    assert call.wait_finished(timeout=WAIT)
    assert call.heard("caller")[0] == "Thanks for calling Acme."
    whisper = " ".join(call.heard("rep"))
    assert whisper.startswith("A new caller from ")
    assert "calling about technical support" in whisper
    record = interaction(phone_system, call.sid)
    assert record.customer is None and record.caller_number == "+15557654321"
    assert record.outcome is Outcome.ANSWERED and record.rep is not None and record.rep.name == "Bob Chen"


def test_an_unknown_number_that_called_before_is_a_returning_caller(phone_system: PhoneSystem) -> None:
    phone_system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=10))

    def call(words: str) -> EmulatedCall:
        placed = phone_system.twilio.place_call(
            from_="+1 (555) 765-4321",
            to="+15550009999",
            script=CallerScript([Speech(words)]),
            status_callback="/voice/status",
        )
        assert placed.wait_finished(timeout=WAIT)
        return placed

    first = call("the app keeps crashing when I open it")
    assert " ".join(first.heard("rep")).startswith("A new caller from ")
    again = call("the app is still crashing")
    whisper = " ".join(again.heard("rep"))
    assert whisper.startswith("A returning caller from ")
    assert 'Last contact earlier today, about technical support: "The app keeps crashing when I open it."' in whisper
    record = interaction(phone_system, again.sid)
    assert record.customer is None
    assert record.flow_state["caller"]["days_since_last_contact"] == 0  # a repeat caller for branches and priority


def test_silence_reprompts_once_then_the_keypad_then_general(phone_system: PhoneSystem) -> None:
    for number in (ALICE, BOB, CARMEN):
        phone_system.twilio.register_rep(number, RepScript.accepts(talk_seconds=5))
    call = phone_system.call(JANE, Silence(), Silence(), Silence())
    assert call.wait_finished(timeout=WAIT)
    heard = call.heard("caller")
    assert heard.count("In a few words, what are you calling about?") == 1
    assert "Sorry, I didn't catch that. In a few words, what are you calling about?" in heard
    assert any("For billing, press 1." in text for text in heard)
    assert "Connecting you to customer service." in heard
    record = interaction(phone_system, call.sid)
    assert record.department == "general" and record.capture_method == "none"
    assert record.outcome is Outcome.ANSWERED


def test_the_keypad_menu_routes_by_digit(phone_system: PhoneSystem) -> None:
    phone_system.twilio.register_rep(CARMEN, RepScript.accepts(talk_seconds=5))
    call = phone_system.call(JANE, Silence(), Silence(), Digits("3"))
    assert call.wait_finished(timeout=WAIT)
    record = interaction(phone_system, call.sid)
    assert (record.department, record.capture_method, record.confidence) == ("sales", "dtmf", 1.0)
    assert record.rep is not None and record.rep.name == "Carmen Ortiz"


def test_garbage_words_go_to_general(phone_system: PhoneSystem) -> None:
    for number in (ALICE, BOB, CARMEN):
        phone_system.twilio.register_rep(number, RepScript.accepts(talk_seconds=5))
    call = phone_system.call(JANE, Speech("blorf zzzt wibble"))
    assert call.wait_finished(timeout=WAIT)
    record = interaction(phone_system, call.sid)
    assert record.department == "general" and record.issue_text == "blorf zzzt wibble"


@pytest.mark.parametrize(
    ("engine", "department", "rep"),
    [
        ("wordllama", "technical_support", "Bob Chen"),
        ("minilm+mpnet", "technical_support", "Bob Chen"),
        ("tfidf", "general", None),
    ],
)
def test_the_default_installs_engine_routes_words_that_share_none_with_the_examples(
    phone_system_factory: Callable[..., PhoneSystem], engine: str, department: str, rep: str | None
) -> None:
    """`make run` routes with WordLlama: a caller who shares no word with any example still reaches the team; so
    does the heaviest engine, whose ~0.1 s per utterance the gather webhook absorbs."""
    if engine == "minilm+mpnet":
        try:
            sentence_encoder("minilm+mpnet")
        except ClassifierUnavailable as exc:
            skip_without_extra(f"the MiniLM+MPNet extra is not installed: {exc}")
    system = phone_system_factory(flows={"reload_interval": 0, "classifier": engine})
    system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=5))
    system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=5))
    call = system.call(JANE, Speech("the modem keeps disconnecting"))
    assert call.wait_finished(timeout=WAIT)
    record = interaction(system, call.sid)
    assert record.department == department
    if rep is not None:
        assert record.rep is not None and record.rep.name == rep and record.outcome is Outcome.ANSWERED


def test_rep_declines_then_the_next_rep_takes_it(phone_system: PhoneSystem) -> None:
    phone_system.twilio.register_rep(ALICE, RepScript.declines())
    phone_system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=5))
    call = phone_system.call(JANE, Digits("0"))  # general: Alice (longest idle), then Bob
    assert call.wait_finished(timeout=WAIT)
    assert "Let me find someone else for you." in call.heard("caller")
    whispers = [entry for entry in call.transcript if entry.party.startswith("rep:") and entry.verb == "Say"]
    assert {entry.party for entry in whispers} >= {f"rep:{ALICE}", f"rep:{BOB}"}
    record = interaction(phone_system, call.sid)
    assert record.outcome is Outcome.ANSWERED and record.rep is not None and record.rep.name == "Bob Chen"
    with phone_system.store.unit_of_work() as session:
        offers = {offer.rep.name: offer.state for offer in session.query(Offer).all()}
    assert offers == {"Alice Rivera": OfferState.DECLINED, "Bob Chen": OfferState.ENDED}
    assert rep_state(phone_system, "Alice Rivera") is RepState.AVAILABLE


def test_rep_who_does_not_answer_is_skipped(phone_system: PhoneSystem) -> None:
    phone_system.twilio.register_rep(ALICE, RepScript.no_answer())
    phone_system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=5))
    call = phone_system.call(JANE, Digits("0"))
    assert call.wait_finished(timeout=WAIT)
    rep = interaction(phone_system, call.sid).rep
    assert rep is not None and rep.name == "Bob Chen"


def test_all_reps_busy_then_one_frees_up_and_the_caller_is_pulled_at_once(phone_system: PhoneSystem) -> None:
    twilio = phone_system.twilio
    twilio.register_rep(
        ALICE, RepScript.sequence([RepScript.accepts(talk_seconds=None), RepScript.accepts(talk_seconds=5)])
    )
    first = phone_system.call(JANE, Speech("I need a refund"), talk_seconds=None)
    assert first.wait_until(lambda c: c.state == "bridged", timeout=WAIT)
    second = phone_system.call("+15551230002", Speech("question about my invoice"))
    assert second.wait_until(lambda c: c.state == "queued", timeout=WAIT)
    assert second.wait_until(lambda c: any("number 1 in line" in text for text in c.heard("caller")), timeout=WAIT)
    assert interaction(phone_system, second.sid).status is InteractionStatus.QUEUED

    first.hang_up()
    assert second.wait_finished(timeout=WAIT)
    assert first.wait_finished(timeout=WAIT)
    pulls = [request for request in twilio.rest_log if second.sid in request.path]
    assert pulls and "/voice/connect" in pulls[0].form.get("Url", "")
    assert "Thanks for waiting. Connecting you now." in second.heard("caller")
    record = interaction(phone_system, second.sid)
    assert record.outcome is Outcome.ANSWERED and record.rep is not None and record.rep.name == "Alice Rivera"
    assert record.enqueued_at is not None
    assert rep_state(phone_system, "Alice Rivera") is RepState.AVAILABLE


def test_a_rep_set_available_from_the_cli_pulls_the_waiting_caller(phone_system: PhoneSystem) -> None:
    """`warmline reps status NAME available` frees a rep: the waiting caller is pulled out of the queue at once."""
    phone_system.twilio.register_rep(CARMEN, RepScript.accepts(talk_seconds=5))
    set_presence(phone_system, "Carmen Ortiz", RepState.ON_CALL)  # on the phone outside Warmline: sales is staffed
    call = phone_system.call(JANE, Speech("how much does your premium plan cost"))
    assert call.wait_until(lambda c: c.state == "queued", timeout=WAIT)

    result = phone_system.app.test_cli_runner().invoke(main, ["reps", "status", "Carmen Ortiz", "available"])
    assert result.exit_code == 0, result.output
    assert "connecting a waiting caller" in result.output
    assert call.wait_finished(timeout=WAIT)
    record = interaction(phone_system, call.sid)
    assert record.outcome is Outcome.ANSWERED and record.rep is not None and record.rep.name == "Carmen Ortiz"


def test_nobody_on_duty_offers_voicemail_and_files_it(phone_system_factory: Callable[..., PhoneSystem]) -> None:
    system = phone_system_factory(seed=False)
    seed_demo(system.store, reps_available=False)
    call = system.call(JANE, Speech("I was charged twice"), Recording(duration=9))
    assert call.wait_finished(timeout=WAIT)
    heard = call.heard("caller")
    assert "Nobody from billing can take your call right now." in heard
    assert any("after the tone" in text for text in heard)
    assert "Thanks, we've got your message and will call you back. Goodbye." in heard
    record = interaction(system, call.sid)
    assert record.outcome is Outcome.VOICEMAIL
    assert record.recording_url and "/Recordings/" in record.recording_url


def test_caller_who_hangs_up_in_the_queue_is_abandoned(phone_system: PhoneSystem) -> None:
    twilio = phone_system.twilio
    twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=None))
    first = phone_system.call(JANE, Speech("I need a refund"), talk_seconds=None)
    assert first.wait_until(lambda c: c.state == "bridged", timeout=WAIT)
    second = phone_system.call("+15551230002", Speech("question about my invoice"), hang_up_in_queue_after=45)
    assert second.wait_finished(timeout=WAIT)
    record = interaction(phone_system, second.sid)
    assert record.outcome is Outcome.ABANDONED and record.status is InteractionStatus.ENDED
    assert record.answered_at is None and record.enqueued_at is not None
    first.hang_up()
    assert first.wait_finished(timeout=WAIT)
    assert interaction(phone_system, first.sid).outcome is Outcome.ANSWERED


def test_calls_through_a_tls_proxy_validate_against_the_public_url(
    phone_system_factory: Callable[..., PhoneSystem],
) -> None:
    system = phone_system_factory(public_url="https://calls.acme.test")
    system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=5))
    call = system.call(JANE, Speech("I need a refund"))
    assert call.wait_finished(timeout=WAIT)
    assert call.errors == []
    assert all(url.startswith("https://calls.acme.test/") for url in (exchange.url for exchange in call.requests))
    assert interaction(system, call.sid).outcome is Outcome.ANSWERED


def test_when_every_rep_on_duty_declined_the_caller_leaves_a_message_instead_of_holding(
    phone_system: PhoneSystem,
) -> None:
    for name in ("Bob Chen", "Carmen Ortiz"):
        set_presence(phone_system, name, RepState.OFFLINE)
    phone_system.twilio.register_rep(ALICE, RepScript.declines())
    call = phone_system.call(JANE, Speech("I was charged twice"), Recording(duration=5))
    assert call.wait_finished(timeout=WAIT)
    heard = call.heard("caller")
    assert "Nobody from billing can take your call right now." in heard
    assert not any("in line" in text for text in heard)
    record = interaction(phone_system, call.sid)
    assert record.outcome is Outcome.VOICEMAIL and record.recording_url
    assert rep_state(phone_system, "Alice Rivera") is RepState.AVAILABLE


def test_a_voicemail_is_filed_with_a_follow_up_task_and_transcribed_offline(
    phone_system_factory: Callable[..., PhoneSystem], tmp_path: Path
) -> None:
    """After hours for billing: the caller's message (spoken by flite, telephone band as Twilio records it) ends up
    on Jane's record as a task, with the words the offline recogniser heard."""
    if not (shutil.which("flite") and shutil.which("sox")):
        pytest.skip("flite and sox are installed by scripts/system-deps.sh (make install)")
    wide, narrow = tmp_path / "wide.wav", tmp_path / "narrow.wav"
    words = "I was charged twice for my subscription please call me back"
    subprocess.run(["flite", "-voice", "slt", "-t", words, "-o", str(wide)], check=True)
    subprocess.run(["sox", str(wide), "-r", "8000", "-e", "u-law", str(narrow), "sinc", "300-3400"], check=True)
    system = phone_system_factory(seed=False)
    seed_demo(system.store, reps_available=False)
    call = system.call(JANE, Speech("I was charged twice"), Recording(duration=5, wav=narrow.read_bytes()))
    assert call.wait_finished(timeout=WAIT)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record = interaction(system, call.sid)
        if record.transcript_engine is not None:
            break
        time.sleep(0.1)
    assert record.outcome is Outcome.VOICEMAIL and record.recording_url
    assert record.transcript_error is None, record.transcript_error
    assert record.transcript_engine == "sphinx"
    assert record.transcript and "charged" in record.transcript
    with system.store.unit_of_work() as session:
        [task] = tasks_for_interaction(session, record.id)
        assert task.kind == "voicemail" and task.customer_id == record.customer_id
        assert "Jane Doe" in task.note and "charged" in task.note


def test_after_the_rep_hangs_up_the_caller_answers_the_survey(phone_system: PhoneSystem) -> None:
    phone_system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=20))
    call = phone_system.call(JANE, Speech("I need a refund"), Digits("5"), talk_seconds=None)
    assert call.wait_finished(timeout=WAIT)
    heard = " ".join(call.heard("caller"))
    assert "How satisfied were you" in heard and heard.endswith("Goodbye.")
    record = interaction(phone_system, call.sid)
    assert record.outcome is Outcome.ANSWERED
    assert list(record.survey.values()) == ["5"]


NEW_YORK_SUNDAY_NIGHT = datetime(2026, 11, 23, 3, 30, tzinfo=UTC)  # Sunday 22:30 in New York: closed


def test_after_hours_the_flow_takes_a_message_in_the_chosen_language(
    phone_system_factory: Callable[..., PhoneSystem],
) -> None:
    system = phone_system_factory(flows={"reload_interval": 0, "numbers": {"+15550001234": "support_hours"}})
    system.app.extensions["warmline"].clock.source = lambda: NEW_YORK_SUNDAY_NIGHT
    call = system.twilio.place_call(
        from_=JANE,
        to="+15550001234",
        script=CallerScript([Digits("2"), Recording(duration=6)]),
        status_callback="/voice/status",
    )
    assert call.wait_finished(timeout=WAIT)
    assert call.errors == []
    record = interaction(system, call.sid)
    assert record.flow_name == "support_hours"
    assert record.language == "es-MX"
    assert record.outcome is Outcome.VOICEMAIL and record.recording_url
    spanish = [entry for entry in call.transcript if entry.party == "caller" and entry.verb == "Say"]
    assert spanish[-1].attrs.get("language") == "es-MX"
    with system.store.unit_of_work() as session:
        [task] = tasks_for_interaction(session, record.id)
        assert task.kind == "voicemail" and "Jane Doe" in task.note
