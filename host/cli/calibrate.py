"""``chamlab calibrate``: measure a few whole networks and fit the LUT's calibration for a target."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

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
    device,
    emit_json,
    handle_errors,
    out,
    shown,
    space,
    value,
)

#: the widest network name the table shows whole; longer ones (chamnet-mbv2's, 60+ characters) are
#: shortened to their start and end (:func:`short_name`), the full names are in --json
NAME_WIDTH = 22

if TYPE_CHECKING:
    from chamlab.host.measurement.pipeline import RunSpec
    from chamlab.host.prediction.calibrate import CalibrationReport


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """``name``, or its first and last characters around ``...`` when longer than ``width``."""
    if len(name) <= width:
        return name
    head = (width - 3) * 2 // 3
    return f"{name[:head]}...{name[-(width - 3 - head) :]}"


def calibration_table(title: str, rec: dict[str, Any]) -> Table:
    """The networks of a calibration record: measured, LUT sum and fitted ms, residual and left-out
    error; narrow enough for 80 columns with names shortened (:func:`short_name`)."""
    t = Table(title=title)
    t.add_column("network", no_wrap=True)
    for col in ("measured", "LUT sum", "fitted", "resid.", "left out"):
        t.add_column(col, justify="right", no_wrap=True)
    for net in rec["networks"]:
        t.add_row(
            shown(short_name(str(net["name"]))),
            f"{net['measured_ms']:.4f}",
            f"{net['features']['lut_sum_ms']:.4f}",
            f"{net['fitted_ms']:.4f}",
            _pct(net["residual_pct"]),
            _pct(net["loo_error_pct"]),
        )
    return t


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}%"


@handle_errors
def calibrate(
    target: TargetOpt,
    space_name: SpaceOpt,
    n: Annotated[
        int | None,
        typer.Option(
            "--n",
            min=3,
            help="whole networks to measure (spread over the space; default 10, or as many as --arch names); "
            "with fewer than 5 the fit frees one coefficient fewer than networks (docs/measurement.md)",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        list[str] | None,
        typer.Option(
            "--arch",
            "-a",
            help="measure this network (repeatable; a reference name or the space's string form); "
            "--n above their number adds spread ones",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    batch: BatchOpt = 1,
    lut: Annotated[
        Path | None,
        typer.Option("--lut", help="LUT to calibrate and store the fit in (default: luts/<target>.parquet)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the network selection")] = 0,
    repeats: Annotated[
        int,
        typer.Option(
            "--repeats",
            min=1,
            help="measure each network in N separate interleaved sessions (disturbed ones re-measured) "
            "and fit the median; 1 measures each once (faster, but one disturbed run inflates the "
            "spread that sizes adapt's safety margin)",
        ),
    ] = 3,
    recheck: Annotated[
        int,
        typer.Option(
            "--recheck",
            min=0,
            help="re-measure K of the networks' ops to see how far op timings moved since profiling, and "
            "lean on the op-level model as far as they did (0: fit on the LUT as measured; else at least 8)",
        ),
    ] = 32,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    quant_recipe: QuantRecipeOpt = None,
    no_wait: NoWaitOpt = False,
    serial: SerialOpt = None,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure N networks spanning the space and fit predicted-to-measured latency.

    The fit (relative, Huber-robust, ridge towards the plain sum, on the LUT sum, the number of ops and
    the weight MiB) is stored in the LUT's metadata; `predict` and `measure` apply it from then on
    (until the LUT rows it used change: then it is reported stale). Prints the leave-one-out error.
    One fit per (device, backend, dtype, threads, batch, space): --batch picks the LUT rows and the
    batch the networks are measured at. On a device with a power reader, the networks' energy is
    measured too and an energy calibration is fitted and stored the same way.

    --recheck K re-measures K of those networks' ops: where op timings moved between sessions about
    as much as the op-level model misses, the fit (and every prediction from it) sums op values
    shrunk towards the model; where they reproduce, the LUT is used as measured.
    """
    from chamlab.host import api

    spec = api.resolve_run(
        device(devices, target, serial),
        threads=threads,
        backend=value(backend),
        dtype=value(dtype),
        batch=batch,
        quant_recipe=quant_recipe,
    )
    sp = space(space_name)
    named = [sp.resolve(a) for a in arch or []]
    count = n if n is not None else max(len(named), 3) if named else 10
    path = lut if lut is not None else api.default_lut_path(spec.target)
    with RichProgress() as progress:
        report = api.calibrate(
            spec,
            sp,
            lut_path=path,
            n=count,
            archs=named,
            seed=seed,
            progress=progress,
            no_wait=no_wait,
            repeats=repeats,
            recheck=recheck,
        )
    if as_json:
        emit_json(report.to_json())
        return
    _print_report(report, sp.name, spec, path)


def _print_report(report: CalibrationReport, space_name: str, spec: RunSpec, path: Path) -> None:
    """The human summary of a calibration (``--json`` prints ``report.to_json()`` instead)."""
    rec = report.record
    t = calibration_table(
        f"calibration of {space_name} on {spec.target} ({spec.dtype.value}, {spec.threads} thread(s), "
        f"batch {spec.batch}; times in ms), stored in {path}",
        rec,
    )
    out.print(t)
    if any(len(str(net["name"])) > NAME_WIDTH for net in rec["networks"]):
        out.print("  (long network names shortened; --json gives them in full)")
    coef = rec["coefficients"]
    out.print(
        "  model: measured_ms = "
        + " + ".join([f"{coef['intercept_ms']:.4g}", *(f"{coef[f]:.4g} * {f}" for f in rec["features"])])
    )
    loo, raw = rec["loo"], rec["raw_sum"]
    out.print(
        f"  leave-one-out: mean |error| {loo['mape_pct']:.1f}%, within +/-5% {loo['within_5pct']:.0%}, "
        f"within +/-10% {loo['within_10pct']:.0%} (n={loo['n']})"
    )
    out.print(
        f"  plain LUT sum: mean |error| {raw['mape_pct']:.1f}%, within +/-5% {raw['within_5pct']:.0%}, "
        f"within +/-10% {raw['within_10pct']:.0%}"
    )
    noise = rec.get("op_noise")
    if noise:
        weights = ", ".join(f"{k} {w:.2f}" for k, w in sorted(noise["weights"].items()))
        out.print(
            f"  op recheck: {noise['n_ops']} ops re-measured moved {noise['median_abs_pct']:.1f}% (median, "
            f"after a device-wide shift of {noise['shift_pct']:+.1f}%); weight of the op model: {weights}"
        )
    else:
        out.print("  op recheck: off (fitted on the LUT as measured)")
    e = report.energy_record
    if e is None:
        out.print(f"  energy: not calibrated ({shown(report.energy_note)})")
        return
    le, re_ = e["loo"], e["raw_sum"]
    out.print(
        f"  energy (mJ per inference above idle): leave-one-out mean |error| {le['mape_pct']:.1f}%, "
        f"within +/-10% {le['within_10pct']:.0%}; plain LUT energy sum: mean |error| {re_['mape_pct']:.1f}%"
    )
