"""Running the installed `warmline` command as an admin would: its own process, its own config and database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WARMLINE = Path(sys.executable).parent / "warmline"
#: Variables that would take a test's command out of development mode or point it at someone else's server.
DEPLOYMENT_VARIABLES = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_WEBHOOK_SHARED_KEY",
    "TWILIO_API_URL",
    "WARMLINE_PUBLIC_URL",
    "WARMLINE_DATABASE_URL",
    "WARMLINE_CONFIG",
)


def require_installed_command() -> None:
    if not WARMLINE.exists():
        pytest.skip("the warmline command is installed by `make install` (pip install -e .)")


def checkout_environment(folder: Path, **config: object) -> dict[str, str]:
    """The environment of a fresh checkout's `make run` in ``folder``: no Twilio variables (development mode), a
    config.yaml of its own (the shipped flows, its instance folder in ``folder``) and an SQLite database there."""
    settings = {"instance_path": str(folder / "instance"), **config}
    flows = {"directory": str(ROOT / "ivr_flows"), "reload_interval": 0, "classifier": "tfidf"}
    settings["flows"] = {**flows, **settings.get("flows", {})}  # type: ignore[dict-item]
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
    environment = {key: value for key, value in os.environ.items() if key not in DEPLOYMENT_VARIABLES}
    environment["WARMLINE_CONFIG"] = str(config_file)
    environment["WARMLINE_DATABASE_URL"] = f"sqlite:///{folder / 'warmline.sqlite3'}"
    return environment


def warmline(*arguments: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WARMLINE), *arguments], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
