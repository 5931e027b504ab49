"""Never drop a call: a failure inside any webhook still answers 200 with TwiML that reaches a human or voicemail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SqlAlchemyTimeout

from crm_sync.models import RepState
from tests.conftest import SUPPORT_LINE, PhoneSystem, app_config, seed_demo, signed_post, support_line_open
from tests.twiml import parse_twiml, said, verbs
from voice import create_app
from voice.emulator import CallerScript, Digits, Speech
from voice.services.calls import store_may_answer
from voice.web.errors import Leg
from voice.web.urls import Endpoint
from voice.web.webhooks import LEGS

WAIT = 15

CALL = {"CallSid": "CA" + "2" * 32, "From": "+15551230001", "To": "+15550009999", "CallStatus": "ringing"}


def break_the_database(app: Flask) -> None:
    """A real failure, not a mock: the table every webhook needs disappears under the running app."""
    store = app.extensions["warmline"].store
    with store.engine.begin() as connection:
        connection.execute(text("ALTER TABLE interactions RENAME TO interactions_gone"))


def restore_the_database(app: Flask) -> None:
    store = app.extensions["warmline"].store
    with store.engine.begin() as connection:
        connection.execute(text("ALTER TABLE interactions_gone RENAME TO interactions"))


@pytest.fixture
def broken_app(database_url: str, tmp_path: Path) -> Any:
    apps: list[Flask] = []

    def make(**overrides: Any) -> FlaskClient:
        # No housekeeping thread: the database is broken on purpose and it would only log the same failure.
        overrides.setdefault("routing", {"sweep_interval": 0})
        app = create_app(app_config(database_url, tmp_path / f"i{len(apps)}", **overrides))
        seed_demo(app.extensions["warmline"].store)
        break_the_database(app)
        apps.append(app)
        return app.test_client()

    yield make
    restore_the_database(apps[0])
    for app in apps:
        app.extensions["warmline"].close()


def test_crash_with_a_fallback_number_dials_it(broken_app: Any) -> None:
    client = broken_app(fallback={"number": "+1 (555) 010-9999"})
    response = signed_post(client, "/voice/incoming", CALL)
    assert response.status_code == 200
    root = parse_twiml(response.data)
    assert verbs(root) == ["Say", "Dial"]
    assert "something went wrong" in said(root)[0]
    assert root.find("Dial").text == "+15550109999"  # type: ignore[union-attr]


def test_crash_without_a_fallback_number_takes_a_voicemail(broken_app: Any) -> None:
    client = broken_app()
    for path, form in [
        ("/voice/incoming", CALL),
        ("/voice/gather", {"CallSid": CALL["CallSid"], "SpeechResult": "billing"}),
        ("/voice/queue-exit", {"CallSid": CALL["CallSid"], "QueueResult": "leave"}),
    ]:
        response = signed_post(client, path, form)
        assert response.status_code == 200, path
        root = parse_twiml(response.data)
        assert "Record" in verbs(root), path
        record = root.find("Record")
        assert record is not None and record.get("action", "").endswith("/voice/voicemail")


def test_crash_in_the_hold_loop_leaves_the_queue_with_queue_safe_twiml(broken_app: Any) -> None:
    client = broken_app()
    response = signed_post(client, "/voice/hold", {"CallSid": CALL["CallSid"], "QueueTime": "30"})
    assert response.status_code == 200
    assert verbs(parse_twiml(response.data)) == ["Leave"]


def test_crash_on_the_rep_leg_hangs_up_the_rep_not_the_caller(broken_app: Any) -> None:
    client = broken_app(fallback={"number": "+15550109999"})
    response = signed_post(client, "/voice/whisper?offer=1", {"CallSid": "CA" + "3" * 32})
    root = parse_twiml(response.data)
    assert verbs(root) == ["Say", "Hangup"]  # never dials the fallback number from a rep's phone


def test_malformed_webhook_still_gets_twiml(client: FlaskClient) -> None:
    response = signed_post(client, "/voice/gather", {"SpeechResult": "hello"})  # no CallSid
    assert response.status_code == 200
    assert "Record" in verbs(parse_twiml(response.data))


def test_gather_for_a_call_we_never_saw_still_gets_twiml(client: FlaskClient) -> None:
    response = signed_post(client, "/voice/gather", {"CallSid": "CA" + "9" * 32, "Digits": "1"})
    assert response.status_code == 200
    parse_twiml(response.data)


def test_garbled_numbers_in_a_webhook_are_a_malformed_request_not_a_500(client: FlaskClient) -> None:
    response = signed_post(client, "/voice/hold", {"CallSid": CALL["CallSid"], "QueueTime": "soon"})
    assert response.status_code == 200
    assert verbs(parse_twiml(response.data)) == ["Leave"]


def test_a_caller_who_chose_spanish_hears_the_fallback_in_spanish(
    phone_system_factory: Callable[..., PhoneSystem],
) -> None:
    system = support_line_open(phone_system_factory)
    system.app.extensions["warmline"].presence.set_presence("Alice Rivera", RepState.AWAY)  # billing: nobody free
    waiting = system.twilio.place_call(
        from_="+15550000001",
        to=SUPPORT_LINE,
        script=CallerScript([Digits("2"), Speech("tengo una pregunta sobre mi factura"), Digits("1")]),
        status_callback="/voice/status",
    )
    assert waiting.wait_finished(timeout=WAIT) and waiting.errors == []

    # Something under the webhook breaks (a real failure: a table it needs is gone), not the call's own record.
    store = system.app.extensions["warmline"].store
    with store.engine.begin() as connection:
        connection.execute(text("ALTER TABLE offers RENAME TO offers_gone"))
    try:
        exit_form = {"CallSid": waiting.sid, "QueueResult": "leave", "To": SUPPORT_LINE}
        response = signed_post(system.app.test_client(), "/voice/queue-exit", exit_form, base=system.url)
    finally:
        with store.engine.begin() as connection:
            connection.execute(text("ALTER TABLE offers_gone RENAME TO offers"))
    assert response.status_code == 200
    root = parse_twiml(response.data)
    assert verbs(root) == ["Say", "Say", "Record", "Say", "Hangup"]
    assert said(root) == [
        "Lo sentimos, algo falló de nuestro lado. Permítame comunicarle con alguien que pueda ayudarle.",
        "Por favor, deje su nombre, su número y un breve mensaje después del tono, y le devolveremos la llamada.",
        "No recibimos ningún mensaje. Adiós.",  # when she leaves none
    ]
    says = root.findall("Say")
    assert {(say.get("language"), say.get("voice")) for say in says} == {("es-MX", "Polly.Mia")}



def test_the_fallback_reads_the_store_again_only_when_that_cannot_wait_on_the_same_fault() -> None:
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)
    assert not store_may_answer(SqlAlchemyTimeout("QueuePool limit of size 10 overflow 10 reached"))
    assert not store_may_answer(lost)
    assert store_may_answer(OperationalError("SELECT 1", {}, Exception("no such table: offers")))
    assert store_may_answer(ZeroDivisionError()) and store_may_answer(None)


# What each leg may hear when its webhook fails (the fallback number is configured, so a caller's answer dials it).
SAFE_ANSWERS = {
    Leg.CALLER: ["Say", "Dial"],
    Leg.REP: ["Say", "Hangup"],  # the rep is hung up on; the fallback number is never dialled from a rep's phone
    Leg.QUEUE_HOLD: ["Leave"],  # queue-safe: the Enqueue action takes the caller on to the full fallback
    Leg.STATUS: [],
}


def test_every_webhook_fails_safe_for_the_leg_it_answers_for(
    broken_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = broken_app(fallback={"number": "+15550109999"})
    # The database is broken, and our ids in the URLs are garbled: every route that does any work fails.
    form = {**CALL, "QueueResult": "leave", "StatusCallbackEvent": "participant-join", "CallStatus": "completed"}
    for endpoint in Endpoint:
        leg = LEGS[f"voice.{endpoint.view_name}"]
        caplog.clear()
        response = signed_post(client, f"{endpoint.path}?offer=x&handoff=x&callback=x", form)
        assert response.status_code == 200, endpoint
        answer = verbs(parse_twiml(response.data))
        if endpoint is Endpoint.HANDOFF_HOLD_MUSIC:  # reads nothing but config.yaml: it cannot fail like this
            assert leg is Leg.CONFERENCE_HOLD and answer == ["Play", "Redirect"]
            continue
        assert "answering with fallback TwiML" in caplog.text, endpoint
        assert answer == SAFE_ANSWERS[leg], (endpoint, leg)

