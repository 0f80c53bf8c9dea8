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
* the temperature rose by more than ``max_temp_rise_c`` during the attempt;
* the window was throttled: a CPU ran under the device's minimum frequency while it was measured
  (devices.toml ``min_freq_khz``: checked by the driver around each executor_runner call, and by
  :func:`measure` itself through ``heat`` (:mod:`chamlab.agent.heat`) in the python runners, which
  also wait there for the zone to cool below ``cool_below_c`` before each attempt).

An unstable attempt is repeated after a cool-down, up to ``retries`` times; the attempt with the
lowest robust CV is kept and, if it is still unstable, flagged with its reasons.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .heat import HeatCheck


class PolicyError(ValueError):
    """An impossible policy; ``field`` names the offending field (the host maps it to its config key)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _f(default: float, doc: str, *, minimum: float = 0.0, exclusive: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"doc": doc, "min": minimum, "exclusive": exclusive})


@dataclasses.dataclass(frozen=True)
class MeasurePolicy:
    """How many executions are timed, exactly: THE one definition of the measurement policy.

    The host validates devices.toml's ``[devices.<name>.measure]`` table against these fields (same
    names), the runner's command-line flags are generated from them (:meth:`to_flags`,
    :meth:`add_arguments`, :meth:`from_namespace`), and ``num_executions`` keeps ExecuTorch
    ``executor_runner``'s flag name (here: the *minimum* number of timed executions).

    warm-up: at least ``warmup_runs`` executions and ``warmup_ms`` ms;
    timed: at least ``num_executions`` executions and ``min_time_ms`` ms, at most ``max_runs``
    executions or ``max_time_ms`` ms (whichever comes first, never fewer than 3);
    instability: ``max_cv``, ``max_drift``, ``max_temp_rise_c``;
    re-measure: up to ``retries`` times after ``cooldown_s`` s.
    """

    num_executions: int = _f(30, "minimum timed executions", minimum=1)
    warmup_runs: int = _f(5, "minimum warm-up executions")
    warmup_ms: float = _f(100.0, "minimum warm-up time (ms)")
    min_time_ms: float = _f(300.0, "minimum timed wall time (ms)")
    max_runs: int = _f(10_000, "maximum timed executions (>= num_executions and >= 3)", minimum=3)
    max_time_ms: float = _f(10_000.0, "maximum timed wall time (ms)", exclusive=True)
    max_cv: float = _f(
        0.05, "robust CV (1.4826 MAD / median) above which an attempt is unstable", exclusive=True
    )
    max_drift: float = _f(
        0.05, "first-vs-last-third median drift above which an attempt is unstable", exclusive=True
    )
    max_temp_rise_c: float = _f(
        5.0, "temperature rise (C) above which an attempt is unstable", exclusive=True
    )
    retries: int = _f(2, "re-measures of an unstable op")
    cooldown_s: float = _f(2.0, "sleep before a re-measure (s)")

    def __post_init__(self) -> None:
        problems = self.check(dataclasses.asdict(self))
        if problems:
            raise problems[0]
        for f in dataclasses.fields(self):  # 50 in a float field is 50.0 (TOML and JSON write either)
            if f.type in ("float", float):
                object.__setattr__(self, f.name, float(getattr(self, f.name)))

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[PolicyError]:
        """Every problem of a policy given as ``{field: value}`` (missing fields take their defaults):
        unknown names, wrong types, out-of-range values, impossible combinations. Each names its
        field, so the host can report the devices.toml key. Empty when the policy is sound."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out = [
            PolicyError(name, f"is not a policy field (known: {', '.join(fields)})")
            for name in values
            if name not in fields
        ]
        merged: dict[str, Any] = {name: f.default for name, f in fields.items()}
        merged.update({k: v for k, v in values.items() if k in fields})
        for name, f in fields.items():
            value = merged[name]
            want_int = f.type in ("int", int)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (want_int and not isinstance(value, int))
            ):
                out.append(
                    PolicyError(name, f"must be {'an integer' if want_int else 'a number'}, got {value!r}")
                )
                continue
            low, exclusive = f.metadata["min"], f.metadata["exclusive"]
            if value < low or (exclusive and value <= low):
                out.append(PolicyError(name, f"must be {'>' if exclusive else '>='} {low:g}, got {value!r}"))
        if not out and merged["max_runs"] < merged["num_executions"]:
            out.append(
                PolicyError(
                    "max_runs",
                    f"must be >= num_executions ({merged['num_executions']}), got {merged['max_runs']}: "
                    "the runner could never reach its minimum",
                )
            )
        return out

    # -- the runner's command line, generated from the fields ------------------------------------------
    def to_flags(self) -> list[str]:
        """``["--num_executions", "30", "--warmup_runs", "5", ...]``: every field as a runner flag."""
        out: list[str] = []
        for f in dataclasses.fields(self):
            out += [
                f"--{f.name}",
                repr(getattr(self, f.name))
                if isinstance(getattr(self, f.name), float)
                else str(getattr(self, f.name)),
            ]
        return out

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        defaults = cls()
        for f in dataclasses.fields(cls):
            parser.add_argument(
                f"--{f.name}",
                type=int if f.type in ("int", int) else float,
                default=getattr(defaults, f.name),
                help=f.metadata["doc"],
            )

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> MeasurePolicy:
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    #: the window's heat (driver-measured runs, see agent/driver.sh): whether a checked CPU ran under
    #: its minimum frequency (None: not checked), the hottest zone reading during the window, and the
    #: seconds waited for the zone to cool before it (None: no gate)
    throttled: bool | None = None
    temp_max_c: float | None = None
    cool_wait_s: float | None = None
    #: the window's whole heat record (agent/heat.py, the driver's keys); not part of :meth:`to_json`
    heat: dict[str, Any] | None = dataclasses.field(default=None, repr=False)

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
            "throttled": self.throttled,
            "temp_max_c": self.temp_max_c,
            "cool_wait_s": self.cool_wait_s,
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
    time_once: Callable[[], float] | None = None,
) -> list[float]:
    samples: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        own_ms = time_once() if time_once is not None else None
        if own_ms is None:
            run_once()
        t1 = clock()
        samples.append(own_ms if own_ms is not None else (t1 - t0) / 1e6)
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
    time_once: Callable[[], float] | None = None,
    heat: HeatCheck | None = None,
    on_cool: Callable[[int], None] | None = None,
) -> Measurement:
    """Time ``run_once`` under ``policy``; see the module docstring.

    ``time_once`` (optional) runs the op once and returns its time in ms by its own timer (the
    torch-cuda runner's CUDA events); the timed samples are then its values, while ``clock`` still
    counts the wall time against ``min_time_ms`` / ``max_time_ms``. Warm-up always calls ``run_once``.
    ``heat``: before each attempt wait for the zone to cool (``on_cool(mC)`` once when it must), and
    sample the zone and the CPUs' frequency during its timed window; a throttled window is unstable.
    """
    attempts: list[Attempt] = []
    for i in range(policy.retries + 1):
        if i:
            sleep(policy.cooldown_s)
        if heat is not None:
            heat.wait_cool(on_cool)
        warm: list[float] = []
        if policy.warmup_runs or policy.warmup_ms:
            warm = _timed_loop(
                run_once, policy.warmup_runs, policy.warmup_ms, policy.max_runs, policy.max_time_ms, clock
            )
        before = read_temp_c()
        with heat.window() if heat is not None else contextlib.nullcontext():
            samples = _timed_loop(
                run_once,
                policy.num_executions,
                policy.min_time_ms,
                policy.max_runs,
                policy.max_time_ms,
                clock,
                time_once,
            )
        after = read_temp_c()
        throttled = heat.throttled() if heat is not None else None
        attempt = judge(
            samples,
            policy,
            warmup_runs=len(warm),
            temp_before_c=before,
            temp_after_c=after,
            throttled=throttled,
        )
        if heat is not None:
            attempt.heat = heat.record()
            if heat.freq and attempt.throttled is None:
                attempt.throttled = False
            top = attempt.heat.get("temp_max_mc")
            attempt.temp_max_c = top / 1000.0 if top is not None else None
            if heat.cool_below_mc:
                attempt.cool_wait_s = attempt.heat["cool_wait_cs"] / 100.0
        attempts.append(attempt)
        if not attempts[-1].reasons:
            break
    return Measurement(keep(attempts), attempts)


def judge(
    samples_ms: list[float],
    policy: MeasurePolicy,
    *,
    warmup_runs: int = 0,
    temp_before_c: float | None = None,
    temp_after_c: float | None = None,
    throttled: str | None = None,
) -> Attempt:
    """One attempt's samples judged against ``policy``'s instability thresholds (see the module
    docstring); the host uses it too, for runners that only report samples (ETDumps).
    ``throttled``: why the window counts as throttled (the frequency sat under its minimum), which
    makes it unstable like the other reasons; None: it was not (or not checked)."""
    cv, dr = robust_cv(samples_ms), drift(samples_ms)
    reasons = []
    if cv > policy.max_cv:
        reasons.append(f"robust_cv {cv:.3f} > {policy.max_cv}")
    if dr > policy.max_drift:
        reasons.append(f"drift {dr:.3f} > {policy.max_drift}")
    rise = None if temp_before_c is None or temp_after_c is None else temp_after_c - temp_before_c
    if rise is not None and rise > policy.max_temp_rise_c:
        reasons.append(f"temperature rose {rise:.1f} C > {policy.max_temp_rise_c}")
    if throttled:
        reasons.append(f"throttled: {throttled}")
    flag = True if throttled else None
    return Attempt(samples_ms, warmup_runs, cv, dr, temp_before_c, temp_after_c, reasons, throttled=flag)


def keep(attempts: Sequence[Attempt]) -> Attempt:
    """The attempt to keep: a stable one if any, else the one with the lowest robust CV."""
    return min(attempts, key=lambda a: (bool(a.reasons), a.robust_cv))
