"""Measurement policy: warm-up, repeat until enough, keep raw samples, detect instability.

Standard library only (this runs on the target). The policy follows TVM's ``number / repeat /
min_repeat_ms`` idea: after a warm-up, executions are timed one by one until *both* a minimum count
and a minimum wall time are reached (capped by a maximum count and time). Every sample is kept; the
statistics are derived from them.

An attempt is *unstable* when any of these holds (thresholds in :class:`MeasurePolicy`):

* robust coefficient of variation ``1.4826 * MAD / median`` above ``max_cv`` (robust so that a single
  preemption on a shared machine does not condemn a whole run);
* drift: the medians of the first and last thirds differ by more than ``max_drift`` of the median
  (thermal throttling, frequency ramps);
* the temperature rose by more than ``max_temp_rise_c`` during the attempt.

An unstable attempt is repeated after a cool-down, up to ``retries`` times; the attempt with the
lowest robust CV is kept and, if it is still unstable, flagged with its reasons.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class MeasurePolicy:
    """How many executions are timed, exactly (defaults in brackets).

    warm-up: at least ``warmup_runs`` [5] executions and ``warmup_ms`` [100] ms;
    timed: at least ``min_runs`` [30] executions and ``min_time_ms`` [300] ms, at most ``max_runs``
    [10000] executions or ``max_time_ms`` [10000] ms (whichever comes first, never fewer than 3);
    instability: ``max_cv`` [0.05], ``max_drift`` [0.05], ``max_temp_rise_c`` [5.0];
    re-measure: up to ``retries`` [2] times after ``cooldown_s`` [2.0] s.
    """

    warmup_runs: int = 5
    warmup_ms: float = 100.0
    min_runs: int = 30
    min_time_ms: float = 300.0
    max_runs: int = 10_000
    max_time_ms: float = 10_000.0
    max_cv: float = 0.05
    max_drift: float = 0.05
    max_temp_rise_c: float = 5.0
    retries: int = 2
    cooldown_s: float = 2.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value < 0:
                raise ValueError(f"MeasurePolicy.{f.name} must be >= 0, got {value}")
        if self.max_runs < max(3, self.min_runs):
            raise ValueError("MeasurePolicy.max_runs must be >= max(3, min_runs)")


# -- statistics (the same definitions the host uses: linear-interpolated percentiles) --------------
def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), ``q`` in [0, 100]."""
    if not samples:
        raise ValueError("percentile of no samples")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def robust_cv(samples: Sequence[float]) -> float:
    med = statistics.median(samples)
    if med <= 0:
        return math.inf
    mad = statistics.median(abs(x - med) for x in samples)
    return 1.4826 * mad / med


def drift(samples: Sequence[float]) -> float:
    """|median(first third) - median(last third)| / median(all); 0 with fewer than 6 samples."""
    n = len(samples)
    if n < 6:
        return 0.0
    third = n // 3
    med = statistics.median(samples)
    if med <= 0:
        return math.inf
    return abs(statistics.median(samples[:third]) - statistics.median(samples[-third:])) / med


def summarize(samples: Sequence[float]) -> dict[str, float]:
    return {
        "p10_ms": percentile(samples, 10),
        "p50_ms": percentile(samples, 50),
        "p90_ms": percentile(samples, 90),
        "mean_ms": statistics.fmean(samples),
        "std_ms": statistics.pstdev(samples) if len(samples) > 1 else 0.0,
    }


@dataclasses.dataclass
class Attempt:
    samples_ms: list[float]
    warmup_runs: int
    robust_cv: float
    drift: float
    temp_before_c: float | None
    temp_after_c: float | None
    reasons: list[str]

    def to_json(self) -> dict[str, object]:
        return {
            "n": len(self.samples_ms),
            "p50_ms": percentile(self.samples_ms, 50),
            "robust_cv": self.robust_cv,
            "drift": self.drift,
            "warmup_runs": self.warmup_runs,
            "temp_before_c": self.temp_before_c,
            "temp_after_c": self.temp_after_c,
            "reasons": self.reasons,
        }


@dataclasses.dataclass
class Measurement:
    kept: Attempt
    attempts: list[Attempt]

    @property
    def unstable(self) -> bool:
        return bool(self.kept.reasons)


def _timed_loop(
    run_once: Callable[[], object],
    min_runs: int,
    min_ms: float,
    max_runs: int,
    max_ms: float,
    clock: Callable[[], int],
) -> list[float]:
    samples: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        run_once()
        t1 = clock()
        samples.append((t1 - t0) / 1e6)
        elapsed_ms = (t1 - start) / 1e6
        n = len(samples)
        if n >= max_runs or (elapsed_ms >= max_ms and n >= 3):
            return samples
        if n >= min_runs and elapsed_ms >= min_ms:
            return samples


def measure(
    run_once: Callable[[], object],
    policy: MeasurePolicy,
    *,
    clock: Callable[[], int] = time.perf_counter_ns,
    sleep: Callable[[float], None] = time.sleep,
    read_temp_c: Callable[[], float | None] = lambda: None,
) -> Measurement:
    """Time ``run_once`` under ``policy``; see the module docstring."""
    attempts: list[Attempt] = []
    for i in range(policy.retries + 1):
        if i:
            sleep(policy.cooldown_s)
        warm: list[float] = []
        if policy.warmup_runs or policy.warmup_ms:
            warm = _timed_loop(
                run_once, policy.warmup_runs, policy.warmup_ms, policy.max_runs, policy.max_time_ms, clock
            )
        before = read_temp_c()
        samples = _timed_loop(
            run_once, policy.min_runs, policy.min_time_ms, policy.max_runs, policy.max_time_ms, clock
        )
        after = read_temp_c()
        cv, dr = robust_cv(samples), drift(samples)
        reasons = []
        if cv > policy.max_cv:
            reasons.append(f"robust_cv {cv:.3f} > {policy.max_cv}")
        if dr > policy.max_drift:
            reasons.append(f"drift {dr:.3f} > {policy.max_drift}")
        if before is not None and after is not None and after - before > policy.max_temp_rise_c:
            reasons.append(f"temperature rose {after - before:.1f} C > {policy.max_temp_rise_c}")
        attempts.append(Attempt(samples, len(warm), cv, dr, before, after, reasons))
        if not reasons:
            break
    kept = min(attempts, key=lambda a: (bool(a.reasons), a.robust_cv))
    return Measurement(kept, attempts)
