"""`warmline flows learned FLOW`: what routing learned from the reps' corrections, and an admin's say over it.

Lists every learned example of the flow (the words, the department, who taught it and when, and its standing:
learned, or why the guard in ``ivr_flows.learning`` holds it back, or removed); ``--remove ID`` / ``--remove-all``
mark examples removed (kept on the list, never deleted: the live service stops using them at its next reload poll);
``--export`` prints the examples routing learns from as YAML to fold into the flow's ``examples:``, after which
they may be removed here.
"""

from __future__ import annotations

import getpass
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click
import yaml

from crm_sync.models import LearnedExample, utcnow
from crm_sync.queries import learned
from ivr_flows import Flow
from ivr_flows.learning import Decision, admit_for_flow
from voice.adapters.learned_examples import as_correction
from voice.cli.context import warmline_parts, with_app
from voice.cli.flow_files import configured_flows_directory, directory_option, resolve_flow
from voice.cli.wording import plural


@dataclass(frozen=True)
class Listed:
    id: int
    text: str
    department: str
    detected: str | None
    taught_by: str
    supervisor: bool
    taught_at: str
    #: learned, inactive, rejected, disputed, capped, empty, or removed.
    status: str
    why: str

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def standings(flow: Flow, rows: list[LearnedExample]) -> list[Listed]:
    """Each row as the live service judges it now: removed, or what the guard decides for ``flow``."""
    admission = admit_for_flow(flow, [as_correction(row) for row in rows if not row.removed])
    listed = []
    for row in rows:
        decision: Decision | None = admission.by_key.get(row.id)
        if row.removed:
            status = "removed"
            why = f"by {row.removed_by} on {_when(row.removed_at)}: {row.removed_reason}"
        else:
            assert decision is not None
            status, why = decision.standing.value, decision.reason
        listed.append(
            Listed(
                id=row.id,
                text=row.text,
                department=row.department,
                detected=row.detected_department,
                taught_by=row.taught_by.name,
                supervisor=row.taught_by_supervisor,
                taught_at=_when(row.taught_at),
                status=status,
                why=why,
            )
        )
    return listed


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else ""


@click.command("learned")
@click.argument("flow")
@click.option("--remove", "remove_ids", type=int, multiple=True, metavar="ID", help="stop learning from this example")
@click.option("--remove-all", is_flag=True, help="stop learning from every example of FLOW")
@click.option("--export", is_flag=True, help="print the examples routing learns from as YAML for the flow file")
@click.option("--format", "output_format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@directory_option
@with_app
def learned_command(
    flow: str,
    remove_ids: tuple[int, ...],
    remove_all: bool,
    export: bool,
    output_format: str,
    directory: Path | None,
) -> None:
    """What routing learned for FLOW from the reps' "Wrong department?" corrections: the words, the department, who
    taught it and when, and whether routing uses it (else why not). Removed examples stay listed."""
    loaded = resolve_flow(flow, directory=directory or configured_flows_directory())
    store = warmline_parts().store
    if remove_ids or remove_all:
        who = f"{getpass.getuser()} (warmline flows learned)"
        with store.unit_of_work() as session:
            rows = list(learned.for_flow(session, loaded.name))
            chosen = rows if remove_all else [row for row in rows if row.id in remove_ids]
            unknown = sorted(set(remove_ids) - {row.id for row in rows})
            if unknown:
                raise click.ClickException(f"{loaded.name} has no learned example {', '.join(map(str, unknown))}")
            removed = sum(row.remove(by=who, reason="removed by an admin", now=utcnow()) for row in chosen)
        click.echo(f"{plural(removed, 'learned example')} removed (kept on the list, marked removed)")
        return
    with store.unit_of_work(read_only=True) as session:
        listed = standings(loaded, list(learned.for_flow(session, loaded.name)))
    if export:
        _export(loaded, listed)
    elif output_format == "json":
        click.echo(json.dumps([item.as_json() for item in listed], indent=2, ensure_ascii=False))
    elif not listed:
        click.echo(f"{loaded.name} has learned nothing yet: no rep has corrected a call's department")
    else:
        for item in listed:
            who = f"{item.taught_by}{' (supervisor)' if item.supervisor else ''}"
            click.echo(
                f"{item.id:>5}  {item.status:<9} {item.department:<18} {item.text!r}  taught by {who}, {item.taught_at}"
            )
            if item.why:
                click.echo(f"       {item.why}")
        using = sum(item.status == "learned" for item in listed)
        click.echo(f"# routing learns from {using} of {plural(len(listed), 'example')}")


def _export(flow: Flow, listed: list[Listed]) -> None:
    """The learned examples as the flow file's ``departments:`` snippet (only what routing uses now)."""
    chosen: dict[str, dict[str, list[str]]] = {}
    for item in listed:
        if item.status == "learned":
            chosen.setdefault(item.department, {"examples": []})["examples"].append(item.text)
    ordered = {key: chosen[key] for key in flow.departments if key in chosen}
    click.echo(
        f"# {plural(sum(len(d['examples']) for d in ordered.values()), 'learned example')} of flow {flow.name}: add "
        "them to each department's examples, then remove them with --remove-all"
    )
    snippet = yaml.safe_dump({"departments": ordered}, sort_keys=False, allow_unicode=True, width=sys.maxsize)
    click.echo(snippet.rstrip())
