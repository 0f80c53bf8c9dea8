"""The measurement policy, driven by a scripted clock (deterministic: no real timing is judged)."""

from __future__ import annotations

import numpy as np
import pytest

from chamlab.agent.measure import MeasurePolicy, drift, measure, percentile, robust_cv, summarize


class ScriptedOp:
    """An 'operation' whose every execution advances a virtual clock by the next scripted duration."""

    def __init__(self, durations_ms) -> None:
        self.now_ns = 0
        self._durations = iter(durations_ms)
        self.calls = 0

    def clock(self) -> int:
        return self.now_ns

    def __call__(self) -> None:
        self.calls += 1
        self.now_ns += int(next(self._durations) * 1e6)


def _policy(**kw) -> MeasurePolicy:
    base = {
        "warmup_runs": 0,
        "warmup_ms": 0,
        "num_executions": 10,
        "min_time_ms": 0,
        "retries": 0,
        "cooldown_s": 0,
    }
    return MeasurePolicy(**{**base, **kw})


def test_stops_when_both_min_count_and_min_time_are_reached() -> None:
    op = ScriptedOp([1.0] * 1000)
    m = measure(op, _policy(num_executions=10, min_time_ms=5), clock=op.clock)
    assert len(m.kept.samples_ms) == 10
    op = ScriptedOp([1.0] * 1000)
    m = measure(op, _policy(num_executions=3, min_time_ms=20), clock=op.clock)
    assert len(m.kept.samples_ms) == 20


def test_caps_at_max_runs_and_max_time() -> None:
    op = ScriptedOp([0.001] * 100_000)
    m = measure(op, _policy(num_executions=10, min_time_ms=1e9, max_runs=50), clock=op.clock)
    assert len(m.kept.samples_ms) == 50
    op = ScriptedOp([100.0] * 1000)
    m = measure(op, _policy(num_executions=500, max_time_ms=1000), clock=op.clock)
    assert len(m.kept.samples_ms) == 10  # 10 x 100 ms reach the 1 s cap


def test_warmup_is_not_sampled() -> None:
    op = ScriptedOp([50.0] * 5 + [1.0] * 100)
    m = measure(op, _policy(warmup_runs=5, num_executions=10), clock=op.clock)
    assert m.kept.warmup_runs == 5
    assert m.kept.samples_ms == [1.0] * 10


def test_unstable_attempt_is_remeasured_after_cooldown_and_the_stable_one_kept() -> None:
    noisy = [1.0, 2.0] * 5
    op = ScriptedOp(noisy + [1.0] * 10)
    sleeps: list[float] = []
    m = measure(op, _policy(retries=2, cooldown_s=1.5), clock=op.clock, sleep=sleeps.append)
    assert len(m.attempts) == 2 and sleeps == [1.5]
    assert m.attempts[0].reasons and "robust_cv" in m.attempts[0].reasons[0]
    assert not m.unstable and m.kept.samples_ms == [1.0] * 10


def test_persistent_instability_is_flagged_with_reasons() -> None:
    op = ScriptedOp([1.0, 3.0] * 100)
    m = measure(op, _policy(retries=2), clock=op.clock, sleep=lambda s: None)
    assert len(m.attempts) == 3
    assert m.unstable and "robust_cv" in m.kept.reasons[0]


def test_drift_and_temperature_rise_are_detected() -> None:
    op = ScriptedOp(np.linspace(1.0, 1.3, 30))
    m = measure(op, _policy(num_executions=30, max_cv=10), clock=op.clock)
    assert any("drift" in r for r in m.kept.reasons)
    temps = iter([40.0, 47.0])
    op = ScriptedOp([1.0] * 100)
    m = measure(op, _policy(), clock=op.clock, read_temp_c=lambda: next(temps))
    assert m.kept.reasons == ["temperature rose 7.0 C > 5.0"]
    assert (m.kept.temp_before_c, m.kept.temp_after_c) == (40.0, 47.0)


def test_statistics_match_numpy() -> None:
    rng = np.random.default_rng(0)
    xs = list(rng.gamma(2.0, 1.0, size=101))
    for q in (0, 10, 50, 90, 100):
        assert percentile(xs, q) == pytest.approx(np.percentile(xs, q))
    s = summarize(xs)
    assert s["mean_ms"] == pytest.approx(np.mean(xs)) and s["std_ms"] == pytest.approx(np.std(xs))
    assert robust_cv([1.0] * 10) == 0.0
    assert drift([1.0] * 3 + [2.0] * 3) == pytest.approx(2 / 3)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="num_executions"):
        MeasurePolicy(num_executions=-1)
    with pytest.raises(ValueError, match="max_runs"):
        MeasurePolicy(num_executions=50, max_runs=10)
