"""`warmline simulate` on a machine that cannot play sound says so once, instead of staying silent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pexpect

from tests.cli.installed import WARMLINE, checkout_environment, require_installed_command

NO_AUDIO = "(cannot play audio: `aplay` is not installed"


def test_without_aplay_the_simulator_says_once_that_it_only_prints(tmp_path: Path, sqlite_template: Path) -> None:
    require_installed_command()
    env = {**checkout_environment(tmp_path), "TWILIO_AUTH_TOKEN": "simulate-token"}
    shutil.copy(sqlite_template, tmp_path / "warmline.sqlite3")  # migrated, no customers: an unknown caller
    no_programs = tmp_path / "bin"
    no_programs.mkdir()
    env["PATH"] = str(no_programs)  # whatever this machine has, the simulator finds no audio player

    phone = pexpect.spawn(str(WARMLINE), ["simulate"], env=env, cwd=str(tmp_path), encoding="utf-8", timeout=30)
    try:
        phone.expect_exact(NO_AUDIO)
        phone.expect_exact("you>")  # the first prompt
        before_the_prompt = phone.before
    finally:
        phone.close(force=True)

    assert "[caller hears] In a few words, what are you calling about?" in before_the_prompt
    assert NO_AUDIO not in before_the_prompt  # once, at the start
