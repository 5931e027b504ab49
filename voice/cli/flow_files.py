"""Where `warmline flows …` finds a flow: a path, or a flow's name in the configured flows folder.

The folder is config.yaml's ``flows.directory`` (WARMLINE_CONFIG's, relative paths relative to that file), the one
the service answers calls from, so a command means the same flows wherever it is run from.
"""

from __future__ import annotations

from pathlib import Path

import click

from ivr_flows import Flow, FlowError, load_flow
from voice.config import ConfigError, load_settings

#: The ``--directory`` option of the commands that take a FLOW name (None: the configured folder).
directory_option = click.option(
    "--directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="where FLOW names are looked up  [default: config.yaml's flows.directory]",
)


def configured_flows_directory() -> Path:
    try:
        return load_settings().flows_directory
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def flow_path(name_or_path: str, directory: Path) -> Path:
    """``name_or_path`` itself when it exists; else the flow of that name (``main`` or ``main.yaml``) in
    ``directory`` when there is one; else ``name_or_path`` unchanged, for the caller to report as missing."""
    given = Path(name_or_path)
    if given.exists():
        return given
    for candidate in (directory / f"{name_or_path}.yaml", directory / name_or_path):
        if candidate.is_file():
            return candidate
    return given


def resolve_flow(name_or_path: str, *, directory: Path) -> Flow:
    """A flow by file path, or by name inside the flows folder, loaded and validated."""
    path = flow_path(name_or_path, directory)
    try:
        return load_flow(path)
    except FileNotFoundError:
        raise click.ClickException(f"no flow file {name_or_path!r} (looked in {directory})") from None
    except FlowError as exc:
        raise click.ClickException(f"the flow does not validate:\n{exc}") from None
