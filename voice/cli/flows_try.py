"""`warmline flows try`: how a flow's classifier routes real caller words, one line per phrase."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import cast, get_args

import click

from ivr_flows import Classifier, Flow, RouteNode
from ivr_flows.routing.factory import Engine, build_flow_classifier
from voice.cli.flow_files import configured_flows_directory, resolve_flow


def route_phrase(flow: Flow, classifier: Classifier, phrase: str) -> dict[str, object]:
    """Route like the flow's first `route` node would: below its threshold the caller goes to its fallback."""
    route = next((node for node in flow.nodes.values() if isinstance(node, RouteNode)), None)
    result = classifier.classify(phrase)
    threshold = route.threshold if route else 0.0
    fallback = route.fallback if route else result.department
    department = result.department if result.confidence >= threshold else fallback
    return {
        "phrase": phrase,
        "department": department,
        "confidence": round(result.confidence, 3),
        "best_match": result.department,
        "below_threshold": result.confidence < threshold,
    }


@click.command("try")
@click.argument("flow")
@click.argument("phrases", nargs=-1)
@click.option("--format", "output_format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@click.option(
    "--directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="where FLOW names are looked up  [default: config.yaml's flows.directory]",
)
@click.option(
    "--engine",
    type=click.Choice(list(get_args(Engine))),
    default="auto",
    show_default=True,
    help="speech classifier (the service uses config.yaml flows.classifier)",
)
def try_flow(flow: str, phrases: tuple[str, ...], output_format: str, directory: Path | None, engine: str) -> None:
    """Route each PHRASE (or each line on stdin) through FLOW's classifier: department and confidence per line."""
    loaded = resolve_flow(flow, directory=directory or configured_flows_directory())
    classifier = build_flow_classifier(loaded, engine=cast(Engine, engine))
    lines = list(phrases) or [line.strip() for line in sys.stdin if line.strip()]
    results = [route_phrase(loaded, classifier, phrase) for phrase in lines]
    if output_format == "json":
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for result in results:
        note = f" (best match {result['best_match']}, below threshold)" if result["below_threshold"] else ""
        click.echo(f"{result['department']:<20} {result['confidence']:.2f}  {result['phrase']}{note}")
