"""Routing learns from the console (issue 18), end to end: a caller is misrouted to billing, Alice says at wrap-up
that the call belonged to account services ("Wrong department?"), and the next caller with similar words reaches
account services, where Carmen's console shows them, without a restart. WordLlama routes, the default install's
engine; the emulator plays Twilio, the callers and the reps' phones."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from crm_sync.models import RepState
from crm_sync.queries.interactions import require_interaction
from tests.browser.conftest import LIVE, Console, parts, screenshot
from tests.browser.test_call_on_the_console import wait_for_state
from tests.conftest import PhoneSystem
from voice.emulator import RepScript, Speech

ALICE, CARMEN = "+15550100001", "+15550100003"
JANE, JOHN = "+15551230001", "+15551230077"
FIRST_CALLER = "my late husband's card is still paying the bill"
NEXT_CALLER = "the bill still charges my late husband's card"
RELOAD_INTERVAL = 0.2


def test_a_rep_corrects_a_misrouted_call_and_the_next_caller_reaches_the_right_department(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system = phone_system_factory(
        routing={"wrap_up": 180}, flows={"reload_interval": RELOAD_INTERVAL, "classifier": "wordllama"}
    )
    console = console_factory(system)
    alice = console.sign_in("Alice Rivera")
    carmen = console.sign_in("Carmen Ortiz")

    # Jane's words sound like billing; Alice (billing) takes the call.
    system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=None, answer_after=1))
    jane = system.call(JANE, Speech(FIRST_CALLER), talk_seconds=None)
    expect(alice.get_by_text("On the call")).to_be_visible(timeout=LIVE)
    expect(alice.locator("#screen [data-bind=issue]")).to_contain_text(FIRST_CALLER)
    assert jane.hang_up()
    # The call's last webhooks are done before Alice saves (she is in wrap-up time and the call is over).
    wait_for_state(system, "Alice Rivera", RepState.WRAP_UP, alice)
    for _ in range(200):
        with system.store.unit_of_work() as session:
            if require_interaction(session, jane.sid).ended:
                break
        alice.wait_for_timeout(50)

    # Wrap-up: it was about closing her late husband's account, not a bill. Alice says so.
    expect(alice.get_by_text("Wrap-up", exact=True).first).to_be_visible(timeout=LIVE)
    alice.get_by_label("Department").select_option("account")
    alice.get_by_role("button", name="Save wrap-up").click()
    expect(alice.get_by_text("Wrap-up saved for Jane Doe. You are available for the next caller.")).to_be_visible()
    screenshot(alice, "learning-wrap-up-corrected")
    with system.store.unit_of_work() as session:
        first = require_interaction(session, jane.sid)
        assert (first.department, first.corrected_department) == ("billing", "account")

    # Within the reload interval every worker's classifier has learned it (this one polls on its own thread).
    flows = parts(system).flows
    for _ in range(200):
        if flows.classifier_for(flows.current()).classify(NEXT_CALLER).matched_learned:
            break
        alice.wait_for_timeout(RELOAD_INTERVAL * 250)
    else:
        raise AssertionError("routing never learned the correction")

    # John says much the same: he reaches account services, and Carmen's console shows him.
    system.twilio.register_rep(CARMEN, RepScript.accepts(talk_seconds=None, answer_after=1))
    john = system.call(JOHN, Speech(NEXT_CALLER), talk_seconds=None)
    expect(carmen.get_by_text("On the call")).to_be_visible(timeout=LIVE)
    expect(carmen.locator("#screen [data-bind=issue]")).to_contain_text(NEXT_CALLER)
    expect(carmen.locator("#screen").get_by_text("Account services", exact=False).first).to_be_visible()
    screenshot(carmen, "learning-next-caller-routed-right")
    with system.store.unit_of_work() as session:
        assert require_interaction(session, john.sid).department == "account"
    wait_for_state(system, "Alice Rivera", RepState.AVAILABLE, alice)  # Alice was never offered John
    assert john.hang_up()
