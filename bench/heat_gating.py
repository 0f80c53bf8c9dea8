"""Temperature-gated measurement on a simulated hot device: how many throttled windows reach the LUT
with and without the gate, and what the gate costs in wall time (this machine has no thermal zone and
no cpufreq tree, so the device is simulated).

    python -m bench.heat_gating [--ops 6] [--executions 500] [--repeats 1] [--out PATH]

The device is an ``executor_runner`` device on the local transport whose runner is the stand-in of the
tests (``tests/agent/standin_executor_runner.py``: the C++ runner's flags, real ETDumps through the
ExecuTorch Python runtime), with the sysfs of ``tests/heatsim.py``'s ``ThermalSim``: one zone that heats
by ``--heat`` C per 1000 executions of the stand-in (the work, whatever the load) and cools
towards ``--ambient`` with a time constant ``--tau`` (wall time); every CPU drops from 2.0 to 1.2 GHz
from ``--trip`` C on. ``--ops`` conv ops are profiled back to back (``--executions`` executions each, no
warm-up call) under three settings, each on a fresh simulation starting at ambient temperature:

* ``off``: no heat keys (what chamlab did before): nothing waits, nothing is checked;
* ``check``: ``min_freq_khz = "max"``: throttled windows are re-measured (after ``cooldown_s``, at most
  ``retries`` times), no waiting;
* ``gate``: ``cool_below_c = --gate`` and ``min_freq_khz = "max"``.

The truth does not come from chamlab: the stand-in logs when each call executed (monotonic clock)
and the simulation when its CPUs were throttled, so every window is known to be throttled or not;
the window kept in the LUT is the one the result names (``kept_window``). ``max_cv`` is set high
(1.0, as ``max_drift``) so that noise rarely makes windows re-measured.
Writes ``bench/results/heat_gating.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import write_result
from chamlab.agent.measure import MeasurePolicy
from chamlab.host.devices.session import Task
from chamlab.host.devices.transports import LocalConfig
from chamlab.host.luts.lut import Lut, add_rows
from chamlab.host.measurement.pipeline import resolve_run, run_items
from chamlab.host.measurement.profiling import lut_row
from chamlab.operators import ConvBNAct
from chamlab.operators.export import ArtifactCache, ExportItem, export_all
from tests.heatsim import ThermalSim

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "agent" / "standin_executor_runner.py"
SETTINGS: dict[str, dict[str, Any]] = {
    "off": {},
    "check": {"min_freq_khz": "max"},
    "gate": {"min_freq_khz": "max"},  # + cool_below_c from --gate
}


def ops(n: int) -> list[ExportItem]:
    """``n`` distinct conv ops of a few ms each."""
    sizes = [(32, 64, 32), (64, 64, 28), (32, 96, 28), (48, 64, 32), (64, 32, 32), (32, 64, 28)]
    out = []
    for i in range(n):
        cin, cout, hw = sizes[i % len(sizes)]
        out.append(ExportItem.for_op(ConvBNAct(cin, cout, 3, 1, hw + 2 * (i // len(sizes)), hw)))
    return out


def calls_by_window(log: Path, digest: str) -> list[tuple[float, float]]:
    """The stand-in's measured calls of one op, in order: (start, end) of its executions."""
    out = []
    for line in log.read_text().splitlines():
        t0, t1, _cwd, etdump = line.split(" ", 3)
        if etdump == f"out/{digest}.etdp":
            out.append((float(t0), float(t1)))
    return sorted(out)


def run_setting(name: str, args: argparse.Namespace, items: list[ExportItem], tmp: Path) -> dict[str, Any]:
    folder = tmp / f"{name}-{time.monotonic_ns()}"
    folder.mkdir()
    busy, log = folder / "busy", folder / "calls.log"
    os.environ["CHAMLAB_STANDIN_BUSY"] = str(busy)
    os.environ["CHAMLAB_STANDIN_LOG"] = str(log)
    binary = folder / "executor_runner"
    binary.write_text(f'#!/bin/sh\nexec {sys.executable} {STANDIN} "$@"\n')
    policy = MeasurePolicy(
        num_executions=args.executions,
        warmup_runs=0,
        warmup_ms=0,
        min_time_ms=0,
        max_cv=1.0,
        max_drift=1.0,
        max_temp_rise_c=100.0,
        retries=args.retries,
        cooldown_s=args.cooldown,
    )
    heat = dict(SETTINGS[name])
    if name == "gate":
        heat["cool_below_c"] = args.gate
    sim = ThermalSim(
        folder / "sys",
        busy,
        start_c=args.ambient,
        ambient_c=args.ambient,
        tau_s=args.tau,
        heat_c_per_kexec=args.heat,
        trip_c=args.trip,
    )
    load_start = os.getloadavg()
    with sim:
        device = LocalConfig(
            name="hot-phone",
            runner="executor_runner",
            runner_path=str(binary),
            workdir=str(folder / "target"),
            measure=policy,
            cpufreq_root=str(sim.cpufreq_root),
            thermal_root=str(sim.thermal_root),
            **heat,
        )
        spec = resolve_run(device)
        t0 = time.perf_counter()
        run = run_items(spec, items, sleep=time.sleep)
        wall_s = time.perf_counter() - t0
        lut_path = folder / "lut.parquet"
        add_rows(lut_path, [lut_row(spec, m, run.run_id) for m in run.measured.values()])
        run.finish()
    lut = Lut.read(lut_path)
    rows = {r["op_key"]: r for r in lut.table.to_pylist()}
    per_op = []
    for item in items:
        m = run.measured.get(item)
        if m is None:
            per_op.append({"op": item.name, "failed": True})
            continue
        windows = calls_by_window(log, Task(item.name, m.artifact).digest)
        truth = [sim.throttled_between(a, b) for a, b in windows]
        kept = int(m.result.get("kept_window", 0))
        row = rows[item.name]
        per_op.append(
            {
                "op": item.name,
                "windows": len(windows),
                "throttled_windows_true": sum(truth),
                "kept_window": kept,
                "kept_throttled_true": truth[kept] if kept < len(truth) else None,
                "lut_windows": row["windows"],
                "lut_throttled": row["throttled"],
                "lut_throttled_windows": row["throttled_windows"],
                "lut_window_temps_c": row["window_temps_c"],
                "lut_cool_wait_s": row["cool_wait_s"],
                "p50_ms": row["p50_ms"],
            }
        )
    done = [o for o in per_op if not o.get("failed")]
    thr_windows = sum(o["throttled_windows_true"] for o in done)
    kept_thr = sum(bool(o["kept_throttled_true"]) for o in done)
    labelled = [o for o in done if o["lut_throttled"] is not None]
    return {
        "setting": name,
        "heat_keys": heat,
        "ops": len(items),
        "failed_ops": len(items) - len(done),
        "windows": sum(o["windows"] for o in done),
        "throttled_windows": thr_windows,
        "kept_throttled": kept_thr,
        "kept_throttled_share": kept_thr / len(done) if done else None,
        "throttled_windows_reaching_lut": kept_thr / thr_windows if thr_windows else None,
        "label_agrees_with_truth": (
            sum(o["lut_throttled"] == o["kept_throttled_true"] for o in labelled) / len(labelled)
            if labelled
            else None
        ),
        "cool_wait_s": sum(o["lut_cool_wait_s"] or 0.0 for o in done),
        "wall_s": wall_s,
        "load_avg_start": load_start,
        "sim_throttled_s": sim.throttled_s,
        "sim_executions": sim.executions,
        "per_op": per_op,
    }


def render(r: dict[str, Any], env: str) -> list[str]:
    """The docs/benchmarks.md section of a results file."""
    a = r["args"]
    shown = ("ops", "executions", "repeats", "retries", "cooldown", "ambient", "tau", "heat", "trip", "gate")
    out = [
        "## Heat: temperature-gated measurement on a simulated hot device",
        "",
        "`python -m bench.heat_gating` (" + ", ".join(f"--{k} {a[k]}" for k in shown) + ")",
        "",
        env,
        "",
        "No thermal zone or cpufreq tree exists here, so the device is simulated (`tests/heatsim.py`): one "
        f"zone that heats by {a['heat']:g} C per 1000 executions of the stand-in executor_runner "
        f"and cools towards {a['ambient']:g} C with a {a['tau']:g} s time constant; every CPU drops "
        f"from 2.0 to 1.2 GHz from {a['trip']:g} C on. {a['ops']} conv ops are profiled back to back "
        f"({a['executions']} executions per window) under each setting, each on a fresh simulation: "
        "`off` (no heat keys: what chamlab did before), "
        '`check` (`min_freq_khz = "max"`: throttled windows re-measured after '
        f"{a['cooldown']:g} s, at most {a['retries']} times) and `gate` "
        f"(also `cool_below_c = {a['gate']:g}`). "
        "Whether a window was throttled is the simulation's truth (when its CPUs were throttled against "
        "when the stand-in executed), not chamlab's label. `max_cv` and `max_drift` are 1.0 so that noise "
        "rarely re-measures a window: windows beyond one per op in `off` are such noise (a heavily loaded "
        "machine).",
        "",
        "| setting | ops | windows | throttled windows | LUT rows from a throttled window | "
        "throttled windows reaching the LUT | LUT label = truth | wall s (mean) | vs off | waited s (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.0%}"

    for name, s in r["summary"].items():
        out.append(
            f"| {name} | {s['ops']} | {s['windows']} | {s['throttled_windows']} | "
            f"{s['kept_throttled']} ({pct(s['kept_throttled_share'])}) | "
            f"{pct(s['throttled_windows_reaching_lut'])} | {pct(s['label_agrees_with_truth'])} | "
            f"{s['wall_s_mean']:.0f} | {s['wall_vs_off']:.2f}x | {s['cool_wait_s_mean']:.0f} |"
        )
    loads = [run["load_avg_start"][0] for run in r["runs"] if "load_avg_start" in run]
    if loads:
        out += ["", f"Load average at the start of each setting: {min(loads):.1f} to {max(loads):.1f}."]
    out += [
        "",
        "The zone heats with the work done but cools in wall time, so a loaded machine (slower runner "
        "start-ups between windows, which let the zone cool) changes the figures; the comparison "
        "between settings within one run is what it shows. Nothing here was measured on a real device.",
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=6)
    ap.add_argument("--executions", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--cooldown", type=float, default=2.0, help="cooldown_s before a re-measure")
    ap.add_argument("--ambient", type=float, default=30.0)
    ap.add_argument("--tau", type=float, default=60.0, help="the zone's time constant (s)")
    ap.add_argument("--heat", type=float, default=24.0, help="C per 1000 executions")
    ap.add_argument("--trip", type=float, default=55.0, help="throttling from this temperature")
    ap.add_argument("--gate", type=float, default=36.0, help="cool_below_c of the gate setting")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    items = ops(args.ops)
    _, failures = export_all(items, "xnnpack", cache=ArtifactCache())
    if failures:
        raise SystemExit(f"export failed: {failures[0].error}")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chamlab-heat-") as tmp:
        for rep in range(args.repeats):
            for name in SETTINGS:
                print(f"repeat {rep + 1}/{args.repeats}: {name}", flush=True)
                r = run_setting(name, args, items, Path(tmp))
                r["repeat"] = rep
                runs.append(r)
                print(
                    f"  {r['kept_throttled']}/{r['ops']} kept windows throttled, "
                    f"{r['throttled_windows']}/{r['windows']} windows throttled, wall {r['wall_s']:.1f} s",
                    flush=True,
                )
    summary = {}
    for name in SETTINGS:
        mine = [r for r in runs if r["setting"] == name]
        ops_n = sum(r["ops"] - r["failed_ops"] for r in mine)
        thr = sum(r["throttled_windows"] for r in mine)
        kept = sum(r["kept_throttled"] for r in mine)
        agree = [r["label_agrees_with_truth"] for r in mine if r["label_agrees_with_truth"] is not None]
        summary[name] = {
            "ops": ops_n,
            "windows": sum(r["windows"] for r in mine),
            "throttled_windows": thr,
            "kept_throttled": kept,
            "kept_throttled_share": kept / ops_n if ops_n else None,
            "throttled_windows_reaching_lut": kept / thr if thr else None,
            "label_agrees_with_truth": statistics.fmean(agree) if agree else None,
            "wall_s_mean": statistics.fmean(r["wall_s"] for r in mine),
            "cool_wait_s_mean": statistics.fmean(r["cool_wait_s"] for r in mine),
        }
    off = summary["off"]["wall_s_mean"]
    for name in SETTINGS:
        summary[name]["wall_vs_off"] = summary[name]["wall_s_mean"] / off if off else None
    path = write_result(
        "heat_gating",
        {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "summary": summary,
            "runs": runs,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
