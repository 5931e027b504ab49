"""A step that fails mid-call goes where the README promises (issue 16): a hold loop that keeps failing hands the
caller to the fallback number (after trying again, holding, a few times), and a failure after a conversation says
goodbye instead of apologising and dialling the fallback number to someone who was just helped.

The faults are injected into the service the webhook calls (an ``OperationalError``, as a database that went away
raises): what is under test is what the caller hears and where the call goes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from tests.conftest import PhoneSystem
from voice.bootstrap import Warmline
from voice.emulator import RepScript, Speech

ALICE, JANE, OMAR = "+15550100001", "+15551230001", "+15551230002"
FALLBACK = "+15550199999"
WAIT = 20


def the_store_is_gone(*_: Any, **__: Any) -> Any:
    raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def test_a_hold_loop_that_keeps_failing_sends_the_caller_to_the_fallback_number(
    phone_system_factory: Callable[..., PhoneSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    system = phone_system_factory(fallback={"number": FALLBACK})
    system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=None))
    busy = system.call(OMAR, Speech("I need a refund"), talk_seconds=None)  # Alice, billing's only rep, is busy
    assert busy.wait_until(lambda c: c.state == "bridged", timeout=WAIT)
    warmline: Warmline = system.app.extensions["warmline"]
    monkeypatch.setattr(warmline.queue, "hold", the_store_is_gone)
    waiting = system.call(JANE, Speech("my invoice is wrong"))
    assert waiting.wait_finished(timeout=WAIT)
    heard = " ".join(waiting.heard("caller"))
    assert "leave your name" not in heard.lower()  # not voicemail
    dialled = [entry.text for entry in waiting.transcript if entry.verb == "Dial"]
    assert any(FALLBACK in text for text in dialled), waiting.transcript
    holds = [exchange for exchange in waiting.requests if "/voice/hold" in exchange.url]
    assert len(holds) == 3  # held and tried again twice before giving up on the line
    busy.hang_up()


def test_a_failure_after_the_conversation_says_goodbye_and_dials_nobody(
    phone_system_factory: Callable[..., PhoneSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    system = phone_system_factory(fallback={"number": FALLBACK})
    system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=2))
    warmline: Warmline = system.app.extensions["warmline"]
    monkeypatch.setattr(warmline.calls, "dial_ended", the_store_is_gone)
    call = system.call(JANE, Speech("I was charged twice"), talk_seconds=None)
    assert call.wait_finished(timeout=WAIT)
    heard = call.heard("caller")
    assert heard[-1] == "Thank you for calling. Goodbye."
    assert not any("something went wrong" in text for text in heard)
    assert not any(FALLBACK in entry.text for entry in call.transcript if entry.verb == "Dial")
