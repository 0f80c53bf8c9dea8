"""Render docs/benchmarks.md from bench/results/*.json (so every number there comes from a run).

python bench/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _env(r: dict) -> str:
    e = r["environment"]
    return (
        f"_Run {e['when']} at commit `{e['commit']}` on {e['cpus']} CPUs ({e['machine']}), "
        f"torch {e['torch']}, "
        f"executorch {e['executorch']}; load average at start {e['load_avg_at_start'][0]:.2f}._"
    )


def _weights(run: dict) -> tuple[list[float], float]:
    """fp32 weight MiB per pair (recorded by newer runs, else derived from the arch) and corr(error, MiB)."""
    from chamlab.chamnet.spaces import SPACES

    space = SPACES.get(run["space"])
    mib = [p.get("weights_mib", 4 * space.params(space.parse(p["arch"])) / 2**20) for p in run["pairs"]]
    corr = float(np.corrcoef(mib, [p["error_pct"] for p in run["pairs"]])[0, 1])
    return mib, corr


def fidelity(r: dict) -> list[str]:
    out = [
        "## Latency fidelity: LUT prediction vs measured whole network",
        "",
        "`python bench/latency_fidelity.py` ("
        + ", ".join(f"--{k} {v}" for k, v in r["args"].items() if k != "out" and v)
        + ")",
        "",
        _env(r),
        "",
        "Each run profiles every op into a fresh LUT (`--force`), then measures the networks in one "
        "session. *Corrected* is chamlab's default prediction (LUT sum minus (n_ops - 1) invocation "
        "overheads); *raw* is the paper's plain LUT sum; *stable only* drops networks whose "
        "measurement stayed flagged unstable.",
        "",
        "| space | threads | prediction | n | within ±10 % | within ±5 % | MAPE % | mean error % "
        "| max abs error % | Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for label, key in (
            ("corrected", "summary"),
            ("raw sum", "summary_raw_sum"),
            ("corrected, stable only", "summary_stable_only"),
        ):
            s = run.get(key)
            if not s:
                continue
            out.append(
                f"| {run['space']} | {run['threads']} | {label} | {s['n']} | {s['within_10pct']:.0%} | "
                f"{s['within_5pct']:.0%} | {s['mape_pct']:.1f} | {s['mean_error_pct']:+.1f} | "
                f"{s['max_abs_error_pct']:.1f} | {s['spearman']:.3f} |"
            )
    out += [
        "",
        "| space | threads | ops profiled | invocation overhead ms | profile s | measure networks s "
        "| weights MiB (min-max) | corr(error, weights) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        ov = run["invocation_overhead_ms"]
        ov_text = "-" if ov is None else f"{ov:.4f}"
        mib, corr = _weights(run)
        out.append(
            f"| {run['space']} | {run['threads']} | {run['ops_profiled']} | {ov_text} | "
            f"{run['profile_s']:.0f} | {run['networks_measure_s']:.0f} | {min(mib):.1f}-{max(mib):.1f} | "
            f"{corr:+.2f} |"
        )
    out += [
        "",
        "*corr(error, weights)*: Pearson correlation of the corrected prediction's error with the network's "
        "fp32 weight size (params x 4 bytes, from the arch); negative means networks with more weights run "
        "slower than the sum of their cache-warm ops.",
    ]
    return out


def cost(r: dict) -> list[str]:
    out = [
        "## Profiling cost: the macro-cifar10 LUT",
        "",
        "`python bench/profiling_cost.py`",
        "",
        _env(r),
        "",
        "| cache | ops | total s | export s | export s/op | measure s | measure s/op | unstable ops |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in ("cold_cache", "warm_cache"):
        c = r[label]
        out.append(
            f"| {label.replace('_', ' ')} | {c['ops']} | {c['total_s']:.1f} | {c['export_s']:.1f} | "
            f"{c['export_s_per_op']:.2f} | {c['measure_s']:.1f} | {c['measure_s_per_op']:.2f} | "
            f"{c['unstable_ops']} |"
        )
    out += [
        "",
        "Export s/op is over the ops exported in that run (all of them cold, none warm); exports run in "
        f"{r['cpus']} worker processes. Measure s/op includes the runner process start-up.",
    ]
    return out


def stability(r: dict) -> list[str]:
    s = r["summary"]
    out = [
        "## Stability: repeated measurements of the same op",
        "",
        f"`python bench/stability.py --repeats {r['args']['repeats']} --threads {r['args']['threads']}`",
        "",
        _env(r),
        "",
        f"Median CV over the ops: **{s['median_op_cv']:.2%}** (target <= 2 %), max {s['max_op_cv']:.2%}; "
        f"whole network: {s['network_cv']:.2%}.",
        "",
        "| subject | mean p50 ms | CV of the p50s | repeats flagged unstable |",
        "|---|---|---|---|",
    ]
    for sub in r["subjects"]:
        out.append(
            f"| `{sub['subject']}` | {sub['mean_p50_ms']:.4f} | {sub['cv']:.2%} | "
            f"{sub['unstable_repeats']}/{len(sub['p50s_ms'])} |"
        )
    return out


def runtime_import(r: dict) -> list[str]:
    out = [
        "## Runner start-up: importing the ExecuTorch runtime",
        "",
        f"`python bench/runtime_import.py --repeats {r['args']['repeats']}`",
        "",
        _env(r),
        "",
        "| what a fresh interpreter imports | median s |",
        "|---|---|",
    ]
    out += [f"| {v['variant']} | {v['median_s']:.2f} |" for v in r["variants"]]
    return out


#: what no benchmark here measures, and why (kept when the file is regenerated)
NOT_MEASURED = """## Not measured here: energy, CUDA, batch > 1

This machine has no energy counter (no RAPL under `/sys/class/powercap`, an empty
`/sys/class/power_supply`, no NVML) and no GPU, so no energy or CUDA figure exists in this file. What
the tests check instead (`tests/agent/test_power.py`, `tests/host/test_power_trace.py`): the shipped
readers and the above-idle integration recover an injected power model within +/-10% from prepared
sysfs trees (RAPL with counter wrap-around, a 1 Hz fuel gauge with either sign convention), and the
runner and `chamlab profile` carry the energy and the raw trace through to Parquet. The `cuda`
backend's GPU test (`tests/agent/test_torch_runner.py`, marker `gpu`) was skipped here: no CUDA
device. Batch sizes other than 1 are supported by `profile`/`predict`/`measure --batch N` but have
not been benchmarked (the latency-fidelity figures above are batch 1). CUDA figures measured
elsewhere (an H200, before this backend existed) are in the project notes, not here.
"""


def main() -> None:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python bench/report.py` from `bench/results/*.json`; re-run `make bench` to refresh. "
        "Timings depend on the machine and on its neighbours (this CI machine is a shared 2-core VM); "
        "ratios measured within one run are the meaningful figures.",
        "",
    ]
    renders = (
        ("latency_fidelity", fidelity),
        ("profiling_cost", cost),
        ("stability", stability),
        ("runtime_import", runtime_import),
    )
    for name, render in renders:
        r = _load(name)
        parts += (render(r) if r else [f"## {name}", "", "_not run yet_"]) + [""]
    parts.append(NOT_MEASURED)
    DOC.write_text("\n".join(parts))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
