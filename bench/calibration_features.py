"""Which calibration features generalise: refit on small subsets of measured networks, test on the rest.

Reads the held-apart networks of ``bench/results/latency_fidelity.json`` (each with its raw LUT sum,
op count, weight MiB and noise-protocol measured median; the networks the fidelity run calibrated on
are not in it) and, per (space, threads) run, draws ``--splits`` random splits: fit the calibration
model (:func:`chamlab.chamnet.predictors.calibration.fit`, the shipped fit: relative Huber + ridge) on
``--train`` networks with each candidate feature set, predict the others. Reports the mean share
within +/-10 % and the mean MAPE over the splits. This is how model v2's features were chosen; it
measures nothing new on the device, so it runs in seconds, and it says how each feature set would
have done on those same measurements (a fresh fidelity run is the real check).

    python -m bench.calibration_features [--splits 300] [--train 10] [--seed 0]
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
    "v1: sum, ops, weights": model.FEATURES_V1,
    "v2: sum, ops, sum x weights": model.FEATURES,
    "sum, sum x weights": ("lut_sum_ms", "lut_sum_ms_x_weight_mib"),
    "sum, ops, weights, sum x weights": (*model.FEATURES_V1, "lut_sum_ms_x_weight_mib"),
}


def points(run: dict[str, Any]) -> list[model.CalibrationPoint]:
    return [
        model.CalibrationPoint(
            p["arch"],
            model.feature_values(p["raw_ms"], p["n_ops"], p["weights_mib"]),
            p["measured_median_ms"],
        )
        for p in run["pairs"]
    ]


def compare(pts: list[model.CalibrationPoint], train: int, splits: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    within = {k: [] for k in CANDIDATES}
    mape = {k: [] for k in CANDIDATES}
    for _ in range(splits):
        order = rng.permutation(len(pts))
        fit_on, test = [pts[i] for i in order[:train]], [pts[i] for i in order[train:]]
        for name, feats in CANDIDATES.items():
            f = model.fit(fit_on, feats)
            err = np.array([abs(f.predict(q.features) - q.measured) / q.measured * 100 for q in test])
            within[name].append(float(np.mean(err <= 10.0)))
            mape[name].append(float(err.mean()))
    return {
        name: {
            "features": list(CANDIDATES[name]),
            "within_10pct": float(np.mean(within[name])),
            "mape_pct": float(np.mean(mape[name])),
        }
        for name in CANDIDATES
    }


def render(r: dict[str, Any], env: str) -> list[str]:
    a = r["args"]
    out = [
        "## Calibration features: which generalise",
        "",
        f"`python -m bench.calibration_features --splits {a['splits']} --train {a['train']} "
        f"--seed {a['seed']}`: refits on the held-apart networks of the latency fidelity run "
        f"(fidelity run of {r['source_when']}); fit on {a['train']}, test on the rest, mean over the "
        "splits. No new measurement.",
        "",
        env,
        "",
        "| space | threads | networks | features | within ±10 % | MAPE % |",
        "|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for name, s in run["candidates"].items():
            out.append(
                f"| {run['space']} | {run['threads']} | {run['n']} | {name} | {s['within_10pct']:.1%} | "
                f"{s['mape_pct']:.2f} |"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, default=300)
    ap.add_argument("--train", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source", type=Path, default=RESULTS / "latency_fidelity.json")
    args = ap.parse_args()
    src = json.loads(args.source.read_text())
    runs = []
    for run in src["runs"]:
        pts = points(run)
        if len(pts) <= args.train:
            continue
        runs.append(
            {
                "space": run["space"],
                "threads": run["threads"],
                "n": len(pts),
                "candidates": compare(pts, args.train, args.splits, args.seed),
            }
        )
        best = max(runs[-1]["candidates"].items(), key=lambda kv: kv[1]["within_10pct"])
        print(f"{run['space']} {run['threads']}t: best {best[0]} {best[1]['within_10pct']:.1%}", flush=True)
    payload = {
        "args": {"splits": args.splits, "train": args.train, "seed": args.seed},
        "source_when": src["environment"]["when"],
        "runs": runs,
    }
    print(write_result("calibration_features", payload))


if __name__ == "__main__":
    main()
