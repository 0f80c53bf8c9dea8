"""``adapt`` end to end: its named steps (:mod:`chamlab.host.workflows.adapt`) in order, and, with
several thread counts, the joint (arch, threads) steps of :mod:`chamlab.host.workflows.adapt_threads`
in place of the first ones. Both step modules sit below this one, so neither imports the other's caller.
"""

from __future__ import annotations

import dataclasses
import json
import time

from chamlab.chamnet.search.problem import Oracle
from chamlab.chamnet.spaces.base import SearchSpace
from chamlab.core.files import atomic_write_text
from chamlab.host.devices.transports.base import Transport
from chamlab.host.measurement.pipeline import NullProgress, Progress, RunSpec
from chamlab.host.workflows import adapt as steps
from chamlab.host.workflows.adapt_threads import Joint, search_threads
from chamlab.host.workflows.search import out_lock
from chamlab.host.workflows.threads import check_threads
from chamlab.operators.export import export_worker


def adapt(
    spec: RunSpec,
    space: SearchSpace,
    options: steps.AdaptOptions,
    *,
    oracle: Oracle | None = None,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
    command: str = "",
) -> steps.AdaptReport:
    """Adapt ``space`` to ``spec``'s device under ``options.latency_ms`` (the steps and their resume
    rules: :mod:`chamlab.host.workflows.adapt`'s docstring).

    ``oracle``: the accuracy oracle (default: the space's own, :func:`oracle_for`); when it has a
    ``state_dict(arch)`` method returning weights for the winner, those go into ``model.pte``.
    ``no_wait``: a busy device, or an ``--out`` another adapt (or search) is using, is exit 2 at once
    instead of a wait."""
    if options.threads is not None:
        counts = check_threads(list(options.threads))
        if len(counts) == 1:  # one thread count: the run of that RunSpec
            spec = dataclasses.replace(spec, threads=counts[0])
        options = dataclasses.replace(options, threads=counts if len(counts) > 1 else None)
    ctx = steps.Context(spec, space, options, progress or NullProgress(), transport, no_wait, command)
    checked = steps.check_inputs(ctx, oracle)
    with out_lock(ctx.out, no_wait=no_wait, progress=ctx.progress, what="adapt"):
        if ctx.out.is_dir():
            steps.publish(ctx.out)  # a run killed while publishing is finished first; a partial stage goes
        with export_worker():  # the winner, final weights and int8 sibling: one toolchain import
            return _adapt(ctx, checked)


def _adapt(ctx: steps.Context, checked: steps.Checked) -> steps.AdaptReport:
    oracle = checked.oracle
    seconds: dict[str, float] = {}
    t_start = t0 = time.perf_counter()
    joint: Joint | None = None
    if ctx.opts.threads is not None:  # several thread counts: the winner's from here on
        joint = search_threads(ctx, checked, seconds)
        ctx, lut, predictors, limits, bo, winner = joint.chosen_steps()
    else:
        lut = steps.ensure_lut(ctx, checked.lut_path)
        predictors = steps.ensure_calibration(ctx, lut)
        seconds["predictors"] = time.perf_counter() - t0
        limits = steps.plan_limits(ctx, predictors)
        t0 = time.perf_counter()
        bo = steps.run_bo(ctx, oracle, predictors, limits, checked.ident)
        seconds["bo"] = time.perf_counter() - t0
        winner = steps.constrained(ctx, bo, predictors, limits, lut)
    if winner.best is None:
        raise steps._no_winner(winner.result, limits)
    from chamlab.chamnet.training.final import check_final_schedule

    t0 = time.perf_counter()
    exported = steps.export(ctx, oracle, winner.best.arch, ctx.stage)
    seconds["export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    measured = steps.verify(ctx, exported, winner.best.arch)
    seconds["measure"] = time.perf_counter() - t0
    refined = steps.refine(ctx, oracle, bo, steps.Round(winner, exported, measured, limits), lut)
    if len(refined.rounds) > 1:
        seconds["refine"] = time.perf_counter() - t0 - seconds["measure"]
    final = None
    if check_final_schedule(ctx.opts.final_schedule) is not None:
        final = steps.ship_final(ctx, oracle, refined, seconds)
    seconds["total"] = time.perf_counter() - t_start
    report = steps.assemble(ctx, oracle, lut, predictors, winner, measured, refined, bo, seconds)
    if joint is not None:
        joint.annotate(report, refined.chosen.measured)
    ctx.stage.mkdir(exist_ok=True)
    if final is not None:
        report.final_training = final.to_json()
    t0 = time.perf_counter()
    steps.describe_program(ctx, oracle, report, final)
    seconds["describe"] = time.perf_counter() - t0
    steps._plot(report, bo.state.queries, ctx.space, ctx.stage / steps.PARETO)
    atomic_write_text(ctx.stage / steps.RESULT, json.dumps(report.to_json(), indent=1) + "\n")
    steps.publish(ctx.out)
    return report
