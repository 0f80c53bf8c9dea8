"""Which features the energy calibration should use: v1 (weight MiB added) or v2 (sum x weight MiB).

Reads stored energy calibrations (``bench/data/energy-calibrations/*.json``: per network its name,
LUT energy sum, op count, weight MiB and measured energy per inference, kept from runs of
``chamlab calibrate --json`` on a device with a power reader) and refits each with every candidate
feature set (:func:`chamlab.chamnet.predictors.calibration.leave_one_out`, the shipped fit). Reports
each record's leave-one-out errors and their median magnitude over the networks *inside* the
record's range of LUT energy (the cheapest and costliest are extrapolations when left out), as
``tests/host/test_energy.py`` judges them. No new measurement: it runs in a second.

    python -m bench.energy_features [--source bench/data/energy-calibrations]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, write_result
from chamlab.chamnet.predictors import calibration as model

CANDIDATES: dict[str, tuple[str, ...]] = {
    "v1: sum, ops, weights": model.ENERGY_FEATURES_V1,
    "v2: sum, ops, sum x weights": model.ENERGY_FEATURES,
    "sum only": ("lut_sum_mj",),
}


def points(record: dict[str, Any]) -> list[model.CalibrationPoint]:
    return [
        model.CalibrationPoint(
            n["name"],
            model.feature_values(n["lut_sum_mj"], n["n_ops"], n["weight_mib"], "mj"),
            n["measured_mj"],
        )
        for n in record["networks"]
    ]


def compare(record: dict[str, Any]) -> dict[str, Any]:
    pts = points(record)
    sums = [p.features["lut_sum_mj"] for p in pts]
    inside = [min(sums) < s < max(sums) for s in sums]
    out = {}
    for name, feats in CANDIDATES.items():
        errors = model.leave_one_out(pts, feats)
        out[name] = {
            "loo_errors_pct": [round(e, 2) for e in errors],
            "inside_median_abs_pct": float(
                np.median([abs(e) for e, i in zip(errors, inside, strict=True) if i])
            ),
            "median_abs_pct": float(np.median(np.abs(errors))),
        }
    return out


def render(r: dict[str, Any], env: str) -> list[str]:
    out = [
        "## Energy calibration features: v1 or v2",
        "",
        f"`python -m bench.energy_features`: refits the stored energy calibrations of `{r['source']}` "
        "(each: 8 macro-cifar10 networks measured by `tests/host/test_energy.py` on a simulated RAPL "
        "counter that charges the runner's CPU time; not a real power reader) with each feature set. "
        "*inside*: the median |leave-one-out error| over the networks between the cheapest and the "
        "costliest by LUT energy (what the test judges). No new measurement.",
        "",
        env,
        "",
        "| record | features | inside median % | all median % |",
        "|---|---|---|---|",
    ]
    for rec in r["records"]:
        for name, s in rec["candidates"].items():
            out.append(
                f"| {rec['name']} | {name} | {s['inside_median_abs_pct']:.1f} | {s['median_abs_pct']:.1f} |"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=RESULTS.parent / "data" / "energy-calibrations")
    args = ap.parse_args()
    records = []
    for path in sorted(args.source.glob("*.json")):
        rec = json.loads(path.read_text())
        records.append({"name": path.stem, "candidates": compare(rec)})
        print(
            path.stem,
            ", ".join(
                f"{k}: {v['inside_median_abs_pct']:.1f}%" for k, v in records[-1]["candidates"].items()
            ),
            flush=True,
        )
    if not records:
        raise SystemExit(f"no energy calibrations (*.json) in {args.source}")
    try:
        source = str(args.source.resolve().relative_to(Path.cwd()))
    except ValueError:
        source = str(args.source)
    print(write_result("energy_features", {"source": source, "records": records}))


if __name__ == "__main__":
    main()
