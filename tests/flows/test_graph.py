"""``warmline flows graph``: every node drawn by kind, every exit labelled with its key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr_flows import Flow, load_flow
from ivr_flows.cli import flows
from ivr_flows.graph import GraphvizMissing, flow_graph, render_flow
from tests.conftest import SAMPLE_FLOW

SUPPORT_FLOW = SAMPLE_FLOW.with_name("support_hours.yaml")
HAS_DOT = shutil.which("dot") is not None


@pytest.fixture(scope="module")
def support() -> Flow:
    return load_flow(SUPPORT_FLOW)


def edges(source: str) -> set[tuple[str, str, str]]:
    """(tail, head, label) of every edge in DOT source."""
    found = set()
    for tail, head, attrs in re.findall(r"^\s*(\S+) -> (\S+)(?: \[(.*)\])?$", source, re.M):
        label = re.search(r'label=(?:"((?:[^"\\]|\\.)*)"|(\S+))', attrs or "")
        text = (label.group(1) or label.group(2)) if label else ""
        found.add((tail.strip('"'), head.strip('"'), text))
    return found


def test_every_node_is_drawn_with_its_kind_and_shape(support: Flow) -> None:
    source = flow_graph(support).source
    for node_id, node in support.nodes.items():
        match = re.search(rf"^\s*{node_id} \[(.*)\]$", source, re.M)
        assert match is not None, node_id
        assert f"[{node.kind}]" in match.group(1)
    assert re.search(r"^\s*office_hours \[.*shape=diamond", source, re.M)
    assert re.search(r"^\s*transfer \[.*shape=doubleoctagon", source, re.M)
    assert re.search(r"^\s*goodbye \[.*shape=octagon", source, re.M)
    assert re.search(r"^\s*reason \[.*style=\"filled,rounded\"", source, re.M)


def test_every_exit_is_an_edge_labelled_with_its_key(support: Flow) -> None:
    found = edges(flow_graph(support).source)
    assert {
        ("__start__", "choose_language", ""),
        ("choose_language", "office_hours", "next"),
        ("office_hours", "check_caller", "open"),
        ("office_hours", "after_hours", "closed"),
        ("check_caller", "vip_greeting", "1. tier: vip"),
        ("check_caller", "repeat_greeting", "2. open case & repeat ≤ 7d"),
        ("check_caller", "known_greeting", "3. known"),
        ("check_caller", "greeting", "otherwise"),
        ("greeting", "reason", "goto"),
        ("reason", "route_reason", "next"),
        ("reason", "keypad", "on_no_input"),
        ("reason", "keypad", "on_no_match"),
        ("keypad", "transfer", "1, 2, 0, fallback: general"),
        ("keypad", "leave_message", "9"),
        ("transfer", "survey", "after"),
        ("survey", "goodbye", "next"),
        ("after_hours_message", "message_saved", "next"),
        ("after_hours_message", "goodbye", "on_no_input"),
    } <= found
    exits = sum(len(node.exits()) for node in support.nodes.values())
    assert len(found) == exits + 1  # and nothing else but the start arrow


def test_department_menu_edge_lists_the_department_digits(sample_flow: Flow) -> None:
    assert ("keypad", "transfer", "1, 2, 3, 4, 0, fallback: general") in edges(flow_graph(sample_flow).source)


def test_dot_output_needs_no_graphviz_binary(support: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    out = render_flow(support, tmp_path / "flow.dot")
    assert out.read_text(encoding="utf-8") == flow_graph(support).source
    with pytest.raises(GraphvizMissing, match="Debian package 'graphviz'"):
        render_flow(support, tmp_path / "flow.svg")


def test_unknown_output_format(support: Flow, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.svg, \.png, \.pdf or \.dot"):
        render_flow(support, tmp_path / "flow.jpeg")


@pytest.mark.skipif(not HAS_DOT, reason="the Graphviz dot program is not installed")
def test_svg_contains_every_node(support: Flow, tmp_path: Path) -> None:
    svg = render_flow(support, tmp_path / "flow.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for node_id in support.nodes:
        assert f"<title>{node_id}</title>" in svg


def test_cli_graph(tmp_path: Path) -> None:
    out = tmp_path / "main.dot"
    result = CliRunner().invoke(flows, ["graph", str(SAMPLE_FLOW), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {out} (9 nodes of flow 'main')\n"
    assert "check_tier -> vip_welcome" in out.read_text(encoding="utf-8")
    broken = Path(__file__).resolve().parent / "data" / "broken.yaml"
    result = CliRunner().invoke(flows, ["graph", str(broken), "-o", str(out)])
    assert result.exit_code == 1 and "points to unknown node 'ask_reason'" in result.output
