"""`warmline call` as the README has admins use it: against the server `make run` started, out of the box."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskCliRunner

from tests.cli.installed import WARMLINE, checkout_environment, require_installed_command, warmline
from voice.cli import main
from voice.cli.call import heard_lines
from voice.emulator import TranscriptEntry

MUSIC = "https://example.com/hold.mp3"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_call_nobody_answers_says_so_in_one_line_and_fails(app: Flask, runner: FlaskCliRunner) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"

    result = runner.invoke(main, ["call", "--url", nowhere, "hello"])

    assert result.exit_code == 1
    assert result.output == f"Error: no Warmline server answers at {nowhere}: start one with `make run`\n"


def test_a_long_hold_is_one_line_with_a_count() -> None:
    transcript = [
        TranscriptEntry(0, "caller", "Say", "You are number 1 in line."),
        *(TranscriptEntry(10 * n, "caller", "Play", f"[play {MUSIC}]") for n in range(1, 58)),
        TranscriptEntry(600, "caller", "Say", "You are number 1 in line."),
        TranscriptEntry(610, "caller", "Play", f"[play {MUSIC}]"),
        TranscriptEntry(620, "caller", "Play", "[play https://example.com/jingle.mp3]"),
        TranscriptEntry(620, "rep:+15550100002", "Say", "Press 1 to take the call."),
        TranscriptEntry(621, "caller", "Gather", "1"),
    ]

    assert [line.strip() for line in heard_lines(transcript, hold_music=[MUSIC])] == [
        "caller hears: You are number 1 in line.",
        "caller hears: hold music (\N{MULTIPLICATION SIGN}57)",
        "caller hears: You are number 1 in line.",
        "caller hears: hold music",
        "caller hears: [play https://example.com/jingle.mp3]",
        "rep +1••••••0002 hears: Press 1 to take the call.",
    ]


@dataclass
class Checkout:
    """A fresh checkout after `make run PORT=…`: its folder, environment and the server's URL and log."""

    folder: Path
    env: dict[str, str]
    url: str
    log: Path

    def warmline(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        done = warmline(*arguments, env=self.env, cwd=self.folder)
        assert done.returncode == 0, done.stdout + done.stderr
        return done


@pytest.fixture
def made_run(tmp_path: Path) -> Iterator[Checkout]:
    """`make run` on a port of its own: `warmline serve` (which migrates), without any Twilio variable. Reps wrap
    up for ten minutes, so that a caller who asks for a busy department is put in line."""
    require_installed_command()
    env = checkout_environment(tmp_path, routing={"wrap_up": 600})
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(WARMLINE), "serve", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Checkout(tmp_path, env, url, log)
    finally:
        server.send_signal(signal.SIGINT)  # gunicorn's quick shutdown: SIGTERM's graceful one waits on the workers
        server.wait(timeout=15)


def test_make_run_and_warmline_call_work_together(made_run: Checkout) -> None:
    """The README's second call, with its one rep of technical support wrapping up: the caller waits in line, the
    rep frees up, the server pulls the caller out through the REST API (to `warmline call`'s emulator, not to
    api.twilio.com), the rep declines, and the caller is offered voicemail. Found without --url, in seconds."""
    reps = made_run.folder / "reps.csv"
    reps.write_text("name,phone,departments\nBen Carter,+15550100002,technical_support;general\n", encoding="utf-8")
    made_run.warmline("reps", "import", str(reps), "--status", "available")
    token = made_run.warmline("reps", "token", "Ben Carter").stdout.strip()
    first = made_run.warmline("call", "silence", "silence", "press:2")
    assert "rep +1••••••0002 hears:" in first.stdout and "ended: completed" in first.stdout

    started = time.monotonic()
    second = subprocess.Popen(
        [str(WARMLINE), "call", "--from", "+1 555 765 4321", "silence", "silence", "press:2", "--rep", "declines"],
        env=made_run.env,
        cwd=made_run.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while "POST /voice/hold" not in made_run.log.read_text():  # the caller is holding: Ben is wrapping up
            assert second.poll() is None and time.monotonic() < deadline, second.communicate()
            time.sleep(0.05)
        freed = requests.put(
            f"{made_run.url}/api/me/presence",
            json={"state": "available"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert freed.status_code == 200, freed.text
        printed, errors = second.communicate(timeout=20)
    finally:
        second.kill()
        second.wait()
    elapsed = time.monotonic() - started

    assert second.returncode == 0, printed + errors
    heard = printed.splitlines()
    assert "Connecting you now." in printed  # pulled out of line by the server, through the emulator's REST API
    assert "rep +1••••••0002 hears: OK, passing the call on." in printed
    assert "leave your name, number and a short message" in printed
    assert len(heard) <= 20, printed
    assert elapsed < 20
