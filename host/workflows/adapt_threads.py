"""``adapt --threads 1,2,4``: (arch, threads) searched jointly, the winner exported and measured at its
thread count (docs/adapt.md, section "Several thread counts").

:func:`search_threads` replaces steps 1 to 5 of :func:`~chamlab.host.workflows.adapt.adapt` when
``AdaptOptions.threads`` names several thread counts; each thread count is a *lane*, the run of
those steps with the RunSpec at that thread count:

1. **Predictors per thread count**: :func:`~chamlab.host.workflows.adapt.ensure_lut` and
   :func:`~chamlab.host.workflows.adapt.ensure_calibration` of each lane (rows and calibrations the
   LUT holds are reused; what it lacks is profiled or calibrated at that thread count).
2. **Limits**: a percentile limit (``--latency p40``) is the percentile of the predicted latencies of
   every (arch, threads) pair of the pool :func:`~chamlab.host.workflows.adapt.latency_pool` predicts
   (the space searched is the pairs); a limit in ms is the same at every thread count. Each lane is
   searched under that limit less its own calibration's margin
   (:func:`~chamlab.host.workflows.adapt.plan_limits`). A thread count under which nothing is
   predicted drops out with a note; none left is exit 2 naming the fastest prediction.
3. **One BO loop** (:func:`~chamlab.host.workflows.adapt.run_bo`): accuracy does not depend on the
   thread count, so the loop queries archs, an arch being feasible when some lane predicts it under
   its search limit (the cost ``limit_ratio``: :class:`~chamlab.host.workflows.threads.BestThreads`,
   with limit 1; the history keeps ``latency_ms``, the prediction at the arch's best thread count,
   and ``latency_ms@N`` of each).
4. **Constrained search per lane** (:func:`~chamlab.host.workflows.adapt.constrained`) with the
   loop's accuracy GP: each thread count's best arch (``per_threads`` in ``result.json``). The winner
   is the most accurate; between equally accurate ones, the one with the most headroom (lowest
   predicted latency relative to its search limit).

Steps 6 to 8 (export, measurement, verify and refine, manifest) then run as for one thread count with
the winner's lane: the program is measured with the runtime's thread pool at the winner's thread
count, and refine rounds stay at that thread count.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from chamlab.chamnet.search.problem import Problem
from chamlab.core.errors import ChamlabError, InputError
from chamlab.host.workflows.adapt import (
    AdaptReport,
    BoStep,
    Checked,
    Context,
    Limits,
    LutStep,
    Predictors,
    Winner,
    constrained,
    ensure_calibration,
    ensure_lut,
    latency_pool,
    plan_limits,
    run_bo,
)
from chamlab.host.workflows.threads import BestThreads, check_threads, cost_name

#: the BO loop's cost over several thread counts (limit 1: some thread count meets its search limit)
RATIO = "limit_ratio"


@dataclasses.dataclass
class Lane:
    """One thread count's steps."""

    threads: int
    ctx: Context
    lut: LutStep
    predictors: Predictors
    limits: Limits | None = None
    winner: Winner | None = None
    note: str | None = None  # why it has no winner

    def ratio(self, arch: Any) -> float:
        assert self.limits is not None
        return self.predictors.latency(arch) / self.limits.margin.effective

    def to_json(self, chosen: bool) -> dict[str, Any]:
        """Its entry of ``result.json``'s ``per_threads``: the constrained search's best arch there."""
        space = self.ctx.space
        best = self.winner.best if self.winner is not None else None
        margin = self.limits.margin if self.limits is not None else None
        return {
            "threads": self.threads,
            "arch": None if best is None else space.format(best.arch),
            "predicted_accuracy": None if best is None else best.accuracy,
            "accuracy_known": None if best is None else best.known,
            "predicted_latency_ms": None if best is None else best.costs["latency_ms"],
            "search_limit_ms": None if margin is None else margin.effective,
            "spread_pct": None if margin is None else margin.spread_pct,
            "calibrated": self.predictors.latency.model.calibrated,
            "profiled_ops": self.lut.profiled + (self.winner.profiled if self.winner else 0),
            "chosen": chosen,
            "note": self.note,
        }


@dataclasses.dataclass
class Joint:
    """What :func:`search_threads` found: every lane and the chosen one."""

    lanes: list[Lane]
    chosen: Lane
    bo: BoStep

    def chosen_steps(self) -> tuple[Context, LutStep, Predictors, Limits, BoStep, Winner]:
        """The chosen lane as the steps after the constrained search take it."""
        c = self.chosen
        assert c.limits is not None and c.winner is not None
        return c.ctx, c.lut, c.predictors, c.limits, self.bo, c.winner

    def annotate(self, report: AdaptReport, measured: Any) -> None:
        """``per_threads`` and the thread-pool size the runtime measured the winner with."""
        report.per_threads = [lane.to_json(lane is self.chosen) for lane in self.lanes]
        report.measured_threads = getattr(measured, "threads", None)
        if report.measured_threads is not None and report.measured_threads != report.spec.threads:
            report.notes.append(
                f"the runtime measured the winner with {report.measured_threads} thread(s), not the "
                f"{report.spec.threads} asked for: the device may cap its thread pool"
            )


def lane_context(ctx: Context, threads: int, **opts: Any) -> Context:
    """``ctx`` at one thread count (its RunSpec's threads; ``opts``: options replaced)."""
    spec = dataclasses.replace(ctx.spec, threads=threads)
    return dataclasses.replace(ctx, spec=spec, opts=dataclasses.replace(ctx.opts, threads=None, **opts))


def search_threads(ctx: Context, checked: Checked, seconds: dict[str, float]) -> Joint:
    """Steps 1 to 5 over several thread counts (module docstring); ``seconds`` gets ``predictors``
    and ``bo``.

    Resume: as the steps it runs (LUT rows and calibrations reused, the history's queries never
    asked again)."""
    counts = check_threads(list(ctx.opts.threads or ()))
    space, opts, progress = ctx.space, ctx.opts, ctx.progress
    t0 = time.perf_counter()
    lanes: list[Lane] = []
    for t in counts:
        progress.note(f"threads {t}: the LUT rows and calibration of {ctx.spec.target} at {t} thread(s)")
        lctx = lane_context(ctx, t)
        lut = ensure_lut(lctx, checked.lut_path)
        lanes.append(Lane(t, lctx, lut, ensure_calibration(lctx, lut)))
    seconds["predictors"] = time.perf_counter() - t0
    limit_ms = opts.latency_ms
    if opts.latency_percentile is not None:
        pool = latency_pool(space, opts.seed)
        pct = opts.latency_percentile
        limit_ms = float(np.percentile([lane.predictors.latency(a) for lane in lanes for a in pool], pct))
        progress.note(
            f"--latency p{pct:g}: {limit_ms:.4f} ms, the {pct:g}th percentile of the predicted latency of "
            f"{'all' if len(pool) == space.size else len(pool)} {space.name} archs at each of "
            f"{len(lanes)} thread counts ({', '.join(map(str, counts))}) on {ctx.spec.target}"
        )
    refusals: list[tuple[Lane, InputError]] = []
    for lane in lanes:
        lane.ctx = lane_context(ctx, lane.threads, latency_ms=limit_ms, latency_percentile=None)
        try:
            lane.limits = plan_limits(lane.ctx, lane.predictors)
        except InputError as exc:  # nothing predicted under the limit at this thread count
            lane.note = f"infeasible: {exc.message}"
            refusals.append((lane, exc))
    feasible = [lane for lane in lanes if lane.limits is not None]
    if not feasible:
        pool = latency_pool(space, opts.seed)
        fastest, refused = min(refusals, key=lambda r: min(r[0].predictors.latency(a) for a in pool))
        raise InputError(
            f"at every thread count ({', '.join(map(str, counts))}): {refused.message} (at "
            f"{fastest.threads} thread(s), the fastest)",
            hint=refused.hint,
        )
    for lane in lanes:
        if lane.note:
            progress.note(f"threads {lane.threads}: {lane.note}")
    best = BestThreads(
        {lane.threads: lane.predictors.latency for lane in feasible},
        {lane.threads: lane.limits.margin.effective for lane in feasible if lane.limits is not None},
    )
    # every thread count's prediction is kept (a history's columns do not depend on which are feasible)
    every = {cost_name(lane.threads): lane.predictors.latency for lane in lanes}
    problem = Problem(space, checked.oracle, {RATIO: best, "latency_ms": best.latency, **every}, {RATIO: 1.0})
    t0 = time.perf_counter()
    first = feasible[0]
    assert first.limits is not None
    bo = run_bo(first.ctx, checked.oracle, first.predictors, first.limits, checked.ident, problem=problem)
    seconds["bo"] = time.perf_counter() - t0
    for lane in feasible:
        assert lane.limits is not None
        progress.note(f"threads {lane.threads}: searching under {lane.limits.margin.effective:.4f} ms")
        lane.winner = constrained(lane.ctx, bo, lane.predictors, lane.limits, lane.lut)
        if lane.winner.best is None:
            lane.note = f"the {lane.winner.result.method} found no arch under the search limit"
    found = [lane for lane in feasible if lane.winner is not None and lane.winner.best is not None]
    if not found:
        raise ChamlabError(
            f"no arch was found under the search limit at any thread count ({', '.join(map(str, counts))})",
            hint="raise --latency, or re-run with another --seed",
        )

    def rank(lane: Lane) -> tuple[float, float, int]:
        assert lane.winner is not None
        arch = lane.winner.best.arch
        return (-lane.winner.best.accuracy, lane.ratio(arch), counts.index(lane.threads))

    chosen = min(found, key=rank)
    bests = [(lane.threads, lane.winner.best) for lane in found if lane.winner is not None]
    progress.note(
        "per thread count: "
        + "; ".join(
            f"{t}: {space.format(b.arch)} (accuracy {b.accuracy:.3f}, {b.costs['latency_ms']:.4f} ms)"
            for t, b in bests
        )
        + f"; chosen: {chosen.threads} thread(s)"
    )
    return Joint(lanes, chosen, bo)


__all__ = ["RATIO", "Joint", "Lane", "cost_name", "lane_context", "search_threads"]
