"""Shared fixtures for the flow-language tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr_flows import Flow, load_flow

SAMPLE_FLOW = Path(__file__).resolve().parents[2] / "ivr_flows" / "main.yaml"


@pytest.fixture(scope="session")
def sample_flow() -> Flow:
    """The shipped main.yaml, loaded once (flows are immutable, so sharing is safe)."""
    return load_flow(SAMPLE_FLOW)
