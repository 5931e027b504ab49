"""The loader: every broken flow is reported at the exact line:col, node and key."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from ivr_flows import Flow, FlowError, FlowIssue, load_flow, parse_flow

# A small valid flow. Line numbers matter to the tests below, so it is spelled out in full:
#  1 company   4 billing   7 welcome   11 reason   16 keypad   21 route   26 transfer
BASE = """\
company: Acme
start: welcome
departments:
  billing: {digit: 1, examples: [I was charged twice]}
  general: {digit: 0}
nodes:
  welcome:
    kind: say
    text: "Thanks for calling {company}."
    next: reason
  reason:
    kind: ask
    prompt: What is it about?
    on_no_input: keypad
    next: route
  keypad:
    kind: menu
    prompt: "{menu_options}"
    fallback: general
    next: transfer
  route:
    kind: route
    threshold: 0.3
    fallback: general
    next: transfer
  transfer:
    kind: transfer
"""


def edited(old: str, new: str, base: str = BASE) -> str:
    """``base`` with the one occurrence of ``old`` replaced (fails loudly if it is not unique)."""
    assert base.count(old) == 1, f"{old!r} occurs {base.count(old)} times"
    return base.replace(old, new)


def problems(text: str) -> list[str]:
    """The loader's issues for ``text``, as the strings an admin would see."""
    with pytest.raises(FlowError) as caught:
        parse_flow(text, source="t.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_base_flow_is_valid() -> None:
    flow = parse_flow(BASE, source="flows/t.yaml")
    assert flow.start == "welcome"
    assert flow.name == "t"
    assert flow.source == "flows/t.yaml"
    assert flow.version == hashlib.sha256(BASE.encode()).hexdigest()[:12]


# --- each kind of mistake, at its exact position --------------------------------------------


def test_typo_in_next_points_at_the_value_and_suggests_the_node() -> None:
    assert problems(edited("    next: route\n", "    next: rout\n")) == [
        "t.yaml:15:11 node 'reason': key 'next': points to unknown node 'rout' (did you mean 'route'?)"
    ]


def test_typo_in_start() -> None:
    assert problems(edited("start: welcome", "start: welcom")) == [
        "t.yaml:2:8 key 'start': points to unknown node 'welcom' (did you mean 'welcome'?)"
    ]


def test_missing_required_key_points_at_the_mapping_that_lacks_it() -> None:
    assert problems(edited("    threshold: 0.3\n", "")) == [
        "t.yaml:22:5 node 'route': key 'threshold': required key is missing"
    ]


def test_unknown_key_points_at_the_key_and_suggests_the_right_one() -> None:
    assert problems(edited("    on_no_input: keypad\n", "    on_no_input: keypad\n    retires: 2\n")) == [
        "t.yaml:15:5 node 'reason': key 'retires': unknown key (did you mean 'retries'?); "
        "allowed keys: kind, prompt, reprompt, input, retries, timeout, hints, on_no_input, on_no_match, next"
    ]


def test_unknown_top_level_key() -> None:
    assert problems(edited("company: Acme\n", "company: Acme\ncompnay: Acme\n")) == [
        "t.yaml:2:1 key 'compnay': unknown key (did you mean 'company'?); "
        "allowed keys: name, company, language, voice, languages, goodbye, phrases, start, departments, nodes"
    ]


def test_wrong_type() -> None:
    assert problems(edited("threshold: 0.3", "threshold: high")) == [
        "t.yaml:23:16 node 'route': key 'threshold': expected a number, got 'high'"
    ]


def test_out_of_range() -> None:
    assert problems(edited("threshold: 0.3", "threshold: 3")) == [
        "t.yaml:23:16 node 'route': key 'threshold': must be at most 1.0, got 3"
    ]


def test_duplicate_key_is_reported_although_yaml_would_accept_it() -> None:
    assert problems(edited("    next: reason\n", "    next: reason\n    next: keypad\n")) == [
        "t.yaml:11:5 node 'welcome': key 'next': duplicate key: already defined at line 10; "
        "YAML would silently keep only this last one"
    ]


def test_duplicate_department_is_reported_too() -> None:
    text = edited("  general: {digit: 0}\n", "  general: {digit: 0}\n  billing: {digit: 2}\n")
    assert problems(text) == [
        "t.yaml:6:3 key 'departments.billing': duplicate key: already defined at line 4; "
        "YAML would silently keep only this last one"
    ]


def test_yaml_merge_keys_are_not_duplicates() -> None:
    text = edited(
        "  general: {digit: 0}\n",
        "  general: &base {digit: 0}\n  sales:\n    <<: *base\n    digit: 3\n",
    )
    flow = parse_flow(text, source="t.yaml")
    assert flow.departments["sales"].digit == "3"


def test_duplicate_digit() -> None:
    assert problems(edited("general: {digit: 0}", "general: {digit: 1}")) == [
        "t.yaml:5:20 key 'departments.general.digit': digit '1' is already used by department 'billing'"
    ]


def test_digit_must_be_a_single_keypad_digit() -> None:
    assert problems(edited("digit: 1,", "digit: 10,")) == [
        't.yaml:4:20 key \'departments.billing.digit\': must be a single keypad digit "0"-"9", got 10'
    ]


def test_digit_accepts_int_or_string_and_normalises_to_string() -> None:
    flow = parse_flow(edited("digit: 1,", "digit: '1',"), source="t.yaml")
    assert flow.departments["billing"].digit == "1"
    assert flow.departments["general"].digit == "0"  # written as a bare 0


def test_unknown_template_variable_lists_the_allowed_ones() -> None:
    assert problems(edited("{company}.", "{company}, {name}.")) == [
        "t.yaml:9:11 node 'welcome': key 'text': unknown template variable {name}; allowed here: {company}"
    ]


def test_first_name_only_in_known_caller_text() -> None:
    assert problems(edited("{company}.", "{first_name}.")) == [
        "t.yaml:9:11 node 'welcome': key 'text': {first_name} can only be used in a say node's "
        "known_caller_text, or in texts reached only after a branch rule with `known: true`; allowed here: {company}"
    ]
    text = edited("    next: reason\n", '    known_caller_text: "Hi {first_name}."\n    next: reason\n')
    assert parse_flow(text, source="t.yaml").nodes["welcome"].kind == "say"


def test_menu_options_only_in_menus() -> None:
    assert problems(edited("prompt: What is it about?", "prompt: '{menu_options}'")) == [
        "t.yaml:13:13 node 'reason': key 'prompt': {menu_options} can only be used in menu prompts; "
        "allowed here: {company}"
    ]


def test_department_variable_only_after_a_department_is_chosen() -> None:
    assert problems(edited("{company}.", "{department}.")) == [
        "t.yaml:9:11 node 'welcome': key 'text': {department} is not available here: not every path to "
        "this node goes through a menu or route node that chooses a department; allowed here: {company}"
    ]
    # After route/menu every path has a department, so a "connecting you" node may use it.
    text = edited("    next: transfer\n  route:", "    next: connect\n  route:")
    text = edited(
        "    fallback: general\n    next: transfer\n  transfer:",
        (
            "    fallback: general\n    next: connect\n"
            "  connect:\n    kind: say\n    text: Connecting you to {department}.\n"
            "    next: transfer\n  transfer:"
        ),
        text,
    )
    assert "connect" in parse_flow(text, source="t.yaml").nodes


def test_malformed_template() -> None:
    assert problems(edited('{company}."', '{company."')) == [
        "t.yaml:9:11 node 'welcome': key 'text': invalid template (expected '}' before end of string); "
        "write {{ and }} for literal braces"
    ]


def test_attribute_access_in_template_is_not_a_variable() -> None:
    [issue] = problems(edited("{company}.", "{company.__class__}."))
    assert "unknown template variable {company.__class__}" in issue


def test_yaml_syntax_error_has_a_position() -> None:
    assert problems(edited("prompt: What is it about?", "prompt: [What is it about?")) == [
        "t.yaml:13:30 YAML syntax error: while parsing a flow sequence at line 13, expected ',' or ']', but got '?'"
    ]


def test_tab_indentation_is_a_yaml_error() -> None:
    assert problems(edited("    kind: say\n", "\tkind: say\n")) == [
        "t.yaml:8:1 YAML syntax error: found character '\\t' that cannot start any token"
    ]


def test_undefined_department_suggests_a_defined_one() -> None:
    assert problems(edited("    kind: transfer\n", "    kind: transfer\n    department: biling\n")) == [
        "t.yaml:28:17 node 'transfer': key 'department': refers to unknown department 'biling' "
        "(did you mean 'billing'?); defined departments: billing, general"
    ]


def test_general_department_is_required() -> None:
    assert problems(edited("  general: {digit: 0}\n", "")) == [
        "t.yaml:4:3 key 'departments': a 'general' department is required: callers whose reason cannot be "
        "understood, or who press nothing, are sent there",
        "t.yaml:18:15 node 'keypad': key 'fallback': refers to unknown department 'general'; "
        "defined departments: billing",
        "t.yaml:23:15 node 'route': key 'fallback': refers to unknown department 'general'; "
        "defined departments: billing",
    ]


def test_menu_department_list_is_checked() -> None:
    text = edited(
        '    prompt: "{menu_options}"\n',
        '    prompt: "{menu_options}"\n    departments: [billing, bill, billing]\n',
    )
    assert problems(text) == [
        "t.yaml:19:28 node 'keypad': key 'departments[1]': refers to unknown department 'bill' "
        "(did you mean 'billing'?); defined departments: billing, general",
        "t.yaml:19:34 node 'keypad': key 'departments[2]': department 'billing' is listed twice",
    ]


def test_loop_of_say_nodes_is_rejected_where_it_closes() -> None:
    text = edited("    next: reason\n", "    next: again\n  again:\n    kind: say\n    text: Hm.\n    next: welcome\n")
    assert problems(text) == [
        "t.yaml:14:11 node 'again': key 'next': loops back to 'welcome' (welcome -> again -> welcome) "
        "without ever asking the caller anything; the call would never progress"
    ]


def test_say_node_pointing_at_itself() -> None:
    assert problems(edited("    next: reason\n", "    next: welcome\n")) == [
        "t.yaml:10:11 node 'welcome': key 'next': loops back to 'welcome' (welcome -> welcome) "
        "without ever asking the caller anything; the call would never progress"
    ]


def test_loop_through_an_ask_is_fine() -> None:
    # reason -> (no input) keypad is an ask/menu cycle partner; a say -> ask -> say cycle asks each time.
    text = edited("    on_no_input: keypad\n", "    on_no_input: welcome\n")
    assert parse_flow(text, source="t.yaml").nodes["reason"].kind == "ask"


def test_unknown_node_kind() -> None:
    assert problems(edited("    kind: route\n", "    kind: rout\n")) == [
        "t.yaml:22:11 node 'route': key 'kind': unknown node kind 'rout' (did you mean 'route'?); "
        "expected one of: say, ask, menu, route, branch, hours, language, transfer, voicemail, goto, hangup, survey"
    ]


def test_node_without_kind() -> None:
    assert problems(edited("    kind: transfer\n", "    department: billing\n")) == [
        "t.yaml:27:5 node 'transfer': key 'kind': required key is missing: every node needs a kind "
        "(say, ask, menu, route, branch, hours, language, transfer, voicemail, goto, hangup, survey)"
    ]


def test_transfer_reachable_without_a_department() -> None:
    assert problems(edited("    next: route\n", "    next: transfer\n")) == [
        "t.yaml:27:5 node 'transfer': key 'department': this transfer can be reached before any menu or "
        "route node has chosen a department; route the caller first or set `department:`"
    ]


def test_invalid_node_name_points_at_the_key() -> None:
    assert problems(BASE + "  bad name:\n    kind: hangup\n") == [
        "t.yaml:28:3 node 'bad name': 'bad name' is not a valid node name: use letters, digits, '_' or '-', "
        "starting with a letter"
    ]


def test_speech_hints_are_checked() -> None:
    text = edited("    on_no_input: keypad\n", "    on_no_input: keypad\n    hints: [ok, 'a, b', 3]\n")
    assert problems(text) == [
        "t.yaml:15:17 node 'reason': key 'hints[1]': speech hints must not contain commas, got 'a, b'",
        "t.yaml:15:25 node 'reason': key 'hints[2]': expected text, got 3",
    ]


# --- whole-file problems --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "t.yaml:1:1 the flow file is empty"),
        ("# only a comment\n", "t.yaml:1:1 the flow file is empty"),
        (
            "- a\n- b\n",
            "t.yaml:1:1 a flow file must be a mapping of company, start, departments, nodes; got a list",
        ),
        (
            "a: 1\n---\nb: 2\n",
            "t.yaml:2:1 YAML syntax error: expected a single document in the stream at line 1, "
            "but found another document",
        ),
    ],
)
def test_file_level_problems(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_every_problem_is_reported_in_file_order() -> None:
    text = edited("start: welcome", "start: welcom")
    text = edited("    next: route\n", "    next: rout\n", text)
    text = edited("threshold: 0.3", "threshold: high", text)
    text = edited("    kind: transfer\n", "    kind: transfer\n    colour: red\n", text)
    with pytest.raises(FlowError) as caught:
        parse_flow(text, source="t.yaml")
    issues = caught.value.issues
    assert [(i.line, i.col, i.node, i.key) for i in issues] == [
        (2, 8, None, "start"),
        (15, 11, "reason", "next"),
        (23, 16, "route", "threshold"),
        (28, 5, "transfer", "colour"),
    ]
    assert str(caught.value).splitlines() == [str(i) for i in issues]


def test_semantic_checks_still_run_when_another_node_is_malformed() -> None:
    text = edited("    threshold: 0.3\n", "")  # route node is now invalid...
    text = edited("    on_no_input: keypad\n", "    on_no_input: keypd\n", text)  # ...and reason dangles
    assert problems(text) == [
        "t.yaml:14:18 node 'reason': key 'on_no_input': points to unknown node 'keypd' (did you mean 'keypad'?)",
        "t.yaml:22:5 node 'route': key 'threshold': required key is missing",
    ]


def test_flow_issue_fields_and_format() -> None:
    issue = FlowIssue("ivr_flows/main.yaml", 14, 7, "pay", "next", "points to unknown node 'pya'")
    assert str(issue) == "ivr_flows/main.yaml:14:7 node 'pay': key 'next': points to unknown node 'pya'"
    assert str(FlowIssue("f.yaml", 1, 1, None, "", "the flow file is empty")) == "f.yaml:1:1 the flow file is empty"
    with pytest.raises(AttributeError):
        issue.line = 3  # type: ignore[misc]


# --- files ----------------------------------------------------------------------------------


def test_load_flow_records_source_version_and_name(tmp_path: Path) -> None:
    path = tmp_path / "support_line.yaml"
    path.write_text(BASE, encoding="utf-8")
    flow = load_flow(path)
    assert flow.source == str(path)
    assert flow.name == "support_line"
    assert flow.version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert re.fullmatch(r"[0-9a-f]{12}", flow.version)


def test_name_in_the_file_wins_over_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: after_hours\n" + BASE, encoding="utf-8")
    assert load_flow(path).name == "after_hours"


def test_different_bytes_give_a_different_version(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(BASE, encoding="utf-8")
    b.write_text(BASE + "# comment\n", encoding="utf-8")
    assert load_flow(a).version != load_flow(b).version


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(edited("start: welcome", "start: welcom"), encoding="utf-8")
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert str(caught.value).startswith(f"{path}:2:8 key 'start'")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"company: Acme\nstart: w\xe9lcome\n")
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert str(caught.value) == f"{path}:2:9 the file is not valid UTF-8 text"


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_flow(tmp_path / "nope.yaml")


# --- the shipped flow and the README ------------------------------------------------------


def test_sample_flow_is_valid_and_complete(sample_flow: Flow) -> None:
    digits = {key: dept.digit for key, dept in sample_flow.departments.items()}
    assert digits == {"billing": "1", "technical_support": "2", "sales": "3", "account": "4", "general": "0"}
    for key, dept in sample_flow.departments.items():
        if key != "general":
            assert 8 <= len(dept.examples) <= 10, key
    assert sample_flow.name == "main"
    assert sample_flow.department_name("technical_support") == "technical support"


def test_readme_example_flow_is_valid() -> None:
    readme = (Path(__file__).resolve().parents[2] / "ivr_flows" / "README.md").read_text(encoding="utf-8")
    example = re.search(r"## A complete example\s+```yaml\n(.*?)```", readme, re.S)
    assert example is not None
    flow = parse_flow(example.group(1), source="README.md")
    assert set(flow.departments) == {"billing", "technical_support", "general"}


def test_flow_models_are_frozen(sample_flow: Flow) -> None:
    with pytest.raises(ValueError, match="frozen"):
        sample_flow.company = "Evil Corp"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{}", "empty placeholder {}; name a variable: {company}"),
        (
            "{company!r}",
            "placeholder {company...} has a format or conversion; write plain {name} placeholders",
        ),
        (
            "{company:>20}",
            "placeholder {company...} has a format or conversion; write plain {name} placeholders",
        ),
    ],
)
def test_only_plain_placeholders(template: str, message: str) -> None:
    assert problems(edited("{company}.", template + ".")) == [f"t.yaml:9:11 node 'welcome': key 'text': {message}"]


def test_literal_braces_are_fine() -> None:
    flow = parse_flow(edited("{company}.", "{{company}} {company}."), source="t.yaml")
    assert flow.nodes["welcome"].kind == "say"


# --- the command-line check -----------------------------------------------------------------


def test_cli_reports_ok_and_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ivr_flows.__main__ import main

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(BASE, encoding="utf-8")
    bad.write_text(edited("start: welcome", "start: welcom"), encoding="utf-8")
    assert main([str(good)]) == 0
    assert main([str(good), str(bad), str(tmp_path / "missing.yaml")]) == 1
    out, err = capsys.readouterr()
    assert f"ok {good}: flow 'good'" in out
    assert f"{bad}:2:8 key 'start': points to unknown node 'welcom'" in err
    assert "missing.yaml: No such file or directory" in err
