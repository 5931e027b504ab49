"""Development mode (no TWILIO_AUTH_TOKEN): the server's Twilio REST requests stay on this machine."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from voice.config import DEFAULT_TWILIO_API_URL, ConfigError, load_settings


def test_without_credentials_rest_requests_go_to_a_loopback_port_kept_in_the_instance_folder(tmp_path: Path) -> None:
    instance = tmp_path / "instance"

    first = load_settings(environ={}, overrides={"instance_path": instance})
    again = load_settings(environ={}, overrides={"instance_path": instance})

    assert first.development
    url = urlsplit(first.twilio_api_url)
    assert (url.scheme, url.hostname) == ("http", "127.0.0.1") and url.port
    assert again.twilio_api_url == first.twilio_api_url  # the server, its workers and `warmline call` agree
    assert (instance / "dev-twilio-api-url").read_text(encoding="utf-8").strip() == first.twilio_api_url


def test_an_explicit_rest_url_wins(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"TWILIO_API_URL": "https://carrier.example.com"}, overrides={"instance_path": tmp_path}
    )

    assert settings.development and settings.twilio_api_url == "https://carrier.example.com"


def test_real_credentials_never_point_at_a_local_emulator(tmp_path: Path) -> None:
    load_settings(environ={}, overrides={"instance_path": tmp_path})  # a development run came first

    real = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "real"}
    settings = load_settings(environ=real, overrides={"instance_path": tmp_path})

    assert not settings.development and settings.twilio_api_url == DEFAULT_TWILIO_API_URL


def test_a_config_file_cannot_switch_development_mode_on(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("development: true\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=re.escape("config.yaml:1:1: development: cannot be set")):
        load_settings(environ={"WARMLINE_CONFIG": str(config), "TWILIO_AUTH_TOKEN": "real"})
