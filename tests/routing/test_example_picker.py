"""Choosing examples from labelled past calls (``ivr_flows.routing.example_picker``) and ``warmline flows
suggest-examples``.

Sentence vectors come from WordLlama (the default install: fast, and what ``make test`` always has).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import skip_without_extra
from voice.cli import main

try:
    import numpy as np

    from ivr_flows.routing import example_picker, wordllama
except ImportError as exc:
    _MISSING: str | None = f"routing packages not installed ({exc}); pip install --no-deps -r requirements-routing.txt"
else:
    _MISSING = None if wordllama.wordllama_installed() else "wordllama is not installed (requirements-routing.txt)"

FLOWS = Path(__file__).resolve().parents[2] / "ivr_flows"

# Past callers' words, by the department that should have taken each call (written for this file).
CALLS = {
    "billing": [
        "I was charged twice this month",
        "why is my bill so much higher than usual",
        "there is a fee on my statement I don't recognise",
        "I want my money back for the month I didn't use",
        "can I pay my invoice with a different card",
        "my payment didn't go through",
        "you took money from my account without asking",
        "when is my next payment due",
        "I need a copy of last month's invoice",
        "the direct debit failed",
    ],
    "technical_support": [
        "my internet keeps dropping every evening",
        "the app crashes as soon as I open it",
        "no signal since the storm last night",
        "the website won't load on my phone",
        "my router has a red light",
        "the connection is really slow",
        "I can't stream anything, it keeps buffering",
        "error message when I try to log in to the app",
        "the service is down in my area",
        "wifi is not working at all",
    ],
    "sales": [
        "how much is the business plan",
        "I want to buy more licences for my team",
        "do you have a discount for students",
        "what plans do you offer for small companies",
        "can someone give me a demo",
        "I'd like to upgrade to the premium package",
        "is there a cheaper option",
        "I want to sign up for the service",
        "what does the family plan include",
        "price for ten users",
    ],
    "account": [
        "I forgot my password",
        "please change my home address",
        "my account is locked",
        "I want to close my account",
        "update the email on my profile",
        "how do I change my username",
        "add my wife as a second user on the account",
        "I never got the verification code",
        "change the phone number on file",
        "reset my pin",
    ],
}


def labelled() -> tuple[list[str], list[str]]:
    phrases = [text for texts in CALLS.values() for text in texts]
    labels = [department for department, texts in CALLS.items() for _ in texts]
    return phrases, labels


@pytest.fixture(scope="module")
def encoder() -> wordllama.WordLlamaEncoder:
    if _MISSING is not None:
        skip_without_extra(_MISSING)
    return wordllama.get_wordllama_encoder()


def test_examples_come_from_each_departments_own_calls_and_route_them_at_least_as_well(
    encoder: wordllama.WordLlamaEncoder,
) -> None:
    phrases, labels = labelled()
    first = example_picker.suggest_examples(phrases, labels, encoder=encoder, per_department=3)
    assert set(first.examples) == set(CALLS)
    for department, examples in first.examples.items():
        assert len(examples) == 3 and len(set(examples)) == 3
        assert set(examples) <= set(CALLS[department])
    assert first.phrases_scored == len(phrases)
    # Swaps are only made when they route more calls right: never worse than the covering picks.
    assert first.routed_right >= first.routed_right_before > 0.5
    again = example_picker.suggest_examples(phrases, labels, encoder=encoder, per_department=3)
    assert again == first  # deterministic


def test_the_reported_share_is_what_the_classifier_does_with_those_examples(
    encoder: wordllama.WordLlamaEncoder,
) -> None:
    """routed_right is computed incrementally; rebuild a real classifier from the picks and count (leave-one-out
    aside: a phrase that is an example routes right by itself, so only the other calls are compared)."""
    phrases, labels = labelled()
    suggestion = example_picker.suggest_examples(phrases, labels, encoder=encoder, per_department=4)
    classifier = wordllama.WordLlamaClassifier(
        {department: list(texts) for department, texts in suggestion.examples.items()}, encoder=encoder
    )
    chosen = {text for texts in suggestion.examples.values() for text in texts}
    others = [(text, label) for text, label in zip(phrases, labels, strict=True) if text not in chosen]
    right = sum(classifier.classify(text).department == label for text, label in others)
    # Non-examples see exactly the examples the picker scored them against.
    picker_right = suggestion.routed_right * len(phrases)
    assert right <= picker_right <= right + len(chosen)


def test_small_departments_keep_all_their_phrases_and_odd_input_is_refused(
    encoder: wordllama.WordLlamaEncoder,
) -> None:
    phrases = ["I was charged twice", "my bill is wrong", "refund please", "internet is down"]
    labels = ["billing", "billing", "billing", "technical_support"]
    suggestion = example_picker.suggest_examples(
        phrases, labels, encoder=encoder, per_department=2, extras={"technical_support": ["technical support"]}
    )
    assert suggestion.examples["technical_support"] == ("internet is down",)
    assert len(suggestion.examples["billing"]) == 2
    with pytest.raises(ValueError, match="one label per phrase"):
        example_picker.suggest_examples(phrases, labels[:2], encoder=encoder)
    assert example_picker.suggest_examples([], [], encoder=encoder).examples == {}


def test_cover_picks_the_central_phrase_first(encoder: wordllama.WordLlamaEncoder) -> None:
    texts = ["my internet is down", "the internet is not working", "internet down again", "what a lovely day"]
    order = example_picker.cover(encoder.encode(texts), 4)
    assert sorted(order) == [0, 1, 2, 3]
    assert order[0] != 3 and isinstance(order[0], int)
    assert np.isfinite(encoder.encode(texts)).all()


def write_calls(path: Path, extra_rows: str = "") -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["department", "text"])
    writer.writerows([department, text] for department, texts in CALLS.items() for text in texts)
    path.write_text(out.getvalue() + extra_rows, encoding="utf-8")
    return path


def test_cli_prints_yaml_to_paste_and_reports_bad_rows_by_line(
    encoder: wordllama.WordLlamaEncoder, tmp_path: Path
) -> None:
    bad_rows = "travel,where is my luggage\nbilling,\n,no department here\nbilling,a comma, unquoted\n"
    calls = write_calls(tmp_path / "calls.csv", bad_rows)
    result = CliRunner().invoke(
        main,
        ["flows", "suggest-examples", "main", str(calls), "--per-department", "3", "--directory", str(FLOWS)],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# 3 examples per department from 40 calls (4 rows rejected)")
    assert "no calls for general" in lines[1]
    snippet = yaml.safe_load(result.stdout)
    assert set(snippet["departments"]) == set(CALLS)
    for department, body in snippet["departments"].items():
        assert len(body["examples"]) == 3 and set(body["examples"]) <= set(CALLS[department])
    rejected = [line for line in result.stderr.splitlines() if "calls.csv: line" in line]
    assert [line.split(": ", 1)[1].split(":")[0] for line in rejected] == ["line 42", "line 43", "line 44", "line 45"]
    assert "department 'travel' is not in the flow" in result.stderr
    assert "no words for 'billing'" in result.stderr and "line 44: no department" in result.stderr
    assert "line 45: more cells than the header has columns" in result.stderr


def test_cli_json_and_a_file_it_cannot_use(encoder: wordllama.WordLlamaEncoder, tmp_path: Path) -> None:
    calls = write_calls(tmp_path / "calls.csv")
    done = CliRunner().invoke(
        main,
        ["flows", "suggest-examples", "main", str(calls), "--format", "json", "--directory", str(FLOWS)],
    )
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["flow"] == "main" and payload["without_calls"] == ["general"]
    assert all(len(texts) == 8 for texts in payload["examples"].values())
    assert payload["routed_right"] >= payload["routed_right_covering"]

    wrong_header = tmp_path / "wrong.csv"
    wrong_header.write_text("team,words\nbilling,refund\n", encoding="utf-8")
    refused = CliRunner().invoke(
        main, ["flows", "suggest-examples", "main", str(wrong_header), "--directory", str(FLOWS)]
    )
    assert refused.exit_code == 1
    assert "needs a header with 'department' and 'text'" in refused.output and "'team'" in refused.output


def test_cli_lists_the_first_rejected_rows_then_counts_the_rest_by_reason(
    encoder: wordllama.WordLlamaEncoder, tmp_path: Path
) -> None:
    """An export of interactions has many calls without words (keypad, silence): a count, not a thousand lines."""
    calls = write_calls(tmp_path / "calls.csv", "billing,\n" * 30 + "travel,lost bag\n")
    result = CliRunner().invoke(main, ["flows", "suggest-examples", "main", str(calls), "--directory", str(FLOWS)])
    assert result.exit_code == 0, result.output
    listed = [line for line in result.stderr.splitlines() if ": line " in line]
    assert len(listed) == 20 and listed[0].endswith("line 42: no words for 'billing'")
    assert result.stderr.splitlines()[-1].endswith(
        "... and 11 more; all 31 rejected rows: 30 x no words for 'billing'; 1 x department 'travel' is not in the flow"
    )
