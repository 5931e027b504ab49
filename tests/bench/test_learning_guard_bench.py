"""The learning guard's benchmark runs end to end on a small slice (TF-IDF: no model), and learning helps there."""

from __future__ import annotations

import pytest

from bench.learning_guard import main, scenario, score
from bench.routing_accuracy import DEFAULT_DATA, Dataset, load_dataset


@pytest.fixture(scope="module")
def clinc() -> Dataset:
    if not (DEFAULT_DATA / "data_small.json").exists():
        pytest.skip(f"CLINC150 is not at {DEFAULT_DATA}")
    return load_dataset(DEFAULT_DATA)


def test_the_benchmark_prints_its_table(clinc: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--engine", "tfidf", "--seeds", "1", "--steps", "0", "30", "--flood", "20"]) == 0
    table = capsys.readouterr().out
    assert "30 corrections, guard" in table and "a 20-correction flood, no guard" in table


def test_corrections_with_slips_still_raise_accuracy_and_the_guard_contains_a_flood(clinc: Dataset) -> None:
    data = clinc
    case = scenario(data, "tfidf", seed=1, wrong=0.10, count=100, flood=60)
    before, _, _ = score(data, "tfidf", case, [], guarded=True)
    after, _, learned = score(data, "tfidf", case, case.corrections, guarded=True)
    assert after > before and learned > 0
    flooded = [*case.corrections, *case.flood]
    _, taken_guarded, _ = score(data, "tfidf", case, flooded, guarded=True)
    _, taken_open, _ = score(data, "tfidf", case, flooded, guarded=False)
    assert taken_guarded < taken_open / 2
