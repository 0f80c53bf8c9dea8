"""``chamlab measure``: export a whole network, measure it on a target, compare with the LUT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ._common import (
    ArchOpt,
    BackendOpt,
    BatchOpt,
    DevicesOpt,
    DtypeOpt,
    JsonOpt,
    NoWaitOpt,
    QuantRecipeOpt,
    RawOpt,
    RichProgress,
    SerialOpt,
    SpaceOpt,
    TargetOpt,
    ThreadsOpt,
    device,
    emit_json,
    err,
    handle_errors,
    note,
    out,
    space,
    value,
)


@handle_errors
def measure(
    space_name: SpaceOpt,
    arch: ArchOpt,
    target: TargetOpt = None,
    serial: SerialOpt = None,
    threads: ThreadsOpt = None,
    batch: BatchOpt = 1,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    quant_recipe: QuantRecipeOpt = None,
    lut: Annotated[
        Path | None,
        typer.Option(
            "--lut",
            help="LUT for the prediction beside the measurement "
            "(default: luts/<target>.parquet if it exists)",
        ),
    ] = None,
    breakdown: Annotated[bool, typer.Option(help="also print the per-op ETDump breakdown")] = False,
    raw: RawOpt = False,
    no_wait: NoWaitOpt = False,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a whole network, measure it on a target and compare with the LUT prediction."""
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
    a = sp.resolve(arch)
    with RichProgress() as progress:
        report = api.measure(
            spec, sp, a, lut_path=lut, raw=raw, breakdown=breakdown, progress=progress, no_wait=no_wait
        )
    if report.note:
        note(report.note)
    if report.measurement.not_delegated:
        err.print(
            f"[yellow]warning:[/] the int8 network is not fully int8 on XNNPACK: "
            f"{escape(report.measurement.not_delegated)}",
            soft_wrap=True,
        )
    if as_json:
        emit_json(report.to_json())
        return
    m = report.measurement
    out.print(
        f"[bold]{sp.name}[/] {report.arch} on {spec.target} "
        f"({spec.backend.value}, {spec.dtype.value}, {spec.threads} thread(s), batch {spec.batch})"
    )
    out.print(
        f"  measured_p50_ms  {m.stats['p50_ms']:.4f}   (p10 {m.stats['p10_ms']:.4f}, p90 "
        f"{m.stats['p90_ms']:.4f}, n={m.n_samples}{', UNSTABLE' if m.unstable else ''})"
    )
    if report.predicted_ms is not None and report.error_pct is not None:
        out.print(
            f"  predicted_ms     {report.predicted_ms:.4f}   (LUT prediction"
            f"{' (raw sum)' if raw else ' (calibrated)' if report.calibrated else ''}, "
            f"error {report.error_pct:+.1f}%)"
        )
    if m.breakdown:
        t = Table(title="ETDump breakdown (profiled pass)")
        t.add_column("event")
        t.add_column("p50 ms", justify="right")
        for ev in m.breakdown:
            t.add_row(ev["event"], "-" if ev["p50_ms"] is None else f"{ev['p50_ms']:.4f}")
        out.print(t)
