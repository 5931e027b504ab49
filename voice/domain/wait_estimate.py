"""Honest queue waits: what to tell a caller, and what the staffing numbers say.

Pure functions only — no clock reads, no I/O. Times are seconds, always passed in.

* :func:`estimate_wait` — expected seconds until the caller at a given place in line is answered, from the reps on
  duty right now (who is free, who finishes wrap-up when, who is on a call).
* :func:`erlang_c` — the textbook staffing model (load, probability of waiting, ASA, service level).
* :func:`spoken_wait` — how a person says an estimate, rounded *up* so the caller is never promised less than it.

The model behind :func:`estimate_wait`
--------------------------------------
Callers are served first come, first served (after priority, which the queue order already reflects), and a rep who
frees up takes the next caller at once. So the caller at ``position`` k is answered at the k-th "a rep becomes free"
event. Events come from three kinds of rep:

* free now (``free_in=0``): one event at time 0;
* known free time (``free_in>0``, e.g. wrap-up ending): one event at that time;
* on a call: an event after an exponentially distributed residual handle time with mean ``mean_handle_seconds``.

Every rep who frees up takes a caller and is then on an exponential call too. Because the exponential is memoryless,
how long a rep has already been on the call (``busy_for``) does not change their expected residual time — it is
accepted for callers that have it, and deliberately ignored. (Real handle times are closer to log-normal; an
exponential keeps the estimate exact for the M/M/N case, where N busy reps give E[wait of position k] = k·AHT/N, and
errs on the side of a longer residual for reps who have just picked up.)

Since "a rep frees up" events of busy reps never change how many reps are on calls (the rep picks the next caller
and is on a call again), the number n(t) of reps on exponential calls only steps up at the known free times. So the
exponential events form a Poisson process with the piecewise-constant rate n(t)/AHT, whose count by time t is
Poisson(Λ(t)) with Λ(t) = ∫₀ᵗ n(u)/AHT du — independent of anything else. With D(t) the number of known-time events
by t::

    E[T_k] = ∫₀^∞ P(T_k > t) dt = Σ_segments ∫ P(Poisson(Λ(t)) < k - D(t)) dt

and on a segment with n > 0 reps on calls and m = k - D callers still to go before ours, Λ grows linearly, so::

    ∫ P(Poisson(Λ) < m) dt = AHT/n · [S_m(Λ_start) - S_m(Λ_end)],   S_m(x) = E[(m - X)⁺], X ~ Poisson(x)

(because d/dx S_m(x) = -P(Poisson(x) < m)). The last segment runs to infinity, where S_m = 0. This is exact in
expectation; the only approximation is cutting off Poisson terms below ~1e-17 of the total.

What the model leaves out: callers ahead who hang up (makes waits shorter than estimated — the safe side), callers
who arrive later with a head start and jump ahead (longer), and reps who log off or come on duty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import mul

__all__ = [
    "ErlangC",
    "InvalidRepLoad",
    "InvalidWaitInput",
    "RepLoad",
    "UnstableQueue",
    "WaitEstimateError",
    "erlang_c",
    "estimate_wait",
    "spoken_wait",
]


class WaitEstimateError(ValueError):
    """Base of the errors a caller of this module can cause with bad input."""


class InvalidRepLoad(WaitEstimateError):
    """A :class:`RepLoad` that is not exactly one of: free now, free at a known time, or on a call."""


class InvalidWaitInput(WaitEstimateError):
    """A position, handle time, rate, agent count or duration outside what the formulas mean."""


class UnstableQueue(WaitEstimateError):
    """Offered load A ≥ agents N: the queue grows without bound, so Erlang C has no steady state."""


def _check_non_negative(value: float, what: str, error: type[WaitEstimateError]) -> None:
    if not math.isfinite(value) or value < 0:
        raise error(f"{what} must be a finite number ≥ 0, got {value!r}")


def _check_positive(value: float, what: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise InvalidWaitInput(f"{what} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class RepLoad:
    """One rep on duty who can take this queue's callers, in exactly one of three states.

    * free now: ``RepLoad(busy_for=None, free_in=0)``
    * free at a known time (wrap-up ending): ``RepLoad(busy_for=None, free_in=25)``
    * on a call for ``busy_for`` seconds so far: ``RepLoad(busy_for=140)``
    """

    busy_for: float | None
    free_in: float | None = None

    def __post_init__(self) -> None:
        if (self.busy_for is None) == (self.free_in is None):
            raise InvalidRepLoad(
                "a rep is either on a call (busy_for set, free_in None) or free at a known time "
                f"(free_in set, busy_for None); got busy_for={self.busy_for!r}, free_in={self.free_in!r}"
            )
        if self.busy_for is not None:
            _check_non_negative(self.busy_for, "busy_for", InvalidRepLoad)
        if self.free_in is not None:
            _check_non_negative(self.free_in, "free_in", InvalidRepLoad)

    @property
    def on_call(self) -> bool:
        return self.free_in is None


# Poisson terms further than this many standard deviations (plus a margin for small means) from the mean carry
# less than ~1e-17 of the mass (Chernoff bound e^{-40}); skipping them is what keeps a call well under a millisecond.
_POISSON_SPREAD_SDS = 9.0
_POISSON_SPREAD_MARGIN = 12.0


def _expected_shortfalls(mean: float, counts: Sequence[int]) -> list[float]:
    """E[(m - X)⁺] for X ~ Poisson(``mean``), for each m in ``counts``, sharing one pass over the Poisson terms.

    That is the expected number of the next m events that have not happened yet. Uses
    E[(m - X)⁺] = (m - mean)·P(X ≤ m-1) + mean·P(X = m-1), which needs only the CDF and one pmf value.
    """
    if mean == 0.0:
        return [float(max(m, 0)) for m in counts]
    spread = _POISSON_SPREAD_SDS * math.sqrt(mean) + _POISSON_SPREAD_MARGIN
    lowest = max(0, math.floor(mean - spread))
    highest = math.floor(mean + spread)  # terms above this are negligible too
    if min(counts) - 1 > highest:  # the common case while few frees are expected yet: no terms needed
        return [m - mean for m in counts]
    # Only counts whose m-1 falls inside [lowest, highest] need Poisson terms; the others have closed forms.
    last_needed = max((m - 1 for m in counts if lowest <= m - 1 <= highest), default=-1)
    pmfs: list[float] = []
    if last_needed >= lowest:
        # Start in log space (e^{-mean} alone underflows for means above ~745), then recur upwards in C via accumulate.
        first = math.exp(-mean + lowest * math.log(mean) - math.lgamma(lowest + 1))
        pmfs = list(accumulate((mean / count for count in range(lowest + 1, last_needed + 1)), mul, initial=first))
    shortfalls = []
    for m in counts:
        if m - 1 > highest:
            shortfalls.append(m - mean)  # all the mass is below m: (m - X)⁺ = m - X
        elif m - 1 < lowest:
            shortfalls.append(0.0)  # all the mass is at or above m: the m events have (almost surely) happened
        else:
            below_m = pmfs[: m - lowest]
            shortfalls.append((m - mean) * sum(below_m) + mean * below_m[-1])
    return shortfalls


# Stop once the rest of the integral is provably below this fraction of what has been summed (or of one AHT).
_NEGLIGIBLE = 1e-13


def estimate_wait(*, position: int, reps: Sequence[RepLoad], mean_handle_seconds: float) -> float | None:
    """Expected seconds until the caller at 1-based ``position`` is answered (``position - 1`` callers ahead).

    ``None`` when ``reps`` is empty: with nobody on duty there is no honest estimate. See the module docstring for
    the model; it is exact in expectation for exponential handle times (e.g. k·AHT/N with N reps all on calls).
    """
    if isinstance(position, bool) or not isinstance(position, int) or position < 1:
        raise InvalidWaitInput(f"position is 1-based and must be an int ≥ 1, got {position!r}")
    _check_positive(mean_handle_seconds, "mean_handle_seconds")
    if not reps:
        return None

    aht = mean_handle_seconds
    known_free_times = sorted(rep.free_in for rep in reps if rep.free_in is not None)
    on_calls = len(reps) - len(known_free_times)
    freed = 0  # known free times passed so far: each answered one caller and put its rep on a call
    while freed < len(known_free_times) and known_free_times[freed] == 0.0:
        freed += 1
        on_calls += 1

    waited = 0.0  # ∫ P(T > t) dt over the segments done so far
    now = 0.0  # start of the current segment
    poisson_mean = 0.0  # Λ(now): expected number of "frees from a call" by now
    shortfall_now = float(position - freed)  # E[(callers still to answer, counting ours - frees from calls)⁺] at now
    while True:
        still_ahead = position - freed
        if still_ahead <= 0:
            return waited  # a known free time answers us at `now` at the latest
        # With the current rate forever, the rest of the integral is shortfall·AHT/n: exact on the last segment, and
        # an upper bound before it (more reps only go on calls later, which makes frees come faster).
        rest_at_current_rate = shortfall_now * aht / on_calls if on_calls else math.inf
        if freed == len(known_free_times):
            return waited + rest_at_current_rate  # on_calls ≥ 1 here: every rep is on a call by now
        if rest_at_current_rate <= _NEGLIGIBLE * max(waited, aht):
            return waited  # answered before the next known free time, for all practical purposes

        segment_end = known_free_times[freed]
        freeing_then = freed
        while freeing_then < len(known_free_times) and known_free_times[freeing_then] == segment_end:
            freeing_then += 1
        if on_calls == 0:
            waited += segment_end - now  # nobody on a call yet (Λ = 0): nothing happens before segment_end
            shortfall_now = float(still_ahead - (freeing_then - freed))
        else:
            end_mean = poisson_mean + on_calls * (segment_end - now) / aht
            shortfall_end, shortfall_after = _expected_shortfalls(
                end_mean, (still_ahead, still_ahead - (freeing_then - freed))
            )
            waited += (shortfall_now - shortfall_end) * aht / on_calls
            poisson_mean = end_mean
            shortfall_now = shortfall_after
        on_calls += freeing_then - freed
        freed = freeing_then
        now = segment_end


@dataclass(frozen=True, kw_only=True)
class ErlangC:
    """Steady-state M/M/N figures (Erlang C). It ignores abandonment, so it over-staffs slightly."""

    load: float  # A = λ·AHT, in erlangs (reps' worth of work arriving)
    p_wait: float  # probability an arriving caller has to wait at all
    asa: float  # average speed of answer: mean wait over all callers, seconds
    agents: int
    mean_handle_seconds: float

    @property
    def occupancy(self) -> float:
        """Share of the reps' time spent on calls (A/N)."""
        return self.load / self.agents

    def service_level(self, seconds: float) -> float:
        """Share of callers answered within ``seconds``: 1 - P(wait)·e^{-(N-A)t/AHT}."""
        _check_non_negative(seconds, "seconds", InvalidWaitInput)
        return 1.0 - self.p_wait * math.exp(-(self.agents - self.load) * seconds / self.mean_handle_seconds)


def erlang_c(*, arrival_rate: float, mean_handle_seconds: float, agents: int) -> ErlangC:
    """Erlang C for ``agents`` reps, callers arriving at ``arrival_rate`` per second.

    Raises :class:`UnstableQueue` when the load A = λ·AHT reaches the number of agents.
    """
    _check_non_negative(arrival_rate, "arrival_rate", InvalidWaitInput)
    _check_positive(mean_handle_seconds, "mean_handle_seconds")
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
        raise InvalidWaitInput(f"agents must be an int ≥ 1, got {agents!r}")
    load = arrival_rate * mean_handle_seconds
    if load >= agents:
        raise UnstableQueue(
            f"offered load {load:.3f} erlangs needs more than {agents} agent(s): the queue would grow without bound"
        )
    # Erlang B by its recursion B(n) = A·B(n-1) / (n + A·B(n-1)): every step stays in [0, 1], whereas A^N/N! overflows
    # floats from N ≈ 170 on.
    blocking = 1.0
    for n in range(1, agents + 1):
        blocking = load * blocking / (n + load * blocking)
    p_wait = agents * blocking / (agents - load * (1.0 - blocking))
    asa = p_wait * mean_handle_seconds / (agents - load)
    return ErlangC(load=load, p_wait=p_wait, asa=asa, agents=agents, mean_handle_seconds=mean_handle_seconds)


def _minutes(count: int) -> str:
    return "1 minute" if count == 1 else f"{count} minutes"


def _minutos(count: int) -> str:
    return "1 minuto" if count == 1 else f"{count} minutos"


def rounded_wait_minutes(seconds: float) -> int | None:
    """The estimate rounded *up* to a figure people say (see ``spoken_wait``): minutes, or None past 90 minutes."""
    _check_non_negative(seconds, "seconds", InvalidWaitInput)
    minutes = math.ceil(seconds / 60)
    if minutes <= 10:
        return minutes
    if minutes <= 30:
        return 5 * math.ceil(minutes / 5)
    if minutes <= 90:
        return 10 * math.ceil(minutes / 10)
    return None


def spoken_wait(seconds: float | None, language: str = "en-US") -> str:
    """How a person says a wait estimate; always rounded *up*, so the caller is never promised less.

    ========================  ====================================================================
    estimate                  said
    ========================  ====================================================================
    None                      "" (no estimate: leave the wait out of the prompt)
    under 60 s                "less than a minute"
    60 s - 10 min             whole minutes, rounded up: 60 s → "about 1 minute", 61 s → "about 2 minutes"
    over 10 - 30 min          rounded up to 5 minutes: "about 15 minutes"
    over 30 - 90 min          rounded up to 10 minutes; an hour is said as one: "about 40 minutes",
                              "about an hour", "about an hour and 20 minutes", "about an hour and a half"
    over 90 min               "more than an hour and a half" (a floor, still true; a precise long figure
                              would sound more certain than the estimate is)
    ========================  ====================================================================

    ``language``: English unless it is Spanish ("es", "es-MX", …), which the sample flows also speak.
    """
    if seconds is None:
        return ""
    spanish = language.lower().startswith("es")
    if seconds < 60:
        _check_non_negative(seconds, "seconds", InvalidWaitInput)
        return "menos de un minuto" if spanish else "less than a minute"
    minutes = rounded_wait_minutes(seconds)
    if minutes is None:
        return "más de una hora y media" if spanish else "more than an hour and a half"
    if minutes < 60:
        return f"unos {_minutos(minutes)}" if spanish else f"about {_minutes(minutes)}"
    if minutes == 60:
        return "una hora" if spanish else "about an hour"
    if minutes == 90:
        return "una hora y media" if spanish else "about an hour and a half"
    return f"una hora y {_minutos(minutes - 60)}" if spanish else f"about an hour and {_minutes(minutes - 60)}"
