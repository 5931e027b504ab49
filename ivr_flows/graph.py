"""``warmline flows graph``: draw a flow with Graphviz, so an admin can see what callers go through.

Nodes are shaped and coloured by kind (questions as rounded boxes, decisions as diamonds, hand-offs
and hang-ups as end shapes), and every edge carries the key it comes from: ``next``,
``on_no_input``, ``open``/``closed``, ``after``, each branch rule's condition, each menu digit.
The edges come from the same ``Node.exits()`` hook the loader checks, so the picture cannot
disagree with what the engine does.

Needs the ``graphviz`` Python package, and for anything but ``.dot`` output the Graphviz ``dot``
program (Debian package ``graphviz``); the app itself needs neither, which is why
``ivr_flows/__init__`` does not import this module.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import cast

import graphviz

from ivr_flows.schema import (
    AskNode,
    BranchNode,
    Exit,
    Flow,
    HoursNode,
    LanguageNode,
    MenuNode,
    Node,
    RouteNode,
    SayNode,
    SurveyNode,
    TransferNode,
    VoicemailNode,
    localized,
)

__all__ = ["FORMATS", "GraphvizMissing", "flow_graph", "render_flow"]

#: Output formats by file suffix.
FORMATS = ("svg", "png", "pdf", "dot")

#: kind -> (shape, fill colour). Asking the caller is blue, deciding is yellow, ends are red/green.
_STYLE = {
    "say": ("box", "#ffffff"),
    "ask": ("box", "#cfe2ff"),
    "menu": ("box", "#cfe2ff"),
    "language": ("box", "#cfe2ff"),
    "survey": ("box", "#cfe2ff"),
    "route": ("diamond", "#fff3cd"),
    "branch": ("diamond", "#fff3cd"),
    "hours": ("diamond", "#fde2c5"),
    "goto": ("cds", "#eeeeee"),
    "voicemail": ("box3d", "#e2d9f3"),
    "transfer": ("doubleoctagon", "#d1e7dd"),
    "hangup": ("octagon", "#f8d7da"),
}
_ROUNDED = {"ask", "menu", "language", "survey"}


class GraphvizMissing(RuntimeError):
    """The Graphviz ``dot`` program is not installed, so only ``.dot`` output is possible."""


def flow_graph(flow: Flow) -> graphviz.Digraph:
    """The flow as a Graphviz digraph: one node per flow node, one labelled edge per exit."""
    graph = graphviz.Digraph(name=flow.name, comment=f"Warmline flow {flow.name}@{flow.version}")
    graph.attr(label=f"{flow.name}: {flow.company}", labelloc="t", fontname="Helvetica", rankdir="TB")
    graph.attr("node", fontname="Helvetica", fontsize="11", style="filled")
    graph.attr("edge", fontname="Helvetica", fontsize="10")
    start = "__start__"
    while start in flow.nodes:
        start = f"_{start}_"
    graph.node(start, "start", shape="circle", fillcolor="#000000", fontcolor="#ffffff", width="0.5")
    graph.edge(start, flow.start)
    for node_id, node in flow.nodes.items():
        shape, colour = _STYLE.get(node.kind, ("box", "#ffffff"))
        style = "filled,rounded" if node.kind in _ROUNDED else "filled"
        graph.node(node_id, _node_label(flow, node_id, node), shape=shape, fillcolor=colour, style=style)
        for edge in node.exits():
            graph.edge(node_id, edge.target, label=_edge_label(flow, node, edge))
    return graph


def render_flow(flow: Flow, output: Path) -> Path:
    """Draw ``flow`` into ``output``; the format comes from its suffix (.svg, .png, .pdf, .dot)."""
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot draw to {output.name!r}: use a file name ending in .svg, .png, .pdf or .dot")
    graph = flow_graph(flow)
    if fmt == "dot":
        output.write_text(graph.source, encoding="utf-8")
        return output
    try:
        data = cast(bytes, graph.pipe(format=fmt))
    except graphviz.ExecutableNotFound:
        raise GraphvizMissing(
            f"drawing {output.name} needs the Graphviz 'dot' program, which is not installed: "
            "install the Debian package 'graphviz' (apt-get install graphviz), or write a .dot file instead"
        ) from None
    output.write_bytes(data)
    return output


def _node_label(flow: Flow, node_id: str, node: Node) -> str:
    detail = _detail(flow, node)
    lines = [node_id, f"[{node.kind}]"]
    if detail:
        lines.extend(textwrap.wrap(detail, 32, max_lines=3, placeholder=" …"))
    return "\\n".join(line.replace("\\", "\\\\") for line in lines)  # DOT's own line break: one line of source


def _detail(flow: Flow, node: Node) -> str:
    """A short reminder of what the node does, in the flow's default language."""
    if isinstance(node, SayNode):
        return _say(flow, node.text)
    if isinstance(node, AskNode | MenuNode | LanguageNode | VoicemailNode):
        return _say(flow, node.prompt)
    if isinstance(node, RouteNode):
        return f"threshold {node.threshold:g}, fallback {node.fallback}"
    if isinstance(node, HoursNode):
        return node.timezone
    if isinstance(node, TransferNode):
        return f"to {node.department}" if node.department else "to the chosen department"
    if isinstance(node, SurveyNode):
        return ", ".join(q.id for q in node.questions)
    return ""


def _say(flow: Flow, text: str | dict[str, str]) -> str:
    return f"“{localized(text, flow.language, flow.language)}”"


def _edge_label(flow: Flow, node: Node, edge: Exit) -> str:
    if isinstance(node, MenuNode) and edge.path == ("next",):
        # The keys that lead on through `next`, and the fallback department.
        if node.choices is not None:
            digits = [c.digit for c in node.choices if c.next is None]
        else:
            keys = node.departments if node.departments is not None else tuple(flow.departments)
            digits = [flow.departments[k].digit for k in keys if k in flow.departments]
        return ", ".join([*digits, f"fallback: {node.fallback}"])
    if isinstance(node, BranchNode) and isinstance(edge.path[1:2], tuple) and edge.path[0] == "rules":
        return f"{int(edge.path[1]) + 1}. {edge.label}"  # rules are tried in order: number them
    return edge.label
