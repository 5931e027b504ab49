"""Queue simulation: the real routing, presence and queue code driven through a simulated day, against Erlang C.

Warmline's own services (``voice.services.calls``, ``voice.services.queue``, ``voice.services.presence``,
``voice.services.dispatch``) run on a fresh SQLite database with the app's clock replaced by a simulated one and its
REST actions (pulling a caller out of the queue) delivered back as events: nothing is a copy of the app's logic. Per
load it simulates:

* Poisson arrivals at rate λ = occupancy · reps / AHT to one department (keypad "1", billing), for ``--hours``;
* exponential talk times with mean ``--aht`` seconds, no wrap-up, and reps who answer and accept at once, so the
  system is the M/M/N queue Erlang C describes;
* each caller who has to wait goes through the hold loop (``QueueService.hold``) at its announcement times, hearing
  the estimated wait; a freed rep pulls the next caller (``PullCaller``), delivered ``--pull-delay`` seconds later
  (the REST round trip) to ``CallService.connect``;
* optionally callers who give up after an exponential patience (``--patience``), to show abandonment.

Printed per load: ASA (mean wait of answered callers), service level at 20 s, abandonment, the Erlang C ASA and
service level for the same λ, AHT and reps, and the error of every wait announced against the wait the caller then
actually had: mean absolute error relative to the mean actual wait (the target: within 15 %), bias, and the 90th
percentile of the absolute error in seconds. Also: how the freed reps reached the next caller — pulls issued by the
very webhook that freed the rep (push) versus by the housekeeping safety net, which should be none.

The first ``--warmup-hours`` of arrivals are simulated but not counted (the line starts empty).

    .venv/bin/python bench/queue_sim.py                        # 20 reps, AHT 240 s, loads 70/85/95 %, a day
    .venv/bin/python bench/queue_sim.py --patience 120         # with abandonment
    .venv/bin/python bench/queue_sim.py --loads 0.85 --hours 24 --json
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from crm_sync.db import Store  # noqa: E402
from crm_sync.models import RepState  # noqa: E402
from crm_sync.queries.interactions import require_interaction  # noqa: E402
from crm_sync.queries.reps import upsert_rep  # noqa: E402
from voice import create_app  # noqa: E402
from voice.bootstrap import Warmline  # noqa: E402
from voice.domain.actions import Action, PullCaller  # noqa: E402
from voice.domain.replies import DialRep, EnqueueCaller, HoldLoop, LeaveQueue, Reply  # noqa: E402
from voice.domain.wait_estimate import erlang_c  # noqa: E402
from voice.services.calls import CallerInput, IncomingCall  # noqa: E402

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
COMPANY_NUMBER = "+15550009999"
ANNOUNCE_INTERVAL = 60


@dataclass
class Caller:
    sid: str
    arrived: float
    counted: bool
    patience: float | None
    talk: float
    queued: bool = False
    answered: float | None = None
    abandoned: bool = False
    pulled: bool = False
    announcements: list[tuple[float, float]] = field(default_factory=list)  # (when, estimate in seconds)


@dataclass(frozen=True)
class LoadResult:
    occupancy: float
    realised_occupancy: float
    nominal_erlang_asa: float
    reps: int
    aht: float
    calls: int
    answered: int
    asa: float
    ideal_asa: float  # an ideal FCFS queue fed the same callers
    ideal_days_asa: float  # mean ASA of an ideal FCFS queue over many simulated days
    ideal_days_p10: float
    ideal_days_p90: float
    nominal_erlang_service_level_20: float
    erlang_asa: float  # Erlang C at the realised arrival rate and handle time
    asa_error: float  # (ASA - Erlang) / Erlang
    service_level_20: float
    erlang_service_level_20: float
    abandonment: float
    announcements: int
    announced_mae_relative: float  # mean |announced - actual| / mean actual
    announced_bias_relative: float  # mean (announced - actual) / mean actual
    announced_p90_abs_seconds: float
    first_announcement_mae_relative: float
    pulls_by_push: int
    pulls_by_sweep: int
    seconds: float


class Simulation:
    def __init__(
        self,
        *,
        workdir: Path,
        reps: int,
        aht: float,
        occupancy: float,
        hours: float,
        warmup_hours: float,
        patience: float | None,
        pull_delay: float,
        seed: int,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.ideal_day_count = 300
        self.reps, self.aht, self.occupancy = reps, aht, occupancy
        self.arrival_rate = occupancy * reps / aht
        self.hours, self.warmup = hours, warmup_hours
        self.patience, self.pull_delay = patience, pull_delay
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self.callers: dict[str, Caller] = {}
        self.pulls_by_push = 0
        self.pulls_by_sweep = 0
        self.unfinished = 0  # callers neither answered nor gone
        self._sweeping = False
        url = f"sqlite:///{workdir / f'sim-{occupancy:.2f}.sqlite3'}"
        Store(url).upgrade()
        app = create_app(
            {
                "database_url": url,
                "auth_token": "sim",
                "account_sid": "AC" + "0" * 32,
                "public_url": "http://sim.invalid",
                "instance_path": workdir / "instance",
                "log_level": "ERROR",
                "flows": {"reload_interval": 0},
                "routing": {"wrap_up": 0, "sweep_interval": 0},
                "queue": {
                    "announce_interval": ANNOUNCE_INTERVAL,
                    "callback_offer_after": 10**7,  # callers wait: this is about the queue, not callbacks
                    "default_handle_time": int(aht),
                    "max_wait": 10**6,
                },
            },
            background=False,
        )
        self.warmline: Warmline = app.extensions["warmline"]
        self.warmline.clock.source = self.clock
        self.warmline.actions.connect(self.on_action)
        with self.warmline.store.unit_of_work() as session:
            for index in range(reps):
                rep, _ = upsert_rep(
                    session,
                    name=f"Rep {index:03d}",
                    phone_e164=f"+1555010{index:04d}",
                    departments=["billing"],
                    languages=[],
                )
                rep.choose_presence(RepState.AVAILABLE, now=self.clock())

    def clock(self) -> datetime:
        return START + timedelta(seconds=self.now)

    def at(self, when: float, event: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._sequence), event))

    # --- the day --------------------------------------------------------------------------------------------------

    def run(self) -> None:
        end = self.hours * 3600
        # Each caller's talk time is drawn with their arrival, from a stream of its own, so that the ideal FCFS
        # queue of ``reference_waits`` can be fed exactly the same callers.
        talks = random.Random(self.rng.random())
        arrival = self.rng.expovariate(self.arrival_rate)
        while arrival < end:
            self.at(arrival, self._arrival(arrival, talks.expovariate(1 / self.aht)))
            arrival += self.rng.expovariate(self.arrival_rate)
        sweep = 60.0
        while sweep < end + 6 * 3600:
            self.at(sweep, self.sweep)
            sweep += 60.0
        while self._events:
            when, _, event = heapq.heappop(self._events)
            self.now = when
            event()
            if when > end and self.unfinished == 0:
                break

    def _arrival(self, when: float, talk: float) -> Callable[[], None]:
        def arrive() -> None:
            sid = f"CA{len(self.callers):032d}"
            patience = self.rng.expovariate(1 / self.patience) if self.patience else None
            caller = self.callers[sid] = Caller(sid, when, when >= self.warmup * 3600, patience, talk=talk)
            self.unfinished += 1
            calls = self.warmline.calls
            number = f"+1555{len(self.callers):07d}"
            calls.incoming(IncomingCall(call_sid=sid, from_number=number, to_number=COMPANY_NUMBER))
            reply = calls.caller_input(sid, CallerInput(speech=None, speech_confidence=None, digits="1"))
            self.follow(caller, reply)

        return arrive

    def follow(self, caller: Caller, reply: Reply) -> None:
        """What the caller's call does with the TwiML the app answered."""
        if isinstance(reply, DialRep):
            offer = reply.targets[0][0]
            self.at(self.now, lambda: self.answer(caller, offer))
        elif isinstance(reply, EnqueueCaller):
            caller.queued = True
            self.at(self.now, lambda: self.hold(caller))
            if caller.patience is not None:
                self.at(self.now + caller.patience, lambda: self.abandon(caller))
        else:
            raise RuntimeError(f"unexpected reply for {caller.sid}: {reply}")

    def hold(self, caller: Caller) -> None:
        if caller.answered is not None or caller.abandoned or caller.pulled:
            return
        waited = int(self.now - caller.arrived)
        reply = self.warmline.queue.hold(caller.sid, queue_seconds=waited)
        if isinstance(reply, LeaveQueue):
            caller.pulled = True
            exit_reply = self.warmline.queue.queue_exit(caller.sid, result="leave", queue_seconds=waited)
            self.follow(caller, exit_reply)
            return
        if isinstance(reply, HoldLoop) and reply.announcement:
            with self.warmline.store.unit_of_work() as session:
                announced = require_interaction(session, caller.sid).announced_wait
            if announced is not None:
                caller.announcements.append((self.now, float(announced)))
        self.at(self.now + ANNOUNCE_INTERVAL, lambda: self.hold(caller))

    def on_action(self, action: Action) -> None:
        if not isinstance(action, PullCaller):
            return
        if self._sweeping:
            self.pulls_by_sweep += 1
        else:
            self.pulls_by_push += 1
        caller = self.callers[action.call_sid]
        caller.pulled = True
        self.at(self.now + self.pull_delay, lambda: self.connect(caller, action.offer_id))

    def connect(self, caller: Caller, offer: int) -> None:
        if caller.abandoned:  # hung up before the REST redirect reached the call: Twilio refuses it
            self.warmline.queue.pull_failed(offer, call_gone=True)
            return
        self.follow(caller, self.warmline.calls.connect(offer))

    def answer(self, caller: Caller, offer: int) -> None:
        if caller.abandoned:
            return
        calls = self.warmline.calls
        calls.whisper(offer, rep_call_sid=f"CArep{offer:029d}")
        calls.whisper_answer(offer, "1")
        caller.answered = self.now
        self.unfinished -= 1
        self.at(self.now + caller.talk, lambda: self.hang_up(caller, offer, caller.talk))

    def hang_up(self, caller: Caller, offer: int, talk: float) -> None:
        calls = self.warmline.calls
        calls.dial_ended(offer)
        calls.call_status(caller.sid, call_status="completed", duration_seconds=int(talk))

    def abandon(self, caller: Caller) -> None:
        if caller.answered is not None or caller.abandoned or caller.pulled:
            return
        caller.abandoned = True
        self.unfinished -= 1
        waited = int(self.now - caller.arrived)
        self.warmline.queue.queue_exit(caller.sid, result="hangup", queue_seconds=waited)
        self.warmline.calls.call_status(caller.sid, call_status="completed", duration_seconds=waited)

    def sweep(self) -> None:
        self._sweeping = True
        try:
            self.warmline.housekeeper.sweep()
        finally:
            self._sweeping = False

    # --- figures ----------------------------------------------------------------------------------------------------

    def result(self, seconds: float) -> LoadResult:
        counted = [caller for caller in self.callers.values() if caller.counted]
        answered = [caller for caller in counted if caller.answered is not None]
        waits = [caller.answered - caller.arrived for caller in answered if caller.answered is not None]
        abandoned = sum(caller.abandoned for caller in counted)
        nominal = erlang_c(arrival_rate=self.arrival_rate, mean_handle_seconds=self.aht, agents=self.reps)
        # One simulated day realises a load a few percent off the nominal one, and near saturation Erlang C moves a
        # lot with the load: compare with Erlang C at the arrival rate and handle time this day actually had.
        window = (self.hours - self.warmup) * 3600
        talks = [caller.talk for caller in answered]
        realised_rate, realised_aht = len(counted) / window, statistics.fmean(talks) if talks else self.aht
        erlang = erlang_c(arrival_rate=realised_rate, mean_handle_seconds=realised_aht, agents=self.reps)
        errors: list[float] = []
        actuals: list[float] = []
        first_errors: list[float] = []
        first_actuals: list[float] = []
        for caller in answered:
            assert caller.answered is not None
            for index, (when, estimate) in enumerate(caller.announcements):
                actual = caller.answered - when
                errors.append(estimate - actual)
                actuals.append(actual)
                if index == 0:
                    first_errors.append(estimate - actual)
                    first_actuals.append(actual)
        asa = statistics.fmean(waits) if waits else 0.0
        ideal = self.reference_waits()
        days = ideal_days(
            reps=self.reps,
            aht=self.aht,
            occupancy=self.occupancy,
            hours=self.hours,
            warmup_hours=self.warmup,
            days=self.ideal_day_count,
            seed=self.seed,
        )
        ideal_asa = statistics.fmean(ideal[caller.sid] for caller in counted) if counted else 0.0
        mean_actual = statistics.fmean(actuals) if actuals else 1.0
        absolute = sorted(abs(error) for error in errors)
        return LoadResult(
            occupancy=self.occupancy,
            realised_occupancy=realised_rate * realised_aht / self.reps,
            nominal_erlang_asa=nominal.asa,
            nominal_erlang_service_level_20=nominal.service_level(20),
            ideal_days_asa=statistics.fmean(days),
            ideal_days_p10=sorted(days)[len(days) // 10],
            ideal_days_p90=sorted(days)[(9 * len(days)) // 10],
            reps=self.reps,
            aht=self.aht,
            calls=len(counted),
            answered=len(answered),
            asa=asa,
            ideal_asa=ideal_asa,
            erlang_asa=erlang.asa,
            asa_error=(asa - erlang.asa) / erlang.asa if erlang.asa else 0.0,
            service_level_20=sum(wait <= 20 for wait in waits) / max(1, len(answered) + abandoned),
            erlang_service_level_20=erlang.service_level(20),
            abandonment=abandoned / max(1, len(counted)),
            announcements=len(errors),
            announced_mae_relative=statistics.fmean(absolute) / mean_actual if absolute else 0.0,
            announced_bias_relative=statistics.fmean(errors) / mean_actual if errors else 0.0,
            announced_p90_abs_seconds=absolute[int(0.9 * (len(absolute) - 1))] if absolute else 0.0,
            first_announcement_mae_relative=(
                statistics.fmean(abs(error) for error in first_errors) / statistics.fmean(first_actuals)
                if first_errors
                else 0.0
            ),
            pulls_by_push=self.pulls_by_push,
            pulls_by_sweep=self.pulls_by_sweep,
            seconds=seconds,
        )

    def reference_waits(self) -> dict[str, float]:
        """The waits an ideal first-come-first-served queue with the same reps would have given the very same callers
        (same arrivals, same talk times; no abandonment): the M/M/N queue Erlang C describes, realised."""
        free_at = [0.0] * self.reps
        waits: dict[str, float] = {}
        for caller in sorted(self.callers.values(), key=lambda each: each.arrived):
            soonest = heapq.heappop(free_at)
            start = max(caller.arrived, soonest)
            waits[caller.sid] = start - caller.arrived
            heapq.heappush(free_at, start + caller.talk)
        return waits

    def close(self) -> None:
        self.warmline.close()


def ideal_days(
    *, reps: int, aht: float, occupancy: float, hours: float, warmup_hours: float, days: int, seed: int
) -> list[float]:
    """ASA of an ideal FCFS queue on many independent simulated days (pure arithmetic, no app): how far one day's
    ASA strays from Erlang C, and that the long-run mean meets it."""
    rng = random.Random(seed)
    rate, end, warmup = occupancy * reps / aht, hours * 3600, warmup_hours * 3600
    results = []
    for _ in range(days):
        free_at = [0.0] * reps
        clock, waits = 0.0, []
        while True:
            clock += rng.expovariate(rate)
            if clock >= end:
                break
            soonest = heapq.heappop(free_at)
            start = max(clock, soonest)
            heapq.heappush(free_at, start + rng.expovariate(1 / aht))
            if clock >= warmup:
                waits.append(start - clock)
        results.append(statistics.fmean(waits))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--aht", type=float, default=240.0, help="mean talk time, seconds (exponential)")
    parser.add_argument("--loads", default="0.70,0.85,0.95", help="occupancies to simulate, comma-separated")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours of arrivals per load")
    parser.add_argument("--warmup-hours", type=float, default=1.0, help="first hours not counted (empty start)")
    parser.add_argument(
        "--patience", type=float, default=None, help="mean patience in seconds (default: nobody abandons)"
    )
    parser.add_argument("--pull-delay", type=float, default=0.5, help="seconds for the REST pull to reach the call")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    results: list[LoadResult] = []
    with tempfile.TemporaryDirectory(prefix="warmline-queue-sim-") as tmp:
        for occupancy in (float(value) for value in args.loads.split(",")):
            started = time.perf_counter()
            simulation = Simulation(
                workdir=Path(tmp),
                reps=args.reps,
                aht=args.aht,
                occupancy=occupancy,
                hours=args.hours,
                warmup_hours=args.warmup_hours,
                patience=args.patience,
                pull_delay=args.pull_delay,
                seed=args.seed,
            )
            try:
                simulation.run()
                results.append(simulation.result(time.perf_counter() - started))
            finally:
                simulation.close()
            done = results[-1]
            print(f"  load {occupancy:.0%}: {done.calls} calls in {done.seconds:.0f} s", file=sys.stderr)

    if args.json:
        print(json.dumps([asdict(result) for result in results], indent=2))
        return 0
    abandon = f"patience mean {args.patience:g} s" if args.patience else "nobody abandons"
    print(
        f"Queue simulation: {args.reps} reps, AHT {args.aht:g} s (exponential), Poisson arrivals, "
        f"{args.hours:g} h per load ({args.warmup_hours:g} h warm-up not counted), {abandon}; "
        "the real routing/presence/queue code on SQLite\n"
    )
    print(
        f"{'load':>5} {'real':>6} {'calls':>6} {'ASA s':>7} {'ideal':>7} {'ErlangC':>8} {'vs ErlC':>8} {'SL20':>6} "
        f"{'ErlC SL':>8} {'aband.':>7} {'annc.':>6} {'MAE/act':>8} {'bias':>7} {'p90|e|':>7} {'1st MAE':>8} "
        f"{'push':>6} {'sweep':>6}"
    )
    for r in results:
        print(
            f"{r.occupancy:>5.0%} {r.realised_occupancy:>6.1%} {r.calls:>6} {r.asa:>7.1f} {r.ideal_asa:>7.1f} "
            f"{r.erlang_asa:>8.1f} {r.asa_error:>+8.1%} {r.service_level_20:>6.1%} {r.erlang_service_level_20:>8.1%} "
            f"{r.abandonment:>7.1%} {r.announcements:>6} {r.announced_mae_relative:>8.1%} "
            f"{r.announced_bias_relative:>+7.1%} {r.announced_p90_abs_seconds:>6.0f}s "
            f"{r.first_announcement_mae_relative:>8.1%} {r.pulls_by_push:>6} {r.pulls_by_sweep:>6}"
        )
    print(
        "\nreal: the occupancy the day actually had (arrivals x mean talk time / reps). ideal: the ASA an ideal "
        "first-come-first-served queue gives the very same callers. ErlangC: Erlang C's ASA at the real load; vs ErlC: "
        "Warmline's ASA against it (target within 10 % when nobody abandons). MAE/act: mean absolute error of every "
        "announced wait against the wait that followed, over the mean actual wait (target 15 %); bias: mean signed "
        "error, same scale; p90|e|: 90th percentile of the absolute error; 1st MAE: first announcements only. "
        "push: pulls issued by the webhook that freed the rep; sweep: by the housekeeping safety net."
    )
    print(
        "\nOne day is one sample: the same ideal queue over 300 independent days, against Erlang C at the nominal load:"
    )
    print(f"{'load':>5} {'Erlang C ASA':>13} {'ideal, mean of days':>20} {'vs Erlang':>10} {'days p10-p90':>15}")
    for r in results:
        print(
            f"{r.occupancy:>5.0%} {r.nominal_erlang_asa:>13.1f} {r.ideal_days_asa:>20.1f} "
            f"{(r.ideal_days_asa - r.nominal_erlang_asa) / r.nominal_erlang_asa:>+10.1%} "
            f"{r.ideal_days_p10:>7.1f}-{r.ideal_days_p90:<7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
