"""Threads searched with the arch: ``adapt --threads 1,2`` against each fixed thread count, same limit.

On this machine (``local-cpu`` of the repository's devices.toml, its real measurement policy),
macro-cifar10 with its table oracle, one LUT for every run (a fresh one in the chamlab cache):

1. ``chamlab adapt --threads 1,2 --latency pNN`` profiles both thread counts' rows into the LUT,
   calibrates each, searches (arch, threads) jointly, exports the winner and measures it at its
   thread count. Its ``latency_limit_ms`` (the percentile over every (arch, threads) pair) is the
   limit of the runs below.
2. ``chamlab adapt --threads 1`` and ``--threads 2`` at that limit in ms, on the same LUT (its rows
   and calibrations reused: nothing is measured but the winners), each into its own folder.

Every run has the same budget and seed. Per run: the winner's arch and thread count, predicted and
oracle (table) accuracy, predicted and measured latency (median of 3 separate runs), the limit met or
not, and the run's seconds. The question: does searching the thread count find a winner at least as
accurate as the best fixed thread count, measured under the same limit?

    .venv/bin/python -m bench.threads_adapt [--latency p40] [--budget 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import RESULTS, write_result

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ROOT / "devices.toml"
TARGET = "local-cpu"
SPACE = "macro-cifar10"


def adapt(work: Path, name: str, threads: str, latency: str, args: argparse.Namespace) -> dict[str, Any]:
    """One ``chamlab adapt --json`` run into ``work/name``; its result plus the wall time."""
    exe = shutil.which("chamlab", path=str(Path(sys.executable).parent)) or "chamlab"
    cmd = [
        exe, "adapt", "--target", TARGET, "--devices", str(DEVICES), "--space", SPACE, "--latency", latency,
        "--threads", threads, "--lut", str(work / "lut.parquet"), "--out", str(work / name),
        "--budget", str(args.budget), "--seed", str(args.seed), "--json",
    ]  # fmt: skip
    command = "chamlab " + " ".join(cmd[1:])
    done = work / name / "result.json"
    wall: float | None = None
    if args.resume and done.is_file():  # a finished run of an interrupted benchmark: its result
        print(f"{name}: kept {done}", flush=True)
        r = json.loads(done.read_text())
    else:
        print(command, flush=True)
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if res.returncode == 2:  # bad input: e.g. nothing predicted under the limit at that thread count
            lines = [x for x in res.stderr.splitlines() if x.startswith("error: ")] or [res.stderr.strip()]
            error = lines[0].removeprefix("error: ")
            print(f"{name}: exit 2: {error}", flush=True)
            return {"command": command, "threads": threads.replace(",", ", "), "error": error, "wall_s": wall}
        if res.returncode != 0:
            raise SystemExit(f"{name}: exit {res.returncode}\n{res.stderr}")
        r = json.loads(res.stdout)
    return {
        "command": command,
        "threads": r["threads"],
        "arch": r["arch"],
        "predicted_accuracy": r["predicted_accuracy"],
        "oracle_accuracy": r["oracle_accuracy"],
        "accuracy_known": r["accuracy_known"],
        "latency_limit_ms": r["latency_limit_ms"],
        "search_limit_ms": r["search_limit_ms"],
        "predicted_latency_ms": r["predicted_latency_ms"],
        "measured_latency_ms": r["measured_latency_ms"],
        "measured_runs_ms": r["measured_runs_ms"],
        "measured_threads": r.get("measured_threads"),
        "constraint_met": r["constraint_met"],
        "calibrated": r["calibrated"],
        "spread_pct": r["margin"]["spread_pct"],
        "queries": r["queries"],
        "profiled_ops": r["profiled_ops"],
        "per_threads": r.get("per_threads"),
        "refine_rounds": len(r["refine_rounds"]),
        "seconds": r["seconds"],
        "wall_s": wall,
        "load_avg_after": os.getloadavg() if wall is not None else None,  # None: a kept run's is unknown
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", default="p40", help="the joint run's limit (ms or pNN)")
    p.add_argument("--budget", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "threads_adapt.json")
    p.add_argument(
        "--resume", action="store_true", help="keep the LUT and the finished runs of an interrupted benchmark"
    )
    args = p.parse_args()
    from chamlab.core.files import cache_root

    work = cache_root() / "bench" / "threads_adapt"
    if work.exists() and not args.resume:
        shutil.rmtree(work)  # a fresh LUT: the joint run profiles and calibrates both thread counts
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Any] = {}
    runs["joint 1,2"] = adapt(work, "joint", "1,2", args.latency, args)
    limit = f"{runs['joint 1,2']['latency_limit_ms']:.6g}"
    for t in ("1", "2"):
        runs[f"fixed {t}"] = adapt(work, f"fixed-{t}", t, limit, args)
    for name, r in runs.items():
        if "error" in r:
            print(f"{name:10} exit 2: {r['error']}", flush=True)
            continue
        print(
            f"{name:10} {r['threads']} thread(s) {r['arch']}: "
            f"predicted accuracy {r['predicted_accuracy']:.3f} "
            f"(table {r['oracle_accuracy']:.3f}), predicted {r['predicted_latency_ms']:.4f} ms, measured "
            f"{r['measured_latency_ms']:.4f} ms, limit {r['latency_limit_ms']:.4f} ms "
            f"{'met' if r['constraint_met'] else 'MISSED'}",
            flush=True,
        )
    payload = {
        "args": {"latency": args.latency, "budget": args.budget, "seed": args.seed},
        "target": TARGET,
        "space": SPACE,
        "limit_ms": float(limit),
        "runs": runs,
    }
    print(f"wrote {write_result('threads_adapt', payload, args.out)}")


def render(r: dict[str, Any], env: str) -> list[str]:
    """The section of docs/benchmarks.md (bench/report.py)."""
    a = r["args"]
    out = [
        "## Threads searched with the arch: `adapt --threads 1,2` against each fixed thread count",
        "",
        f"`python -m bench.threads_adapt --latency {a['latency']} --budget {a['budget']} --seed {a['seed']}`",
        "",
        env,
        "",
        f"{r['space']} on `{r['target']}` (this machine, its devices.toml measurement policy), table oracle, "
        f"one LUT for all runs (the joint run profiled and calibrated both thread counts; the fixed runs "
        f"reused its rows and calibrations). The joint run's `--latency {a['latency']}` (the percentile over "
        f"every (arch, threads) pair) resolved to {r['limit_ms']:.4f} ms, the limit of the fixed runs. "
        "Measured: median p50 of 3 separate runs of the exported winner at its thread count.",
        "",
        "| run | threads | arch | predicted accuracy | table accuracy | predicted ms | measured ms | "
        "limit met | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, x in r["runs"].items():
        if "error" in x:
            out.append(f"| {name} | {x['threads']} | exit 2: {x['error']} | | | | | | |")
            continue
        out.append(
            f"| {name} | {x['threads']} | `{x['arch']}` | {x['predicted_accuracy']:.3f} | "
            f"{x['oracle_accuracy']:.3f} | {x['predicted_latency_ms']:.4f} | "
            f"{x['measured_latency_ms']:.4f} | "
            f"{'yes' if x['constraint_met'] else 'no'} | {x['seconds']['total']:.0f} |"
        )
    loads = [f"{n} {x['load_avg_after'][0]:.1f}" for n, x in r["runs"].items() if x.get("load_avg_after")]
    if loads:
        out += ["", "Load average (1 min) at the end of each run: " + ", ".join(loads) + "."]
    if r.get("note"):
        out += ["", r["note"]]
    rounds = [f"{n} {x['refine_rounds']}" for n, x in r["runs"].items() if "refine_rounds" in x]
    out += [
        "",
        "Measured rounds per run (1: the first winner met the limit; more: verify-and-refine rounds, whose "
        "refitted calibration stays in the shared LUT, so a later run starts from it): "
        + ", ".join(rounds)
        + ".",
    ]
    joint = r["runs"].get("joint 1,2", {})
    per = joint.get("per_threads") or []
    if per:
        out += [
            "",
            "The joint run's best candidate per thread count (its constrained search, before measurement): "
            + "; ".join(
                f"{p['threads']} thread(s): `{p['arch']}`, predicted accuracy {p['predicted_accuracy']:.3f}, "
                f"{p['predicted_latency_ms']:.4f} ms under a search limit of {p['search_limit_ms']:.4f} ms"
                if p["arch"]
                else f"{p['threads']} thread(s): {p['note']}"
                for p in per
            )
            + ".",
        ]
    return out


if __name__ == "__main__":
    main()
