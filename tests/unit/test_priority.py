"""Head starts, their reasons, queue order, and reading frustration from what callers say."""

from __future__ import annotations

import math

import pytest

from voice.domain.priority import (
    DEFAULT_FRUSTRATION_PHRASES,
    CallerSignals,
    InvalidCallerSignals,
    InvalidPriorityWeights,
    Priority,
    PriorityWeights,
    caller_priority,
    frustration_cue,
    rank_at,
)

WEIGHTS = PriorityWeights(tiers={"VIP": 300, "gold": 60, "standard": 0})


def signals(
    tier: str | None = None, days: int | None = None, issue: str | None = None, *, callback: bool = False
) -> CallerSignals:
    return CallerSignals(tier=tier, days_since_last_contact=days, issue_text=issue, is_callback=callback)


# --- frustration_cue -----------------------------------------------------------------------------------------------

FRUSTRATED = [
    ("agent", "agent"),
    ("AGENT!!", "agent"),
    ("Agent please", "agent"),
    ("an agent", "agent"),
    ("agent agent agent", "agent"),
    ("I want to talk to an agent", "agent"),
    ("I need an agent my card was charged twice", "agent"),
    ("transfer me to one of your agents", "agent"),
    ("I'd like an agent", "agent"),
    ("can you get me a representative", "representative"),
    ("I'd like to speak with a customer service representative", "representative"),
    ("operator", "operator"),
    ("put me through to an operator", "operator"),
    ("Human, now!", "human"),
    ("can I get a human please", "human"),
    ("let me speak to a real person", "real person"),
    ("is there any way I can speak to someone", "speak to someone"),
    ("this is the third time I'm calling about this", "third time"),
    ("I've called before and it's still not fixed", "called before"),
    ("the app is still not fixed", "still not fixed"),
    ("my internet keeps dropping again and again", "again and again"),
    ("I keep calling and nobody helps", "keep calling"),
    ("this is ridiculous", "ridiculous"),
    ("It's ridiculousss!!!", "ridiculous"),
    ("honestly this is absolutely unacceptable", "unacceptable"),
    ("I'm fed up with your billing department", "fed up"),
    ("I'm sick of waiting for a refund", "sick of"),
    ("I am FURIOUS about this charge", "furious"),
    ("why the hell was I charged twice", "the hell"),
    ("the damn router is broken again", "damn"),
    ("this is total bullshit", "bullshit"),
]

NOT_FRUSTRATED = [
    "my travel agent booked the wrong flight",
    "travel agent",
    "user agent",
    "I need help with the user agent string in your API",
    "I'm a real estate agent and need to update my listing",
    "my insurance agent gave me this number",
    "the agent I spoke to last week was great",
    "I sent the form to the agent yesterday",
    "it looks like the agent forgot to add my discount",
    "I need the agent number for my booking",
    "what's the agent id field for",
    "I work in human resources and need to update payroll",
    "human resources",
    "my mobile operator changed my plan",
    "the operator hours on your website are wrong",
    "the sales representative promised a discount",
    "someone used my card",
    "this is my first time calling",
    "I'm calling about my third invoice",
    "hello I would like to check my order status",
    "hello there",
    "how do I reset my password",
    "I ordered shiitake mushrooms and they never arrived",
    "I'm calling from Amsterdam about my invoice",
    "I'd like to upgrade to the premium plan",
    "",
]


@pytest.mark.parametrize(("text", "phrase"), FRUSTRATED)
def test_frustrated_callers_are_recognised(text: str, phrase: str) -> None:
    assert frustration_cue(text, DEFAULT_FRUSTRATION_PHRASES) == phrase


@pytest.mark.parametrize("text", NOT_FRUSTRATED)
def test_ordinary_support_requests_are_not_frustration(text: str) -> None:
    assert frustration_cue(text, DEFAULT_FRUSTRATION_PHRASES) is None


def test_no_words_no_cue() -> None:
    assert frustration_cue(None, DEFAULT_FRUSTRATION_PHRASES) is None


def test_the_earliest_phrase_in_what_the_caller_said_is_quoted() -> None:
    text = "this is unacceptable, it's the third time and it's ridiculous"
    assert frustration_cue(text, DEFAULT_FRUSTRATION_PHRASES) == "unacceptable"
    assert frustration_cue(text, ["ridiculous", "third time"]) == "third time"


def test_phrases_come_from_configuration_and_match_whole_words_only() -> None:
    phrases = ["Cancel Everything", "scam"]
    assert frustration_cue("I want to CANCEL... everything!", phrases) == "Cancel Everything"
    assert frustration_cue("this feels like a scam", phrases) == "scam"
    assert frustration_cue("the scammer called me", phrases) is None  # whole words: "scammer" is not "scam"
    assert frustration_cue("this is ridiculous", phrases) is None  # only the configured phrases count


def test_curly_apostrophes_are_read_like_straight_ones() -> None:
    assert frustration_cue("it still doesn\u2019t work", DEFAULT_FRUSTRATION_PHRASES) == "still doesn't work"


# --- caller_priority -----------------------------------------------------------------------------------------------


def test_an_ordinary_caller_gets_no_head_start() -> None:
    assert caller_priority(signals(issue="I'd like to update my address"), WEIGHTS) == Priority(0.0, ())


def test_reasons_add_up() -> None:
    priority = caller_priority(signals("vip", 2, "This is the THIRD TIME I call about this"), WEIGHTS)
    assert priority.head_start_seconds == 300 + 120 + 90
    assert priority.reasons == ("tier vip", "repeat caller", "frustrated: 'third time'")


def test_a_callback_whose_turn_came_goes_first() -> None:
    priority = caller_priority(signals("gold", callback=True), WEIGHTS)
    assert priority == Priority(60 + 600, ("tier gold", "callback"))


@pytest.mark.parametrize("tier", ["vip", "VIP", "Vip", "  vip "])
def test_tiers_are_matched_ignoring_case(tier: str) -> None:
    assert caller_priority(signals(tier), WEIGHTS) == Priority(300.0, ("tier vip",))


@pytest.mark.parametrize("tier", ["platinum", "standard", "", None])
def test_unknown_and_zero_weight_tiers_give_no_reason(tier: str | None) -> None:
    assert caller_priority(signals(tier), WEIGHTS) == Priority(0.0, ())


@pytest.mark.parametrize(("days", "repeat"), [(0, True), (1, True), (7, True), (8, False), (None, False)])
def test_repeat_callers_are_those_within_the_window(days: int | None, repeat: bool) -> None:
    priority = caller_priority(signals(days=days), WEIGHTS)
    assert priority == (Priority(120.0, ("repeat caller",)) if repeat else Priority(0.0, ()))


def test_weights_are_configurable() -> None:
    weights = PriorityWeights(
        tiers={"gold": 45}, repeat_caller=30, repeat_within_days=2, frustrated=15, frustration_phrases=("escalate",)
    )
    priority = caller_priority(signals("Gold", 2, "please escalate this", callback=True), weights)
    assert priority == Priority(
        45 + 30 + 15 + 600, ("tier gold", "repeat caller", "frustrated: 'escalate'", "callback")
    )
    assert caller_priority(signals(days=3, issue="this is ridiculous"), weights) == Priority(0.0, ())


@pytest.mark.parametrize(
    "bad",
    [
        {"tiers": {"vip": -1}},
        {"tiers": {"vip": math.nan}},
        {"tiers": {"vip": 300, "VIP": 200}},
        {"tiers": {}, "repeat_caller": -5},
        {"tiers": {}, "frustrated": math.inf},
        {"tiers": {}, "repeat_within_days": -1},
    ],
)
def test_weights_that_make_no_sense_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidPriorityWeights):
        PriorityWeights(**bad)  # type: ignore[arg-type]


def test_weights_are_read_only_once_built() -> None:
    tiers = {"VIP": 300.0}
    weights = PriorityWeights(tiers=tiers)
    tiers["VIP"] = 0.0  # the config dict it came from changing later does not change the weights
    assert weights.tiers == {"vip": 300.0}
    with pytest.raises(TypeError):
        weights.tiers["vip"] = 1.0  # type: ignore[index]
    assert PriorityWeights(tiers={"VIP": 10, "vip": 10}).tiers == {"vip": 10}  # same value twice is harmless


def test_a_last_contact_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidCallerSignals):
        signals(days=-1)


# --- rank_at: the queue order --------------------------------------------------------------------------------------


def queue_order(callers: dict[str, tuple[float, CallerSignals]]) -> list[str]:
    def key(name: str) -> tuple[float, float]:
        enqueued_at, caller = callers[name]
        head_start = caller_priority(caller, WEIGHTS).head_start_seconds
        return rank_at(enqueued_at=enqueued_at, head_start_seconds=head_start), enqueued_at

    return sorted(callers, key=key)


def test_equal_head_starts_are_first_come_first_served() -> None:
    callers = {name: (at, signals("gold")) for name, at in [("c", 30.0), ("a", 10.0), ("b", 20.0)]}
    assert queue_order(callers) == ["a", "b", "c"]


def test_a_head_start_jumps_only_callers_who_waited_less_than_it() -> None:
    callers = {
        "waited 10 min": (0.0, signals()),
        "waited 4 min": (360.0, signals()),
        "vip waited 1 min": (540.0, signals("vip")),  # ranks at 240: ahead of 360, behind 0
        "gold frustrated just now": (599.0, signals("gold", issue="get me a human")),  # 599 - 150 = 449
    }
    assert queue_order(callers) == ["waited 10 min", "vip waited 1 min", "waited 4 min", "gold frustrated just now"]


def test_equal_rank_goes_to_who_really_waited_longer() -> None:
    callers = {"vip": (300.0, signals("vip")), "plain": (0.0, signals())}  # both rank at 0
    assert queue_order(callers) == ["plain", "vip"]


def test_rank_at_is_enqueue_time_minus_head_start() -> None:
    assert rank_at(enqueued_at=1_000.0, head_start_seconds=90.0) == 910.0
