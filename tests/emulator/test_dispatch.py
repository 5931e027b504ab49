"""How the interpreter dispatches: ``<Dial>`` nouns, and verbs a kind of document may not use.

The calls here are REST-created calls running inline TwiML, so each test states its document in
full; documents the calls fetch come from the test app (``/hold-bad``, ``/conf-wait-bad``).
"""

from __future__ import annotations

from twilio.rest import Client

from tests.emulator.conftest import CALLER, REP, TWILIO_NUMBER, WebhookApp
from voice.emulator import CallerScript, EmulatedCall, RepScript, TwilioEmulator


def _run(emu: TwilioEmulator, client: Client, twiml: str, script: CallerScript | None = None) -> EmulatedCall:
    """Call CALLER (who answers with ``script``) and run ``twiml`` on the call to the end."""
    emu.register_callee(CALLER, script or CallerScript(talk_seconds=5))
    created = client.calls.create(to=CALLER, from_=TWILIO_NUMBER, twiml=twiml)
    call = emu.call(created.sid)
    assert call is not None and call.wait_finished(5)
    return call


def _warnings(call: EmulatedCall) -> list[tuple[int, str]]:
    assert not any(e.fatal for e in call.errors), call.errors
    return [(e.code, e.message) for e in call.errors]


def test_a_dial_noun_the_emulator_does_not_know_is_skipped_and_the_numbers_still_ring(
    emu: TwilioEmulator, client: Client
) -> None:
    emu.register_rep(REP, RepScript.accepts(talk_seconds=3))
    call = _run(emu, client, f"<Response><Dial><Client>alice</Client><Number>{REP}</Number></Dial></Response>")
    assert _warnings(call) == [(12200, "<Dial><Client> is not emulated; skipped")]
    assert [(leg.to, leg.status) for leg in call.legs[1:]] == [(REP, "completed")]
    assert any(e.text == f"bridged caller with {REP}" for e in call.transcript)


def test_bare_text_in_a_dial_is_a_number_rung_before_its_number_nouns(emu: TwilioEmulator, client: Client) -> None:
    emu.register_rep(REP, RepScript.no_answer())
    other = "+15550100009"
    call = _run(emu, client, f'<Response><Dial timeout="3">{other}<Number>{REP}</Number></Dial></Response>')
    assert [leg.to for leg in call.legs[1:]] == [other, REP]


def test_a_dial_with_nothing_to_ring_fails_at_once(emu: TwilioEmulator, client: Client) -> None:
    call = _run(emu, client, "<Response><Dial><Sip>sip:alice@example.com</Sip></Dial><Say>Next.</Say></Response>")
    assert _warnings(call) == [
        (12200, "<Dial><Sip> is not emulated; skipped"),
        (12200, "<Dial> has nothing the emulator can dial"),
    ]
    assert call.legs[1:] == [] and call.heard() == ["Next."]


def test_a_conference_must_be_the_only_noun_of_its_dial(emu: TwilioEmulator, client: Client) -> None:
    emu.register_rep(REP, RepScript.accepts())
    call = _run(emu, client, f"<Response><Dial><Number>{REP}</Number><Conference>lobby</Conference></Dial></Response>")
    assert _warnings(call) == [(12200, "<Conference> must be the only noun of its <Dial>; other nouns ignored")]
    assert call.legs[1:] == []  # the rep is never rung
    conference = emu.conference("lobby")
    assert conference is not None and conference.event_names()[:1] == ["participant-join"]


def test_leave_outside_a_queue_wait_is_skipped(emu: TwilioEmulator, client: Client) -> None:
    call = _run(emu, client, "<Response><Leave/><Say>After.</Say></Response>")
    assert _warnings(call) == [(12200, "<Leave> outside a queue wait; skipped")]
    assert call.heard() == ["After."]


def test_each_kind_of_document_reports_the_verbs_it_may_not_use(
    emu: TwilioEmulator, client: Client, webhook_app: WebhookApp
) -> None:
    # /hold-bad is <Dial>, <Say>Still holding.</Say>, <Leave/>.
    queued = _run(emu, client, '<Response><Enqueue waitUrl="/hold-bad">support</Enqueue></Response>')
    assert _warnings(queued) == [(12200, "<Dial> is not allowed in a waitUrl document; skipped")]

    emu.register_rep(REP, RepScript.accepts(talk_seconds=1))
    dialed = _run(emu, client, f'<Response><Dial><Number url="/hold-bad">{REP}</Number></Dial></Response>')
    assert _warnings(dialed) == [
        (12200, "<Dial> is not allowed in this whisper document; skipped"),
        (12200, "<Leave> is not allowed in this whisper document; skipped"),
    ]
    assert dialed.heard("rep") == ["Still holding."]

    # /conf-wait-bad is <Gather><Say>Press a key.</Say></Gather>, <Say>Still waiting.</Say>, <Redirect/>.
    waiting = _run(
        emu, client, '<Response><Dial><Conference waitUrl="/conf-wait-bad">solo</Conference></Dial></Response>'
    )
    codes = {(e.code, e.message) for e in waiting.errors}
    assert codes == {(13238, "<Gather> is not allowed in conference audio (waitUrl/holdUrl/announceUrl); skipped")}
    assert "Still waiting." in waiting.heard() and "Press a key." not in waiting.heard()
