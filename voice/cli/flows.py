"""`warmline flows …`: ivr_flows' own `lint` and `graph` (the same options), plus `try`, `suggest-examples` and
`learned`, all finding flows in the configured flows folder rather than in the current one.

``python -m ivr_flows`` keeps its commands as they are (paths relative to where it runs): it knows no config.yaml.
"""

from __future__ import annotations

from pathlib import Path

import click

from ivr_flows import cli as ivr_flows_cli
from voice.cli.flow_files import configured_flows_directory, flow_path
from voice.cli.flows_learned import learned_command
from voice.cli.flows_suggest import suggest_examples_command
from voice.cli.flows_try import try_flow


@click.group()
def flows() -> None:
    """Call flows: check, try and draw them (names are looked up in config.yaml's flows.directory)."""


def _lint(paths: tuple[Path, ...], output_format: str, strict: bool) -> None:
    directory = configured_flows_directory()
    resolved = tuple(flow_path(str(path), directory) for path in paths) or (directory,)
    ivr_flows_cli.lint.callback(paths=resolved, output_format=output_format, strict=strict)  # type: ignore[misc]


def _graph(flow: str, output: Path) -> None:
    directory = configured_flows_directory()
    path = flow_path(flow, directory)
    if not path.exists():
        raise click.ClickException(f"no flow file {flow!r} (looked in {directory})")
    ivr_flows_cli.graph.callback(flow=str(path), output=output)  # type: ignore[misc]


flows.add_command(
    click.Command(
        "lint",
        params=ivr_flows_cli.lint.params,
        callback=_lint,
        help="Check flow files, or flows by name (default: every *.yaml in the configured flows folder).\n\n"
        "Exit status 0 when clean, 1 when there are errors (or warnings, with --strict).",
    )
)
flows.add_command(
    click.Command(
        "graph",
        params=ivr_flows_cli.graph.params,
        callback=_graph,
        help="Draw FLOW (a flow file, or the name of one in the configured flows folder) with Graphviz.",
    )
)
flows.add_command(try_flow)
flows.add_command(suggest_examples_command)
flows.add_command(learned_command)
