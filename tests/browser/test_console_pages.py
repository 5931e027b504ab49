"""The console's pages in a real browser: signing in and out, what a forged request gets, whose calls a rep may
open, the work queue (a voicemail closed with a note, a customer called back through the emulator), customers."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import expect

from crm_sync.models import RepState
from crm_sync.queries.customers import find_customer_by_phone
from crm_sync.queries.interactions import require_interaction
from crm_sync.queries.reps import find_rep
from tests.browser.conftest import LIVE, Console, make_supervisor, parts, screenshot, sqlite_only
from tests.conftest import PhoneSystem, seed_demo, signed_post
from voice.emulator import CallerScript, Recording, RepScript, Speech
from voice.services.accounts import actor_of

ALICE = "+15550100001"
JANE, OMAR = "+15551230001", "+15551230002"
PASSWORD = "correct horse battery staple"
SID = "CA" + "3" * 32


def rep_state(system: PhoneSystem, name: str) -> RepState:
    with system.store.unit_of_work() as session:
        return find_rep(session, name).state


@sqlite_only
def test_sign_in_with_a_link_set_a_password_sign_out_and_sign_in_with_it(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system = phone_system_factory()
    console = console_factory(system)
    page = console.context().new_page()
    link = console.login_link("Bob Chen")
    page.goto(link)
    screenshot(page, "sign-in-link")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Welcome — set a password")).to_be_visible()
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("New password again").fill(PASSWORD)
    page.get_by_role("button", name="Save password").click()
    expect(page.get_by_text("Password saved.")).to_be_visible()
    expect(page.locator("#my-state")).to_contain_text("Available")

    # The link was for once only.
    again = console.context().new_page()
    again.goto(link)
    again.get_by_role("button", name="Sign in").click()
    expect(again.get_by_role("alert")).to_contain_text("expired or was used already")

    # Signing out sets Bob offline: no calls ring for someone who has left.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out, and offline")).to_be_visible()
    assert rep_state(system, "Bob Chen") is RepState.OFFLINE
    page.goto("/console/work")
    expect(page).to_have_url(f"{system.url}/console/sign-in?next=/console/work")
    page.get_by_label("Name").fill("Bob Chen")
    page.get_by_label("Password").fill(PASSWORD)
    screenshot(page, "sign-in")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Work queue")).to_be_visible()
    expect(page.get_by_label("Presence")).to_have_value("offline")


@sqlite_only
def test_failed_sign_ins_are_throttled(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system = phone_system_factory()
    console = console_factory(system)
    page = console.context().new_page()
    page.goto("/console/sign-in")
    for attempt in range(parts(system).settings.console.max_failed_sign_ins):
        page.get_by_label("Name").fill("Alice Rivera")
        page.get_by_label("Password").fill(f"guess number {attempt}")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("That name and password do not match.")
    page.get_by_label("Password").fill("yet another guess")
    with page.expect_response("**/console/sign-in") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 429 and int(answer.value.headers["retry-after"]) > 0
    expect(page.get_by_role("alert")).to_have_text("Too many failed sign-ins: try again in 15 minutes.")
    expect(page.get_by_label("Name")).to_have_value("Alice Rivera")
    screenshot(page, "sign-in-throttled")


@sqlite_only
def test_a_forged_request_is_refused(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    """The browser sends the session cookie with any request to the app; only the page's CSRF token makes one
    count. A request without it, or with another, changes nothing."""
    system = phone_system_factory()
    console = console_factory(system)
    page = console.sign_in("Bob Chen")
    bob_id = parts(system).presence.roster()[1].id
    statuses = page.evaluate(
        """async (repId) => {
            const post = (headers) => fetch(`/console/reps/${repId}/presence`, {
                method: "POST", headers: {"Content-Type": "application/json", ...headers},
                body: JSON.stringify({state: "offline"}),
            }).then((response) => response.status);
            return [await post({}), await post({"X-CSRF-Token": "forged"})];
        }""",
        bob_id,
    )
    assert statuses == [400, 403]
    assert rep_state(system, "Bob Chen") is RepState.AVAILABLE
    # The page's own control carries the token.
    page.get_by_label("Presence").select_option("away:break")
    expect(page.locator("#my-state")).to_contain_text("Away · break")
    assert rep_state(system, "Bob Chen") is RepState.AWAY


def test_a_rep_cannot_open_another_reps_call(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system = phone_system_factory()
    client = system.app.test_client()
    signed_post(client, "/voice/incoming", {"CallSid": SID, "From": JANE, "To": "+15550009999"}, base=system.url)
    signed_post(client, "/voice/gather", {"CallSid": SID, "SpeechResult": "I was charged twice"}, base=system.url)
    assert rep_state(system, "Alice Rivera") is RepState.RESERVED  # Jane's call is offered to Alice
    console = console_factory(system)
    bob = console.sign_in("Bob Chen")
    expect(bob.get_by_text("No call right now")).to_be_visible()
    with bob.expect_response(f"**/console/calls/{SID}") as answer:
        bob.goto(f"/console/calls/{SID}")
    assert answer.value.status == 403
    expect(bob.get_by_role("heading", name="Not yours to open")).to_be_visible()
    expect(bob.get_by_text("Jane Doe")).to_have_count(0)
    screenshot(bob, "not-yours")
    alice = console.sign_in("Alice Rivera")
    expect(alice.locator("#screen").get_by_text("Jane Doe", exact=True)).to_be_visible()
    alice.goto(f"/console/calls/{SID}")
    expect(alice.locator("#screen").get_by_text("Jane Doe", exact=True)).to_be_visible()


def voicemail_from(system: PhoneSystem, number: str, words: str) -> str:
    """A caller nobody can take leaves a voicemail: the store files a task; its transcription is tried."""
    call = system.call(number, Speech(words), Recording(duration=4))
    assert call.wait_finished(timeout=20)
    for _ in range(400):  # the transcription runs in the background: wait until it was tried
        with system.store.unit_of_work() as session:
            record = require_interaction(session, call.sid)
            if record.transcript_engine is not None or record.transcript_error is not None:
                return call.sid
        system.twilio.wait_for_call(lambda _: False, timeout=0.05)
    raise AssertionError("the voicemail was never transcribed")


def test_the_work_queue_closes_a_voicemail_with_a_note_and_calls_a_customer_back(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system = phone_system_factory(seed=False)
    seed_demo(system.store, reps_available=False)  # nobody on duty: callers leave voicemails
    voicemail_from(system, JANE, "I was charged twice")
    voicemail_from(system, OMAR, "A question about my invoice")
    console = console_factory(system)
    alice = console.sign_in("Alice Rivera")
    expect(alice.locator("#work-badge")).to_have_text("2")
    alice.get_by_role("link", name="Work queue").click()
    jane = alice.get_by_role("article", name="Voicemail: Jane Doe")
    omar = alice.get_by_role("article", name="Voicemail: Omar Haddad")
    expect(jane).to_contain_text("Return the voicemail from Jane Doe about billing")
    expect(jane).not_to_contain_text("(None)")  # a transcript that found no words says so, not Python's None
    expect(jane.get_by_role("link", name="Recording")).to_have_attribute("href", re.compile(r"/Recordings/RE"))
    # Offline: Alice may not call anyone back until she is working.
    expect(omar.get_by_role("button", name="Call back")).to_be_disabled()
    screenshot(alice, "work-queue")

    jane.get_by_role("button", name="Claim").click()
    jane = alice.get_by_role("article", name="Voicemail: Jane Doe")
    expect(jane).to_contain_text("You are working on it")
    jane.get_by_label("Closing note").fill("Called Jane back: the duplicate charge is refunded.")
    jane.get_by_role("button", name="Close task").click()
    expect(alice.get_by_text("Task closed.")).to_be_visible()
    expect(alice.get_by_role("article", name="Voicemail: Jane Doe")).to_have_count(0)
    with system.store.unit_of_work() as session:
        customer = find_customer_by_phone(session, JANE)
        assert customer is not None
        jane_id = customer.id
    alice.goto(f"/console/customers/{jane_id}")
    expect(alice.get_by_text("Closed: Called Jane back: the duplicate charge is refunded.")).to_be_visible()

    # Away for a meeting, Alice works her follow-ups: she calls Omar back; Warmline rings him, then her.
    alice.get_by_label("Presence").select_option("away:meeting")
    expect(alice.locator("#my-state")).to_contain_text("Away · meeting")
    system.twilio.register_rep(ALICE, RepScript.accepts(talk_seconds=None, answer_after=0))
    system.twilio.register_callee(OMAR, CallerScript(talk_seconds=None))
    alice.get_by_role("link", name="Work queue").click()
    omar = alice.get_by_role("article", name="Voicemail: Omar Haddad")
    omar.get_by_role("button", name="Call back").click()
    expect(alice.get_by_text("Calling the customer")).to_be_visible()
    callback = system.twilio.wait_for_call(lambda call: call.to == OMAR, timeout=20)
    assert callback is not None and callback.wait_until(lambda call: call.state == "bridged", timeout=20)
    alice.get_by_role("link", name="My calls").click()
    expect(alice.locator("#screen").get_by_text("Omar Haddad", exact=True)).to_be_visible(timeout=LIVE)
    expect(alice.get_by_text("On the call")).to_be_visible()
    # She chose away before the call: it is taken again when the call ends.
    expect(alice.locator("#after-call")).to_have_text("Away (meeting) after this call")
    screenshot(alice, "home-calling-back")
    assert callback.hang_up()
    expect(alice.locator("#my-state")).to_contain_text("Away · meeting", timeout=LIVE)
    with system.store.unit_of_work() as session:
        assert find_rep(session, "Alice Rivera").state is RepState.AWAY
        alice_actor = actor_of(find_rep(session, "Alice Rivera"))
    [omar_task] = [task for task in parts(system).work.work_queue(alice_actor) if task.customer == "Omar Haddad"]
    assert omar_task.claimed_by == "Alice Rivera"  # calling back claimed it: she closes it when she is done


@sqlite_only
def test_customers_are_found_and_their_details_edited(
    phone_system_factory: Callable[..., PhoneSystem], console_factory: Callable[[PhoneSystem], Console]
) -> None:
    system = phone_system_factory()
    make_supervisor(system, "Carmen Ortiz")
    console = console_factory(system)
    page = console.sign_in("Carmen Ortiz")
    page.get_by_role("link", name="Customers").click()
    page.get_by_role("searchbox", name="Search customers").fill("555 123 0002")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Omar Haddad").click()
    expect(page.get_by_role("heading", name="Omar Haddad")).to_be_visible()
    page.get_by_label("Email").fill("omar@example.com")
    page.get_by_label("Notes").fill("Prefers calls after 5 pm.")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    expect(page.get_by_label("Email")).to_have_value("omar@example.com")
    expect(page.get_by_label("Notes")).to_have_value("Prefers calls after 5 pm.")
    page.get_by_label("Phone").fill("+1 555 123 0001")  # Jane's
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#customer-status")).to_have_text("Phone: +15551230001 is Jane Doe's number.")
    screenshot(page, "customer")
    page.get_by_role("link", name="Search customers again").click()
    page.get_by_role("searchbox", name="Search customers").fill("nobody like this")
    page.get_by_role("searchbox", name="Search customers").press("Enter")
    expect(page.get_by_text("No customer matches")).to_be_visible()
