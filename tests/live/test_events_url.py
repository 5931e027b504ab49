"""Where a console page opens its live-events stream (``voice.web.console.app.events_url``): the server `warmline
serve` runs on the port after the app's, on the host name the page was asked for; a path a proxy routes on the
app's own origin; or none ("off": the page polls)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from tests.conftest import app_config, seed_demo
from voice import create_app
from voice.web.console.app import EVENTS_PORT_CONFIG

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def events_url_of_the_page(app: Flask, host: str = "console.example.com:5000") -> str:
    client, base = app.test_client(), f"http://{host}"
    token = app.extensions["warmline"].accounts.issue_login_link("Bob Chen")
    form = client.get(f"/console/link/{token}", base_url=base).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf, form[:400]
    client.post(f"/console/link/{token}", data={"csrf_token": csrf.group(1)}, base_url=base)
    page = client.get("/console", base_url=base).get_data(as_text=True)
    found = re.search(r'data-events-url="([^"]*)"', page)
    assert found, page[:400]
    return found.group(1)


def console_app(database_url: str, tmp_path: Path, **console: str) -> Flask:
    config = app_config(database_url, tmp_path / "instance", console=console) if console else None
    app = create_app(config or app_config(database_url, tmp_path / "instance"))
    seed_demo(app.extensions["warmline"].store)
    return app


@sqlite_only
def test_beside_warmline_serve_the_page_follows_the_next_port_on_its_own_host_name(
    database_url: str, tmp_path: Path
) -> None:
    app = console_app(database_url, tmp_path)
    try:
        assert events_url_of_the_page(app) == ""  # nobody said a stream runs: the page polls
        app.config[EVENTS_PORT_CONFIG] = 5001  # what `warmline serve` sets when it starts the events process
        assert events_url_of_the_page(app) == "http://console.example.com:5001/console/events"
        assert events_url_of_the_page(app, host="[::1]:5000") == "http://[::1]:5001/console/events"
    finally:
        app.extensions["warmline"].close()


@sqlite_only
@pytest.mark.parametrize(("setting", "expected"), [("/console/events", "/console/events"), ("off", "")])
def test_the_setting_names_a_proxied_path_or_turns_the_stream_off(
    database_url: str, tmp_path: Path, setting: str, expected: str
) -> None:
    app = console_app(database_url, tmp_path, events_url=setting)
    app.config[EVENTS_PORT_CONFIG] = 5001
    try:
        assert events_url_of_the_page(app) == expected
    finally:
        app.extensions["warmline"].close()
