"""Presence, leases, wrap-up, strategies, priority and overflow: the call service on a real database, with a clock
the test moves and the REST actions it would take collected instead of sent.

Webhooks are signed and posted through the Flask test client exactly as Twilio posts them; the housekeeping sweep is
run by hand (its thread is off) so that time is the test's to move.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from crm_sync.db import Store
from crm_sync.models import Interaction, InteractionStatus, Offer, OfferState, Rep, RepState
from crm_sync.queries.customers import upsert_customer
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.offers import find_offer
from crm_sync.queries.reps import Strategy, find_rep, free_reps, upsert_rep
from tests.conftest import app_config, seed_demo, signed_post
from tests.twiml import parse_twiml, said
from voice import create_app
from voice.bootstrap import Warmline
from voice.domain.actions import Action, PullCaller

START = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
ALICE, BOB = "+15550100001", "+15550100002"


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Desk:
    """The app, its clock, and what it asked Twilio to do."""

    client: FlaskClient
    warmline: Warmline
    clock: ManualClock
    actions: list[Action] = field(default_factory=list)
    calls: int = 0

    @property
    def store(self) -> Store:
        return self.warmline.store

    def post(self, path: str, params: dict[str, str]) -> ET.Element:
        response = signed_post(self.client, path, params)
        assert response.status_code == 200, response.data
        return parse_twiml(response.data)

    def call(self, caller: str, *, digits: str | None = None, speech: str | None = None) -> tuple[str, ET.Element]:
        """A caller rings and answers the first question; returns the CallSid and the TwiML of the answer."""
        self.calls += 1
        sid = f"CA{self.calls:032d}"
        self.post("/voice/incoming", {"CallSid": sid, "From": caller, "To": "+15550009999"})
        answer = {"CallSid": sid}
        if digits is not None:
            answer["Digits"] = digits
        if speech is not None:
            answer.update(SpeechResult=speech, Confidence="0.9")
        return sid, self.post("/voice/gather", answer)

    def take(self, offer: int, sid: str) -> None:
        """The rep answers, hears the whisper, presses 1."""
        self.post(f"/voice/whisper?offer={offer}", {"CallSid": f"CArep{offer:029d}", "ParentCallSid": sid})
        self.post(f"/voice/whisper/answer?offer={offer}", {"CallSid": f"CArep{offer:029d}", "Digits": "1"})

    def hang_up(self, sid: str, offer: int | None = None) -> None:
        """The call ends: the Dial action (if the caller was dialled), then the status callback."""
        if offer is not None:
            self.post(f"/voice/dial-ended?offer={offer}", {"CallSid": sid, "DialCallStatus": "completed"})
        self.post("/voice/status", {"CallSid": sid, "CallStatus": "completed", "CallDuration": "60"})

    def rep(self, name: str) -> Rep:
        with self.store.unit_of_work() as session:
            return find_rep(session, name)

    def interaction(self, sid: str) -> Any:
        with self.store.unit_of_work() as session:
            return require_interaction(session, sid)

    def sweep(self) -> list[Action]:
        return self.warmline.housekeeper.sweep()


def offer_of(twiml: ET.Element) -> int:
    dial = twiml.find("Dial")
    assert dial is not None, ET.tostring(twiml)
    return int((dial.get("action") or "").rsplit("=", 1)[1])


def dialled(twiml: ET.Element) -> list[str]:
    return [(number.text or "").strip() for number in twiml.iter("Number")]


@pytest.fixture
def make_desk(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Desk]]:
    made: list[Desk] = []

    def make(*, routing: dict[str, Any] | None = None, **overrides: Any) -> Desk:
        config = app_config(
            database_url, tmp_path / f"i{len(made)}", routing={"sweep_interval": 0, **(routing or {})}, **overrides
        )
        app = create_app(config)
        warmline: Warmline = app.extensions["warmline"]
        clock = ManualClock(START)
        warmline.clock.source = clock
        desk = Desk(client=app.test_client(), warmline=warmline, clock=clock)
        warmline.actions.connect(desk.actions.append)
        seed_demo(warmline.store)
        made.append(desk)
        return desk

    yield make
    for desk in made:
        desk.warmline.close()


def test_a_reservation_nobody_answers_is_released_by_itself(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk()
    _sid, twiml = desk.call("+15557650001", digits="1")  # billing: Alice
    offer = offer_of(twiml)
    assert desk.rep("Alice Rivera").state is RepState.RESERVED
    desk.clock.advance(30)
    desk.sweep()
    assert desk.rep("Alice Rivera").state is RepState.RESERVED  # still within ring + whisper time
    # The Dial action and every callback about this offer are lost: the lease runs out.
    desk.clock.advance(60)
    desk.sweep()
    alice = desk.rep("Alice Rivera")
    assert alice.state is RepState.AVAILABLE and alice.missed_offers == 1 and alice.current_offer_id is None
    with desk.store.unit_of_work() as session:
        assert find_offer(session, offer).state is OfferState.DECLINED  # type: ignore[union-attr]


def test_missed_offers_in_a_row_set_a_rep_away(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk(routing={"missed_offers_before_away": 2})
    sid, twiml = desk.call("+15557650001", digits="1")
    desk.post(f"/voice/dial-ended?offer={offer_of(twiml)}", {"CallSid": sid, "DialCallStatus": "no-answer"})
    assert desk.rep("Alice Rivera").state is RepState.AVAILABLE
    assert desk.rep("Alice Rivera").missed_offers == 1
    sid2, twiml2 = desk.call("+15557650002", digits="1")
    assert dialled(twiml2) == [ALICE]
    desk.post(f"/voice/dial-ended?offer={offer_of(twiml2)}", {"CallSid": sid2, "DialCallStatus": "no-answer"})
    assert desk.rep("Alice Rivera").state is RepState.AWAY
    # Setting herself available again starts a fresh count.
    desk.warmline.presence.set_presence("Alice Rivera", RepState.AVAILABLE)
    assert desk.rep("Alice Rivera").missed_offers == 0


def test_a_taken_call_resets_the_missed_count(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk(routing={"missed_offers_before_away": 2})
    sid, twiml = desk.call("+15557650001", digits="1")
    desk.post(f"/voice/dial-ended?offer={offer_of(twiml)}", {"CallSid": sid, "DialCallStatus": "no-answer"})
    sid2, twiml2 = desk.call("+15557650002", digits="1")
    desk.take(offer_of(twiml2), sid2)
    desk.hang_up(sid2, offer_of(twiml2))
    alice = desk.rep("Alice Rivera")
    assert alice.state is RepState.AVAILABLE and alice.missed_offers == 0


def test_wrap_up_then_available_by_itself_taking_the_waiting_caller(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk(routing={"wrap_up": 30})
    sid, twiml = desk.call("+15557650001", digits="1")
    offer = offer_of(twiml)
    desk.take(offer, sid)
    desk.clock.advance(120)
    desk.hang_up(sid, offer)
    alice = desk.rep("Alice Rivera")
    assert alice.state is RepState.WRAP_UP and alice.wrap_up_until == START + timedelta(seconds=150)

    waiting, twiml = desk.call("+15557650002", digits="1")
    assert twiml.find("Enqueue") is not None  # Alice is on duty, wrapping up: worth waiting for
    hold = desk.post("/voice/hold", {"CallSid": waiting, "QueueTime": "0"})
    # Alice's wrap-up ends in 30 s: that is the estimate, said as less than a minute.
    assert "You are number 1 in line for billing. The wait is less than a minute." in said(hold)
    desk.clock.advance(29)
    assert desk.sweep() == []
    assert desk.rep("Alice Rivera").state is RepState.WRAP_UP  # wrap-up is never cut short
    desk.clock.advance(2)
    pulls = [action for action in desk.sweep() if isinstance(action, PullCaller)]
    assert [pull.call_sid for pull in pulls] == [waiting]
    assert desk.rep("Alice Rivera").state is RepState.RESERVED
    assert desk.interaction(waiting).status is InteractionStatus.OFFERING


def test_a_late_callback_about_an_old_offer_never_frees_a_rep_on_a_new_one(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk()
    sid, twiml = desk.call("+15557650001", digits="1")
    first_offer = offer_of(twiml)
    desk.take(first_offer, sid)
    desk.hang_up(sid, first_offer)
    _sid2, twiml2 = desk.call("+15557650002", digits="1")
    second_offer = offer_of(twiml2)
    assert desk.rep("Alice Rivera").current_offer_id == second_offer
    # Twilio retries the first call's Dial action and status callback late:
    desk.hang_up(sid, first_offer)
    alice = desk.rep("Alice Rivera")
    assert alice.state is RepState.RESERVED and alice.current_offer_id == second_offer


def test_away_asked_for_during_a_call_is_taken_when_it_ends(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk(routing={"wrap_up": 30})
    sid, twiml = desk.call("+15557650001", digits="1")
    offer = offer_of(twiml)
    desk.take(offer, sid)
    change = desk.warmline.presence.set_presence("Alice Rivera", RepState.AWAY)
    assert not change.immediate and change.rep.after_call == "away"
    assert desk.rep("Alice Rivera").state is RepState.ON_CALL
    desk.hang_up(sid, offer)
    alice = desk.rep("Alice Rivera")
    assert alice.state is RepState.AWAY and alice.after_call_state is None


def test_ring_all_rings_every_free_rep_and_the_first_to_answer_takes_it(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk(routing={"departments": {"general": {"strategy": "ring_all"}}})
    sid, twiml = desk.call("+15557650001", digits="0")  # general: Alice, Bob and Carmen all have it
    assert len(dialled(twiml)) == 3
    offers = [int((number.get("url") or "").rsplit("=", 1)[1]) for number in twiml.iter("Number")]
    bob_offer = offers[dialled(twiml).index(BOB)]
    desk.take(bob_offer, sid)
    states = {name: desk.rep(name).state for name in ("Alice Rivera", "Bob Chen", "Carmen Ortiz")}
    assert states == {
        "Alice Rivera": RepState.AVAILABLE,
        "Bob Chen": RepState.ON_CALL,
        "Carmen Ortiz": RepState.AVAILABLE,
    }
    desk.hang_up(sid, offer_of(twiml))
    with desk.store.unit_of_work() as session:
        ended = {find_offer(session, offer).state for offer in offers}  # type: ignore[union-attr]
    assert ended == {OfferState.ENDED, OfferState.CANCELLED}
    assert desk.interaction(sid).rep_id == desk.rep("Bob Chen").id


def test_a_vip_and_a_frustrated_caller_go_ahead_and_the_freed_rep_takes_the_first(
    make_desk: Callable[..., Desk],
) -> None:
    desk = make_desk()
    with desk.store.unit_of_work() as session:
        upsert_customer(
            session, name="Vera Ip", phone_e164="+15551239999", email=None, tier="vip", notes=None, custom_fields={}
        )
    busy, twiml = desk.call("+15557650000", digits="1")
    alice_offer = offer_of(twiml)
    desk.take(alice_offer, busy)
    standard, _ = desk.call("+15557650001", speech="a question about my invoice")
    desk.clock.advance(30)
    vip, _ = desk.call("+15551239999", speech="a question about my invoice")
    desk.clock.advance(10)
    angry, _ = desk.call("+15557650003", speech="this is the third time I call about my bill, ridiculous")
    order = sorted((standard, vip, angry), key=lambda sid: desk.interaction(sid).rank_at)
    assert order == [vip, angry, standard]
    assert desk.interaction(vip).priority_reasons == ["tier vip"]
    assert desk.interaction(angry).priority_reasons[0].startswith("frustrated")
    hold = desk.post("/voice/hold", {"CallSid": standard, "QueueTime": "40"})
    assert any(text.startswith("You are number 3 in line") for text in said(hold))

    desk.hang_up(busy, alice_offer)  # Alice is free: the VIP is pulled at once, within this very webhook
    assert [(type(a), getattr(a, "call_sid", None)) for a in desk.actions] == [(PullCaller, vip)]


def test_equal_callers_are_served_first_come_first_served(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk()
    busy, twiml = desk.call("+15557650000", digits="1")
    desk.take(offer_of(twiml), busy)
    sids = []
    for index in range(3):
        sid, _ = desk.call(f"+1555765001{index}", digits="1")
        sids.append(sid)
        desk.clock.advance(5)
    positions = [
        said(desk.post("/voice/hold", {"CallSid": sid, "QueueTime": "5"}))[0].split(" in line")[0] for sid in sids
    ]
    assert positions == ["You are number 1", "You are number 2", "You are number 3"]


def test_a_department_overflows_to_another_after_its_delay(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk(routing={"departments": {"billing": {"overflow_to": ["general"], "overflow_after": 60}}})
    for name in ("Bob Chen", "Carmen Ortiz"):
        desk.warmline.presence.set_presence(name, RepState.AWAY)
    busy, twiml = desk.call("+15557650000", digits="1")
    desk.take(offer_of(twiml), busy)  # Alice, the only billing rep, is busy
    waiting, twiml = desk.call("+15557650001", digits="1")
    assert twiml.find("Enqueue") is not None
    desk.clock.advance(10)
    desk.warmline.presence.set_presence("Bob Chen", RepState.AVAILABLE)
    assert desk.actions == []  # Bob has no billing skill, and the caller has not waited long enough
    desk.clock.advance(51)
    pulls = [action for action in desk.sweep() if isinstance(action, PullCaller)]
    assert [pull.call_sid for pull in pulls] == [waiting]
    assert desk.rep("Bob Chen").state is RepState.RESERVED


def test_estimates_learn_the_departments_handle_time(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk()
    for index in range(5):
        sid, twiml = desk.call(f"+1555765000{index}", digits="1")
        offer = offer_of(twiml)
        desk.take(offer, sid)
        desk.clock.advance(100)
        desk.hang_up(sid, offer)
    busy, twiml = desk.call("+15557650009", digits="1")
    desk.take(offer_of(twiml), busy)
    waiting, _ = desk.call("+15557650010", digits="1")
    hold = desk.post("/voice/hold", {"CallSid": waiting, "QueueTime": "0"})
    assert "You are number 1 in line for billing. The wait is about 2 minutes." in said(hold)
    assert desk.interaction(waiting).announced_wait == 100
    # Announced again only after the interval; music in between.
    desk.clock.advance(20)
    again = desk.post("/voice/hold", {"CallSid": waiting, "QueueTime": "20"})
    assert said(again) == [] and again.find("Play") is not None, ET.tostring(again)


def test_at_max_wait_the_caller_may_leave_a_message(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk(queue={"max_wait": 60})
    busy, twiml = desk.call("+15557650000", digits="1")
    desk.take(offer_of(twiml), busy)
    waiting, _ = desk.call("+15557650001", digits="1")
    desk.clock.advance(61)
    hold = desk.post("/voice/hold", {"CallSid": waiting, "QueueTime": "61"})
    assert any("press 2 to leave a message" in text for text in said(hold))
    assert hold.find("Gather") is not None
    left = desk.post("/voice/hold/choice", {"CallSid": waiting, "Digits": "2"})
    assert left.find("Leave") is not None
    exit_twiml = desk.post("/voice/queue-exit", {"CallSid": waiting, "QueueResult": "leave", "QueueTime": "63"})
    assert exit_twiml.find("Record") is not None


def test_an_anonymous_caller_is_never_offered_a_callback(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk()
    busy, twiml = desk.call("+15557650000", digits="1")
    desk.take(offer_of(twiml), busy)
    waiting, _ = desk.call("anonymous", digits="1")
    hold = desk.post("/voice/hold", {"CallSid": waiting, "QueueTime": "0"})
    assert not any("call you back" in text for text in said(hold))
    pressed = desk.post("/voice/hold/choice", {"CallSid": waiting, "Digits": "1"})
    assert pressed.find("Leave") is None
    assert desk.interaction(waiting).status is InteractionStatus.QUEUED


def test_callers_are_not_held_for_nobody(make_desk: Callable[..., Desk]) -> None:
    desk = make_desk()
    busy, twiml = desk.call("+15557650000", digits="1")
    offer = offer_of(twiml)
    desk.take(offer, busy)
    waiting, _ = desk.call("+15557650001", digits="1")
    desk.warmline.presence.set_presence("Alice Rivera", RepState.OFFLINE)  # after this call
    desk.hang_up(busy, offer)
    assert desk.rep("Alice Rivera").state is RepState.OFFLINE
    hold = desk.post("/voice/hold", {"CallSid": waiting, "QueueTime": "30"})
    assert hold.find("Leave") is not None
    assert "Sorry, nobody from billing is available any more." in said(hold)
    exit_twiml = desk.post("/voice/queue-exit", {"CallSid": waiting, "QueueResult": "leave", "QueueTime": "31"})
    assert exit_twiml.find("Record") is not None


# --- the pick, straight on the store -------------------------------------------------------------------------------


def _reps(store: Store, *specs: tuple[str, dict[str, int], datetime | None, datetime | None]) -> dict[str, int]:
    ids: dict[str, int] = {}
    with store.unit_of_work() as session:
        for name, skills, available_since, last_offered in specs:
            rep, _ = upsert_rep(
                session, name=name, phone_e164=f"+1555010{len(ids):04d}", departments=list(skills), languages=[]
            )
            for skill in rep.skills:
                skill.level = skills[skill.department]
            rep.state = RepState.AVAILABLE
            rep.available_since = available_since
            rep.last_offered_at = last_offered
            session.flush()
            ids[name] = rep.id
    return ids


def _pick(store: Store, strategy: Strategy, department: str = "billing") -> int | None:
    with store.unit_of_work(read_only=True) as session:  # only the choice matters here
        free = free_reps(session, department=department, strategy=strategy, day_start=START.replace(hour=0))
        return free[0].id if free else None


def test_strategies_pick_the_rep_they_promise(store: Store) -> None:
    early, late = START - timedelta(hours=2), START - timedelta(minutes=5)
    ids = _reps(
        store,
        ("Idle Longest", {"billing": 5}, early, START - timedelta(minutes=1)),
        ("Offered Longest Ago", {"billing": 5}, late, START - timedelta(hours=3)),
        ("Fewest Calls", {"billing": 5}, late, START - timedelta(minutes=30)),
    )
    with store.unit_of_work() as session:  # two calls today for the first two, none for the third
        interaction = Interaction(call_sid="CAx", caller_number="+15557650000", flow_name="m", flow_version="v")
        session.add(interaction)
        session.flush()
        for name in ("Idle Longest", "Offered Longest Ago"):
            for _ in range(2):
                session.add(
                    Offer(interaction_id=interaction.id, rep_id=ids[name], state=OfferState.ENDED, created_at=late)
                )
    assert _pick(store, "longest_idle") == ids["Idle Longest"]
    assert _pick(store, "round_robin") == ids["Offered Longest Ago"]
    assert _pick(store, "fewest_calls") == ids["Fewest Calls"]


def test_the_higher_skill_level_is_offered_first(store: Store) -> None:
    ids = _reps(
        store,
        ("Novice", {"billing": 2}, START - timedelta(hours=5), None),
        ("Expert", {"billing": 9}, START - timedelta(minutes=1), None),
    )
    assert _pick(store, "longest_idle") == ids["Expert"]
