"""Admins deploy by saving the flow file: good versions swap in, broken ones never reach a caller."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from crm_sync.queries.interactions import require_interaction
from ivr_flows import TfidfClassifier, parse_flow
from tests.conftest import SAMPLE_FLOW, app_config, seed_demo, signed_post
from tests.twiml import parse_twiml, said
from voice import create_app
from voice.adapters.flow_library import FlowLibrary

OLD_QUESTION = "In a few words, what are you calling about?"
NEW_QUESTION = "Tell me briefly why you are calling today."


def make_app(database_url: str, tmp_path: Path, flows_dir: Path, *, reload_interval: float = 0) -> Flask:
    config = app_config(database_url, tmp_path / "instance")
    config["flows"] = {"directory": str(flows_dir), "reload_interval": reload_interval}
    app = create_app(config)
    seed_demo(app.extensions["warmline"].store)
    return app


@pytest.fixture
def app_with_flows(database_url: str, tmp_path: Path, flows_dir: Path) -> Iterator[Flask]:
    app = make_app(database_url, tmp_path, flows_dir)
    yield app
    app.extensions["warmline"].close()


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    # Same size and same second are possible on fast filesystems: make the change visible to a stat() poll.
    stamp = time.time_ns() + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def first_question(client: FlaskClient, sid: str) -> str:
    response = signed_post(client, "/voice/incoming", {"CallSid": sid, "From": "+15557654321", "To": "+15550009999"})
    return said(parse_twiml(response.data))[-1]


def test_a_saved_change_is_served_to_new_calls_while_calls_in_progress_keep_their_version(
    app_with_flows: Flask, flows_dir: Path
) -> None:
    client = app_with_flows.test_client()
    library = app_with_flows.extensions["warmline"].flows
    old_version = library.current().version
    assert first_question(client, "CA" + "a" * 32) == OLD_QUESTION

    rewrite(flows_dir / "main.yaml", OLD_QUESTION, NEW_QUESTION)
    assert library.refresh() == ["main"]
    assert library.current().version != old_version
    assert first_question(client, "CA" + "b" * 32) == NEW_QUESTION

    # The first call is still on the old version: its re-prompt after silence comes from the flow it started with.
    response = signed_post(client, "/voice/gather", {"CallSid": "CA" + "a" * 32})
    assert "Sorry, I didn't catch that. " + OLD_QUESTION in said(parse_twiml(response.data))
    with app_with_flows.extensions["warmline"].store.unit_of_work() as session:
        assert require_interaction(session, "CA" + "a" * 32).flow_version == old_version
        assert require_interaction(session, "CA" + "b" * 32).flow_version == library.current().version


def test_a_broken_file_never_reaches_a_caller(app_with_flows: Flask, flows_dir: Path) -> None:
    client = app_with_flows.test_client()
    library = app_with_flows.extensions["warmline"].flows
    good_version = library.current().version
    rewrite(flows_dir / "main.yaml", "next: route_reason", "next: route_reasn")
    assert library.refresh() == []
    assert good_version == library.current().version
    [(path, error)] = library.errors.items()
    assert path.name == "main.yaml" and "route_reasn" in error and "did you mean 'route_reason'" in error
    assert first_question(client, "CA" + "c" * 32) == OLD_QUESTION

    rewrite(flows_dir / "main.yaml", "next: route_reasn", "next: route_reason")
    library.refresh()
    assert library.errors == {}


def test_the_running_service_notices_a_saved_file_by_itself(database_url: str, tmp_path: Path, flows_dir: Path) -> None:
    app = make_app(database_url, tmp_path, flows_dir, reload_interval=0.05)
    try:
        library = app.extensions["warmline"].flows
        old_version = library.current().version
        rewrite(flows_dir / "main.yaml", OLD_QUESTION, NEW_QUESTION)
        deadline = time.monotonic() + 5
        while library.current().version == old_version and time.monotonic() < deadline:
            time.sleep(0.02)
        assert library.current().version != old_version
        assert first_question(app.test_client(), "CA" + "d" * 32) == NEW_QUESTION
    finally:
        app.extensions["warmline"].close()


def test_cli_processes_build_the_speech_classifier_on_first_use_and_the_service_on_load(flows_dir: Path) -> None:
    """`warmline crm import` loads the app and its flows but routes nobody: it must not pay for a model."""
    from ivr_flows.routing.factory import DeferredClassifier
    from ivr_flows.routing.wordllama import WordLlamaClassifier  # NumPy: only in the test that needs it

    service = FlowLibrary(flows_dir, default="main", classifier="wordllama")
    service.load_all()
    assert isinstance(service.classifier_for(service.current()), WordLlamaClassifier)

    cli = FlowLibrary(flows_dir, default="main", classifier="wordllama", defer_classifiers=True)
    cli.load_all()
    deferred = cli.classifier_for(cli.current())
    assert isinstance(deferred, DeferredClassifier) and not deferred.built
    said_by_caller = "the modem keeps disconnecting"
    assert deferred.classify(said_by_caller) == service.classifier_for(service.current()).classify(said_by_caller)
    assert deferred.built


def test_each_flow_version_keeps_its_own_classifier(flows_dir: Path) -> None:
    """A call keeps the flow version it started on to the end, and so the classifier of that version."""
    library = FlowLibrary(flows_dir, default="main")
    library.load_all()
    first = library.current()
    kept = library.classifier_for(first)
    assert isinstance(kept, TfidfClassifier) and library.classifier_for(first) is kept
    assert library.classifier_for(library.version(first.version, name="main")) is kept
    rewrite(flows_dir / "main.yaml", "- I was charged twice", "- my invoice shows a fee for mangoes")
    assert library.refresh() == ["main"]
    second = library.current()
    assert second.version != first.version
    assert library.classifier_for(second) is not kept
    assert library.classifier_for(second).classify("mangoes").department == "billing"
    assert kept.classify("mangoes").confidence == 0.0  # the call still on the old version routes as it began
    assert library.classifier_for(first) is kept
    # A flow the library did not load (a tool's, a test's) gets one too, built once.
    other = parse_flow(SAMPLE_FLOW.read_text().replace("I was charged twice", "a fee for kiwis"), source="other.yaml")
    assert other.version not in (first.version, second.version)
    assert library.classifier_for(other) is library.classifier_for(other)
    assert library.classifier_for(other).classify("kiwis").department == "billing"
