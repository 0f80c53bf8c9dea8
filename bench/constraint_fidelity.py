"""Constraint fidelity of ``adapt``: the measured latency of the exported winner at 5 limits per space.

For each space on ``local-cpu`` (devices.toml's policy, 1 thread), the benchmark builds the
predictors once exactly as ``adapt`` does (``profile`` what the LUT lacks into a LUT of its own work
folder, then ``calibrate``), chooses 5 limits spread over the calibrated predictions, and runs
:func:`chamlab.host.api.adapt` at each: the winner is exported to ``model.pte`` and measured in 3
separate runs. Per limit it records the prediction, the 3 measured p50s, and whether the median is
over the limit (a *miss*) and whether even the fastest run is (a *miss beyond the noise floor*: the
run-to-run spread of the very program that was measured).

* macro-cifar10: the LUT starts from bench/data's frozen one (missing ops, if any, are profiled);
  accuracy from the shipped table; limits at the 10/30/50/70/90th percentile of the predicted
  latency of all 6,561 archs.
* chamnet-mbv2: the LUT starts empty (the reference archs' ops are profiled, then each winner's
  interpolated ops, adaptively); it has no accuracy oracle yet, so a *proxy* stands in (log10 of the
  MACs, recorded as such): it drives every winner to the limit, the hardest case for fidelity, and
  says nothing about accuracy. Limits spread evenly from the fastest to the slowest reference.

Resumable: the results file is rewritten after every limit and finished limits are skipped; the
work folder (LUTs, run folders) is kept. The machine is shared: each record carries the load.

    .venv/bin/python bench/constraint_fidelity.py [--space macro-cifar10|chamnet-mbv2|both]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result

FROZEN = Path(__file__).resolve().parent / "data" / "macro-cifar10-local-cpu.parquet"
BUDGET = 30
PCTS = (10, 30, 50, 70, 90)


class ProxyAccuracy:
    """Bench-only stand-in for an accuracy oracle: log10(MACs) (bigger networks 'more accurate')."""

    name = "proxy: log10(MACs) (bench only, not an accuracy)"

    def __init__(self, space: Any) -> None:
        self.space = space

    def __call__(self, archs: Sequence[tuple[int, ...]]) -> list[float]:
        return [math.log10(self.space.macs(a)) for a in archs]


def limits_for(space: Any, model: Any) -> list[float]:
    if space.name == "macro-cifar10":
        lat = np.array([model.predict(a).latency_ms for a in space.enumerate()])
        return [round(float(np.percentile(lat, p)), 4) for p in PCTS]
    lat = np.array([model.predict(a).latency_ms for a in space.references.values()])
    return [round(float(x), 3) for x in np.linspace(lat.min() * 1.05, lat.max(), len(PCTS))]


def run_space(name: str, work: Path, payload: dict[str, Any], out: Path) -> None:
    from chamlab.host import api
    from chamlab.host.adapting import AdaptOptions
    from chamlab.host.calibration import lookup
    from chamlab.host.prediction import LatencyModel

    space = api.SPACES.get(name)
    spec = api.resolve_run(api.load_registry(None).get("local-cpu"), threads=1)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    lut_path = folder / "local-cpu.parquet"
    if name == "macro-cifar10" and not lut_path.exists():
        shutil.copyfile(FROZEN, lut_path)
    entry = payload["spaces"].setdefault(name, {"limits": {}, "setup": {}})
    t0 = time.perf_counter()
    archs, _ = api.default_archs(space)
    rep = api.profile(spec, space, archs, out=lut_path, command="bench/constraint_fidelity.py")
    lut = api.Lut.read(lut_path)
    mset = lut.choose(lut_path, device="local-cpu", threads=1, backend="xnnpack", dtype="fp32", batch=1)
    found = lookup(lut, mset, name)
    if found is None or found.stale:
        n = 10 if space.size <= api.EXHAUSTIVE_LIMIT else len(space.references)
        api.calibrate(spec, space, lut_path=lut_path, n=n, seed=0)
        lut = api.Lut.read(lut_path)
    model = LatencyModel(space, lut, lut_path, mset, interpolate=space.size > api.EXHAUSTIVE_LIMIT)
    if not entry["setup"]:
        entry["setup"] = {
            "profiled_ops": len(rep.measured),
            "lut_ops": len(lut.p50_by_key(mset)),
            "setup_seconds": round(time.perf_counter() - t0, 1),
            "calibration": model.found.summary() if model.found else None,
            "limits_ms": limits_for(space, model),
            "oracle": "space's own table" if name == "macro-cifar10" else ProxyAccuracy.name,
        }
        write_result("constraint_fidelity", payload, out)
    oracle = None if name == "macro-cifar10" else ProxyAccuracy(space)
    for i, limit in enumerate(entry["setup"]["limits_ms"]):
        key = f"{limit:g}"
        if key in entry["limits"]:
            continue
        load = os.getloadavg()
        options = AdaptOptions(latency_ms=limit, budget=BUDGET, out=folder / f"limit-{i}", lut_path=lut_path)
        t1 = time.perf_counter()
        r = api.adapt(spec, space, options, oracle=oracle, command="bench/constraint_fidelity.py").to_json()
        runs = r["measured_runs_ms"]
        entry["limits"][key] = {
            "limit_ms": limit,
            "search_limit_ms": r["search_limit_ms"],
            "margin_pct": r["margin"]["margin_pct"],
            "arch": r["arch"],
            "predicted_ms": r["predicted_latency_ms"],
            "measured_ms": r["measured_latency_ms"],
            "runs_ms": runs,
            "error_pct": r["error_pct"],
            "over_limit_pct": 100.0 * (r["measured_latency_ms"] - limit) / limit,
            "miss": not r["constraint_met"],
            "miss_beyond_noise": min(runs) > limit,
            "unstable": r["unstable"],
            "oracle_accuracy": r["oracle_accuracy"],
            "search_seconds": r["search_seconds"],
            "search_method": r["search_method"],
            "profiled_ops": r["profiled_ops"],
            "seconds": r["seconds"],
            "wall_s": round(time.perf_counter() - t1, 1),
            "load_avg": load,
        }
        write_result("constraint_fidelity", payload, out)
        print(json.dumps({name: entry["limits"][key]}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", choices=("macro-cifar10", "chamnet-mbv2", "both"), default="both")
    p.add_argument("--out", type=Path, default=RESULTS / "constraint_fidelity.json")
    p.add_argument("--work", type=Path, default=None, help="work folder (default: <cache>/bench/fidelity)")
    args = p.parse_args()
    from chamlab.core.files import cache_root

    work = args.work or cache_root() / "bench" / "constraint_fidelity"
    payload: dict[str, Any] = {"spaces": {}}
    if args.out.exists():
        payload = {k: v for k, v in json.loads(args.out.read_text()).items() if k in ("spaces",)}
    payload.update(
        {
            "device": "local-cpu (devices.toml policy), 1 thread, xnnpack fp32",
            "budget": BUDGET,
            "work": str(work),
        }
    )
    spaces = ("macro-cifar10", "chamnet-mbv2") if args.space == "both" else (args.space,)
    for name in spaces:
        run_space(name, work, payload, args.out)


if __name__ == "__main__":
    main()
