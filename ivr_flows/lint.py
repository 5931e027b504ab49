"""``warmline flows lint``: check flow files and report every problem, for people and for tools.

The checks themselves are the loader's (:func:`ivr_flows.loader.check_flow`): a flow the linter
passes is exactly a flow the service will load, because they are the same code. This module
adds what only makes sense across files and for a command line:

* directories expand to the ``*.yaml`` files in them (the service loads those);
* two files declaring the same flow ``name`` is an error: the service keys flows by name, so
  one would silently replace the other;
* output for people (``path:line:col severity: node 'x': key 'y': message``, then a summary)
  or for tools (``--format json``), and an exit status: 0 clean, 1 errors (or, with
  ``--strict``, warnings).

Warnings (a node nothing leads to) never stop a flow from loading; ``--strict`` lets CI
refuse them anyway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ivr_flows.loader import FlowCheck, FlowIssue, check_flow

__all__ = ["LintReport", "exit_code", "format_human", "format_json", "lint_paths"]

_NAME_KEY_RE = re.compile(r"^name\s*:", re.MULTILINE)


@dataclass(frozen=True)
class LintReport:
    """The issues in every checked file, errors and warnings, file by file in line order."""

    issues: list[FlowIssue]
    #: Every flow file that was checked, in order.
    files: list[str]

    @property
    def errors(self) -> list[FlowIssue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    @property
    def warnings(self) -> list[FlowIssue]:
        return [issue for issue in self.issues if issue.severity == "warning"]


def lint_paths(paths: Sequence[Path]) -> LintReport:
    """Check every flow file named, or found (``*.yaml``) in every directory named."""
    issues: list[FlowIssue] = []
    files: list[str] = []
    names: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.yaml"))
            if not found:
                issues.append(FlowIssue(str(path), 1, 1, None, "", "no *.yaml flow files in this directory"))
        else:
            found = [path]
        for file in found:
            files.append(str(file))
            try:
                check = check_flow(file)
            except OSError as exc:
                issues.append(FlowIssue(str(file), 1, 1, None, "", f"cannot read the file: {exc.strerror or exc}"))
                continue
            issues.extend(check.issues)
            issues.extend(_duplicate_name(check, file, names))
    return LintReport(issues=issues, files=files)


def _duplicate_name(check: FlowCheck, file: Path, names: dict[str, str]) -> list[FlowIssue]:
    if check.flow is None:
        return []
    name = check.flow.name
    first = names.setdefault(name, str(file))
    if first == str(file):
        return []
    line, col, key = 1, 1, ""
    match = _NAME_KEY_RE.search(file.read_text(encoding="utf-8-sig"))
    if match is not None:
        line, key = match.string.count("\n", 0, match.start()) + 1, "name"
    message = f"flow name {name!r} is already used by {first}; the service would serve only one of them"
    return [FlowIssue(str(file), line, col, None, key, message)]


def format_human(report: LintReport) -> str:
    """One issue per line, ``path:line:col severity: node 'x': key 'y': message``, then a summary."""
    lines = []
    for issue in report.issues:
        parts = [f"node '{issue.node}'"] if issue.node is not None else []
        if issue.key:
            parts.append(f"key '{issue.key}'")
        parts.append(issue.message)
        lines.append(f"{issue.source}:{issue.line}:{issue.col} {issue.severity}: " + ": ".join(parts))
    errors, warnings, files = len(report.errors), len(report.warnings), len(report.files)
    checked = f"{files} flow file{'' if files == 1 else 's'} checked"
    if not report.issues:
        lines.append(f"{checked}: no problems")
    else:
        lines.append(
            f"{checked}: {errors} error{'' if errors == 1 else 's'}, {warnings} warning{'' if warnings == 1 else 's'}"
        )
    return "\n".join(lines)


def format_json(report: LintReport) -> str:
    """A JSON list of ``{source, line, col, severity, node, key, message}`` objects."""
    fields = ("source", "line", "col", "severity", "node", "key", "message")
    return json.dumps([{name: asdict(issue)[name] for name in fields} for issue in report.issues], indent=2)


def exit_code(report: LintReport, *, strict: bool) -> int:
    """0 clean; 1 if there are errors, or warnings when ``strict``."""
    return 1 if report.errors or (strict and report.warnings) else 0
