"""``chamlab lut ...``: merge, validate, show and diff LUT files (library:
:mod:`chamlab.host.luts.lifecycle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import JsonOpt, emit_json, handle_errors, note, out

lut_app = typer.Typer(
    name="lut",
    help="Merge, validate, show and diff LUT files (see docs/lut-format.md).",
    no_args_is_help=True,
)

LutArg = Annotated[Path, typer.Argument(help="LUT file (.parquet)", show_default=False)]


POLICIES = ("newest", "pooled", "fail")  # chamlab.host.luts.lifecycle.Policy, without importing pyarrow here


@lut_app.command()
@handle_errors
def merge(
    inputs: Annotated[list[Path], typer.Argument(help="LUT files to merge", show_default=False)],
    output: Annotated[Path, typer.Option("--out", "-o", help="merged LUT to write (atomically)")],
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            help="a row key measured by several runs: newest (latest measured_at wins), pooled "
            "(samples of every run combined, stats re-derived) or fail (exit 2, list them)",
        ),
    ] = "newest",
    force: Annotated[
        bool, typer.Option("--force", help="replace an existing --out that is not one of the inputs")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Merge LUTs into one: union of rows, conflicts resolved by --policy, provenance and calibration
    metadata of every input kept. Any bad input: exit 2 naming it, nothing written. An existing --out
    must be one of the inputs (merge into it) unless --force."""
    from chamlab.core.errors import InputError
    from chamlab.host.luts.lifecycle import Policy, merge_files

    if policy not in POLICIES:
        raise InputError(f"--policy {policy!r} is unknown; choose one of {', '.join(POLICIES)}")
    report = merge_files(inputs, output, Policy(policy), force=force)
    if as_json:
        emit_json(report.to_json())
        return
    note(
        f"merged {len(report.inputs)} LUT(s), {report.rows_in} rows -> {report.rows_out} rows in "
        f"{report.out} ({report.conflicts} conflicting row key(s), policy {report.policy.value}; "
        f"{report.runs} run(s) in provenance; {report.seconds:.2f} s)"
    )


@lut_app.command()
@handle_errors
def validate(path: LutArg, as_json: JsonOpt = False) -> None:
    """Check a LUT: schema, value ranges, duplicate keys, NaNs, unknown op keys. Exit 0 valid, 2 invalid
    (every problem listed)."""
    from chamlab.host.luts.lifecycle import validate_file

    report = validate_file(path)
    if as_json:
        emit_json(report.to_json())
    elif report.valid:
        out.print(f"{path}: valid (schema v{report.schema_version}, {report.rows} rows)")
    else:
        note(f"{path}: {len(report.problems)} problem(s)")
        for p in report.problems:
            note(f"  - {p}")
    if not report.valid:
        raise typer.Exit(2)


@lut_app.command()
@handle_errors
def show(
    path: LutArg,
    target: Annotated[str | None, typer.Option("--target", "-t", help="only this device")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="only this backend")] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-j", min=1, help="only N threads")] = None,
    op_type: Annotated[str | None, typer.Option("--op-type", help="only this op type")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="at most N rows (0: all)")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Print a LUT as a table (filters combine; sorted by measurement set, then op key)."""
    from chamlab.host.luts.lifecycle import show_rows

    res = show_rows(
        path, device=target, backend=backend, threads=threads, op_type=op_type, limit=limit or None
    )
    if as_json:
        emit_json(res.to_json())
        return
    runs = len({p.get("run_id") for p in res.provenance if isinstance(p, dict)})
    out.print(f"[bold]{path}[/]: schema v{res.schema_version}, {res.total_rows} rows, {runs} run(s)")
    for s in res.sets:
        out.print(f"  set: {s.describe()}")
    t = Table(title=f"{len(res.rows)} of {res.matched_rows} matching rows")
    t.add_column("op", overflow="fold", min_width=24)
    for col in ("target", "thr", "p10 ms", "p50 ms", "p90 ms", "n", "cv", "run", "recipe", "deleg."):
        left = col in ("target", "run", "recipe", "deleg.")
        t.add_column(col, justify="left" if left else "right", no_wrap=True)
    for r in res.rows:
        cv = f"{r['robust_cv']:.3f}" if r["robust_cv"] is not None else "-"
        delegated = {None: "-", True: "yes", False: "[bold yellow]NO[/]"}[r["delegated"]]
        t.add_row(
            r["op_key"] + (" [yellow](unstable)[/]" if r["unstable"] else ""),
            f"{r['device']}/{r['backend']}/{r['dtype']}",
            str(r["threads"]),
            f"{r['p10_ms']:.4f}",
            f"{r['p50_ms']:.4f}",
            f"{r['p90_ms']:.4f}",
            str(r["n_samples"]),
            cv,
            r["run_id"] or "-",
            r["quant_recipe"] or "-",
            delegated,
        )
    out.print(t)


@lut_app.command()
@handle_errors
def diff(
    old: LutArg,
    new: LutArg,
    plot: Annotated[Path | None, typer.Option("--plot", help="write a PNG of the drift per op")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="list the N largest drifts")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Per-op drift of p50 in % from OLD to NEW on the row keys both hold, with a summary."""
    from chamlab.host.luts.lifecycle import diff_luts

    report = diff_luts(old, new, plot=plot)
    if as_json:
        emit_json(report.to_json())
        return
    s = report.summary()
    if s["common_ops"]:
        out.print(
            f"{s['common_ops']} common ops: median drift {s['median_drift_pct']:+.2f} % "
            f"(median |drift| {s['median_abs_drift_pct']:.2f} %), max |drift| {s['max_abs_drift_pct']:.2f} % "
            f"({s['max_drift_op']})"
        )
    else:
        out.print("no row key is in both LUTs")
    out.print(f"only in {old}: {s['only_in_old']} ops; only in {new}: {s['only_in_new']} ops")
    for dev, c in report.devices.items():
        if not c["same_device"]:
            note(f"warning: {dev} is {c['old_identity']} in {old} but {c['new_identity']} in {new}")
        elif c["old_release"] != c["new_release"]:
            note(f"{dev}: OS release {c['old_release']} -> {c['new_release']} (same device)")
    rows = sorted(report.ops.to_pylist(), key=lambda r: -abs(r["drift_pct"]))[:limit]
    if rows:
        t = Table(title=f"largest drifts ({len(rows)} of {s['common_ops']})")
        t.add_column("op", overflow="fold", min_width=24)
        for col in ("target", "thr", "old p50 ms", "new p50 ms", "drift %"):
            t.add_column(col, justify="left" if col == "target" else "right", no_wrap=True)
        for r in rows:
            t.add_row(
                r["op_key"],
                f"{r['device']}/{r['backend']}/{r['dtype']}",
                str(r["threads"]),
                f"{r['old_p50_ms']:.4f}",
                f"{r['new_p50_ms']:.4f}",
                f"{r['drift_pct']:+.2f}",
            )
        out.print(t)
    if report.plot:
        note(f"plot written to {report.plot}")
