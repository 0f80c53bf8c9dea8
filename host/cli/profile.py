"""``chamlab profile``: measure every operator a space needs on a target into a Parquet LUT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ._common import (
    BackendOpt,
    BatchOpt,
    DevicesOpt,
    DtypeOpt,
    JsonOpt,
    NoWaitOpt,
    QuantRecipeOpt,
    RichProgress,
    SerialOpt,
    SpaceOpt,
    TargetOpt,
    ThreadsOpt,
    archs_from_options,
    command_line,
    device,
    emit_json,
    err,
    handle_errors,
    note,
    space,
    value,
)


@handle_errors
def profile(
    space_name: SpaceOpt,
    target: TargetOpt = None,
    serial: SerialOpt = None,
    threads: ThreadsOpt = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="LUT file to create or extend (default: luts/<target>.parquet)",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        list[str] | None,
        typer.Option(
            "--arch",
            "-a",
            help="profile only the ops of this arch "
            "(repeatable; a reference name or the space's string form)",
        ),
    ] = None,
    sample: Annotated[int | None, typer.Option(min=1, help="also profile the ops of N random archs")] = None,
    seed: Annotated[int, typer.Option(help="seed for --sample")] = 0,
    batch: BatchOpt = 1,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    quant_recipe: QuantRecipeOpt = None,
    force: Annotated[bool, typer.Option(help="re-measure ops the LUT already holds")] = False,
    breakdown: Annotated[
        bool, typer.Option(help="also record the per-op ETDump breakdown (Inspector)")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="parallel export processes (default: one per 8 ops to export, at most one per CPU: "
            "each first spends seconds importing the toolchain)",
        ),
    ] = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive",
            help="measure only the ops the op-level model needs (seeded by --seed), until its "
            "held-apart error stops improving; reports what it skipped",
        ),
    ] = False,
    round_ops: Annotated[int, typer.Option("--round-ops", min=1, help="--adaptive: ops per round")] = 8,
    max_ops: Annotated[
        int | None, typer.Option("--max-ops", min=1, help="--adaptive: at most N ops measured")
    ] = None,
    no_wait: NoWaitOpt = False,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure every operator a space needs on a target and store them in a Parquet LUT.

    Without --arch/--sample, a small space (<= 100,000 archs, e.g. macro-cifar10) is profiled
    exhaustively and a large one (chamnet-mbv2) over its reference archs. Ops already in the LUT
    for this target/backend/dtype/threads are skipped, so re-running resumes. One run measures on a
    device at a time: a second one waits (or, with --no-wait, exits 2). With --adaptive, only the ops
    that the op-level model needs are measured (docs/measurement.md); the rest are listed as skipped
    and predicted by `predict --interpolate`.
    """
    from chamlab.core.files import ensure_dir
    from chamlab.host import api

    dev = device(devices, target, serial)
    spec = api.resolve_run(
        dev,
        threads=threads,
        backend=value(backend),
        dtype=value(dtype),
        batch=batch,
        quant_recipe=quant_recipe,
    )
    sp = space(space_name)
    chosen = archs_from_options(sp, arch, sample, seed)
    lut_path = out_path or api.default_lut_path(dev.name)
    if out_path is None:
        ensure_dir(lut_path.parent, what="default LUT directory")
    if adaptive:
        if force or breakdown:
            raise typer.BadParameter("--adaptive cannot be combined with --force or --breakdown")
        _adaptive(api, spec, sp, chosen, lut_path, round_ops, max_ops, seed, no_wait, as_json)
        return
    with RichProgress() as progress:
        report = api.profile(
            spec,
            sp,
            chosen,
            out=lut_path,
            force=force,
            breakdown=breakdown,
            workers=workers,
            progress=progress,
            command=command_line(),
            no_wait=no_wait,
        )
    if as_json:
        emit_json(report.to_json())
    elif report.planned == report.already:
        note(f"nothing to measure: all {report.planned} ops are already in {lut_path}")
    else:
        note(
            f"{len(report.measured)} ops measured ({report.already} already in the LUT) -> {lut_path}; "
            f"export {report.export_s:.1f} s, measure {report.measure_s:.1f} s"
        )
        if report.unstable:
            err.print(
                f"[yellow]{len(report.unstable)} op(s) stayed unstable after re-measuring "
                "(flagged in the LUT column `unstable`)[/]"
            )
    for key, problem in report.not_delegated:
        err.print(
            f"[yellow]warning:[/] {escape(key)} is not fully int8 on XNNPACK ({escape(problem)}); "
            "its row says delegated = false",
            soft_wrap=True,
        )
    if report.power_error:
        err.print(f"[yellow]no energy measured: {escape(report.power_error)}[/]", soft_wrap=True)
    if report.failed:
        for key, msg in report.failed:
            err.print(f"[red]failed[/] {escape(key)}: {escape(msg)}", soft_wrap=True)
        err.print(f"{len(report.failed)} op(s) failed; re-run the same command to retry them")
        raise typer.Exit(1)


def _adaptive(
    api: Any,
    spec: Any,
    sp: Any,
    chosen: Any,
    lut_path: Path,
    round_ops: int,
    max_ops: int | None,
    seed: int,
    no_wait: bool,
    as_json: bool,
) -> None:
    archs = chosen if chosen is not None else api.default_archs(sp)[0]
    policy = api.AdaptivePolicy(round_ops=round_ops, max_ops=max_ops, seed=seed)
    with RichProgress() as progress:
        report, _runs = api.profile_adaptive(
            spec,
            sp,
            archs,
            out=lut_path,
            policy=policy,
            progress=progress,
            command=command_line(),
            no_wait=no_wait,
        )
    if as_json:
        emit_json({"lut": str(lut_path), "adaptive": report.to_json()})
    else:
        last = report.rounds[-1]["heldout_median_abs_pct"] if report.rounds else None
        note(
            f"adaptive: {len(report.measured)} of {report.candidates} candidate ops measured "
            f"({report.already} already in the LUT), {len(report.skipped)} skipped (predict them with "
            f"--interpolate) -> {lut_path}; held-apart median |error| "
            + ("n/a" if last is None else f"{last:.1f}%")
            + f"; stopped: {report.stopped}"
        )
    if report.failed:
        err.print(f"{len(report.failed)} op(s) failed; re-run the same command to retry them")
        raise typer.Exit(1)
