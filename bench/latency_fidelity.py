"""Latency fidelity: LUT-predicted vs measured whole-network p50 on this machine.

    python bench/latency_fidelity.py [--archs 50] [--threads 1 2] [--mbv2 20] [--seed 0]

For each thread count: profile every op of ``macro-cifar10`` into a fresh LUT (``--force``), then
measure ``--archs`` random archs as whole networks (one session), and compare each with the sum of
its ops' p50. With ``--mbv2 N`` it also does N random ``chamnet-mbv2`` archs at ``--mbv2-resolution``.
Reports the share of archs within +/-10 % and the mean absolute % error for the corrected prediction
(the default), the raw LUT sum (ablation) and the pairs whose measurement was stable, and writes
every pair to ``bench/results/latency_fidelity.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result

from chamlab.chamnet.predictors.latency import LutLatencyPredictor
from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.host import api
from chamlab.host.lut import Lut


def summarize(pairs: list[dict], key: str = "predicted_ms") -> dict:
    errs = [100.0 * (p[key] - p["measured_p50_ms"]) / p["measured_p50_ms"] for p in pairs]
    return {
        "n": len(errs),
        "within_10pct": sum(abs(e) <= 10 for e in errs) / len(errs),
        "within_5pct": sum(abs(e) <= 5 for e in errs) / len(errs),
        "mape_pct": statistics.fmean(abs(e) for e in errs),
        "mean_error_pct": statistics.fmean(errs),
        "max_abs_error_pct": max(abs(e) for e in errs),
        "spearman": _spearman([p[key] for p in pairs], [p["measured_p50_ms"] for p in pairs]),
    }


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def run_space(space: SearchSpace, archs: list[Arch], threads: int, lut_path: Path, device) -> dict:
    spec = api.resolve_run(device, threads=threads)
    t0 = time.perf_counter()
    report = api.profile(spec, space, archs, out=lut_path, force=True)
    if report.failed:
        raise SystemExit(f"profiling failed: {report.failed[:3]}")
    profile_s = time.perf_counter() - t0
    lut = Lut.read(lut_path)
    p50 = lut.p50_by_key(spec.measurement_set)
    predictor = LutLatencyPredictor(p50)
    t1 = time.perf_counter()
    measured = api.measure_networks(spec, space, archs)
    measure_s = time.perf_counter() - t1
    pairs = []
    for arch, m in zip(archs, measured, strict=True):
        pred = predictor.predict(space.ops(arch))
        meas = m.stats["p50_ms"]
        pairs.append(
            {
                "arch": space.format(arch),
                "n_ops": len(space.ops(arch)),
                "macs": space.macs(arch),
                "weights_mib": 4 * space.params(arch) / 2**20,  # fp32
                "predicted_ms": pred.latency_ms,
                "predicted_raw_ms": pred.lut_sum_ms,
                "measured_p50_ms": meas,
                "measured_unstable": m.unstable,
                "error_pct": 100.0 * (pred.latency_ms - meas) / meas,
            }
        )
    stable = [p for p in pairs if not p["measured_unstable"]]
    return {
        "space": space.name,
        "threads": threads,
        "ops_profiled": report.planned,
        "invocation_overhead_ms": predictor.invocation_overhead_ms,
        "profile_s": profile_s,
        "networks_measure_s": measure_s,
        "summary": summarize(pairs),
        "summary_raw_sum": summarize(pairs, "predicted_raw_ms"),
        "summary_stable_only": summarize(stable) if stable else None,
        "pairs": pairs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", type=int, default=50)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--mbv2", type=int, default=20, help="also N random chamnet-mbv2 archs (0: none)")
    ap.add_argument("--mbv2-resolution", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", default="local-cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    device = api.load_registry().get(args.target)
    rng = np.random.default_rng(args.seed)
    macro = SPACES.get("macro-cifar10")
    runs = []
    jobs: list[tuple[SearchSpace, list[Arch]]] = [(macro, macro.sample(rng, args.archs))]
    if args.mbv2:
        mb = SPACES.get("chamnet-mbv2")
        res_index = [d.name for d in mb.dimensions].index("resolution")
        archs = [
            (*a[:res_index], args.mbv2_resolution, *a[res_index + 1 :]) for a in mb.sample(rng, args.mbv2)
        ]
        jobs.append((mb, archs))
    for space, archs in jobs:
        for threads in args.threads:
            lut_path = RESULTS / f"fidelity-lut-{space.name}-{threads}t.parquet"
            result = run_space(space, archs, threads, lut_path, device)
            for label in ("summary", "summary_raw_sum", "summary_stable_only"):
                s = result[label]
                if s:
                    print(
                        f"{space.name} threads={threads} {label}: within +/-10% "
                        f"{s['within_10pct']:.0%}, MAPE "
                        f"{s['mape_pct']:.1f}%, mean error {s['mean_error_pct']:+.1f}%, spearman "
                        f"{s['spearman']:.3f} (n={s['n']})",
                        flush=True,
                    )
            runs.append(result)
    path = write_result(
        "latency_fidelity", {"args": vars(args) | {"out": str(args.out)}, "runs": runs}, args.out
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
