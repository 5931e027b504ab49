"""Queue wait estimates against exact formulas and a seeded simulation; Erlang C against the factorial formula."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import statistics
from collections.abc import Sequence

import pytest

from voice.domain.wait_estimate import (
    ErlangC,
    InvalidRepLoad,
    InvalidWaitInput,
    RepLoad,
    UnstableQueue,
    erlang_c,
    estimate_wait,
    spoken_wait,
)


def on_call(busy_for: float = 60.0) -> RepLoad:
    return RepLoad(busy_for=busy_for)


def free_in(seconds: float) -> RepLoad:
    return RepLoad(busy_for=None, free_in=seconds)


# --- estimate_wait: exact cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reps", "position", "aht"), [(1, 1, 300.0), (3, 2, 180.0), (10, 25, 240.0), (100, 200, 333.3)]
)
def test_all_reps_on_calls_is_k_handle_times_over_n(reps: int, position: int, aht: float) -> None:
    # M/M/N: frees come as a Poisson process of rate N/AHT, so the k-th comes after k·AHT/N on average.
    estimate = estimate_wait(position=position, reps=[on_call()] * reps, mean_handle_seconds=aht)
    assert estimate == position * aht / reps


def test_time_already_on_the_call_does_not_change_the_estimate() -> None:
    # Exponential handle times are memoryless: documented, deliberate.
    fresh = estimate_wait(position=4, reps=[on_call(1), on_call(2), free_in(30)], mean_handle_seconds=200)
    long_ago = estimate_wait(position=4, reps=[on_call(900), on_call(1500), free_in(30)], mean_handle_seconds=200)
    assert fresh == long_ago


def test_nobody_on_duty_gives_no_estimate() -> None:
    assert estimate_wait(position=1, reps=[], mean_handle_seconds=300) is None


def test_reps_free_now_answer_the_first_callers_at_once() -> None:
    reps = [free_in(0), free_in(0), free_in(0)]
    assert estimate_wait(position=1, reps=reps, mean_handle_seconds=300) == 0.0
    assert estimate_wait(position=3, reps=reps, mean_handle_seconds=300) == 0.0
    # The 4th and 5th wait for the three reps (now all on calls) to free up once and twice: AHT/3, 2·AHT/3.
    assert estimate_wait(position=4, reps=reps, mean_handle_seconds=300) == pytest.approx(100.0, rel=1e-12)
    assert estimate_wait(position=5, reps=reps, mean_handle_seconds=300) == pytest.approx(200.0, rel=1e-12)


def test_one_rep_in_wrap_up_serves_the_queue_one_call_at_a_time() -> None:
    # Free at 45 s, then two full calls for the two callers ahead.
    assert estimate_wait(position=3, reps=[free_in(45)], mean_handle_seconds=300) == pytest.approx(645.0, rel=1e-12)


@pytest.mark.parametrize("wrap_up", [1.0, 40.0, 300.0, 2000.0])
def test_first_caller_with_one_rep_on_a_call_and_one_in_wrap_up(wrap_up: float) -> None:
    # Answered at min(Exp(AHT), d): E = ∫₀ᵈ e^{-t/AHT} dt = AHT·(1 - e^{-d/AHT}).
    aht = 300.0
    estimate = estimate_wait(position=1, reps=[on_call(), free_in(wrap_up)], mean_handle_seconds=aht)
    assert estimate == pytest.approx(aht * -math.expm1(-wrap_up / aht), rel=1e-12)


def test_second_caller_with_two_reps_in_wrap_up() -> None:
    # The first rep frees at d1 and takes caller 1; caller 2 gets whichever comes first, that rep's next free
    # (d1 + Exp) or the second rep at d2: E = d1 + AHT·(1 - e^{-(d2-d1)/AHT}).
    d1, d2, aht = 20.0, 150.0, 240.0
    estimate = estimate_wait(position=2, reps=[free_in(d2), free_in(d1)], mean_handle_seconds=aht)
    assert estimate == pytest.approx(d1 + aht * -math.expm1(-(d2 - d1) / aht), rel=1e-12)


def _poisson_log_pmf(mean: float, count: int) -> float:
    return -mean + count * math.log(mean) - math.lgamma(count + 1)


def _three_on_calls_and_one_wrap_up_by_conditioning(position: int, wrap_up: float, aht: float) -> float:
    """E[wait] by conditioning on J = frees from the 3 calls before the wrap-up ends, J ~ Poisson(3d/AHT).

    J ≥ k: answered at the k-th of those frees (E[T_k; T_k ≤ d] = k·AHT/3 · P(J ≥ k+1));
    J = k-1: the wrap-up rep answers at d;  J = j < k-1: d plus k-1-j frees among 4 reps on calls.
    A different route from the module's integral; every term is summed in log space.
    """
    mean = 3 * wrap_up / aht
    pmf = [math.exp(_poisson_log_pmf(mean, j)) for j in range(position + 1)]
    at_least_k_plus_1 = max(0.0, 1.0 - math.fsum(pmf))
    before_wrap_up = position * aht / 3 * at_least_k_plus_1
    at_wrap_up = wrap_up * pmf[position - 1]
    after_wrap_up = math.fsum(pmf[j] * (wrap_up + (position - 1 - j) * aht / 4) for j in range(position - 1))
    return before_wrap_up + at_wrap_up + after_wrap_up


@pytest.mark.parametrize(
    ("position", "wrap_up", "aht"),
    [
        (1, 50.0, 300.0),
        (6, 300.0, 300.0),
        (20, 1500.0, 240.0),
        # Poisson means near 2,400: e^{-mean} underflows, so this checks the log-space start of the terms.
        (2400, 800.0, 1.0),
    ],
)
def test_three_on_calls_and_one_wrap_up_matches_conditioning(position: int, wrap_up: float, aht: float) -> None:
    estimate = estimate_wait(position=position, reps=[on_call()] * 3 + [free_in(wrap_up)], mean_handle_seconds=aht)
    assert estimate == pytest.approx(_three_on_calls_and_one_wrap_up_by_conditioning(position, wrap_up, aht), rel=1e-9)


def test_a_wrap_up_ending_long_after_we_are_answered_changes_nothing() -> None:
    # Three reps on 1-second calls answer position 600 after ~200 s; a rep back at 5,000 s is irrelevant.
    without = estimate_wait(position=600, reps=[on_call()] * 3, mean_handle_seconds=1.0)
    with_late_rep = estimate_wait(position=600, reps=[on_call()] * 3 + [free_in(5000)], mean_handle_seconds=1.0)
    assert with_late_rep == pytest.approx(without, rel=1e-9)
    assert without == pytest.approx(200.0, rel=1e-12)


def test_waits_grow_with_the_line_and_shrink_with_more_reps() -> None:
    reps = [on_call(), on_call(), free_in(0), free_in(35), free_in(35), free_in(400)]
    waits = [estimate_wait(position=k, reps=reps, mean_handle_seconds=200) for k in range(1, 40)]
    assert all(w is not None for w in waits)
    known = [w for w in waits if w is not None]
    assert known[0] == 0.0
    assert all(later > earlier for earlier, later in itertools.pairwise(known))
    more_reps = estimate_wait(position=20, reps=[*reps, on_call()], mean_handle_seconds=200)
    assert more_reps is not None
    assert more_reps < known[19]


# --- estimate_wait: Monte Carlo --------------------------------------------------------------------------------------


def simulate_wait(position: int, reps: Sequence[RepLoad], aht: float, *, runs: int, seed: int) -> tuple[float, float]:
    """Mean and standard error of the wait, by playing the queue out: each free rep takes the next caller."""
    rng = random.Random(seed)
    rate = 1.0 / aht
    waits = []
    for _ in range(runs):
        free_at = [rng.expovariate(rate) if rep.free_in is None else rep.free_in for rep in reps]
        heapq.heapify(free_at)
        for _ in range(position - 1):  # the callers ahead each take the next rep to free up
            heapq.heappush(free_at, heapq.heappop(free_at) + rng.expovariate(rate))
        waits.append(free_at[0])
    return statistics.fmean(waits), statistics.stdev(waits) / math.sqrt(runs)


MIXED_CASES = {
    "one on a call, one in wrap-up": (3, [on_call(), free_in(40)], 300.0),
    "free now, wrap-ups and calls": (5, [on_call(), on_call(), free_in(0), free_in(20), free_in(200)], 240.0),
    "wrap-ups only": (8, [free_in(60), free_in(120), free_in(500)], 300.0),
    "wrap-ups ending together": (12, [on_call()] * 4 + [free_in(30), free_in(90), free_in(90), free_in(400)], 180.0),
    "busy floor, one rep back much later": (9, [on_call()] * 5 + [free_in(2000)], 120.0),
}


@pytest.mark.parametrize("case", list(MIXED_CASES))
def test_mixed_cases_match_a_seeded_simulation(case: str) -> None:
    position, reps, aht = MIXED_CASES[case]
    simulated, standard_error = simulate_wait(position, reps, aht, runs=30_000, seed=20240601)
    estimate = estimate_wait(position=position, reps=reps, mean_handle_seconds=aht)
    assert estimate is not None
    assert estimate == pytest.approx(simulated, rel=0.02)
    assert abs(estimate - simulated) < 4 * standard_error  # and within the simulation's own noise


# --- estimate_wait: input errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("busy_for", "free_in_seconds"), [(None, None), (30.0, 10.0), (-1.0, None), (None, -5.0), (math.nan, None)]
)
def test_rep_load_must_be_exactly_one_state(busy_for: float | None, free_in_seconds: float | None) -> None:
    with pytest.raises(InvalidRepLoad):
        RepLoad(busy_for=busy_for, free_in=free_in_seconds)


@pytest.mark.parametrize("position", [0, -3, True])
def test_position_is_one_based(position: int) -> None:
    with pytest.raises(InvalidWaitInput):
        estimate_wait(position=position, reps=[on_call()], mean_handle_seconds=300)


@pytest.mark.parametrize("aht", [0.0, -10.0, math.inf, math.nan])
def test_handle_time_must_be_positive(aht: float) -> None:
    with pytest.raises(InvalidWaitInput):
        estimate_wait(position=1, reps=[on_call()], mean_handle_seconds=aht)


# --- Erlang C ------------------------------------------------------------------------------------------------------


def erlang_c_by_factorials(load: float, agents: int) -> float:
    """P(wait) exactly as written in the notes: (A^N/N!·N/(N-A)) / (Σ_{k<N} A^k/k! + A^N/N!·N/(N-A))."""
    top = load**agents / math.factorial(agents) * agents / (agents - load)
    return top / (sum(load**k / math.factorial(k) for k in range(agents)) + top)


def erlang_c_in_log_space(load: float, agents: int) -> float:
    """The same formula with every term as a logarithm, for N where A^N/N! overflows."""
    log_terms = [k * math.log(load) - math.lgamma(k + 1) for k in range(agents)]
    log_top = agents * math.log(load) - math.lgamma(agents + 1) + math.log(agents / (agents - load))
    largest = max([*log_terms, log_top])
    below = math.fsum(math.exp(t - largest) for t in log_terms)
    top = math.exp(log_top - largest)
    return top / (below + top)


@pytest.mark.parametrize(("load", "agents"), [(0.5, 1), (1.2, 2), (3.7, 5), (10.0, 11), (10.0, 14), (17.3, 20)])
def test_erlang_c_matches_the_factorial_formula(load: float, agents: int) -> None:
    aht = 180.0
    result = erlang_c(arrival_rate=load / aht, mean_handle_seconds=aht, agents=agents)
    p_wait = erlang_c_by_factorials(load, agents)
    assert result.load == pytest.approx(load, rel=1e-12)
    assert result.p_wait == pytest.approx(p_wait, rel=1e-10)
    assert result.asa == pytest.approx(p_wait * aht / (agents - load), rel=1e-10)
    assert result.service_level(20) == pytest.approx(1 - p_wait * math.exp(-(agents - load) * 20 / aht), rel=1e-10)


def test_erlang_c_worked_example() -> None:
    # The usual worked example: 100 calls per 30 minutes, 3-minute handle time (A = 10 erlangs), 20-second target.
    eleven = erlang_c(arrival_rate=100 / 1800, mean_handle_seconds=180, agents=11)
    assert eleven.load == pytest.approx(10.0)
    assert round(eleven.p_wait, 4) == 0.6821
    assert round(eleven.asa, 1) == 122.8
    assert round(eleven.service_level(20), 3) == 0.390
    fourteen = erlang_c(arrival_rate=100 / 1800, mean_handle_seconds=180, agents=14)
    assert round(fourteen.p_wait, 4) == 0.1741
    assert round(fourteen.asa, 2) == 7.84
    assert round(fourteen.service_level(20), 3) == 0.888


def test_one_agent_is_the_m_m_1_queue() -> None:
    # M/M/1 with utilisation u: P(wait) = u and ASA = u·AHT/(1-u).
    result = erlang_c(arrival_rate=0.75 / 240, mean_handle_seconds=240, agents=1)
    assert result.p_wait == pytest.approx(0.75, rel=1e-12)
    assert result.asa == pytest.approx(0.75 * 240 / 0.25, rel=1e-12)
    assert result.occupancy == pytest.approx(0.75, rel=1e-12)


@pytest.mark.parametrize(("load", "agents"), [(390.0, 400), (250.0, 400), (499.0, 500), (480.5, 500)])
def test_erlang_c_stays_exact_for_hundreds_of_agents(load: float, agents: int) -> None:
    with pytest.raises(OverflowError):
        erlang_c_by_factorials(load, agents)  # why the module does not use the textbook form
    result = erlang_c(arrival_rate=load / 300, mean_handle_seconds=300, agents=agents)
    assert 0.0 < result.p_wait < 1.0
    assert result.p_wait == pytest.approx(erlang_c_in_log_space(load, agents), rel=1e-9)
    assert math.isfinite(result.asa)


def test_service_level_starts_at_answered_at_once_and_rises_to_one() -> None:
    result = erlang_c(arrival_rate=8 / 300, mean_handle_seconds=300, agents=10)
    assert result.service_level(0) == pytest.approx(1 - result.p_wait)
    levels = [result.service_level(t) for t in (0, 10, 20, 60, 600, 6000)]
    assert levels == sorted(levels)
    assert levels[-1] == pytest.approx(1.0, abs=1e-9)


def test_no_callers_means_no_waiting() -> None:
    result = erlang_c(arrival_rate=0.0, mean_handle_seconds=300, agents=3)
    assert result == ErlangC(load=0.0, p_wait=0.0, asa=0.0, agents=3, mean_handle_seconds=300)
    assert result.service_level(0) == 1.0


@pytest.mark.parametrize("agents", [10, 9])
def test_load_at_or_above_the_agents_is_unstable(agents: int) -> None:
    with pytest.raises(UnstableQueue):
        erlang_c(arrival_rate=10 / 180, mean_handle_seconds=180, agents=agents)


@pytest.mark.parametrize(
    ("arrival_rate", "aht", "agents"), [(-0.1, 180.0, 3), (0.01, 0.0, 3), (0.01, 180.0, 0), (0.01, 180.0, True)]
)
def test_erlang_c_rejects_meaningless_input(arrival_rate: float, aht: float, agents: int) -> None:
    with pytest.raises(InvalidWaitInput):
        erlang_c(arrival_rate=arrival_rate, mean_handle_seconds=aht, agents=agents)


def test_service_level_rejects_negative_time() -> None:
    with pytest.raises(InvalidWaitInput):
        erlang_c(arrival_rate=0.01, mean_handle_seconds=180, agents=3).service_level(-1)


# --- spoken_wait ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "spoken"),
    [
        (None, ""),
        (0.0, "less than a minute"),
        (59.9, "less than a minute"),
        (60.0, "about 1 minute"),
        (60.5, "about 2 minutes"),
        (120.0, "about 2 minutes"),
        (121.0, "about 3 minutes"),
        (599.0, "about 10 minutes"),
        (600.0, "about 10 minutes"),
        (601.0, "about 15 minutes"),
        (900.0, "about 15 minutes"),
        (901.0, "about 20 minutes"),
        (1800.0, "about 30 minutes"),
        (1801.0, "about 40 minutes"),
        (3000.0, "about 50 minutes"),
        (3001.0, "about an hour"),
        (3600.0, "about an hour"),
        (3601.0, "about an hour and 10 minutes"),
        (4800.0, "about an hour and 20 minutes"),
        (4801.0, "about an hour and a half"),
        (5400.0, "about an hour and a half"),
        (5401.0, "more than an hour and a half"),
        (86_400.0, "more than an hour and a half"),
    ],
)
def test_spoken_wait_rounds_up_at_every_boundary(seconds: float | None, spoken: str) -> None:
    assert spoken_wait(seconds) == spoken


def test_spoken_wait_never_promises_less_than_the_estimate() -> None:
    def promised_seconds(text: str) -> float:
        if text == "less than a minute":
            return 60.0
        if text.startswith("more than"):
            return math.inf
        if text.startswith("about an hour"):
            rest = text.removeprefix("about an hour")
            extra = 30 if rest == " and a half" else int(rest.split()[1]) if rest else 0
            return (60 + extra) * 60.0
        return int(text.split()[1]) * 60.0

    for seconds in [s * 7.3 for s in range(0, 1000)]:
        assert promised_seconds(spoken_wait(seconds)) >= seconds


@pytest.mark.parametrize("seconds", [-1.0, math.nan])
def test_spoken_wait_rejects_impossible_estimates(seconds: float) -> None:
    with pytest.raises(InvalidWaitInput):
        spoken_wait(seconds)
