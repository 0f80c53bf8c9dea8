"""``chamlab measure``: export a whole network, measure it on a target, compare with the LUT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from chamlab.operators.base import Backend, Dtype

from ._common import (
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
    space_name: Annotated[
        str | None, typer.Option("--space", "-s", help="search space (see `chamlab spaces`)")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", "-a", help="a reference name or the space's string form")
    ] = None,
    pte: Annotated[
        Path | None,
        typer.Option("--pte", help="measure this ExecuTorch program as it is (instead of --space/--arch)"),
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option("--input-shape", help="--pte: the input shape it must take, e.g. 1,3,32,32 (checked)"),
    ] = None,
    etrecord: Annotated[
        Path | None,
        typer.Option("--etrecord", help="--pte: its ETRecord for --breakdown names (default: PATH.etrecord)"),
    ] = None,
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
    """Export a whole network, measure it on a target and compare with the LUT prediction; or measure
    an existing program with --pte PATH (its input shape is read from the program)."""
    from chamlab.core.errors import InputError
    from chamlab.host import api

    if pte is not None:
        clash = [n for n, v in (("--space", space_name), ("--arch", arch), ("--lut", lut)) if v is not None]
        if clash or batch != 1 or raw:
            extra = clash + (["--batch"] if batch != 1 else []) + (["--raw"] if raw else [])
            raise InputError(
                f"--pte measures a program as it is: {', '.join(extra)} do(es) not apply "
                "(its batch and input shape were fixed when it was exported)"
            )
        _measure_pte(pte, input_shape, etrecord, devices, target, serial, threads, backend, dtype, breakdown,
                     no_wait, as_json)  # fmt: skip
        return
    if input_shape is not None or etrecord is not None:
        raise InputError("--input-shape and --etrecord apply to --pte only")
    if space_name is None or arch is None:
        raise InputError("measure needs --space and --arch (a network to export), or --pte PATH (a program)")
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


def _measure_pte(
    pte: Path,
    input_shape: str | None,
    etrecord: Path | None,
    devices: Path | None,
    target: str | None,
    serial: str | None,
    threads: int | None,
    backend: Backend | None,
    dtype: Dtype | None,
    breakdown: bool,
    no_wait: bool,
    as_json: bool,
) -> None:
    from chamlab.host import api
    from chamlab.host.measurement.networks import parse_shape

    shape = parse_shape(input_shape) if input_shape is not None else None
    dev = device(devices, target, serial)
    spec = api.resolve_run(dev, threads=threads, backend=value(backend), dtype=value(dtype))
    with RichProgress() as progress:
        report = api.measure_program(
            spec, pte, input_shape=shape, etrecord=etrecord, breakdown=breakdown, progress=progress,
            no_wait=no_wait,
        )  # fmt: skip
    if as_json:
        emit_json(report.to_json())
        return
    m, info = report.measurement, report.program
    shapes = ", ".join("x".join(map(str, s)) for s in info.input_shapes)
    out.print(f"[bold]{info.path}[/] (input {shapes}, sha256 {info.sha256[:12]}) on {spec.target} "
              f"({spec.device.transport}, {spec.threads} thread(s))")  # fmt: skip
    out.print(
        f"  measured_p50_ms  {m.stats['p50_ms']:.4f}   (p10 {m.stats['p10_ms']:.4f}, p90 "
        f"{m.stats['p90_ms']:.4f}, n={m.n_samples}{', UNSTABLE' if m.unstable else ''})"
    )
    if m.breakdown:
        t = Table(title="ETDump breakdown (profiled pass)")
        t.add_column("event")
        t.add_column("p50 ms", justify="right")
        for ev in m.breakdown:
            t.add_row(ev["event"], f"{ev['p50_ms']:.4f}")
        out.print(t)
