"""``chamlab predict``: MACs, parameters and the LUT-predicted latency of one architecture."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    RawOpt,
    SerialOpt,
    SpaceOpt,
    device,
    emit_json,
    err,
    handle_errors,
    note,
    out,
    space,
    value,
)

if TYPE_CHECKING:
    from chamlab.host.prediction.predict import PredictionReport


@handle_errors
def predict(
    space_name: SpaceOpt,
    arch: ArchOpt,
    lut: Annotated[
        Path | None,
        typer.Option(
            "--lut",
            help="LUT to predict latency from, or a farm folder (its latest/<target>.parquet) "
            "(default: luts/<target>.parquet when --target is given)",
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="use the LUT rows of this device")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", "-j", min=1, help="use the LUT rows measured with N threads")
    ] = None,
    batch: BatchOpt = 1,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    raw: RawOpt = False,
    interpolate: Annotated[
        bool, typer.Option(help="predict ops the LUT lacks from measured ops of the same kind (flagged)")
    ] = False,
    energy: Annotated[
        bool,
        typer.Option(
            "--energy",
            help="require the energy prediction (exit 2 when the LUT has no energy: no power reader)",
        ),
    ] = False,
    serial: SerialOpt = None,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """MACs, parameters and (with a LUT) the predicted latency of one architecture, op by op.

    The prediction is the sum of the ops' p50 minus (n_ops - 1) invocation overheads (measured by
    `profile` as the invocation probe), calibrated when `chamlab calibrate` stored a fresh fit in the
    LUT; --raw gives the plain sum. Where the LUT rows hold energy (profiled with a power reader), the
    energy per inference above idle is predicted the same way.
    """
    from chamlab.host import api

    if serial:
        target = device(devices, target, serial).name
    sp = space(space_name)
    a = sp.resolve(arch)
    found = api.find_lut(lut, target, space=sp.name)
    report = api.predict(
        sp,
        a,
        lut=found[0] if found else None,
        lut_path=found[1] if found else None,
        target=target,
        backend=value(backend),
        dtype=value(dtype),
        threads=threads,
        batch=batch,
        raw=raw,
        interpolate=interpolate,
        energy="require" if energy else "auto",
        devices=devices,
    )
    if as_json:
        emit_json(report.to_json())
        return
    _print_report(sp.name, report)


def _print_report(space_name: str, report: PredictionReport) -> None:
    """The human form of ``predict``: sizes, the per-op table of the prediction, its notes, energy."""
    out.print(
        f"[bold]{space_name}[/] {report.arch}: {report.macs / 1e6:.2f} M MACs, "
        f"{report.params / 1e6:.3f} M params"
    )
    p, mset = report.prediction, report.measurement_set
    if p is None or mset is None:
        note(
            "no LUT given: pass --lut PATH, or --target NAME to use luts/NAME.parquet, "
            "for a latency prediction"
        )
        return
    t = Table(
        title=f"predicted latency from {report.lut_path} "
        f"({mset.device}, {mset.dtype}, {mset.threads} thread(s), batch {mset.batch})"
    )
    t.add_column("op", overflow="fold")  # keys wrap rather than lose their tail
    for col in ("count", "p50 ms", "total ms"):
        t.add_column(col, justify="right", no_wrap=True)
    for c in p.ops:
        mark = " (interpolated)" if c.interpolated else ""
        t.add_row(c.op.key + mark, str(c.count), f"{c.p50_ms:.4f}", f"{c.total_ms:.4f}")
    t.add_row("sum", "", "", f"{p.lut_sum_ms:.4f}")
    if p.invocation_overhead_ms is not None:
        n = sum(c.count for c in p.ops)
        t.add_row(
            f"- {n - 1} x invocation overhead",
            "",
            f"{p.invocation_overhead_ms:.4f}",
            f"-{(n - 1) * p.invocation_overhead_ms:.4f}",
        )
    if p.quant_edge_ms is not None:
        n = sum(c.count for c in p.ops)
        t.add_row(f"- {n - 1} x int8 boundary quantize/dequantize", "", "", f"-{p.quant_edge_ms:.4f}")
    if p.calibrated and p.uncalibrated_ms is not None:
        t.add_row("uncalibrated", "", "", f"{p.uncalibrated_ms:.4f}")
    t.add_row(
        "[bold]predicted latency[/]" + (" (calibrated)" if p.calibrated else ""),
        "",
        "",
        f"[bold]{p.latency_ms:.4f}[/]",
    )
    out.print(t)
    if p.not_delegated_ops:
        err.print(
            f"[yellow]warning:[/] {len(p.not_delegated_ops)} op(s) of this network have LUT rows with "
            f"delegated = false (not fully int8 on XNNPACK): {escape('; '.join(p.not_delegated_ops))}",
            soft_wrap=True,
        )
    if p.interpolated_ops:
        note(f"{p.interpolated_ops} op(s) are not in the LUT: predicted by the op-level model")
    if p.calibration_note and p.calibration is not None:
        note(p.calibration_note)
    e = report.energy
    if e is not None:
        how = " (calibrated)" if e.calibrated else ""
        if e.calibrated and e.uncalibrated_mj is not None:
            how += f", uncalibrated {e.uncalibrated_mj:.4f} mJ"
        out.print(
            f"[bold]predicted energy[/] {e.energy_mj:.4f} mJ per inference above idle{how} "
            f"(LUT sum {e.lut_sum_mj:.4f} mJ, reader {', '.join(e.readers)})"
        )
        if e.interpolated_ops:
            note(f"{e.interpolated_ops} op energies are not in the LUT: predicted by the op-level model")
        if e.calibration_note and e.calibration is not None:
            note(f"energy: {e.calibration_note}")
    elif report.energy_note:
        note(f"no energy prediction: {report.energy_note}")
