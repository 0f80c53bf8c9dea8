"""``chamlab farm run``: profile every selected device concurrently into DIR/<date>/ (docs/farm.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._common import DevicesOpt, JsonOpt, SpaceOpt, emit_json, err, handle_errors, registry

farm_app = typer.Typer(
    help="Nightly runs over a device farm: dated LUTs, drift against the previous good run, reports.",
    no_args_is_help=True,
)

_COLOUR = {"ok": "green", "partial": "yellow", "failed": "red", "skipped": "yellow"}


@farm_app.command("run")
@handle_errors
def run(
    space_name: SpaceOpt,
    devices: DevicesOpt = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="only devices with this tag (repeatable: any tag matches)"),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="farm folder (runs go in OUT/<YYYY-MM-DD>/)")
    ] = Path("farm"),
    arch: Annotated[
        list[str] | None,
        typer.Option(
            "--arch", "-a", help="profile only the ops of this arch (repeatable; default: as profile)"
        ),
    ] = None,
    drift_threshold: Annotated[
        float,
        typer.Option(
            "--drift-threshold", help="flag a device whose median |p50 drift| exceeds this many percent"
        ),
    ] = 10.0,
    keep_days: Annotated[
        int, typer.Option("--keep-days", min=1, help="remove dated runs older than this")
    ] = 30,
    executor: Annotated[
        str, typer.Option("--executor", help="inprocess (threads, default) or ray (one task per device)")
    ] = "inprocess",
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster address (default: start a private one-node cluster)"),
    ] = None,
    min_battery: Annotated[
        float, typer.Option("--min-battery", help="skip a device whose battery is below this %")
    ] = 20.0,
    max_start_temp: Annotated[
        float,
        typer.Option("--max-start-temp", help="skip a device hotter than this (degrees C) at the start"),
    ] = 45.0,
    night: Annotated[
        str | None,
        typer.Option(
            "--night",
            help="label the run with this UTC night, YYYY-MM-DD (default: today): a missed night, or a "
            "re-run that replaces the night's entries",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Profile every selected device concurrently into OUT/<YYYY-MM-DD>/<device>.parquet, diff each
    against its previous good run, write summary.json, report.md and report.html, point OUT/latest
    at the newest night and rebuild OUT/index.html (every night and device, a drift trend per device).
    Exit 0 all good, 1 a device failed, was partial or skipped, 3 drift only."""
    from chamlab.host.workflows.farm import DeviceOutcome, run_farm

    def on_device(o: DeviceOutcome) -> None:
        colour = _COLOUR.get(o.status, "red")
        what = f"{o.measured_ops} measured, {o.already_ops} already" if o.status != "skipped" else ""
        why = f": {o.error}" if o.error else ""
        err.print(
            f"[{colour}]{o.status:<7}[/] {escape(o.device)} {escape(what)}{escape(why)} ({o.seconds:.1f} s)",
            soft_wrap=True,
        )

    report = run_farm(
        registry(devices),
        space_name,
        out=out,
        only=only or (),
        archs=arch,
        drift_threshold_pct=drift_threshold,
        keep_days=keep_days,
        executor=executor,
        address=address,
        min_battery_pct=min_battery,
        max_start_temp_c=max_start_temp,
        night=night,
        on_device=on_device,
    )
    if as_json:
        emit_json(report.to_json())
    for problem in report.write_errors:
        err.print(f"[red]not written[/]: {escape(problem)}", soft_wrap=True)
    drifted = [n for n, e in report.devices.items() if (e.get("drift") or {}).get("drifted")]
    if drifted:
        err.print(f"[yellow]drift beyond {drift_threshold:g} %[/]: {escape(', '.join(drifted))}")
    latest = os.readlink(out / "latest") if (out / "latest").is_symlink() else report.date
    err.print(
        f"report: {escape(str(report.run_dir / 'report.html'))} (latest -> {escape(latest)}); "
        f"all nights: {escape(str(out / 'index.html'))}"
        + (f"; removed old runs {', '.join(report.removed)}" if report.removed else ""),
        soft_wrap=True,
    )
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@farm_app.command("index")
@handle_errors
def index(
    out: Annotated[Path, typer.Option("--out", "-o", help="farm folder (`farm run --out`)")] = Path("farm"),
) -> None:
    """Rebuild OUT/index.html from the nights' summary.json files (farm run does this after each run):
    every night and device with links to each night's report, and per device the drift trend night by
    night. Nights whose summary.json is missing or unreadable are listed with the reason. Exit 2 when
    OUT is not a folder."""
    from chamlab.host.workflows.farm_index import write_index

    path = write_index(out)
    err.print(f"index: {escape(str(path))}", soft_wrap=True)
