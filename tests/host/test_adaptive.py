"""`profile --adaptive`: which ops it measures, when it stops, what it skips (a synthetic device for
the loop; one real run on this machine for the command)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import profile_macro

from chamlab.chamnet.spaces import SPACES
from chamlab.core.errors import InputError
from chamlab.host import api
from chamlab.host.luts.lut import Lut
from chamlab.host.prediction.adaptive import adaptive_profile, choose, heldout_error
from chamlab.operators import OpSpec

MBV2 = SPACES.get("chamnet-mbv2")


def _law(op: OpSpec) -> float:
    """A device the op model cannot fit exactly: additive cost with a gentle size-dependent wobble."""
    base = 0.004 + 2.5e-7 * op.macs + 8e-7 * op.params + 2e-7 * math.prod(op.output_shape)
    return base * (1 + 0.05 * math.sin(math.log1p(op.macs)))


class Device:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, ops: Sequence[OpSpec]) -> dict[str, float]:
        self.calls.append([op.key for op in ops])
        return {op.key: _law(op) for op in ops}


@pytest.fixture(scope="module")
def archs() -> list:  # type: ignore[type-arg]
    return MBV2.sample(np.random.default_rng(5), 12)


def test_adaptive_stops_when_held_apart_error_stops_improving(archs: list) -> None:  # type: ignore[type-arg]
    dev = Device()
    policy = api.AdaptivePolicy(round_ops=6, seed=3)
    rep = adaptive_profile(MBV2, archs, {}, dev, policy)
    measured = {k for call in dev.calls for k in call}
    assert rep.candidates == len(set(rep.skipped) | measured) and rep.already == 0
    assert rep.skipped and len(measured) < rep.candidates  # it stopped early, and says what it skipped
    assert "improved by less than" in rep.stopped
    assert dev.calls[0] == sorted(rep.holdout)  # the held-apart ops are measured first ...
    fitted = set(rep.measured) - set(rep.holdout)
    assert not fitted & set(rep.holdout)  # ... and never chosen again (never in the fit)
    errs = [r["heldout_median_abs_pct"] for r in rep.rounds if r["heldout_median_abs_pct"] is not None]
    assert errs[-1] <= errs[0] and min(errs) < 10.0
    # seeded: the same choice again
    again = Device()
    assert adaptive_profile(MBV2, archs, {}, again, policy).measured == rep.measured
    assert again.calls == dev.calls


def test_choice_prefers_ops_that_weigh_and_that_nothing_measured_resembles(archs: list) -> None:  # type: ignore[type-arg]
    ops = {op.key: op for a in archs for op in MBV2.ops(a)}
    cand = sorted(ops.values(), key=lambda o: o.key)
    rng = np.random.default_rng(0)
    # nothing measured: the kinds have no model, so the largest work times its uses goes first
    uses = {k: 1 for k in ops}
    [first] = choose(cand, uses, {}, 1, rng)
    assert first.macs + first.params == max(o.macs + o.params for o in cand)
    # an op already resembled by a measured twin scores below one far from everything measured
    measured = {o: _law(o) for o in cand[::3]}
    left = [o for o in cand if o not in measured]
    picked = choose(left, uses, measured, 5, rng)
    assert len(picked) == 5 and not set(picked) & set(measured)
    assert heldout_error(measured, {o: _law(o) for o in left}) is not None


def test_budget_and_resume(archs: list) -> None:  # type: ignore[type-arg]
    dev = Device()
    rep = adaptive_profile(MBV2, archs, {}, dev, api.AdaptivePolicy(round_ops=4, max_ops=10, seed=1))
    assert len(rep.measured) == 10 and rep.stopped == "--max-ops 10 reached"
    have = {k: _law(op) for a in archs for op in MBV2.ops(a) for k in [op.key] if k in rep.measured}
    again = Device()
    rep2 = adaptive_profile(MBV2, archs, have, again, api.AdaptivePolicy(round_ops=4, max_ops=4, seed=1))
    assert rep2.already == 10 and not {k for c in again.calls for k in c} & set(have)
    with pytest.raises(InputError, match="round-ops"):
        api.AdaptivePolicy(round_ops=0)


@pytest.mark.slow
def test_profile_adaptive_command(
    tmp_path: Path, fast_devices: Path, profiled_lut: tuple[Path, dict]
) -> None:
    """A real run (macro-cifar10's ops; their artifacts are in this session's cache already)."""
    lut = tmp_path / "lut.parquet"
    res = profile_macro(lut, fast_devices, "--adaptive", "--round-ops", "3", "--max-ops", "9", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)["adaptive"]
    rows = Lut.read(lut).table.to_pylist()
    assert rep["measured_ops"] <= 9 and rep["candidate_ops"] == 18
    assert len(rows) == rep["measured_ops"] + 1  # plus the invocation probe
    assert rep["skipped_ops"] == rep["candidate_ops"] - rep["measured_ops"] == len(rep["skipped"])
    assert rep["rounds"] and rep["stopped"]
    bad = profile_macro(lut, fast_devices, "--adaptive", "--force")
    assert bad.returncode == 2
