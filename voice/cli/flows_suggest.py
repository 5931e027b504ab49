"""`warmline flows suggest-examples`: choose each department's example phrases from past callers' words.

The input is a CSV of past calls, one per row, with the department that should have taken the call and what the
caller said: columns ``department`` and ``text`` (or ``issue_text``, so that ``warmline crm export interactions
--format csv`` can be fed in as it is, after correcting the departments of calls that were routed wrong). The
output is a YAML snippet for the flow's ``departments:``; nothing is written to the flow itself, an admin reviews
and pastes. How the examples are chosen: ``ivr_flows/routing/example_picker.py``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import click
import yaml

from ivr_flows import Flow
from ivr_flows.routing.base import ClassifierUnavailable, description_topics
from ivr_flows.routing.factory import Engine, sentence_encoder
from voice.cli.flow_files import configured_flows_directory, directory_option, resolve_flow
from voice.cli.wording import plural

TEXT_COLUMNS = ("text", "issue_text")
#: Rejected rows listed one by one; beyond, a count per reason.
MAX_REPORTED = 20


@dataclass(frozen=True)
class LabelledCalls:
    phrases: list[str]
    labels: list[str]
    rejected: list[str]  # "line N: why", in file order


def read_labelled_calls(path: Path, flow: Flow) -> LabelledCalls:
    """The usable rows of ``path``; each unusable one is reported by line number with the reason."""
    phrases: list[str] = []
    labels: list[str] = []
    rejected: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            text_column = next((name for name in TEXT_COLUMNS if name in columns), None)
            if "department" not in columns or text_column is None:
                raise click.ClickException(
                    f"{path}: needs a header with 'department' and 'text' (or 'issue_text') columns; found "
                    + (", ".join(repr(c) for c in columns) if columns else "no header")
                )
            for row in reader:
                line = reader.line_num
                department = (row.get("department") or "").strip()
                text = (row.get(text_column) or "").strip()
                if None in row:
                    rejected.append(f"line {line}: more cells than the header has columns")
                elif not department:
                    rejected.append(f"line {line}: no department")
                elif department not in flow.departments:
                    known = ", ".join(flow.departments)
                    rejected.append(f"line {line}: department {department!r} is not in the flow ({known})")
                elif not text:
                    rejected.append(f"line {line}: no words for {department!r}")
                else:
                    phrases.append(text)
                    labels.append(department)
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise click.ClickException(f"{path}: not a readable CSV file ({exc})") from None
    return LabelledCalls(phrases, labels, rejected)


@click.command("suggest-examples")
@click.argument("flow")
@click.argument("calls", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--per-department", default=8, show_default=True, type=click.IntRange(1, 50), help="examples each")
@click.option(
    "--engine",
    type=click.Choice(["auto", "wordllama", "minilm", "minilm-onnx", "minilm+mpnet"]),
    default="auto",
    show_default=True,
    help="whose sentence vectors judge the examples (auto: MiniLM when installed, else WordLlama)",
)
@click.option("--format", "output_format", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@directory_option
def suggest_examples_command(
    flow: str, calls: Path, per_department: int, engine: str, output_format: str, directory: Path | None
) -> None:
    """Choose each department's examples from CALLS (CSV: department,text): the phrases that route the others best.

    Prints the examples as YAML for FLOW's departments (review, then paste), and how many of the calls they route
    to the right department compared with the plainest choice (each phrase is never its own example).
    """
    from ivr_flows.routing.example_picker import suggest_examples  # NumPy: only for this command

    loaded = resolve_flow(flow, directory=directory or configured_flows_directory())
    labelled = read_labelled_calls(calls, loaded)
    for problem in labelled.rejected[:MAX_REPORTED]:
        click.echo(f"{calls}: {problem}", err=True)
    if len(labelled.rejected) > MAX_REPORTED:  # an export has many calls without words (keypad, silence)
        reasons = Counter(problem.split(": ", 1)[1].split(" (")[0] for problem in labelled.rejected)
        summary = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common())
        more = len(labelled.rejected) - MAX_REPORTED
        click.echo(f"{calls}: ... and {more} more; all {len(labelled.rejected)} rejected rows: {summary}", err=True)
    if not labelled.phrases:
        raise click.ClickException(f"{calls}: no usable rows")
    try:
        encoder, _label = sentence_encoder(cast(Engine, engine))
    except ClassifierUnavailable as exc:
        raise click.ClickException(f"suggesting examples needs a sentence encoder ({engine}): {exc}") from None
    extras = {
        key: [loaded.department_name(key), *description_topics(department.description or "")]
        for key, department in loaded.departments.items()
    }
    suggestion = suggest_examples(
        labelled.phrases, labelled.labels, encoder=encoder, per_department=per_department, extras=extras
    )
    counts = Counter(labelled.labels)
    missing = [key for key in loaded.departments if key not in counts]
    summary = (
        f"{plural(per_department, 'example')} per department from {plural(suggestion.phrases_scored, 'call')} "
        f"({plural(len(labelled.rejected), 'row')} rejected); calls routed to their department "
        f"(leave-one-out): {suggestion.routed_right_before:.1%} with covering picks, "
        f"{suggestion.routed_right:.1%} with these"
    )
    if output_format == "json":
        payload = {
            "flow": loaded.name,
            "examples": {key: list(texts) for key, texts in suggestion.examples.items()},
            "calls": dict(counts),
            "without_calls": missing,
            "rows_rejected": labelled.rejected,
            "routed_right_covering": round(suggestion.routed_right_before, 4),
            "routed_right": round(suggestion.routed_right, 4),
        }
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    click.echo(f"# {summary}")
    if missing:
        click.echo(f"# no calls for {', '.join(missing)}: keep their examples as they are")
    chosen = {key: {"examples": list(texts)} for key in loaded.departments if (texts := suggestion.examples.get(key))}
    snippet = {"departments": chosen}
    click.echo(yaml.safe_dump(snippet, sort_keys=False, allow_unicode=True, width=sys.maxsize).rstrip())
