"""``profile --adaptive`` on real chamnet-mbv2 ops: how much it measures, and what interpolation costs.

    python -m bench.adaptive_profile [--threads 1] [--seed 0] [--round-ops 8] [--max-ops N]
                                     [--target local-cpu] [--out PATH]

The archs of interest are the held-apart chamnet-mbv2 archs of ``bench/latency_fidelity.py`` at the
same thread count (read from its results file): its LUT (``bench/results/fidelity-lut-chamnet-mbv2-
<threads>t.parquet``) holds every one of their ops, and it measured each whole network under the noise
protocol. So run that benchmark first.

1. ``profile --adaptive`` (:func:`chamlab.host.api.profile_adaptive`, the device's measurement policy)
   over those archs into a fresh LUT, timed: candidate ops, ops measured (held-apart ones included),
   ops skipped, every round's held-apart median error, why it stopped.
2. Per arch, the *corrected* prediction (LUT sum minus (n_ops - 1) invocation overheads; no
   calibration, so only the ops differ) from the adaptive LUT with the skipped ops interpolated by the
   op-level model, and from the full LUT; each against the fidelity benchmark's measured median, and
   the adaptive one against the full one (what skipping ops costs, apart from the calibration that
   corrects both alike).

Writes ``bench/results/adaptive_profile.json`` with the load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench._common import RESULTS, write_result
from bench.latency_fidelity import summarize  # the same error summary as the fidelity benchmark

SPACE = "chamnet-mbv2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--round-ops", type=int, default=8)
    ap.add_argument("--max-ops", type=int, default=None)
    ap.add_argument("--target", default="local-cpu")
    ap.add_argument("--fidelity", type=Path, default=RESULTS / "latency_fidelity.json")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from chamlab.chamnet.spaces import SPACES
    from chamlab.host import api
    from chamlab.host.luts.lut import Lut
    from chamlab.host.prediction.adaptive import AdaptivePolicy, profile_adaptive
    from chamlab.host.prediction.predict import LatencyModel

    if not args.fidelity.exists():
        raise SystemExit(f"{args.fidelity} is missing: run bench/latency_fidelity.py first")
    fid = json.loads(args.fidelity.read_text())
    runs = [r for r in fid["runs"] if r["space"] == SPACE and r["threads"] == args.threads]
    if not runs:
        raise SystemExit(f"{args.fidelity} has no {SPACE} run at {args.threads} thread(s)")
    pairs = runs[0]["pairs"]
    full_path = RESULTS / f"fidelity-lut-{SPACE}-{args.threads}t.parquet"
    if not full_path.exists():
        raise SystemExit(f"{full_path} is missing: run bench/latency_fidelity.py first")

    space = SPACES.get(SPACE)
    archs = [space.parse(p["arch"]) for p in pairs]
    truth = [p["measured_median_ms"] for p in pairs]
    device = api.load_registry().get(args.target)
    spec = api.resolve_run(device, threads=args.threads)
    mset = spec.measurement_set
    lut_path = RESULTS / f"adaptive-lut-{SPACE}-{args.threads}t.parquet"
    lut_path.unlink(missing_ok=True)  # a fresh LUT: every op this run holds, it measured

    load_start = os.getloadavg()
    policy = AdaptivePolicy(round_ops=args.round_ops, max_ops=args.max_ops, seed=args.seed)
    t0 = time.perf_counter()
    report, rounds = profile_adaptive(
        spec, space, archs, out=lut_path, policy=policy, command="bench/adaptive_profile.py"
    )
    seconds = time.perf_counter() - t0

    adaptive = LatencyModel(space, Lut.read(lut_path), lut_path, mset, interpolate=True)
    full = LatencyModel(space, Lut.read(full_path), full_path, mset)
    # neither LUT holds a calibration (the fidelity benchmark keeps its own in memory), so both are
    # the default prediction without one: the LUT sum less the invocation overheads
    if adaptive.found is not None or full.found is not None:
        raise SystemExit("a LUT here holds a calibration: this benchmark compares uncalibrated sums")
    per_arch = []
    for arch, p, t in zip(archs, pairs, truth, strict=True):
        pa, pf = adaptive.predict(arch), full.predict(arch)
        per_arch.append(
            {
                "arch": p["arch"],
                "measured_ms": t,
                "adaptive_ms": pa.latency_ms,
                "full_ms": pf.latency_ms,
                "interpolated_ops": pa.interpolated_ops,
                "ops": len(space.ops(arch)),
            }
        )
    result: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runner_affinity": getattr(device, "affinity", "") or None,
        "adaptive": report.to_json() | {"skipped": len(report.skipped)},
        "seconds": seconds,
        "export_s": sum(r.export_s for r in rounds),
        "measure_s": sum(r.measure_s for r in rounds),
        "full_lut_ops": len(Lut.read(full_path).p50_by_key(mset)),
        "summaries": {
            "adaptive_vs_measured": summarize([x["adaptive_ms"] for x in per_arch], truth),
            "full_vs_measured": summarize([x["full_ms"] for x in per_arch], truth),
            "adaptive_vs_full": summarize(
                [x["adaptive_ms"] for x in per_arch], [x["full_ms"] for x in per_arch]
            ),
        },
        "per_arch": per_arch,
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
    }
    path = write_result("adaptive_profile", result, args.out)
    a = result["adaptive"]
    print(
        f"adaptive: {a['measured_ops']} of {a['candidate_ops']} candidate ops measured "
        f"({a['heldout_ops']} held apart), {a['skipped']} skipped, stopped: {a['stopped']}, {seconds:.0f} s"
    )
    for k, s in result["summaries"].items():
        print(f"{k:>22}: within +/-10% {s['within_10pct']:.0%}, MAPE {s['mape_pct']:.1f}%, n={s['n']}")
    print(f"wrote {path}")


def render(r: dict[str, Any], env: str) -> list[str]:
    """The section of docs/benchmarks.md (bench/report.py)."""
    a = r["adaptive"]
    out = [
        "## Adaptive profiling on real chamnet-mbv2 ops",
        "",
        "`python -m bench.adaptive_profile` ("
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in r["args"].items() if v and k != "out")
        + ")",
        "",
        env,
        "",
        f"Archs of interest: the {len(r['per_arch'])} held-apart chamnet-mbv2 archs of the latency-fidelity "
        f"benchmark ({r['args']['threads']} thread(s)); the full LUT holds all {r['full_lut_ops']} ops it "
        "profiled. `profile --adaptive` into a fresh LUT measured "
        f"**{a['measured_ops']} of {a['candidate_ops']}** candidate ops ({a['heldout_ops']} held apart), "
        f"skipped {a['skipped']}, and stopped because: {a['stopped']}; "
        f"{r['seconds']:.0f} s in all (export {r['export_s']:.0f} s, measure {r['measure_s']:.0f} s). "
        f"Runner pinned to CPU(s): {r.get('runner_affinity') or 'none'}. "
        f"Load average {r['load_avg_start'][0]:.1f} -> {r['load_avg_end'][0]:.1f}.",
        "",
        "Rounds (held-apart median absolute error of the op-level model):",
        "",
        "| round | ops measured | held-apart median abs error % |",
        "|---|---|---|",
    ]
    for rd in a["rounds"]:
        err = rd.get("heldout_median_abs_pct")
        out.append(f"| {rd['round']} | {rd['measured_ops']} | {'-' if err is None else f'{err:.1f}'} |")
    out += [
        "",
        "Corrected predictions (no calibration; only the ops differ) against the measured median, and "
        "adaptive against full:",
        "",
        "| comparison | n | within ±10 % | within ±5 % | MAPE % | mean error % | max abs error % |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, s in r["summaries"].items():
        out.append(
            f"| {label.replace('_', ' ')} | {s['n']} | {s['within_10pct']:.0%} | {s['within_5pct']:.0%} | "
            f"{s['mape_pct']:.1f} | {s['mean_error_pct']:+.1f} | {s['max_abs_error_pct']:.1f} |"
        )
    return out


if __name__ == "__main__":
    main()
