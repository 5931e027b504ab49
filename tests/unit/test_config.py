"""config.yaml problems are reported as ``file:line:col: key.path: what is wrong``, every one of them at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from voice.config import ConfigError, load_settings
from voice.domain.errors import InvalidInput

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


def problems_in(tmp_path: Path, text: str, **overrides: object) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings({"config_path": path, "instance_path": tmp_path / "instance", **overrides}, environ={})
    assert isinstance(caught.value, InvalidInput)  # one kind for every edge: the CLI says it in one line per problem
    assert str(caught.value) == "\n".join(str(problem) for problem in caught.value.problems)
    return [line.replace(f"{path}:", "config.yaml:", 1) for line in str(caught.value).splitlines()]


def test_the_shipped_config_loads(tmp_path: Path) -> None:
    settings = load_settings({"config_path": SHIPPED_CONFIG, "instance_path": tmp_path}, environ={})
    assert settings.routing.wrap_up == 30 and settings.queue.callback_offer_after == 120


def test_an_unknown_key_points_at_the_key_and_suggests_the_right_one(tmp_path: Path) -> None:
    text = "flows:\n  default: main\nrouting:\n  strategy: longest_idle\n  wrap_upp: 45\n"
    [problem] = problems_in(tmp_path, text)
    assert problem.startswith("config.yaml:5:3: routing.wrap_upp: unknown key (did you mean 'wrap_up'?); allowed keys:")


def test_an_unknown_key_in_a_mapping_of_sections(tmp_path: Path) -> None:
    text = "routing:\n  departments:\n    billing:\n      overflow_too: [general]\n"
    [problem] = problems_in(tmp_path, text)
    assert problem.startswith(
        "config.yaml:4:7: routing.departments.billing.overflow_too: unknown key (did you mean 'overflow_to'?)"
    )


def test_a_value_of_the_wrong_type_points_at_the_value(tmp_path: Path) -> None:
    text = "queue:\n  hold_interval: 20\n  max_wait: soon\ncallbacks:\n  detect_machines: maybe\n"
    assert problems_in(tmp_path, text) == [
        "config.yaml:3:13: queue.max_wait: expected a whole number, got 'soon'",
        "config.yaml:5:20: callbacks.detect_machines: expected true or false, got 'maybe'",
    ]


def test_a_value_out_of_range_and_a_literal_choice(tmp_path: Path) -> None:
    text = "transfer:\n  ring_timeout: 2\nflows:\n  classifier: bert\n"
    first, second = problems_in(tmp_path, text)
    assert first == "config.yaml:2:17: transfer.ring_timeout: must be at least 5, got 2"
    assert second.startswith("config.yaml:4:15: flows.classifier: input should be 'auto', 'tfidf'")


def test_a_secret_in_the_file_is_refused_at_its_key(tmp_path: Path) -> None:
    text = "default_region: US\n\nauth_token: 0123456789abcdef\n"
    assert problems_in(tmp_path, text) == [
        "config.yaml:3:1: auth_token: must come from the environment (TWILIO_AUTH_TOKEN), not from config.yaml"
    ]


def test_broken_yaml_syntax(tmp_path: Path) -> None:
    [problem] = problems_in(tmp_path, "flows:\n  default: main\n  numbers: {\"+15550001234\": support_hours\n")
    assert problem.startswith("config.yaml:4:1: YAML syntax error: while parsing a flow mapping at line 3")


def test_not_a_mapping(tmp_path: Path) -> None:
    assert problems_in(tmp_path, "- routing\n- queue\n") == ["config.yaml:1:1: the top level must be a mapping of keys"]


def test_a_duplicate_key_is_an_error_not_silently_the_last_one(tmp_path: Path) -> None:
    assert problems_in(tmp_path, "queue:\n  max_wait: 600\n  max_wait: 60\n") == [
        "config.yaml:3:3: queue.max_wait: duplicate key: already defined at line 2; YAML would silently keep only "
        "this last one"
    ]


def test_tiers_that_clash_once_case_is_ignored_are_reported_in_the_file(tmp_path: Path) -> None:
    text = "routing:\n  priority:\n    tiers: {vip: 300, VIP: 200}\n"
    assert problems_in(tmp_path, text) == [
        "config.yaml:3:12: routing.priority.tiers: tier 'VIP' is given twice (names ignore case) with different values"
    ]


def test_every_problem_at_once_in_file_order_and_overrides_named_as_such(tmp_path: Path) -> None:
    text = "fallback:\n  number: '12'\nauth_token: x\nrouting:\n  wrap_upp: 1\n"
    problems = problems_in(tmp_path, text, queue={"max_wait": -1})
    assert [problem.split(": ")[0:2] for problem in problems] == [
        ["config.yaml:2:11", "fallback.number"],
        ["config.yaml:3:1", "auth_token"],
        ["config.yaml:5:3", "routing.wrap_upp"],
        ["create_app(test_config)", "queue.max_wait"],
    ]


def test_a_missing_config_named_by_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^WARMLINE_CONFIG: .*nowhere\.yaml does not exist$"):
        load_settings({"instance_path": tmp_path}, environ={"WARMLINE_CONFIG": str(tmp_path / "nowhere.yaml")})
