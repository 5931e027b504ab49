"""PostgreSQL goes away in the middle of a stream of whole calls, and comes back (issue 16: nothing lost).

The database, not the server, goes away: connections to it are refused (``ALLOW_CONNECTIONS false``) and the ones
the app holds are cut (``pg_terminate_backend``), as a server stop or a network cut would; the PostgreSQL server
itself keeps running for every other test. Calls keep arriving through the emulator meanwhile: some begin, some end
and some are talking to a rep during the outage. After it, and one reconciliation pass with Twilio (the emulator's
REST API), every call must be exactly one ended interaction with an outcome, no rep may be held, every webhook must
have been answered with HTTP 200 and TwiML the emulator could run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from crm_sync.models import Interaction, InteractionStatus, Rep, RepState, utcnow
from tests.conftest import COMPANY_NUMBER, POSTGRES_ADMIN_URL, PhoneSystem
from voice.bootstrap import Warmline
from voice.emulator import CallerScript, EmulatedCall, RepScript, Speech

REPS = ("+15550100001", "+15550100002", "+15550100003")
FALLBACK = "+15550199999"
ISSUES = ("I was charged twice", "the app crashes when I log in", "I want to upgrade my plan", "hello")
#: Calls placed, one every PACE seconds; the database is away from OUTAGE[0] to OUTAGE[1] seconds into the stream.
CALLS, PACE, OUTAGE = 40, 0.1, (1.0, 2.5)


@contextmanager
def database_outage(url: str) -> Iterator[Callable[[], None]]:
    """Yields ``cut()``: from then on the database refuses connections and the open ones are closed. Connections
    are allowed again when the block ends, whatever happened in it."""
    name = make_url(url).database
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def cut() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
            )

    try:
        yield cut
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_calls_through_a_database_outage_each_end_as_one_interaction_and_free_their_reps(
    phone_system_factory: Callable[..., PhoneSystem], database_url: str
) -> None:
    system = phone_system_factory(fallback={"number": FALLBACK})
    for rep in REPS:
        system.twilio.register_rep(rep, RepScript.accepts(talk_seconds=0.3, answer_after=0.1))
    calls: list[EmulatedCall] = []

    def place_calls() -> None:
        for number in range(CALLS):
            caller = f"+1555200{number:04d}"
            script = CallerScript([Speech(ISSUES[number % len(ISSUES)])], talk_seconds=0.3)
            call = system.twilio.place_call(caller, COMPANY_NUMBER, script, status_callback="/voice/status")
            calls.append(call)
            time.sleep(PACE)

    with database_outage(database_url) as cut:
        stream = threading.Thread(target=place_calls)
        stream.start()
        time.sleep(OUTAGE[0])
        cut()
        time.sleep(OUTAGE[1] - OUTAGE[0])
    stream.join()
    assert all(call.wait_finished(timeout=60) for call in calls), [call.state for call in calls]

    # The housekeeping pass, once calls have been quiet long enough, asks Twilio about whatever was left open.
    warmline: Warmline = system.app.extensions["warmline"]
    later = timedelta(seconds=warmline.settings.routing.check_calls_after + 1)
    warmline.clock.source = lambda: utcnow() + later
    warmline.housekeeper.sweep()
    warmline.runner.shutdown(wait=True)  # its REST requests, and what they close, are done

    exchanges = [exchange for call in calls for exchange in call.webhooks]
    assert [e.url for e in exchanges if e.status_code != 200] == []  # never a 500, not even during the outage
    assert [(call.sid, call.errors) for call in calls if call.errors] == []  # every answer was TwiML that ran
    fell_back = [call for call in calls if any(FALLBACK in entry.text for entry in call.transcript)]
    assert fell_back, "the outage never reached a caller: the test did not test it"
    with system.store.unit_of_work(read_only=True) as session:
        sids = [call.sid for call in calls]
        records = session.execute(
            select(Interaction.call_sid, Interaction.status, Interaction.outcome).where(Interaction.call_sid.in_(sids))
        ).all()
        held = session.scalars(select(Rep.name).where(Rep.state.in_([RepState.ON_CALL, RepState.RESERVED]))).all()
    recorded = Counter(sid for sid, _, _ in records)
    assert sorted(set(sids) - set(recorded)) == []  # every call Twilio told us about is recorded
    assert {sid: count for sid, count in recorded.items() if count != 1} == {}  # once
    assert [(sid, status) for sid, status, _ in records if status is not InteractionStatus.ENDED] == []
    assert [sid for sid, _, outcome in records if outcome is None] == []
    assert held == []
