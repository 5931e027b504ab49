"""The queue told honestly, end to end through the emulator: position and estimate, the push, callbacks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from crm_sync.models import (
    Callback,
    CallbackState,
    Interaction,
    InteractionStatus,
    Outcome,
    RepState,
    TaskState,
    utcnow,
)
from crm_sync.queries.callbacks import callback_for
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.reps import find_rep
from crm_sync.queries.tasks import tasks_for_interaction
from tests.conftest import SUPPORT_LINE, PhoneSystem, signed_post, support_line_open
from voice.domain.actions import PlaceCallback
from voice.emulator import CallerScript, Digits, EmulatedCall, RepScript, Speech
from voice.services.dispatch import Dispatcher

ALICE = "+15550100001"
JANE, OMAR = "+15551230001", "+15551230002"
WAIT = 15


def record_of(system: PhoneSystem, call_sid: str) -> Interaction:
    with system.store.unit_of_work() as session:
        record = require_interaction(session, call_sid)
        _ = (record.customer, record.rep)
        return record


def alice_busy_with_omar(system: PhoneSystem) -> EmulatedCall:
    """Alice (billing) takes Omar's call and stays on it until the test hangs up: billing is fully busy."""
    system.twilio.register_rep(
        ALICE, RepScript.sequence([RepScript.accepts(talk_seconds=None), RepScript.accepts(talk_seconds=5)])
    )
    first = system.call(OMAR, Speech("I need a refund"), talk_seconds=None)
    assert first.wait_until(lambda c: c.state == "bridged", timeout=WAIT)
    return first


def test_waiting_caller_hears_place_and_estimate_then_is_pulled_the_moment_the_rep_is_free(
    phone_system: PhoneSystem,
) -> None:
    first = alice_busy_with_omar(phone_system)
    second = phone_system.call(JANE, Speech("a question about my invoice"))
    assert second.wait_until(lambda c: c.state == "queued", timeout=WAIT)
    assert second.wait_until(lambda c: any("in line" in text for text in c.heard("caller")), timeout=WAIT)
    heard = second.heard("caller")
    # One busy rep, no handle times of billing's own yet: the configured 240 s, said rounded up.
    assert "You are number 1 in line for billing. The wait is about 4 minutes." in heard
    assert "Press 1 and we'll call you back — you keep your place in line." in heard
    record = record_of(phone_system, second.sid)
    assert record.announced_wait == 240 and record.announced_at is not None

    first.hang_up()
    assert second.wait_finished(timeout=WAIT)
    assert "Thanks for waiting. Connecting you now." in second.heard("caller")
    # The pull: a REST redirect of the waiting call, issued right after the webhook that freed Alice.
    pulls = [request for request in phone_system.twilio.rest_log if second.sid in request.path]
    assert pulls and "/voice/connect" in pulls[0].form.get("Url", "")
    assert record_of(phone_system, second.sid).outcome is Outcome.ANSWERED


def test_a_caller_who_takes_the_callback_keeps_their_place_and_is_rung_back(phone_system: PhoneSystem) -> None:
    first = alice_busy_with_omar(phone_system)
    # Jane presses 1 at the first announcement, hangs up; later she answers our callback and talks for a while.
    phone_system.twilio.register_callee(JANE, CallerScript(talk_seconds=20))
    waiting = phone_system.call(JANE, Speech("my invoice is wrong"), Digits("1"))
    assert waiting.wait_finished(timeout=WAIT)
    assert any("We'll call you back at the number ending in 0 0 0 1" in text for text in waiting.heard("caller"))
    record = record_of(phone_system, waiting.sid)
    assert record.status is InteractionStatus.CALLBACK and record.outcome is None
    with phone_system.store.unit_of_work() as session:
        callback = callback_for(session, record.id)
        assert callback is not None and callback.state is CallbackState.WAITING and callback.phone == JANE

    first.hang_up()  # Alice is free: her next call is the callback to Jane
    callback_call = phone_system.twilio.wait_for_call(lambda c: c.sid != waiting.sid and c.to == JANE, timeout=WAIT)
    assert callback_call is not None and callback_call.wait_finished(timeout=WAIT)
    heard = callback_call.heard("caller")
    assert "Hi Jane, this is Acme calling you back about billing, as you asked." in heard
    whisper = " ".join(callback_call.heard("rep"))
    assert whisper.startswith("Callback to Jane Doe, gold customer, who asked about billing.")
    assert "My invoice is wrong." in whisper

    record = record_of(phone_system, waiting.sid)
    assert record.status is InteractionStatus.ENDED and record.outcome is Outcome.CALLBACK
    assert record.rep is not None and record.rep.name == "Alice Rivera"
    with phone_system.store.unit_of_work() as session:
        callback = callback_for(session, record.id)
        assert callback is not None and callback.state is CallbackState.DONE and callback.attempts == 1


def test_an_unanswered_callback_is_tried_again_then_filed_as_a_task(
    phone_system_factory: Callable[..., PhoneSystem],
) -> None:
    system = phone_system_factory(callbacks={"retries": 1, "retry_after": 60}, routing={"sweep_interval": 0.05})
    first = alice_busy_with_omar(system)
    system.twilio.register_callee(JANE, CallerScript(answer="no-answer"))
    waiting = system.call(JANE, Speech("my invoice is wrong"), Digits("1"))
    assert waiting.wait_finished(timeout=WAIT)
    first.hang_up()

    def attempts() -> list[EmulatedCall]:
        return [call for call in system.twilio.calls if call.to == JANE and call.sid != waiting.sid]

    assert system.twilio.wait_for_call(lambda c: c.to == JANE and c.sid != waiting.sid, timeout=WAIT)
    assert attempts()[0].wait_finished(timeout=WAIT)
    record = record_of(system, waiting.sid)

    def callback_state() -> Callback:
        with system.store.unit_of_work() as session:
            callback = callback_for(session, record.id)
            assert callback is not None
            return callback

    # Its status callback ("no-answer") reaches the app just after the call ends.
    assert _wait_for(lambda: callback_state().state is CallbackState.WAITING)
    callback = callback_state()
    assert callback.attempts == 1 and callback.last_result == "no-answer" and callback.next_attempt_at is not None
    assert record_of(system, waiting.sid).status is InteractionStatus.CALLBACK

    # A minute later (the app's clock jumps ahead), the housekeeping pass rings Jane again; still no answer.
    warmline = system.app.extensions["warmline"]
    warmline.clock.source = lambda: utcnow() + timedelta(seconds=61)
    deadline_calls = system.twilio.wait_for_call(lambda c: len(attempts()) >= 2, timeout=WAIT)
    assert deadline_calls is not None
    assert attempts()[1].wait_finished(timeout=WAIT)
    assert _wait_for(lambda: record_of(system, waiting.sid).status is InteractionStatus.ENDED)
    record = record_of(system, waiting.sid)
    assert record.outcome is Outcome.CALLBACK_MISSED
    with system.store.unit_of_work() as session:
        tasks = tasks_for_interaction(session, record.id)
        assert [task.kind for task in tasks] == ["callback"] and tasks[0].state is TaskState.OPEN
        assert "2 callback attempts went unanswered" in tasks[0].note and JANE in tasks[0].note
        assert find_rep(session, "Alice Rivera").state is RepState.AVAILABLE


def callback_attempt(
    system: PhoneSystem, callee: CallerScript
) -> tuple[EmulatedCall, EmulatedCall, dict[str, str], dict[str, str]]:
    """Jane asks for a callback while Alice is busy; Alice frees up and we ring Jane, who answers as ``callee``.

    Returns Jane's first call, the callback call, the REST create that placed it and its answer URL's form."""
    first = alice_busy_with_omar(system)
    system.twilio.register_callee(JANE, callee)
    waiting = system.call(JANE, Speech("my invoice is wrong"), Digits("1"))
    assert waiting.wait_finished(timeout=WAIT)
    first.hang_up()
    attempt = system.twilio.wait_for_call(lambda c: c.to == JANE and c.sid != waiting.sid, timeout=WAIT)
    assert attempt is not None and attempt.wait_finished(timeout=WAIT)
    creates = [r for r in system.twilio.rest_log if r.method == "POST" and r.path.endswith("/Calls.json")]
    answers = [w for w in attempt.webhooks if "/voice/callback/answer" in w.url]
    assert creates and len(answers) == 1
    return waiting, attempt, creates[-1].form, answers[0].params


def test_a_callback_answered_by_a_voicemail_box_rings_no_rep_and_is_tried_again(
    phone_system_factory: Callable[..., PhoneSystem],
) -> None:
    system = phone_system_factory(callbacks={"retries": 1, "retry_after": 60})
    waiting, attempt, placed, answered = callback_attempt(system, CallerScript(answered_by="machine_start"))
    # The callback was placed with answering machine detection, and its answer URL heard the verdict.
    assert placed.get("MachineDetection") == "Enable"
    assert answered.get("AnsweredBy") == "machine_start"
    assert attempt.heard("caller") == ["Hello, this is Acme returning your call. We will try you again shortly."]
    assert attempt.heard("rep") == []  # no rep was rung for a recording

    record = record_of(system, waiting.sid)
    with system.store.unit_of_work() as session:
        callback = callback_for(session, record.id)
        assert callback is not None and callback.state is CallbackState.WAITING
        assert callback.attempts == 1 and callback.last_result == "machine_start"
        assert find_rep(session, "Alice Rivera").state is RepState.AVAILABLE
    assert record.status is InteractionStatus.CALLBACK


def test_a_late_status_of_an_earlier_callback_attempt_does_not_count_against_the_next_one(
    phone_system_factory: Callable[..., PhoneSystem],
) -> None:
    # No housekeeping thread: the test starts the second attempt itself, and places no call for it, so that
    # attempt stays ringing (no SID known yet) for as long as the test needs.
    system = phone_system_factory(callbacks={"retries": 2, "retry_after": 60}, routing={"sweep_interval": 0})
    waiting, first, placed, _answered = callback_attempt(system, CallerScript(answered_by="machine_start"))
    assert placed["Url"].endswith("attempt=1") and placed["StatusCallback"].endswith("attempt=1")
    warmline = system.app.extensions["warmline"]
    warmline.clock.source = lambda: utcnow() + timedelta(seconds=61)  # the retry is due
    dispatcher = Dispatcher(settings=warmline.settings, clock=warmline.clock)  # the app's, minus the REST calls
    with system.store.unit_of_work() as session:
        second = dispatcher.next_caller_for(session, find_rep(session, "Alice Rivera"))
    assert len(second) == 1 and isinstance(second[0], PlaceCallback) and second[0].attempt == 2

    # Only now does the first attempt's own final status arrive (Twilio sends it after the machine's goodbye).
    late = {"CallSid": first.sid, "CallStatus": "completed", "CallDuration": "4"}
    path = f"/voice/callback/status?callback={second[0].callback_id}&attempt=1"
    assert signed_post(system.app.test_client(), path, late, base=system.url).status_code == 200
    with system.store.unit_of_work() as session:
        callback = callback_for(session, record_of(system, waiting.sid).id)
        assert callback is not None and callback.state is CallbackState.CALLING
        assert callback.attempts == 2 and callback.last_result == "machine_start"
        assert find_rep(session, "Alice Rivera").state is RepState.RESERVED


def test_without_machine_detection_the_callback_asks_twilio_for_none(
    phone_system_factory: Callable[..., PhoneSystem],
) -> None:
    system = phone_system_factory(callbacks={"detect_machines": False})
    _waiting, attempt, placed, answered = callback_attempt(system, CallerScript(talk_seconds=5))
    assert "MachineDetection" not in placed
    assert "AnsweredBy" not in answered
    assert "Connecting you to a team member now." in attempt.heard("caller")


def _wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()




def test_a_caller_who_chose_spanish_hears_the_queue_and_the_callback_in_spanish(
    phone_system_factory: Callable[..., PhoneSystem],
) -> None:
    system = support_line_open(phone_system_factory)
    first = alice_busy_with_omar(system)
    system.twilio.register_callee(JANE, CallerScript(talk_seconds=5))
    waiting = system.twilio.place_call(
        from_=JANE,
        to=SUPPORT_LINE,
        script=CallerScript([Digits("2"), Speech("tengo una pregunta sobre mi factura"), Digits("1")]),
        status_callback="/voice/status",
    )
    assert waiting.wait_finished(timeout=WAIT)
    assert waiting.errors == []
    said = [entry for entry in waiting.transcript if entry.party == "caller" and entry.verb == "Say"]
    texts = [entry.text for entry in said]
    assert any(text.startswith("Todo nuestro equipo está atendiendo a otras personas.") for text in texts)
    assert "Oprima 1 y le devolveremos la llamada; conserva su lugar en la fila." in texts
    booked = next(entry for entry in said if entry.text.startswith("Gracias. Le llamaremos"))
    assert "0 0 0 1" in booked.text
    assert booked.attrs.get("language") == "es-MX" and booked.attrs.get("voice") == "Polly.Mia"
    assert not any("Press 1" in text or "call you back" in text or "team members" in text for text in texts)
    record = record_of(system, waiting.sid)
    assert record.language == "es-MX" and record.status is InteractionStatus.CALLBACK

    first.hang_up()  # Alice is free: we ring Jane back, in the language she chose
    callback_call = system.twilio.wait_for_call(lambda c: c.sid != waiting.sid and c.to == JANE, timeout=WAIT)
    assert callback_call is not None and callback_call.wait_finished(timeout=WAIT)
    said = [entry for entry in callback_call.transcript if entry.party == "caller" and entry.verb == "Say"]
    assert [entry.text for entry in said][:2] == [
        "Hola, Jane, le llama Acme para devolverle la llamada sobre facturación, como nos pidió.",
        "Le comunicamos ahora con una persona de nuestro equipo.",
    ]
    assert {(entry.attrs.get("language"), entry.attrs.get("voice")) for entry in said[:2]} == {("es-MX", "Polly.Mia")}


def test_a_called_back_customer_answers_the_survey_after_the_conversation(phone_system: PhoneSystem) -> None:
    # Issue 15: the survey's key press arrived on the callback's own call, which the gather step did not know:
    # the customer heard "something went wrong" and the answer was lost.
    first = alice_busy_with_omar(phone_system)
    phone_system.twilio.register_callee(JANE, CallerScript([Digits("4")], talk_seconds=None))
    waiting = phone_system.call(JANE, Speech("my invoice is wrong"), Digits("1"))
    assert waiting.wait_finished(timeout=WAIT)
    first.hang_up()  # Alice is free: she takes the callback and talks 5 s, then Jane hears the survey
    callback_call = phone_system.twilio.wait_for_call(lambda c: c.sid != waiting.sid and c.to == JANE, timeout=WAIT)
    assert callback_call is not None and callback_call.wait_finished(timeout=WAIT)
    heard = " ".join(callback_call.heard("caller"))
    assert "How satisfied were you" in heard and heard.endswith("Goodbye.")
    assert "something went wrong" not in heard
    record = record_of(phone_system, waiting.sid)
    assert record.outcome is Outcome.CALLBACK and list(record.survey.values()) == ["4"]


def test_a_pulled_caller_whom_the_rep_turns_down_is_not_recorded_as_that_reps_call(phone_system: PhoneSystem) -> None:
    # Issue 15: a caller pulled from the line to Alice, who declined, then left a message (nobody else on duty for
    # billing): the interaction named Alice as its rep although she never took it.
    phone_system.twilio.register_rep(
        ALICE, RepScript.sequence([RepScript.accepts(talk_seconds=None), RepScript.declines()])
    )
    first = phone_system.call(OMAR, Speech("I need a refund"), talk_seconds=None)
    assert first.wait_until(lambda c: c.state == "bridged", timeout=WAIT)
    waiting = phone_system.call(JANE, Speech("my invoice is wrong"))
    assert waiting.wait_until(lambda c: any("in line" in text for text in c.heard("caller")), timeout=WAIT)
    first.hang_up()  # Alice is free, Jane is pulled to her, Alice declines: nobody else does billing
    assert waiting.wait_finished(timeout=WAIT)
    record = record_of(phone_system, waiting.sid)
    assert record.outcome is Outcome.NO_REP and record.rep is None
