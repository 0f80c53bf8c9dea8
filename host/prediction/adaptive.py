"""``profile --adaptive``: measure the ops that teach the op-level model most, stop when it stops learning.

A large space has far more distinct ops than any LUT can hold (chamnet-mbv2: ~634k); predictions for
its archs fill the unmeasured ops from the op-level model (:mod:`chamlab.chamnet.predictors.op_model`).
Adaptive profiling spends the measurements where that model is least certain about the ops the archs
of interest actually use:

1. **Held-apart set** (seeded): :attr:`AdaptivePolicy.holdout` of the candidate ops (the distinct ops of
   the archs of interest), at least 4, are measured first and *never* used to fit: the model's median
   absolute % error on them is the *held-apart fidelity* after every round.
   They count against :attr:`AdaptivePolicy.max_ops` (at most half of it).
2. **Rounds** of :attr:`AdaptivePolicy.round_ops` ops. Each unmeasured candidate scores
   ``uses * predicted_ms * uncertainty``: ``uses`` is how many occurrences the archs of interest have of
   it, ``predicted_ms`` the model's prediction (its MAC count scaled, before a kind has a model), and
   ``uncertainty`` 1 for a kind with fewer than :data:`~chamlab.chamnet.predictors.op_model.MIN_ROWS`
   measured ops, else the distance (standardised log features) to the nearest measured op of its
   kind, relative to the largest such distance. The top scores are measured (ties broken by the seeded
   generator), so the time goes to ops that weigh in the networks and lie far from anything measured.
3. **Stop** when the held-apart error has not improved by :attr:`AdaptivePolicy.min_gain_pct` points
   for :attr:`AdaptivePolicy.patience` rounds, when :attr:`AdaptivePolicy.max_ops` are measured, or when
   nothing is left. The report lists every round's fidelity and the ops it skipped (the ones
   ``predict --interpolate`` will fill).

The held-apart ops are real measurements and stay in the LUT. Measuring goes through
:func:`~chamlab.host.measurement.profiling.profile` (one device run per round, the device lock,
resumable); tests
inject ``measure`` instead.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chamlab.chamnet.predictors.op_model import MIN_ROWS, OpLatencyModel, single_mac_features
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import InputError
from chamlab.host.luts.lut import Lut
from chamlab.host.measurement.pipeline import NullProgress, Progress, RunSpec
from chamlab.operators import INVOCATION_PROBE, OpSpec

if TYPE_CHECKING:
    from chamlab.host.measurement.profiling import ProfileReport

#: measures ``ops`` and returns their p50 (ms) by op key (ops that failed are left out)
MeasureOps = Callable[[Sequence[OpSpec]], Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class AdaptivePolicy:
    """How adaptive profiling spends its measurements (see the module docstring)."""

    round_ops: int = 8
    holdout: float = 0.15
    min_gain_pct: float = 0.5
    patience: int = 2
    max_ops: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.round_ops < 1:
            raise InputError(f"--round-ops must be at least 1, got {self.round_ops}")
        if not 0 < self.holdout < 1:
            raise InputError(f"the held-apart share must be between 0 and 1, got {self.holdout}")
        if self.patience < 1:
            raise InputError(f"patience must be at least 1 round, got {self.patience}")
        if self.max_ops is not None and self.max_ops < 1:
            raise InputError(f"--max-ops must be at least 1, got {self.max_ops}")


@dataclasses.dataclass
class AdaptiveReport:
    candidates: int  # distinct ops of the archs of interest
    holdout: list[str]
    measured: list[str]  # by this run, in order (held-apart ops first)
    already: int  # candidates the LUT held before
    skipped: list[str]  # candidates left unmeasured (interpolated by predict --interpolate)
    rounds: list[dict[str, Any]]  # {"round", "measured_ops", "heldout_median_abs_pct"}
    stopped: str
    failed: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate_ops": self.candidates,
            "already_in_lut": self.already,
            "measured_ops": len(self.measured),
            "heldout_ops": len(self.holdout),
            "skipped_ops": len(self.skipped),
            "skipped": self.skipped,
            "failed": self.failed,
            "rounds": self.rounds,
            "stopped": self.stopped,
        }


def _uses(space: SearchSpace, archs: Sequence[Arch]) -> tuple[dict[str, OpSpec], Counter[str]]:
    ops: dict[str, OpSpec] = {}
    uses: Counter[str] = Counter()
    for arch in archs:
        for op in space.ops(arch):
            ops.setdefault(op.key, op)
            uses[op.key] += 1
    return ops, uses


def heldout_error(fit_on: Mapping[OpSpec, float], heldout: Mapping[OpSpec, float]) -> float | None:
    """Median absolute % error of the op model fitted on ``fit_on`` over ``heldout`` (ops it can predict)."""
    model = OpLatencyModel(fit_on)
    errs = [
        abs(100.0 * (model.predict(op) - y) / y)
        for op, y in heldout.items()
        if model.can_predict(op) and y > 0
    ]
    return statistics.median(errs) if errs else None


def _log_features(op: OpSpec) -> np.ndarray:
    """Where an op lies for resemblance: log of (MACs, weights, input, output elements), the same
    four numbers for every kind (the model's own columns differ by kind)."""
    return np.log1p(single_mac_features(op)[1:])


def choose(
    candidates: Sequence[OpSpec],
    uses: Mapping[str, int],
    measured: Mapping[OpSpec, float],
    k: int,
    rng: np.random.Generator,
) -> list[OpSpec]:
    """The ``k`` candidates with the highest ``uses * predicted_ms * uncertainty`` (module docstring)."""
    if not candidates:
        return []
    model = OpLatencyModel(measured) if measured else None
    by_kind: dict[str, list[np.ndarray]] = {}
    for op in measured:
        by_kind.setdefault(op.op_type, []).append(_log_features(op))
    feats = np.array([_log_features(op) for op in candidates])
    sd = feats.std(axis=0)
    sd[sd == 0] = 1.0
    dist = np.ones(len(candidates))
    for i, op in enumerate(candidates):
        seen = by_kind.get(op.op_type, [])
        if len(seen) >= MIN_ROWS:
            dist[i] = float(np.min(np.linalg.norm((np.array(seen) - feats[i]) / sd, axis=1)))
    known = [i for i, op in enumerate(candidates) if len(by_kind.get(op.op_type, [])) >= MIN_ROWS]
    if known:
        top = max(float(dist[known].max()), 1e-12)
        dist[known] = dist[known] / top
    scores = []
    for i, op in enumerate(candidates):
        if model is not None and model.can_predict(op):
            size = model.predict(op)
        else:
            size = 1e-6 * (op.macs + op.params)  # before the kind has a model: its work
        scores.append(uses.get(op.key, 1) * max(size, 1e-9) * dist[i] * (1 + 1e-9 * rng.random()))
    order = np.argsort(-np.asarray(scores), kind="stable")
    return [candidates[int(i)] for i in order[:k]]


def adaptive_profile(
    space: SearchSpace,
    archs: Sequence[Arch],
    have: Mapping[str, float],
    measure: MeasureOps,
    policy: AdaptivePolicy = AdaptivePolicy(),
    progress: Progress | None = None,
) -> AdaptiveReport:
    """Run the adaptive loop over the ops of ``archs``; ``have``: p50 by key of ops already measured
    (the LUT's), ``measure``: measures a list of ops (see :data:`MeasureOps`)."""
    progress = progress or NullProgress()
    rng = np.random.default_rng(policy.seed)
    ops, uses = _uses(space, archs)
    values: dict[str, float] = {k: v for k, v in have.items() if k in ops}
    already = len(values)
    budget = policy.max_ops if policy.max_ops is not None else len(ops)
    # the held-apart ops count against the budget: at most half of it
    n_hold = min(len(ops), max(4, round(policy.holdout * len(ops))), max(1, budget // 2))
    unmeasured = sorted(k for k in ops if k not in values)
    # held-apart ops: seeded, among those not measured yet (so they are measured here, unbiased)
    hold = [unmeasured[i] for i in sorted(rng.permutation(len(unmeasured))[:n_hold])]
    if len(hold) < n_hold:
        extra = [k for k in sorted(values) if k not in hold]
        hold += [extra[i] for i in sorted(rng.permutation(len(extra))[: n_hold - len(hold)])]
    measured_now: list[str] = []
    failed: list[str] = []

    def run(batch: Sequence[OpSpec]) -> None:
        got = measure(batch)
        for op in batch:
            if op.key in got:
                values[op.key] = float(got[op.key])
                measured_now.append(op.key)
            else:
                failed.append(op.key)

    first = [ops[k] for k in hold if k not in values]
    if first:
        progress.note(f"adaptive: measuring {len(first)} held-apart op(s) first")
        run(first)
    holdset = {ops[k]: values[k] for k in hold if k in values}
    rounds: list[dict[str, Any]] = []
    best: float | None = None
    stale = 0
    stopped = "every candidate op is measured"
    for r in range(1, len(ops) + 1):
        fit_on = {ops[k]: v for k, v in values.items() if k not in hold}
        err = heldout_error(fit_on, holdset)
        rounds.append({"round": r - 1, "measured_ops": len(values), "heldout_median_abs_pct": err})
        if err is not None:
            if best is not None and best - err < policy.min_gain_pct:
                stale += 1
            else:
                stale = 0
            best = err if best is None else min(best, err)
        if stale >= policy.patience:
            stopped = (
                f"held-apart error improved by less than {policy.min_gain_pct} point(s) for {stale} rounds"
            )
            break
        left = [ops[k] for k in sorted(ops) if k not in values and k not in failed]
        room = budget - len(measured_now)
        if not left:
            break
        if room <= 0:
            stopped = f"--max-ops {budget} reached"
            break
        batch = choose(left, uses, fit_on, min(policy.round_ops, room), rng)
        progress.note(f"adaptive round {r}: measuring {len(batch)} op(s); held-apart error {err}")
        run(batch)
    skipped = sorted(k for k in ops if k not in values)
    return AdaptiveReport(len(ops), hold, measured_now, already, skipped, rounds, stopped, failed)


def profile_adaptive(
    spec: RunSpec,
    space: SearchSpace,
    archs: Sequence[Arch],
    *,
    out: Path,
    policy: AdaptivePolicy = AdaptivePolicy(),
    progress: Progress | None = None,
    command: str = "",
    no_wait: bool = False,
) -> tuple[AdaptiveReport, list[ProfileReport]]:
    """:func:`adaptive_profile` measuring on ``spec``'s device into the LUT ``out`` (one
    :func:`~chamlab.host.measurement.profiling.profile` run per round); returns the report and the per-round
    profile reports. The invocation probe is measured with the first round."""
    from chamlab.host.measurement.profiling import profile

    reports: list[ProfileReport] = []

    def measure(batch: Sequence[OpSpec]) -> dict[str, float]:
        todo = list(batch) if reports else [INVOCATION_PROBE, *batch]
        rep = profile(
            spec, space, None, out=out, ops=todo, progress=progress, command=command, no_wait=no_wait
        )
        reports.append(rep)
        p50 = Lut.read(out).p50_by_key(spec.measurement_set)
        return {op.key: p50[op.key] for op in batch if op.key in p50}

    have = Lut.read_or_empty(out).p50_by_key(spec.measurement_set)
    report = adaptive_profile(space, archs, have, measure, policy, progress)
    return report, reports
