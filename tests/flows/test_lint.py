"""``warmline flows lint``: each check at its exact file:line:col, node and key; output formats; exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr_flows import FlowError, load_flow, parse_flow
from ivr_flows.cli import flows
from ivr_flows.lint import LintReport, exit_code, format_human, format_json, lint_paths

DATA = Path(__file__).resolve().parent / "data"
SHIPPED = Path(__file__).resolve().parents[2] / "ivr_flows"

# A valid two-language flow with hours, a menu of choices, a transfer with `after`.
# Line numbers matter below:  5 start   13 hours   17 mon-fri   18 sat   21 pay   25 choices   32 bye
BASE = """\
company: Acme
languages:
  en-US: {voice: Polly.Joanna}
  es-MX: {voice: Polly.Mia}
start: lang
departments:
  billing: {digit: 1}
  general: {digit: 0}
nodes:
  lang:
    kind: language
    next: hours
  hours:
    kind: hours
    timezone: America/New_York
    schedule:
      mon-fri: "08:00-20:00"
      sat: ["09:00-12:00", "13:00-15:00"]
    open: pay
    closed: bye
  pay:
    kind: menu
    prompt: "{menu_options}"
    choices:
      - {digit: 1, department: billing}
      - {digit: 0, department: general}
    fallback: general
    next: out
  out:
    kind: transfer
    after: bye
  bye:
    kind: hangup
    text:
      en-US: "Goodbye from {company}."
      es-MX: "Adiós de {company}."
"""


def edited(old: str, new: str, base: str = BASE) -> str:
    assert base.count(old) == 1, f"{old!r} occurs {base.count(old)} times"
    return base.replace(old, new)


def lint_text(tmp_path: Path, text: str, name: str = "t.yaml") -> list[str]:
    """The human report's issue lines for ``text`` saved as ``name``, with the directory stripped."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    lines = format_human(lint_paths([path])).splitlines()[:-1]
    return [line.removeprefix(f"{tmp_path}/") for line in lines]


def test_base_is_clean(tmp_path: Path) -> None:
    assert lint_text(tmp_path, BASE) == []
    assert parse_flow(BASE, source="t.yaml").nodes["hours"].kind == "hours"


def test_unknown_target_with_suggestion_and_the_node_left_unreachable(tmp_path: Path) -> None:
    assert lint_text(tmp_path, edited("    open: pay\n", "    open: pya\n")) == [
        "t.yaml:19:11 error: node 'hours': key 'open': points to unknown node 'pya' (did you mean 'pay'?)",
        "t.yaml:21:3 warning: node 'pay': unreachable: no path from start node 'lang' leads here, "
        "so callers never get to it",
        "t.yaml:29:3 warning: node 'out': unreachable: no path from start node 'lang' leads here, "
        "so callers never get to it",
    ]


def test_unreachable_node_is_a_warning_that_does_not_block_loading(tmp_path: Path) -> None:
    text = BASE + "  spare:\n    kind: goto\n    target: bye\n"
    assert lint_text(tmp_path, text) == [
        "t.yaml:37:3 warning: node 'spare': unreachable: no path from start node 'lang' leads here, "
        "so callers never get to it",
    ]
    assert "spare" in parse_flow(text, source="t.yaml").nodes


def test_endless_loop_without_asking(tmp_path: Path) -> None:
    text = edited("    closed: bye\n", "    closed: again\n") + "  again:\n    kind: goto\n    target: hours\n"
    assert lint_text(tmp_path, text) == [
        "t.yaml:39:13 error: node 'again': key 'target': loops back to 'hours' (hours -> again -> hours) "
        "without ever asking the caller anything; the call would never progress",
    ]


def test_a_loop_through_a_language_node_counts_as_endless(tmp_path: Path) -> None:
    # A caller whose language the CRM knows is never asked, so this would spin for them.
    text = edited("    closed: bye\n", "    closed: lang\n")
    assert lint_text(tmp_path, text) == [
        "t.yaml:20:13 error: node 'hours': key 'closed': loops back to 'lang' (lang -> hours -> lang) "
        "without ever asking the caller anything; the call would never progress",
    ]


def test_department_used_but_not_defined(tmp_path: Path) -> None:
    assert lint_text(tmp_path, edited("department: billing}", "department: biling}")) == [
        "t.yaml:25:32 error: node 'pay': key 'choices[0].department': refers to unknown department 'biling' "
        "(did you mean 'billing'?); defined departments: billing, general",
    ]


def test_keypad_digit_used_twice_in_one_menu(tmp_path: Path) -> None:
    assert lint_text(tmp_path, edited("{digit: 0, department: general}", "{digit: 1, department: general}")) == [
        "t.yaml:26:17 error: node 'pay': key 'choices[1].digit': keypad digit '1' is already used by "
        "choices[0] of this menu",
    ]


def test_missing_prompt_for_a_declared_language(tmp_path: Path) -> None:
    assert lint_text(tmp_path, edited('      es-MX: "Adiós de {company}."\n', "")) == [
        "t.yaml:34:5 error: node 'bye': key 'text': missing prompt for declared language 'es-MX'",
    ]


def test_one_text_for_all_languages_after_a_language_choice(tmp_path: Path) -> None:
    text = edited('    text:\n      en-US: "Goodbye from {company}."\n      es-MX: "Adiós de {company}."\n', "")
    text = text.replace("    kind: hangup\n", "    kind: hangup\n    text: Goodbye.\n")
    assert lint_text(tmp_path, text) == [
        "t.yaml:34:11 error: node 'bye': key 'text': one text for every language, but a caller can hear it "
        "after choosing a language at node 'lang'; give it per language: en-US, es-MX",
    ]


def test_prompt_in_an_undeclared_language(tmp_path: Path) -> None:
    text = edited('      es-MX: "Adiós de {company}."\n', '      es-MX: "Adiós."\n      fr-FR: "Au revoir."\n')
    assert lint_text(tmp_path, text) == [
        "t.yaml:37:7 error: node 'bye': key 'text.fr-FR': language 'fr-FR' is not declared; "
        "declared languages: en-US, es-MX (add it under `languages:`)",
    ]


def test_unknown_template_variable(tmp_path: Path) -> None:
    assert lint_text(tmp_path, edited("Goodbye from {company}.", "Goodbye from {compny}.")) == [
        "t.yaml:35:14 error: node 'bye': key 'text.en-US': unknown template variable {compny} "
        "(did you mean 'company'?); allowed here: {company}",
    ]


def test_queue_variables_only_in_a_queue_message(tmp_path: Path) -> None:
    text = edited("Adiós de {company}.", "Espere {estimated_wait}.")
    assert lint_text(tmp_path, text) == [
        "t.yaml:36:14 error: node 'bye': key 'text.es-MX': {estimated_wait} can only be used in a transfer "
        "node's queue_message; allowed here: {company}",
    ]


def test_overlapping_hours_within_a_day(tmp_path: Path) -> None:
    assert lint_text(tmp_path, edited('"13:00-15:00"', '"11:00-15:00"')) == [
        "t.yaml:18:28 error: node 'hours': key 'schedule.sat[1]': 11:00-15:00 on sat overlaps 09:00-12:00",
    ]


def test_overlapping_hours_across_day_keys(tmp_path: Path) -> None:
    text = edited('      sat: ["', '      fri: "19:00-21:00"\n      sat: ["')
    assert lint_text(tmp_path, text) == [
        "t.yaml:18:12 error: node 'hours': key 'schedule.fri': 19:00-21:00 on fri overlaps 08:00-20:00 from 'mon-fri'",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"8am-8pm"', "cannot read '8am-8pm' as opening hours; write them as \"08:00-20:00\" (24-hour clock)"),
        ('"20:00-08:00"', "'20:00-08:00' ends before it starts; opening hours cannot run past midnight: "),
        ('"08:00-24:30"', "24:30 in '08:00-24:30' is not a time of day (00:00 to 24:00)"),
    ],
)
def test_unparsable_hours(tmp_path: Path, value: str, message: str) -> None:
    [line] = lint_text(tmp_path, edited('"08:00-20:00"', value))
    assert line.startswith(f"t.yaml:17:16 error: node 'hours': key 'schedule.mon-fri': {message}")


def test_unknown_day_and_bad_holiday(tmp_path: Path) -> None:
    text = edited("      sat: [", "      satur: [")
    text = edited("    open: pay\n", '    holidays: ["12-25", 2025-13-01, "12-25"]\n    open: pay\n', text)
    assert lint_text(tmp_path, text) == [
        "t.yaml:18:7 error: node 'hours': key 'schedule.satur': 'satur' is not a day (did you mean 'sat'?); "
        "use mon, tue, wed, thu, fri, sat, sun, a range like mon-fri, or daily",
        "t.yaml:19:25 error: node 'hours': key 'holidays[1]': cannot read '2025-13-01' as a date; "
        "write 2025-12-25 for one day or 12-25 for every year",
    ]


def test_holiday_listed_twice(tmp_path: Path) -> None:
    text = edited("    open: pay\n", '    holidays: ["12-25", 2025-12-25, "12-25"]\n    open: pay\n')
    assert lint_text(tmp_path, text) == [
        "t.yaml:19:25 error: node 'hours': key 'holidays[1]': holiday 2025-12-25 is already closed every year by 12-25",
        "t.yaml:19:37 error: node 'hours': key 'holidays[2]': holiday 12-25 is listed twice",
    ]


def test_bad_timezone(tmp_path: Path) -> None:
    assert lint_text(tmp_path, edited("America/New_York", "America/NewYork")) == [
        "t.yaml:15:15 error: node 'hours': key 'timezone': unknown time zone 'America/NewYork' "
        "(did you mean 'America/New_York'?); use an IANA name such as America/New_York",
    ]


def test_first_name_is_allowed_after_a_branch_on_known() -> None:
    text = """\
company: Acme
start: who
departments: {general: {digit: 0}}
nodes:
  who:
    kind: branch
    rules:
      - when: {known: false}
        next: hello
    otherwise: hi
  hi: {kind: say, text: "Hi {first_name}.", next: bye}
  hello: {kind: say, text: "Hello {first_name}.", next: bye}
  bye: {kind: hangup}
"""
    with pytest.raises(FlowError) as caught:
        parse_flow(text, source="t.yaml")
    # `hi` is reached only by known callers (the rule before took every unknown one); `hello` is not.
    assert [(issue.line, issue.col, issue.node, issue.key) for issue in caught.value.issues] == [
        (12, 28, "hello", "text")
    ]


# --- files, formats, exit codes -------------------------------------------------------------


def test_shipped_flows_lint_clean_even_when_strict() -> None:
    report = lint_paths([SHIPPED])
    assert report.files == [str(SHIPPED / "main.yaml"), str(SHIPPED / "support_hours.yaml")]
    assert report.issues == []
    assert exit_code(report, strict=True) == 0
    assert format_human(report) == "2 flow files checked: no problems"


def test_broken_flow_file_raises_flow_error() -> None:
    with pytest.raises(FlowError) as caught:
        load_flow(DATA / "broken.yaml")
    assert [(i.line, i.col, i.node, i.key, i.severity) for i in caught.value.issues] == [
        (9, 11, "welcome", "text", "error"),
        (10, 11, "welcome", "next", "error"),
        (18, 17, "out", "department", "error"),
    ]
    assert "(did you mean 'first_name'? It can only be used in a say node's known_caller_text" in str(caught.value)


def test_json_output_shape() -> None:
    report = lint_paths([DATA / "broken.yaml"])
    items = json.loads(format_json(report))
    assert len(items) == 6
    assert items[0] == {
        "source": str(DATA / "broken.yaml"),
        "line": 9,
        "col": 11,
        "severity": "error",
        "node": "welcome",
        "key": "text",
        "message": items[0]["message"],
    }
    assert items[0]["message"].startswith("unknown template variable {first_nme}")
    assert [item["severity"] for item in items].count("warning") == 3
    assert json.loads(format_json(LintReport(issues=[], files=["x.yaml"]))) == []


def test_exit_codes(tmp_path: Path) -> None:
    clean = tmp_path / "clean.yaml"
    clean.write_text(BASE, encoding="utf-8")
    warned = tmp_path / "warned.yaml"
    warned.write_text("name: warned\n" + BASE + "  spare:\n    kind: hangup\n", encoding="utf-8")
    broken = DATA / "broken.yaml"
    assert exit_code(lint_paths([clean]), strict=False) == 0
    assert exit_code(lint_paths([clean]), strict=True) == 0
    assert exit_code(lint_paths([warned]), strict=False) == 0
    assert exit_code(lint_paths([warned]), strict=True) == 1
    assert exit_code(lint_paths([broken]), strict=False) == 1


def test_duplicate_flow_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "b.yaml").write_text("company: Acme\nname: a\n" + BASE.split("\n", 1)[1], encoding="utf-8")
    report = lint_paths([tmp_path])
    assert [(i.source, i.line, i.key) for i in report.errors] == [(str(tmp_path / "b.yaml"), 2, "name")]
    assert report.errors[0].message == (
        f"flow name 'a' is already used by {tmp_path / 'a.yaml'}; the service would serve only one of them"
    )


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    report = lint_paths([tmp_path, tmp_path / "nope.yaml"])
    assert [i.message for i in report.errors] == [
        "no *.yaml flow files in this directory",
        "cannot read the file: No such file or directory",
    ]


def test_cli_human_json_and_strict(tmp_path: Path) -> None:
    warned = tmp_path / "warned.yaml"
    warned.write_text(BASE + "  spare:\n    kind: hangup\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(flows, ["lint", str(warned)])
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        f"{warned}:37:3 warning: node 'spare': unreachable: no path from start node 'lang' leads here, "
        "so callers never get to it",
        "1 flow file checked: 0 errors, 1 warning",
    ]
    assert runner.invoke(flows, ["lint", "--strict", str(warned)]).exit_code == 1
    result = runner.invoke(flows, ["lint", "--format", "json", str(DATA / "broken.yaml")])
    assert result.exit_code == 1
    assert len(json.loads(result.output)) == 6


def test_python_dash_m_lint(capsys: pytest.CaptureFixture[str]) -> None:
    from ivr_flows.__main__ import main

    assert main(["lint", str(DATA / "broken.yaml")]) == 1
    assert main(["lint", str(SHIPPED / "main.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 flow file checked: no problems"


def test_more_checks_each_at_its_key(tmp_path: Path) -> None:
    text = edited("      - {digit: 0, department: general}\n", "      - {digit: 9, next: bye}\n")
    text = edited("    choices:\n", "    departments: [billing]\n    choices:\n", text)
    text = edited("start: lang\n", "language: fr-FR\nstart: lang\n", text)
    assert lint_text(tmp_path, text) == [
        "t.yaml:5:11 error: key 'language': the default language 'fr-FR' is not among `languages` (en-US, es-MX); "
        "add it there or set `language:` to one of them",
        "t.yaml:26:5 error: node 'pay': key 'choices': use either `departments` (their own digits) or `choices`, "
        "not both",
        "t.yaml:28:9 error: node 'pay': key 'choices[1]': a choice without a department needs a `label` to be read out",
    ]


def test_schedule_closed_daily_and_midnight_parse() -> None:
    flow = parse_flow(
        edited(
            '      mon-fri: "08:00-20:00"\n',
            '      daily: "00:00-06:00"\n      mon-fri: ["08:00-20:00", "22:00-24:00"]\n      sun: closed\n',
        ),
        source="t.yaml",
    )
    hours = flow.nodes["hours"]
    assert hours.kind == "hours"
    assert hours.schedule == {
        "daily": ("00:00-06:00",),
        "mon-fri": ("08:00-20:00", "22:00-24:00"),
        "sun": (),
        "sat": ("09:00-12:00", "13:00-15:00"),
    }


def test_readme_documents_every_kind_and_variable_and_the_samples_use_every_kind() -> None:
    from ivr_flows.schema import NODE_KINDS, VARIABLES

    readme = (SHIPPED / "README.md").read_text(encoding="utf-8")
    for kind in NODE_KINDS:
        assert f"### `{kind}`" in readme, kind
    for variable in VARIABLES:
        assert f"| `{{{variable}}}` |" in readme, variable
    used = {node.kind for node in load_flow(SHIPPED / "support_hours.yaml").nodes.values()}
    assert used == set(NODE_KINDS)
