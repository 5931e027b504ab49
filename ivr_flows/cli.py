"""The ``flows`` command group: ``lint`` and ``graph``, for ``warmline flows …`` and ``python -m ivr_flows``.

It lives here rather than in ``voice.cli`` so flow authors (and CI) can check and draw flows
without the webhook app's dependencies or a database; ``voice.cli`` mounts the same group.
"""

from __future__ import annotations

from pathlib import Path

import click

from ivr_flows.lint import exit_code, format_human, format_json, lint_paths
from ivr_flows.loader import FlowError, load_flow

__all__ = ["DEFAULT_FLOWS_DIRECTORY", "flows"]

#: Where the service looks for flows unless configured otherwise (``voice.config``).
DEFAULT_FLOWS_DIRECTORY = Path("ivr_flows")


@click.group()
def flows() -> None:
    """Call flows: check and draw them."""


@flows.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@click.option("--strict", is_flag=True, help="Fail on warnings too (e.g. unreachable nodes).")
def lint(paths: tuple[Path, ...], output_format: str, strict: bool) -> None:
    """Check flow files (default: every *.yaml in ivr_flows/).

    Exit status 0 when clean, 1 when there are errors (or warnings, with --strict).
    """
    report = lint_paths(list(paths) or [DEFAULT_FLOWS_DIRECTORY])
    click.echo(format_json(report) if output_format == "json" else format_human(report))
    raise SystemExit(exit_code(report, strict=strict))


@flows.command()
@click.argument("flow")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="File to write: .svg, .png, .pdf or .dot.",
)
def graph(flow: str, output: Path) -> None:
    """Draw FLOW (a flow file, or the name of one in ivr_flows/) with Graphviz."""
    from ivr_flows.graph import GraphvizMissing, render_flow  # needs the graphviz package: only here

    path = Path(flow)
    if not path.exists() and (DEFAULT_FLOWS_DIRECTORY / f"{flow}.yaml").exists():
        path = DEFAULT_FLOWS_DIRECTORY / f"{flow}.yaml"
    try:
        loaded = load_flow(path)
    except FlowError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror or exc}") from None
    try:
        written = render_flow(loaded, output)
    except (GraphvizMissing, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {written} ({len(loaded.nodes)} nodes of flow {loaded.name!r})")
