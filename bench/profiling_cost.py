"""Profiling cost: seconds per op (export, measure) and the total for a space's LUT.

    python -m bench.profiling_cost [--target local-cpu] [--threads 1] [--space macro-cifar10]
                                   [--sample N --resolution R --seed S]

Profiles every op of ``--space``'s default archs (all of ``macro-cifar10``; the 7 reference archs of
``chamnet-mbv2``: 93 distinct ops) and, with ``--sample N``, those of N seeded random archs too (at
input resolution ``--resolution`` where the space has one), plus the invocation probe, with a *cold*
artifact cache (a fresh temporary cache directory) and the device's measurement policy; then again
with the warm cache into a fresh LUT (export cost ~0: only measurement is left). Writes
``bench/results/profiling_cost.json`` (``profiling_cost-<space>[-sample<N>].json`` otherwise).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import write_result
from chamlab.chamnet.spaces import SPACES
from chamlab.host import api


def one(device, space, threads: int, lut: Path, archs: list | None) -> dict:
    t0 = time.perf_counter()
    report = api.profile(api.resolve_run(device, threads=threads), space, archs, out=lut)
    total = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"profiling failed: {report.failed[:3]}")
    n = len(report.measured)
    return {
        "ops": n,
        "exported": report.exported,
        "total_s": total,
        "export_s": report.export_s,
        "measure_s": report.measure_s,
        "export_s_per_op": report.export_s / max(report.exported, 1),
        "measure_s_per_op": report.measure_s / n,
        "unstable_ops": len(report.unstable),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="local-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--space", default="macro-cifar10")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sample", type=int, default=0, help="also the ops of N seeded random archs")
    ap.add_argument("--resolution", type=int, default=None, help="--sample: at this input resolution")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = api.load_registry().get(args.target)
    space = SPACES.get(args.space)
    archs = None
    if args.sample:
        extra = space.sample(np.random.default_rng(args.seed), args.sample)
        names = [d.name for d in space.dimensions]
        if args.resolution is not None and "resolution" in names:
            i = names.index("resolution")
            extra = [(*a[:i], args.resolution, *a[i + 1 :]) for a in extra]
        archs = list(dict.fromkeys([*api.default_archs(space)[0], *extra]))
    with tempfile.TemporaryDirectory(prefix="chamlab-bench-") as tmp:
        os.environ["CHAMLAB_CACHE"] = str(Path(tmp) / "cache")
        cold = one(device, space, args.threads, Path(tmp) / "cold.parquet", archs)
        warm = one(device, space, args.threads, Path(tmp) / "warm.parquet", archs)
    for label, r in (("cold cache", cold), ("warm cache", warm)):
        print(
            f"{label}: {r['ops']} ops in {r['total_s']:.1f} s (export {r['export_s']:.1f} s = "
            f"{r['export_s_per_op']:.2f} s/op over {r['exported']} exported, "
            f"measure {r['measure_s']:.1f} s = "
            f"{r['measure_s_per_op']:.2f} s/op)"
        )
    name = "profiling_cost" if args.space == "macro-cifar10" else f"profiling_cost-{args.space}"
    path = write_result(
        name + (f"-sample{args.sample}" if args.sample else ""),
        {
            "args": {**vars(args), "out": str(args.out)},
            "cold_cache": cold,
            "warm_cache": warm,
            "cpus": os.cpu_count(),
            "runner_affinity": getattr(device, "affinity", "") or None,
            "archs": None if archs is None else [space.format(a) for a in archs],
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
