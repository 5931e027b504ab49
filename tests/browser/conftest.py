"""The rep console in a real browser: Debian's Chromium driven by Playwright, against the app served on loopback
with the Twilio emulator calling into it (``tests/conftest.py``'s phone system).

One browser per test session (per xdist worker), a fresh context — cookies, storage — per person in a test.
Screenshots of the main pages go to ``.artifacts/screenshots/`` (git-ignored). Nothing here sleeps: every wait is
Playwright's auto-waiting or ``expect(...)`` on a condition.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from crm_sync.queries.reps import find_rep
from tests.conftest import PhoneSystem
from voice.bootstrap import Warmline

CHROMIUM = "/usr/bin/chromium"
# Headless in a container as root: no sandbox, no GPU; nothing fetched from the network behind the test's back.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Ports Chromium will not connect to that a test server could otherwise be given (SIP).
UNSAFE_PORTS = frozenset({5060, 5061})
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".artifacts" / "screenshots"
#: How long a page may take to show something that follows from a call's progress (polling every 2 s included).
LIVE = 15_000
VIEWPORT = {"width": 1440, "height": 900}
#: For pages whose behaviour does not depend on the database (the services under them are tested on both): one run.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _missing_browser(reason: str) -> None:
    # Where the browser is meant to be installed (CI, `make test`: scripts/system-deps.sh), its absence fails.
    if os.environ.get("CI") or os.environ.get("WARMLINE_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"the browser tests need {reason}", pytrace=False)
    pytest.skip(f"the browser tests need {reason} (scripts/system-deps.sh installs it)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        _missing_browser(f"Debian's chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def parts(system: PhoneSystem) -> Warmline:
    warmline: Warmline = system.app.extensions["warmline"]
    return warmline


def make_supervisor(system: PhoneSystem, name: str) -> None:
    with system.store.unit_of_work() as session:
        find_rep(session, name).role = "supervisor"


@dataclass
class Console:
    """Opens the console for the reps of one phone system, each in a browser context of their own."""

    system: PhoneSystem
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    #: Uncaught JavaScript errors on any of the pages: a test with one fails, whatever it checked.
    script_errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.system.url

    def context(self) -> BrowserContext:
        context = self.browser.new_context(viewport=VIEWPORT, base_url=self.system.url)  # type: ignore[arg-type]
        context.set_default_timeout(10_000)
        context.on(
            "weberror", lambda error: self.script_errors.append(f"{error.page and error.page.url}: {error.error}")
        )
        self.contexts.append(context)
        return context

    def login_link(self, name: str) -> str:
        return f"/console/link/{parts(self.system).accounts.issue_login_link(name)}"

    def sign_in(self, name: str, *, page: Page | None = None) -> Page:
        """Signs ``name`` in with a one-time link, as a new rep would, skips setting a password: their home."""
        page = page or self.context().new_page()
        page.goto(self.login_link(name))
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("link", name="Skip for now").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def console_factory(browser: Browser) -> Iterator[Callable[[PhoneSystem], Console]]:
    opened: list[Console] = []

    def open_console(system: PhoneSystem) -> Console:
        # Chromium refuses some ports outright (ERR_UNSAFE_PORT), SIP's among them; servers bound to port 0 get an
        # ephemeral one, never these.
        assert urlsplit(system.url).port not in UNSAFE_PORTS, system.url
        console = Console(system, browser)
        opened.append(console)
        return console

    yield open_console
    for console in opened:
        console.close()
    errors = [error for console in opened for error in console.script_errors]
    assert errors == [], f"the console's pages raised: {errors}"


def screenshot(page: Page, name: str, **options: Any) -> Path:
    """A screenshot of what the page shows now, kept for people to look at (not compared with anything)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), **{"full_page": True, **options})
    return path
