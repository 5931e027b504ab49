"""A whole call, seen on the console: it rings, the screen-pop is there while the whisper plays, the rep takes it,
hands the caller to a colleague with a note, wraps up with a correction ("Wrong department?"), and the supervisor's
floor page follows every step without a reload. The emulator plays Twilio, the caller and the reps' phones."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Locator, Page, expect

from crm_sync.models import HandoffState, RepState
from crm_sync.queries.handoffs import handoffs_of
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.reps import find_rep
from tests.browser.conftest import LIVE, Console, make_supervisor, screenshot
from tests.conftest import PhoneSystem
from voice.emulator import Digits, EmulatedCall, RepScript, Speech

ALICE, BOB = "+15550100001", "+15550100002"
JANE = "+15551230001"
NOTE = "Router reboots since the update; she was double-billed for the router rental too."
#: Virtual seconds pass at this share of real time, and Alice's phone rings this long (virtual seconds) before she
#: picks up, so that ringing and the whisper last long enough (~8 s) for pages that poll every 2 s to show the
#: offered call, as a rep's page must while they listen.
TIME_SCALE = 0.3
OFFER_RINGS = 16


def rep_state(system: PhoneSystem, name: str) -> RepState:
    with system.store.unit_of_work() as session:
        return find_rep(session, name).state


def wait_for_state(system: PhoneSystem, name: str, state: RepState, page: Page) -> None:
    """Waits (polling the store through the page's clock, never sleeping the test) until ``name`` is in ``state``."""
    for _ in range(200):
        if rep_state(system, name) is state:
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"{name} never became {state.value}")


def floor_row(page: Page, name: str) -> Locator:
    return page.locator("#floor-reps tr", has=page.get_by_role("rowheader", name=name))


def test_a_call_rings_is_taken_transferred_and_wrapped_up_on_the_console(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system = phone_system_factory(time_scale=TIME_SCALE, routing={"wrap_up": 180})
    make_supervisor(system, "Carmen Ortiz")
    console = console_factory(system)
    supervisor = console.sign_in("Carmen Ortiz")
    supervisor.goto("/console/floor")
    alice = console.sign_in("Alice Rivera")
    expect(alice.get_by_text("No call right now")).to_be_visible()
    screenshot(alice, "home-no-call")

    # Jane calls about her bill; Alice (billing) is offered the call and hears the whisper before pressing 1.
    system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=None, answer_after=OFFER_RINGS))
    system.twilio.register_rep(BOB, RepScript.accepts(talk_seconds=None, answer_after=1))
    caller: EmulatedCall = system.call(
        JANE, Speech("I was charged twice and my router keeps rebooting"), Digits("4"), talk_seconds=None
    )
    wait_for_state(system, "Alice Rivera", RepState.RESERVED, alice)
    screen = alice.locator("#screen")
    expect(screen.get_by_text("Incoming call — listen to the whisper")).to_be_visible(timeout=LIVE)
    screenshot(alice, "home-offered")
    expect(floor_row(supervisor, "Alice Rivera")).to_contain_text("Ringing", timeout=LIVE)
    # Still offered (ringing, or hearing the whisper) when both pages showed it: the screen-pop came first.
    assert rep_state(system, "Alice Rivera") is RepState.RESERVED
    expect(screen.get_by_text("Jane Doe", exact=True)).to_be_visible()
    expect(screen.get_by_text("gold", exact=True)).to_be_visible()
    expect(screen.get_by_text("I was charged twice and my router keeps rebooting", exact=False)).to_be_visible()
    expect(screen.get_by_text("Billing", exact=True)).to_be_visible()

    # Alice presses 1: the same record stays, now as the call; the floor shows who she is talking with.
    expect(alice.get_by_text("On the call")).to_be_visible(timeout=LIVE)
    expect(screen.get_by_text("Jane Doe", exact=True)).to_be_visible()
    expect(floor_row(supervisor, "Alice Rivera")).to_contain_text("On a call", timeout=LIVE)
    expect(floor_row(supervisor, "Alice Rivera")).to_contain_text("Jane Doe")
    screenshot(supervisor, "floor-alice-on-call")

    # A warm transfer to Bob, with a note; the directory shows who is free.
    alice.get_by_label("Notes").fill("Refund of the duplicate charge promised; router issue handed to tech.")
    alice.get_by_label("Send to").select_option("rep:Bob Chen")
    alice.get_by_label("Hand-off note").fill(NOTE)
    screenshot(alice, "home-on-call")
    alice.get_by_role("button", name="Transfer").click()
    status = alice.locator('[data-bind="transfer-status"]')
    expect(status).to_contain_text("Bob Chen is on the line", timeout=LIVE)
    assert system.twilio.rep_hang_up(ALICE)  # Alice leaves once she has told Bob: Jane is with Bob
    expect(status).to_contain_text("Done: the caller is with Bob Chen", timeout=LIVE)
    with system.store.unit_of_work() as session:
        interaction = require_interaction(session, caller.sid)
        handoff = handoffs_of(session, interaction.id)[-1]
        assert handoff.state is HandoffState.COMPLETED and handoff.note == NOTE
        assert interaction.rep is not None and interaction.rep.name == "Bob Chen"
    expect(floor_row(supervisor, "Bob Chen")).to_contain_text("Jane Doe", timeout=LIVE)

    # Alice is in wrap-up for the call she handed on: the time counts down; she says where it should have gone.
    expect(alice.get_by_text("Wrap-up", exact=True).first).to_be_visible(timeout=LIVE)
    expect(alice.locator('[data-bind="wrap-up-left"]')).to_contain_text("left")
    expect(floor_row(supervisor, "Alice Rivera")).to_contain_text("Wrap-up", timeout=LIVE)
    screenshot(supervisor, "floor-transfer-done")
    expect(alice.get_by_label("Notes")).to_have_value(
        "Refund of the duplicate charge promised; router issue handed to tech."
    )
    alice.get_by_label("Disposition").select_option("escalated")
    alice.get_by_label("Department").select_option("technical_support")
    screenshot(alice, "home-wrap-up")
    alice.get_by_role("button", name="Save wrap-up").click()
    expect(alice.get_by_text("Wrap-up saved for Jane Doe. You are available for the next caller.")).to_be_visible()
    expect(alice.get_by_text("No call right now")).to_be_visible(timeout=LIVE)
    expect(floor_row(supervisor, "Alice Rivera")).to_contain_text("Available", timeout=LIVE)
    with system.store.unit_of_work() as session:
        record = require_interaction(session, caller.sid)
        assert (record.department, record.corrected_department) == ("billing", "technical_support")
        assert record.disposition == "escalated"
        assert record.wrap_up_notes == "Refund of the duplicate charge promised; router issue handed to tech."
    assert rep_state(system, "Alice Rivera") is RepState.AVAILABLE

    # Jane hangs up: Bob's call ends; the floor counts it, answered.
    assert caller.hang_up()
    expect(floor_row(supervisor, "Bob Chen")).to_contain_text("Wrap-up", timeout=LIVE)
    billing = supervisor.locator("#floor-lines tr", has=supervisor.get_by_role("rowheader", name="Billing"))
    expect(supervisor.locator('[data-live="kpi-answered"]')).to_have_text("1", timeout=LIVE)
    expect(billing.locator("td").nth(3)).to_have_text("1")  # answered today, counted where it was routed
    screenshot(supervisor, "floor-after-call")

    # The supervisor sends Alice on her training from the floor; Alice's own page follows.
    supervisor.get_by_label("Set status of Alice Rivera").select_option("away:training")
    expect(floor_row(supervisor, "Alice Rivera")).to_contain_text("Away · training", timeout=LIVE)
    expect(alice.locator("#my-state")).to_contain_text("Away · training", timeout=LIVE)
    assert rep_state(system, "Alice Rivera") is RepState.AWAY
