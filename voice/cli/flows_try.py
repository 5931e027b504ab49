"""`warmline flows try`: how a flow's classifier routes real caller words, one line per phrase.

It routes exactly as the live service does: the engine config.yaml's ``flows.classifier`` names (``--engine``
overrides it), and what the flow learned from the reps' corrections, through the same
:func:`ivr_flows.routing.factory.build_flow_classifier`. A result whose nearest example was learned says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import cast, get_args

import click

from ivr_flows import Classifier, Flow, RouteNode
from ivr_flows.routing.factory import Engine, build_flow_classifier
from voice.adapters.learned_examples import LearnedExamples
from voice.cli.context import warmline_parts, with_app
from voice.cli.flow_files import configured_flows_directory, directory_option, resolve_flow


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
        "nearest_example": result.nearest_example,
        "learned": result.matched_learned,
    }


@click.command("try")
@click.argument("flow")
@click.argument("phrases", nargs=-1)
@click.option("--format", "output_format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@directory_option
@click.option(
    "--engine",
    type=click.Choice(list(get_args(Engine))),
    default=None,
    help="speech classifier  [default: config.yaml's flows.classifier, as the service routes]",
)
@with_app
def try_flow(
    flow: str, phrases: tuple[str, ...], output_format: str, directory: Path | None, engine: str | None
) -> None:
    """Route each PHRASE (or each line on stdin) through FLOW's classifier as the service would, learned examples
    included: department and confidence per line, and which results came from a learned example."""
    loaded = resolve_flow(flow, directory=directory or configured_flows_directory())
    warmline = warmline_parts(require_schema=False)
    corrections = LearnedExamples(warmline.store).corrections(loaded.name)
    classifier = build_flow_classifier(
        loaded,
        engine=cast(Engine, engine or warmline.settings.flows.classifier),
        corrections=corrections or (),
    )
    lines = list(phrases) or [line.strip() for line in sys.stdin if line.strip()]
    results = [route_phrase(loaded, classifier, phrase) for phrase in lines]
    if output_format == "json":
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for result in results:
        note = f" (best match {result['best_match']}, below threshold)" if result["below_threshold"] else ""
        if result["learned"]:
            note += f" (learned from a correction: {result['nearest_example']!r})"
        click.echo(f"{result['department']:<20} {result['confidence']:.2f}  {result['phrase']}{note}")
    if corrections is None:
        click.echo("# routed without learned examples: the database is not readable (not migrated yet?)", err=True)
