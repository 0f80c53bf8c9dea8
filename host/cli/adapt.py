"""``chamlab adapt``: the most accurate network under a latency (and energy) limit on a device, as a
measured ``.pte``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._common import (
    AccuracyOpt,
    AddressOpt,
    CostFeatureOpt,
    DataOpt,
    DevicesOpt,
    DtypeOpt,
    ExecutorOpt,
    FitOpt,
    JsonOpt,
    LocalSearchOpt,
    MergeEquivalentOpt,
    OracleOpt,
    RichProgress,
    ScheduleOpt,
    SerialOpt,
    TargetOpt,
    ThreadsListOpt,
    WorkersOpt,
    command_line,
    device,
    emit_json,
    err,
    handle_errors,
    note,
    out,
    value,
)

if TYPE_CHECKING:
    from chamlab.host.workflows.adapt import AdaptReport


def parse_latency(text: str) -> tuple[float | None, float | None]:
    """``"20"`` -> ``(20.0, None)`` (ms); ``"p50"`` -> ``(None, 50.0)`` (a percentile)."""
    from chamlab.core.errors import InputError

    t = text.strip().lower()
    try:
        if t.startswith("p"):
            return None, float(t[1:])
        return float(t), None
    except ValueError:
        raise InputError(
            f"--latency {text!r} is neither a number of ms nor a percentile such as p50"
        ) from None


@handle_errors
def adapt(
    space_name: Annotated[
        str,
        typer.Option(
            "--space",
            "-s",
            help="a network space (see `chamlab spaces`); NAME@KEY=VALUE,... sets its parameters, e.g. "
            "chamnet-mbv2@res=32-96,classes=10 (or let --fit choose them from --data)",
        ),
    ],
    latency: Annotated[
        str,
        typer.Option(
            "--latency",
            help="latency limit in ms on the target, or pNN: the NNth percentile of the space's predicted "
            "latencies there (with several --threads: of every (arch, threads) pair's)",
        ),
    ],
    target: TargetOpt = None,
    serial: SerialOpt = None,
    energy: Annotated[
        float | None,
        typer.Option(
            "--energy",
            help="energy limit in mJ per inference above idle (a device with a power_reader in devices.toml)",
        ),
    ] = None,
    budget: Annotated[int, typer.Option("--budget", "-n", help="maximum accuracy-oracle queries")] = 50,
    n_init: Annotated[
        int,
        typer.Option(
            "--init",
            min=1,
            help="initial design size: archs asked before the BO steps (at most --budget; fewer saves "
            "trainings of a training oracle, but leaves the predictor less to start from)",
        ),
    ] = 10,
    seed: Annotated[int, typer.Option("--seed", help="random seed (BO design, GA)")] = 0,
    threads: ThreadsListOpt = None,
    dtype: DtypeOpt = None,
    lut: Annotated[
        Path | None, typer.Option("--lut", help="LUT to use and extend (default: luts/<target>.parquet)")
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="run folder: model.pte, result.json, ...; resumable")
    ] = Path("adapt"),
    margin_k: Annotated[
        float,
        typer.Option("--margin-k", help="safety margin: search under limit x (1 - k x calibration spread)"),
    ] = 1.645,
    no_calibrate: Annotated[
        bool, typer.Option("--no-calibrate", help="do not fit a calibration when the LUT has none")
    ] = False,
    refine: Annotated[
        int,
        typer.Option(
            "--refine",
            help="rounds of verify-and-refine: a measured winner that misses the limit (or errs by more "
            "than the margin) joins the calibration and the search runs again; 0: measure once",
        ),
    ] = 2,
    strict: Annotated[
        bool, typer.Option("--strict", help="exit 1 when the measured latency misses the limit")
    ] = False,
    oracle_kind: OracleOpt = "table",
    data: DataOpt = None,
    fit: FitOpt = False,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
    schedule: ScheduleOpt = None,
    accuracy: AccuracyOpt = None,
    final_schedule: Annotated[
        str | None,
        typer.Option(
            "--final-schedule",
            help="--oracle train: train the chosen arch with this schedule, then export and measure it "
            "again: standard (the "
            "default: 4 epochs over the whole training split), short (1), long (10), overrides of "
            "standard such as epochs=1,max_train=2000, or none (export the oracle's proxy weights, "
            "or seeded random ones when it did not train the winner)",
        ),
    ] = None,
    evaluate_on: Annotated[
        str,
        typer.Option(
            "--evaluate-on",
            help="--oracle train: where model.pte's accuracy is measured through ExecuTorch: host (this "
            "machine's runtime) or target (the device's own runtime through its python shim; the host "
            "maps and pushes the validation images)",
        ),
    ] = "host",
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            help="if another run holds the device or is using --out, exit 2 at once instead of waiting",
        ),
    ] = False,
    merge_equivalent: MergeEquivalentOpt = True,
    local_search: LocalSearchOpt = 3,
    cost_feature: CostFeatureOpt = True,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Adapt a space to a device: the most accurate network predicted under --latency ms, exported to
    DIR/model.pte and measured on the target (median of 3 runs), predicted vs measured.

    --threads 1,2,4 searches the thread count with the arch: LUT rows and a calibration per thread
    count (profiled and fitted when the LUT lacks them), one accuracy search, and the most accurate
    (arch, threads) pair predicted under the limit (ties: the most headroom); it is exported and
    measured at its thread count, result.json says `threads` and `per_threads` (each thread count's
    best), model.json's runtime.threads how to run it. --latency pNN is then the NNth percentile over
    every (arch, threads) pair. See docs/adapt.md.
    """
    from chamlab.chamnet.search import EngineConfig
    from chamlab.chamnet.spaces.table import is_table_spec
    from chamlab.chamnet.training.final import DEFAULT_FINAL, check_final_schedule
    from chamlab.core.errors import InputError
    from chamlab.host import api
    from chamlab.host.workflows.adapt import AdaptOptions
    from chamlab.host.workflows.adapt_run import adapt as run_adapt

    if is_table_spec(space_name):
        raise InputError(
            f"--space {space_name}: a table space has no networks to export and measure",
            hint="search it with `chamlab search --space table:PATH --latency MS`",
        )
    if budget < 1:
        raise InputError(f"--budget must be at least 1, got {budget}")
    from chamlab.host.workflows.threads import parse_threads

    counts = parse_threads(threads)
    check_final_schedule(final_schedule)  # a bad name is exit 2 before any work
    if final_schedule is None and oracle_kind == "train":
        final_schedule = DEFAULT_FINAL
    if evaluate_on not in ("host", "target"):
        raise InputError(f"--evaluate-on must be host or target, got {evaluate_on!r}")
    dev = device(devices, target, serial)
    if evaluate_on == "target":
        api.check_evaluation_device(dev)  # a device that cannot run the shim is exit 2 before any work
    spec = api.resolve_run(dev, threads=counts[0] if counts else None, dtype=value(dtype))
    sp = api.SPACES.get(space_name)
    if fit:
        sp = api.fit_space(sp, data)
        if not as_json:
            note(f"space fitted to {data}: {sp.name}")
    latency_ms, percentile = parse_latency(latency)
    options = AdaptOptions(
        latency_ms=latency_ms,
        latency_percentile=percentile,
        energy_mj=energy,
        budget=budget,
        seed=seed,
        out=out_dir,
        lut_path=lut,
        calibrate=not no_calibrate,
        margin_k=margin_k,
        refine=refine,
        engine=EngineConfig(
            n_init=n_init,
            merge_equivalent=merge_equivalent,
            local_search=local_search,
            cost_feature=cost_feature,
        ),
        threads=counts if counts and len(counts) > 1 else None,
        final_schedule=final_schedule,
        evaluate_on="target" if evaluate_on == "target" else "host",
    )
    oracle = api.choose_oracle(
        sp,
        oracle_kind,
        data=data,
        executor=executor,
        address=address,
        workers=workers,
        schedule=schedule,
        accuracy=accuracy,
        dtype=spec.dtype.value,
        quant_recipe=spec.quant_recipe,
    )
    try:
        with RichProgress() as progress:
            report = run_adapt(
                spec, sp, options, oracle=oracle, progress=progress, no_wait=no_wait, command=command_line()
            )
    finally:
        from chamlab.host.workflows.oracles import close_oracle

        close_oracle(oracle)
    for text in report.notes:
        note(f"note: {text}")
    if as_json:
        emit_json(report.to_json())
    else:
        _print_report(report)
    if not report.constraint_met:
        err.print(f"[bold red]constraint missed:[/] {report.suggestion}", soft_wrap=True)
        if strict:
            raise typer.Exit(1)


def _print_report(r: AdaptReport) -> None:
    """The human summary of an adapt report (``--json`` prints ``report.to_json()`` instead)."""
    out.print(f"[bold]{r.space}[/] on {r.spec.target} ({r.spec.threads} thread(s)): [bold]{r.arch}[/]")
    for p in r.per_threads or ():
        best = (
            f"{p['arch']}: predicted accuracy {p['predicted_accuracy']:.3f}, "
            f"{p['predicted_latency_ms']:.4f} ms (searched under {p['search_limit_ms']:.4f} ms)"
            if p["arch"] is not None
            else p["note"]
        )
        chosen = "  [bold]<- chosen[/]" if p["chosen"] else ""
        out.print(f"  {p['threads']:>3} thread(s)    {best}{chosen}")
    acc = f"predicted {r.predicted_accuracy:.3f}"
    if r.oracle_accuracy is not None:
        acc += f", oracle {r.oracle_accuracy:.3f}" + (" (queried)" if r.accuracy_known else "")
    both = r.oracle_accuracies or {}
    if {"fp32", "int8"} <= set(both):
        acc += f"; fp32 {both['fp32']:.3f}, int8 {both['int8']:.3f}"
    out.print(f"  accuracy ({r.accuracy_dtype})  {acc}")
    out.print(
        f"  predicted        {r.predicted_latency_ms:.4f} ms"
        f"{' (calibrated)' if r.calibrated else ' (LUT sum)'}; searched under {r.margin.effective:.4f} ms"
    )
    runs = ", ".join(f"{x:.4f}" for x in r.measured_runs_ms)
    out.print(
        f"  measured         {r.measured_latency_ms:.4f} ms (median of {len(r.measured_runs_ms)} runs: "
        f"{runs}); error {r.error_pct:+.1f}%"
    )
    verdict = "[green]met[/]" if r.latency_met else "[bold red]MISSED[/]"
    out.print(f"  limit            {r.limit_ms:g} ms: {verdict}")
    if r.energy_margin is not None:
        predicted = "n/a" if r.predicted_energy_mj is None else f"{r.predicted_energy_mj:.4f} mJ"
        measured = "not measured" if r.measured_energy_mj is None else f"{r.measured_energy_mj:.4f} mJ"
        met = {True: "[green]met[/]", False: "[bold red]MISSED[/]", None: "unchecked"}[r.energy_met]
        out.print(
            f"  energy           predicted {predicted}"
            f"{' (calibrated)' if r.energy_calibrated else ' (LUT sum)'}, measured {measured}; "
            f"limit {r.energy_margin.limit:g} mJ (searched under {r.energy_margin.effective:.4f}): {met}"
        )
    out.print(
        f"  model            {r.model_path} (weights: {r.weights}); {r.queries} queries, "
        f"search {r.search_seconds:.2f} s ({r.search.method}, {r.search.evaluated} archs)"
    )
    if len(r.refine_rounds) > 1:
        for rr in r.refine_rounds:
            out.print(
                f"  round {rr.round}          {rr.arch}: predicted {rr.predicted_latency_ms:.4f} ms, "
                f"measured {rr.measured_latency_ms:.4f} ms ({'met' if rr.met else 'missed'}); {rr.action}"
            )
    if r.final_training:
        ft = r.final_training
        acc = f"; validation fp32 {ft['accuracy']:.2f} %" if ft.get("accuracy") is not None else ""
        out.print(
            f"  final training   {ft['name']} schedule ({ft['schedule']['epochs']} epoch(s), "
            f"{ft['device']}{', found finished' if ft['cached'] else ''}){acc}"
        )
    if r.program_accuracy:
        both = r.program_accuracies or {r.program_accuracy["dtype"]: r.program_accuracy["top1_pct"]}
        figs = ", ".join(f"{d} {v:.2f} %" for d, v in sorted(both.items()))
        out.print(f"  program accuracy {figs} (ExecuTorch, validation split)")
    if r.weights == "random":
        note("note: model.pte has random (seeded) weights: a latency skeleton, not an accurate model")
