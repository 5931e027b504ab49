"""A broken or missing flow file never takes the service down (issue 16): a worker that boots meanwhile serves the
last version that went live (kept in the store), or with none the built-in flow; a call in progress finishes on
its own version whichever worker serves it; and a real gunicorn worker killed while the flow is broken comes back
answering calls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests
from flask import Flask
from twilio.request_validator import RequestValidator

from tests.cli.installed import WARMLINE, checkout_environment, require_installed_command
from tests.conftest import AUTH_TOKEN, SAMPLE_FLOW, app_config, seed_demo, signed_post
from tests.twiml import parse_twiml, said, verbs
from voice import create_app


def worker(database_url: str, folder: Path, instance: Path) -> Flask:
    """One app as a gunicorn worker builds it (with its background threads: the service, not a CLI command)."""
    return create_app(
        app_config(
            database_url, instance, flows={"directory": str(folder), "reload_interval": 0, "classifier": "tfidf"}
        )
    )


def test_a_worker_booting_while_the_flow_is_broken_serves_the_last_version_that_went_live(
    database_url: str, tmp_path: Path, flows_dir: Path
) -> None:
    first = worker(database_url, flows_dir, tmp_path / "a")
    seed_demo(first.extensions["warmline"].store)
    good = first.extensions["warmline"].flows.current().version
    first.extensions["warmline"].close()
    (flows_dir / "main.yaml").write_text("company: Acme\nstart: nowhere\nnodes: [broken\n", encoding="utf-8")

    second = worker(database_url, flows_dir, tmp_path / "b")  # a worker restarted after the bad save
    try:
        library = second.extensions["warmline"].flows
        assert library.current().version == good
        assert any("last good version" in problem for problem in library.problems)
        answer = signed_post(second.test_client(), "/voice/incoming", {"CallSid": "CA1", "From": "+15551230001"})
        assert answer.status_code == 200 and "Hi Jane, thanks for calling Acme." in said(parse_twiml(answer.data))
    finally:
        second.extensions["warmline"].close()


def test_with_no_good_version_ever_the_built_in_flow_puts_callers_through(
    database_url: str, tmp_path: Path, flows_dir: Path
) -> None:
    (flows_dir / "main.yaml").unlink()
    app = worker(database_url, flows_dir, tmp_path / "a")
    try:
        seed_demo(app.extensions["warmline"].store)
        assert any("built-in flow" in problem for problem in app.extensions["warmline"].flows.problems)
        answer = signed_post(app.test_client(), "/voice/incoming", {"CallSid": "CA2", "From": "+15557654321"})
        document = parse_twiml(answer.data)
        assert "Thanks for calling. Let me get you to someone who can help." in said(document)
        assert "Dial" in verbs(document)  # straight to a rep of the general line
    finally:
        app.extensions["warmline"].close()


def test_a_call_finishes_on_its_own_version_on_a_worker_that_never_loaded_it(
    database_url: str, tmp_path: Path, flows_dir: Path
) -> None:
    first = worker(database_url, flows_dir, tmp_path / "a")
    seed_demo(first.extensions["warmline"].store)
    signed_post(first.test_client(), "/voice/incoming", {"CallSid": "CA3", "From": "+15551230001"})
    first.extensions["warmline"].close()
    sample = SAMPLE_FLOW.read_text(encoding="utf-8")
    edited = sample.replace("In a few words, what are you calling about?", "What's up?")
    (flows_dir / "main.yaml").write_text(edited, encoding="utf-8")

    later = worker(database_url, flows_dir, tmp_path / "b")  # started after the edit: it knows only the new file
    try:
        answer = signed_post(later.test_client(), "/voice/gather", {"CallSid": "CA3"})  # silence: the reprompt
        assert "Sorry, I didn't catch that. In a few words, what are you calling about?" in said(
            parse_twiml(answer.data)
        )
    finally:
        later.extensions["warmline"].close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _workers_of(arbiter: int) -> list[int]:
    children = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()
    return [int(pid) for pid in children]


def _signed(url: str, params: dict[str, str], token: str) -> requests.Response:
    signature = RequestValidator(token).compute_signature(url, params)
    return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def test_killing_a_gunicorn_worker_while_the_flow_is_broken_keeps_the_service_answering(
    tmp_path: Path, flows_dir: Path
) -> None:
    require_installed_command()
    port = _free_port()
    env = checkout_environment(tmp_path, flows={"directory": str(flows_dir)})
    env.update(TWILIO_AUTH_TOKEN=AUTH_TOKEN, WARMLINE_PUBLIC_URL=f"http://127.0.0.1:{port}")
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(WARMLINE), "serve", "--port", str(port), "--workers", "2"], env=env, cwd=tmp_path, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while len(_workers_of(server.pid)) < 2 or not _answers(port):
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        (flows_dir / "main.yaml").write_text("nodes: [this is not a flow\n", encoding="utf-8")
        for victim in _workers_of(server.pid):
            os.kill(victim, signal.SIGKILL)  # both workers die; gunicorn boots new ones, with the flow broken
        deadline = time.monotonic() + 60
        while not _answers(port):
            assert server.poll() is None, "gunicorn gave up: " + (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/voice/incoming"
        answer = _signed(url, {"CallSid": "CA" + "9" * 32, "From": "+15557654321", "To": "+15550009999"}, AUTH_TOKEN)
        assert answer.status_code == 200
        assert "Thanks for calling Acme." in said(parse_twiml(answer.content))  # the last good version, not a 500
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert "main.yaml" in " ".join(health.get("problems", [])), health
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=20)
        log.close()


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (200, 503)
    except requests.RequestException:
        return False
