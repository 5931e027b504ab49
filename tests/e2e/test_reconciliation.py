"""Nothing lost when callbacks are (issue 16): a call whose status callback never came is closed by asking Twilio,
its rep freed; a call first heard of at its end is still recorded."""

from __future__ import annotations

from datetime import timedelta

from crm_sync.models import InteractionStatus, Outcome, RepState, utcnow
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.reps import find_rep
from tests.conftest import COMPANY_NUMBER, PhoneSystem, signed_post
from voice.bootstrap import Warmline
from voice.domain.actions import CheckCall, FindUnrecordedCalls
from voice.emulator import CallerScript, RepScript, Speech
from voice.services.housekeeping import UNRECORDED_LOOK_BACK

ALICE, JANE = "+15550100001", "+15551230001"
WAIT = 15


def test_a_call_whose_final_status_was_lost_is_closed_by_asking_twilio_and_its_rep_freed(
    phone_system: PhoneSystem,
) -> None:
    phone_system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=2))
    # No status callback at all: as if every one of them was lost (a database outage, a killed worker).
    call = phone_system.twilio.place_call(
        from_=JANE, to=COMPANY_NUMBER, script=CallerScript([Speech("I was charged twice")]), status_callback=None
    )
    assert call.wait_finished(timeout=WAIT)
    warmline: Warmline = phone_system.app.extensions["warmline"]
    with phone_system.store.unit_of_work() as session:
        assert require_interaction(session, call.sid).status is not InteractionStatus.ENDED
    # Two minutes of silence about the call later, the housekeeping pass asks Twilio (in the background).
    warmline.clock.source = lambda: utcnow() + timedelta(seconds=warmline.settings.routing.check_calls_after + 1)
    started = warmline.housekeeper.sweep()
    assert CheckCall(call_sid=call.sid) in started
    warmline.runner.shutdown(wait=True)  # the REST request and what it closes are done
    with phone_system.store.unit_of_work() as session:
        record = require_interaction(session, call.sid)
        assert record.status is InteractionStatus.ENDED and record.outcome is Outcome.ANSWERED
        assert find_rep(session, "Alice Rivera").state is RepState.AVAILABLE  # not "on a call" for half an hour


def test_a_call_heard_of_only_at_its_end_is_recorded_from_its_status_callback(phone_system: PhoneSystem) -> None:
    calls = phone_system.app.extensions["warmline"].calls
    sid = "CA" + "3" * 32
    calls.call_status(sid, call_status="completed", duration_seconds=42, caller="(555) 123-0001", called=COMPANY_NUMBER)
    calls.call_status(sid, call_status="completed", duration_seconds=42, caller="(555) 123-0001", called=COMPANY_NUMBER)
    with phone_system.store.unit_of_work() as session:
        record = require_interaction(session, sid)
        assert record.status is InteractionStatus.ENDED and record.outcome is Outcome.FAILED
        assert (record.caller_number, record.called_number, record.duration_seconds) == (JANE, COMPANY_NUMBER, 42)


def test_a_status_callback_for_a_call_never_recorded_records_it(phone_system: PhoneSystem) -> None:
    sid = "CA" + "6" * 32
    final = {"CallSid": sid, "CallStatus": "completed", "CallDuration": "12", "From": JANE, "To": COMPANY_NUMBER}
    assert signed_post(phone_system.app.test_client(), "/voice/status", final, base=phone_system.url).status_code == 200
    with phone_system.store.unit_of_work() as session:
        record = require_interaction(session, sid)
        assert record.outcome is Outcome.FAILED and record.customer_id is None and record.duration_seconds == 12


def test_twilio_is_asked_for_ended_calls_once_per_check_interval_each_look_overlapping_the_last(
    phone_system: PhoneSystem,
) -> None:
    warmline: Warmline = phone_system.app.extensions["warmline"]
    started = utcnow()
    interval = timedelta(seconds=warmline.settings.routing.check_calls_after)
    moments = [started, started + interval + timedelta(seconds=1), started + interval * 1.5, started + interval * 2.5]
    looks = []
    for moment in moments:
        warmline.clock.source = lambda moment=moment: moment  # type: ignore[misc]
        looks.append([a for a in warmline.housekeeper.sweep() if isinstance(a, FindUnrecordedCalls)])
    assert looks[0] == [] and looks[2] == []  # not at once (a process living seconds), then once per interval
    (first,), (second,) = looks[1], looks[3]
    assert first.started_after <= started - UNRECORDED_LOOK_BACK  # the first look goes back past the start
    assert second.started_after == moments[1] - interval  # the next from the last look, with one interval's overlap
