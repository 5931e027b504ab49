"""Rep-to-rep warm transfer, end to end: the emulator plays Twilio (conferences, hold, REST-created legs) and the
reps; the transfer is asked for through the reps' JSON API, as the rep console would."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from crm_sync.models import HandoffState, InteractionStatus, Outcome, RepState
from crm_sync.queries.handoffs import handoffs_of
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.reps import find_rep
from tests.conftest import PhoneSystem, signed_post
from voice.cli import main
from voice.emulator import Digits, EmulatedCall, RepScript, Speech

ALICE, BOB = "+15550100001", "+15550100002"
JANE = "+15551230001"
WAIT = 20
NOTE = "Router keeps rebooting since the update; a reset did not help."


def token_for(system: PhoneSystem, name: str) -> str:
    result = system.app.test_cli_runner().invoke(main, ["reps", "token", name])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0]


def transfer(system: PhoneSystem, asking: str, call_sid: str, **body: str) -> Any:
    client = system.app.test_client()
    headers = {"Authorization": f"Bearer {token_for(system, asking)}"}
    return client.post(f"/api/calls/{call_sid}/transfer", json=body, headers=headers)


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def handoff_state(system: PhoneSystem, call_sid: str) -> HandoffState | None:
    with system.store.unit_of_work() as session:
        interaction = require_interaction(session, call_sid)
        handoffs = handoffs_of(session, interaction.id)
        return handoffs[-1].state if handoffs else None


def interaction_status(system: PhoneSystem, call_sid: str) -> InteractionStatus:
    with system.store.unit_of_work() as session:
        return require_interaction(session, call_sid).status


def rep_state(system: PhoneSystem, name: str) -> RepState:
    with system.store.unit_of_work() as session:
        return find_rep(session, name).state


def jane_with_alice(system: PhoneSystem) -> EmulatedCall:
    """Jane's billing call, taken by Alice, who stays on it until she leaves; Jane presses 4 if asked anything
    after the conversation (the sample flow's survey)."""
    system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=None))
    call = system.call(
        JANE, Speech("my internet bill and my router are both wrong"), Digits("4"), talk_seconds=None
    )
    assert call.wait_until(lambda c: c.state == "bridged", timeout=WAIT)
    return call


def alice_leg(system: PhoneSystem, caller: EmulatedCall) -> EmulatedCall:
    """After the move, Alice's leg (the one the hand-off moved) runs as a call of its own in the emulator."""
    with system.store.unit_of_work() as session:
        handoff = handoffs_of(session, require_interaction(session, caller.sid).id)[-1]
        moved = handoff.from_call_sid
    assert moved is not None
    found = system.twilio.wait_for_call(lambda c: c.sid == moved, timeout=WAIT)
    assert found is not None
    return found


def test_the_caller_is_handed_to_a_colleague_who_already_knows_the_story(phone_system: PhoneSystem) -> None:
    caller = jane_with_alice(phone_system)
    phone_system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=None))
    response = transfer(phone_system, "Alice Rivera", caller.sid, department="technical_support", note=NOTE)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["to_rep"] == "Bob Chen"

    # Bob hears the whisper with Alice's note and joins; Alice and Bob speak while Jane holds.
    assert wait_for(lambda: handoff_state(phone_system, caller.sid) is HandoffState.CONSULTING)
    bob_call = phone_system.twilio.wait_for_call(lambda c: c.to == BOB, timeout=WAIT)
    assert bob_call is not None
    whisper = " ".join(bob_call.heard())
    assert whisper.startswith("Transfer from Alice Rivera: Jane Doe, gold customer, about technical support.")
    assert f"Alice Rivera's note: {NOTE}" in whisper
    assert "In their words: My internet bill and my router are both wrong." in whisper

    # Alice leaves: Jane is taken off hold, with Bob.
    assert phone_system.twilio.rep_hang_up(ALICE)
    assert wait_for(lambda: handoff_state(phone_system, caller.sid) is HandoffState.COMPLETED)
    assert caller.wait_until(lambda c: "to" in c.connected_with(), timeout=WAIT)
    assert caller.silence_seconds() == 0  # hold music or a person, all along
    heard = caller.heard()
    assert "Please hold while I transfer you." in heard
    assert wait_for(lambda: rep_state(phone_system, "Alice Rivera") is RepState.AVAILABLE)
    with phone_system.store.unit_of_work() as session:
        record = require_interaction(session, caller.sid)
        assert record.rep is not None and record.rep.name == "Bob Chen"
        handoff = handoffs_of(session, record.id)[-1]
        assert handoff.note == NOTE and handoff.to_department == "technical_support"
        assert handoff.from_rep.name == "Alice Rivera" and handoff.ended_at is not None

    assert caller.hang_up()
    assert caller.wait_finished(timeout=WAIT)
    assert wait_for(lambda: rep_state(phone_system, "Bob Chen") is RepState.AVAILABLE)
    with phone_system.store.unit_of_work() as session:
        record = require_interaction(session, caller.sid)
        assert record.status is InteractionStatus.ENDED and record.outcome is Outcome.ANSWERED


def test_a_target_who_does_not_answer_leaves_the_caller_with_the_first_rep(phone_system: PhoneSystem) -> None:
    caller = jane_with_alice(phone_system)
    phone_system.twilio.register_rep(BOB, RepScript.no_answer())
    response = transfer(phone_system, "Alice Rivera", caller.sid, rep="Bob Chen", note=NOTE)
    assert response.status_code == 202, response.get_json()
    assert wait_for(lambda: handoff_state(phone_system, caller.sid) is HandoffState.FAILED)
    assert caller.wait_until(lambda c: "from" in c.connected_with(), timeout=WAIT)
    alice = alice_leg(phone_system, caller)
    assert alice.wait_until(
        lambda c: "Bob Chen could not take the call. The caller is back with you." in c.heard(), timeout=WAIT
    )
    assert caller.silence_seconds() == 0
    assert wait_for(lambda: rep_state(phone_system, "Bob Chen") is RepState.AVAILABLE)
    assert rep_state(phone_system, "Alice Rivera") is RepState.ON_CALL
    with phone_system.store.unit_of_work() as session:
        record = require_interaction(session, caller.sid)
        assert record.rep is not None and record.rep.name == "Alice Rivera"
        assert "Bob Chen" in (handoffs_of(session, record.id)[-1].failure or "")
        assert find_rep(session, "Bob Chen").missed_offers == 1


def test_if_the_first_rep_hangs_up_early_the_caller_holds_until_the_target_joins(
    phone_system_factory: Callable[..., PhoneSystem],
) -> None:
    system = phone_system_factory(time_scale=0.05)  # Bob's 8 s of ringing take 0.4 s: Alice is gone by then
    caller = jane_with_alice(system)
    system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=None, answer_after=8.0))
    assert transfer(system, "Alice Rivera", caller.sid, department="technical_support").status_code == 202
    assert wait_for(lambda: handoff_state(system, caller.sid) is HandoffState.DIALING)
    assert system.twilio.rep_hang_up(ALICE)  # before Bob picks up
    assert wait_for(lambda: handoff_state(system, caller.sid) is HandoffState.COMPLETED)
    assert caller.wait_until(lambda c: "to" in c.connected_with(), timeout=WAIT)
    assert caller.silence_seconds() == 0
    with system.store.unit_of_work() as session:
        handoff = handoffs_of(session, require_interaction(session, caller.sid).id)[-1]
        assert handoff.to_joined_at is not None
        # The early hang-up really came first: Alice left (or never got into the conference) before Bob joined.
        assert handoff.from_joined_at is None or (
            handoff.from_left_at is not None and handoff.from_left_at < handoff.to_joined_at
        )


def test_a_caller_who_hangs_up_during_the_handoff_ends_it_for_everyone(phone_system: PhoneSystem) -> None:
    caller = jane_with_alice(phone_system)
    phone_system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=None, answer_after=15.0))
    assert transfer(phone_system, "Alice Rivera", caller.sid, department="technical_support").status_code == 202
    assert wait_for(lambda: handoff_state(phone_system, caller.sid) is HandoffState.DIALING)
    assert caller.hang_up()
    assert wait_for(lambda: handoff_state(phone_system, caller.sid) is HandoffState.CANCELLED)
    assert wait_for(lambda: rep_state(phone_system, "Alice Rivera") is RepState.AVAILABLE)
    assert wait_for(lambda: rep_state(phone_system, "Bob Chen") is RepState.AVAILABLE)
    # The call itself ends with the caller's final status callback, which may come after the conference's events.
    assert wait_for(lambda: interaction_status(phone_system, caller.sid) is InteractionStatus.ENDED)
    with phone_system.store.unit_of_work() as session:
        record = require_interaction(session, caller.sid)
        assert record.status is InteractionStatus.ENDED


def test_the_callers_status_callback_cancels_the_handoff_even_before_the_conference_says_they_left(
    phone_system: PhoneSystem,
) -> None:
    # Twilio's callbacks race: the caller's final call status can overtake the conference's participant-leave, and
    # the target rep's call can then end first. Whatever comes next, the hand-off was cancelled, not refused.
    caller = jane_with_alice(phone_system)
    phone_system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=None, answer_after=15.0))
    assert transfer(phone_system, "Alice Rivera", caller.sid, department="technical_support").status_code == 202
    assert wait_for(lambda: handoff_state(phone_system, caller.sid) is HandoffState.DIALING)
    status = {"CallSid": caller.sid, "CallStatus": "completed", "CallDuration": "40"}
    response = signed_post(phone_system.app.test_client(), "/voice/status", status, base=phone_system.url)
    assert response.status_code == 200
    assert handoff_state(phone_system, caller.sid) is HandoffState.CANCELLED
    assert caller.hang_up()
    assert wait_for(lambda: rep_state(phone_system, "Bob Chen") is RepState.AVAILABLE)
    assert wait_for(lambda: rep_state(phone_system, "Alice Rivera") is RepState.AVAILABLE)
    assert handoff_state(phone_system, caller.sid) is HandoffState.CANCELLED


def test_nobody_free_in_the_target_department_is_refused_and_nothing_moves(phone_system: PhoneSystem) -> None:
    caller = jane_with_alice(phone_system)
    phone_system.app.extensions["warmline"].presence.set_presence("Bob Chen", RepState.AWAY)
    response = transfer(phone_system, "Alice Rivera", caller.sid, department="technical_support")
    assert response.status_code == 409
    assert response.get_json()["error"]["message"] == "nobody in technical support is free right now"
    assert caller.state == "bridged" and handoff_state(phone_system, caller.sid) is None
    assert transfer(phone_system, "Bob Chen", caller.sid, department="sales").status_code == 403  # not Bob's call


def test_after_a_declined_handoff_the_first_rep_hanging_up_does_not_strand_the_caller(
    phone_system: PhoneSystem,
) -> None:
    # Issue 15: Bob declined, Jane was back with Alice; when Alice then hung up, Jane sat alone in a silent
    # conference until she gave up, and Bob stayed reserved.
    caller = jane_with_alice(phone_system)
    phone_system.twilio.register_rep(BOB, RepScript.declines())
    assert transfer(phone_system, "Alice Rivera", caller.sid, rep="Bob Chen", note=NOTE).status_code == 202
    assert wait_for(lambda: handoff_state(phone_system, caller.sid) is HandoffState.FAILED)
    assert caller.wait_until(lambda c: "from" in c.connected_with(), timeout=WAIT)
    # Bob, who declined, is free at once, not when his reservation runs out.
    assert wait_for(lambda: rep_state(phone_system, "Bob Chen") is RepState.AVAILABLE, timeout=5)

    assert phone_system.twilio.rep_hang_up(ALICE)
    assert caller.wait_finished(timeout=WAIT)  # not left holding on to an empty conference
    heard = " ".join(caller.heard())
    assert "How satisfied were you" in heard  # the flow's own ending after a conversation: its survey
    assert wait_for(lambda: rep_state(phone_system, "Alice Rivera") is RepState.AVAILABLE)
    with phone_system.store.unit_of_work() as session:
        record = require_interaction(session, caller.sid)
        assert record.status is InteractionStatus.ENDED and record.outcome is Outcome.ANSWERED


def test_after_a_completed_handoff_the_caller_answers_the_survey(phone_system: PhoneSystem) -> None:
    caller = jane_with_alice(phone_system)
    phone_system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=None))
    assert transfer(phone_system, "Alice Rivera", caller.sid, department="technical_support").status_code == 202
    assert wait_for(lambda: handoff_state(phone_system, caller.sid) is HandoffState.CONSULTING)
    assert phone_system.twilio.rep_hang_up(ALICE)
    assert wait_for(lambda: handoff_state(phone_system, caller.sid) is HandoffState.COMPLETED)
    assert caller.wait_until(lambda c: "to" in c.connected_with(), timeout=WAIT)

    assert phone_system.twilio.rep_hang_up(BOB)  # Bob ends the conversation; Jane is still on the line
    assert caller.wait_finished(timeout=WAIT)
    assert "How satisfied were you" in " ".join(caller.heard())
    with phone_system.store.unit_of_work() as session:
        assert require_interaction(session, caller.sid).survey
