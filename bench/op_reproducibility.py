"""Op timings between sessions, and what the calibration's op recheck makes of them.

Each chamnet-mbv2 op of the latency fidelity runs was profiled twice on this machine, in sessions
hours apart, at 1 and at 2 threads (868 ops; ``bench/latency_fidelity.py`` profiled each LUT), kept
(p50 and within-session CV) in ``bench/data/op_sessions/{earlier,later}-chamnet-mbv2-{1t,2t}.parquet``.
The later LUTs are those of the fidelity runs whose held-apart networks are read below
(``latency_fidelity.json`` at 1 thread, ``latency_fidelity_repeat2.json`` at 2). No new measurement.

1. **How far one op moves between sessions**, by fifths of op size: the median change (a device-wide
   shift), the spread of log changes about it (robust SD) and the median absolute change, beside the
   ops' own within-session spread (robust CV of their samples).
2. **What the op recheck does to calibrated fidelity** (``chamlab calibrate --recheck``): over
   ``--splits`` random splits of the fidelity run's held-apart networks (fit on ``--train``, test on
   the rest), the shipped calibration fitted on the LUT as measured against the same fit on op values
   shrunk by the shipped recheck path: ``--recheck`` ops of the fitted networks drawn (seeded), their
   earlier-session p50 standing in for the re-measurement (:func:`session_noise`,
   :func:`shrinkage_weights`, ``shrunk_p50``). Also the weights it chose. Here the "re-measurement" is
   hours apart, while ``calibrate`` re-measures minutes to days after profiling: how much ops move
   over that gap on a given device is what the recheck measures.

    python -m bench.op_reproducibility [--splits 200] [--train 10] [--recheck 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench._common import RESULTS, write_result
from chamlab.chamnet.predictors import calibration as model
from chamlab.chamnet.predictors.op_model import robust_var, session_noise, shrinkage_weights
from chamlab.chamnet.spaces import SPACES
from chamlab.host.prediction.calibrate import lut_features
from chamlab.host.prediction.op_values import op_model_of, shrunk_p50
from chamlab.operators import INVOCATION_PROBE, OPS

SPACE = "chamnet-mbv2"
#: (threads, the fidelity results file whose held-apart networks were measured with the later LUT)
SOURCES = ((1, "latency_fidelity"), (2, "latency_fidelity_repeat2"))
SESSIONS = Path(__file__).resolve().parent / "data" / "op_sessions"


def _p50(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    d = pd.read_parquet(path, columns=["op_key", "p50_ms", "robust_cv"])
    return dict(zip(d.op_key, d.p50_ms, strict=True)), dict(zip(d.op_key, d.robust_cv, strict=True))


def between_sessions(later: dict[str, float], earlier: dict[str, float], cv: dict[str, float]) -> list[dict]:
    keys = sorted(k for k in later if k in earlier and k != INVOCATION_PROBE.key)
    size = np.log([later[k] for k in keys])
    edges = np.quantile(size, np.linspace(0, 1, 6))
    rows = []
    for i in range(5):
        sel = [k for k, s in zip(keys, size, strict=True) if edges[i] <= s <= edges[i + 1]]
        r = np.log([later[k] / earlier[k] for k in sel])
        rows.append(
            {
                "fifth": i + 1,
                "ops": len(sel),
                "median_p50_ms": float(np.median([later[k] for k in sel])),
                "shift_pct": 100 * math.expm1(float(np.median(r))),
                "robust_sd_pct": 100 * math.sqrt(robust_var(r)),
                "median_abs_change_pct": 100 * math.expm1(float(np.median(np.abs(r - np.median(r))))),
                "within_session_cv_pct": 100 * float(np.median([cv[k] for k in sel if cv[k] == cv[k]])),
            }
        )
    return rows


def recheck_effect(
    run: dict[str, Any], later: dict[str, float], earlier: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    space = SPACES.get(SPACE)
    pairs = run["pairs"]
    archs = [space.parse(p["arch"]) for p in pairs]
    for p, a in zip(pairs, archs, strict=True):  # the networks must have been measured with this LUT
        total = sum(later[o.key] for o in space.ops(a))
        if abs(total - p["raw_ms"]) > 1e-6 * p["raw_ms"]:
            raise SystemExit(
                f"{p['arch']}: the fidelity run's raw LUT sum {p['raw_ms']:.6f} ms is not the stored later "
                f"session's {total:.6f} ms; the results file was re-run with another LUT: store that "
                "run's LUT (p50 and robust_cv) in bench/data/op_sessions as the later session first"
            )
    scatter = op_model_of(later).misfit_log_var()

    def points(values: dict[str, float]) -> list[model.CalibrationPoint]:
        return [
            model.CalibrationPoint(p["arch"], lut_features(space, a, values, "fp32"), p["measured_median_ms"])
            for p, a in zip(pairs, archs, strict=True)
        ]

    def within(pts: list[model.CalibrationPoint], train: list[int], test: list[int]) -> tuple[float, float]:
        f = model.fit([pts[i] for i in train], model.FEATURES)
        err = np.array([abs(f.predict(pts[i].features) / pts[i].measured - 1) * 100 for i in test])
        return float(np.mean(err <= 10.0)), float(err.mean())

    plain = points(later)
    rng = np.random.default_rng(args.seed)
    shares: dict[str, list[float]] = {"measured": [], "recheck": [], "all_ops": []}
    mapes: dict[str, list[float]] = {k: [] for k in shares}
    weights: list[dict[str, float]] = []
    every = session_noise({k: v for k, v in later.items() if k != INVOCATION_PROBE.key}, earlier)
    all_ops = points(shrunk_p50(later, shrinkage_weights(scatter, every["log_var"])))
    for _ in range(args.splits):
        order = rng.permutation(len(pairs))
        train, test = [int(i) for i in order[: args.train]], [int(i) for i in order[args.train :]]
        ops = sorted({o.key for i in train for o in space.ops(archs[i]) if o.key in earlier})
        picked = [ops[i] for i in rng.choice(len(ops), size=min(args.recheck, len(ops)), replace=False)]
        noise = session_noise({k: later[k] for k in picked}, {k: earlier[k] for k in picked})
        kinds = {OPS.from_key(k).op_type for k in picked}
        w = shrinkage_weights({k: v for k, v in scatter.items() if k in kinds}, noise["log_var"])
        weights.append(w)
        for name, pts in (
            ("measured", plain),
            ("recheck", points(shrunk_p50(later, w))),
            ("all_ops", all_ops),
        ):
            s, m = within(pts, train, test)
            shares[name].append(s)
            mapes[name].append(m)
    return {
        "networks": len(pairs),
        "within_10pct": {k: float(np.mean(v)) for k, v in shares.items()},
        "mape_pct": {k: float(np.mean(v)) for k, v in mapes.items()},
        "recheck_weight_median": {
            kind: statistics.median(w.get(kind, 0.0) for w in weights) for kind in sorted(scatter)
        },
        "all_ops_noise": every,
        "all_ops_weight": shrinkage_weights(scatter, every["log_var"]),
        "misfit_log_var": scatter,
    }


def render(r: dict[str, Any], env: str) -> list[str]:
    a = r["args"]
    out = [
        "## Op timings between sessions, and the calibration's op recheck",
        "",
        f"`python -m bench.op_reproducibility --splits {a['splits']} --train {a['train']} --recheck "
        f"{a['recheck']} --seed {a['seed']}`: the chamnet-mbv2 ops of the fidelity runs, each profiled "
        "in two sessions hours apart (no new measurement). Within-session CV is the ops' own sample "
        "spread, what `profile` reports.",
        "",
        env,
        "",
        "| threads | op size fifth | ops | median p50 ms | shift | robust SD of change | median abs change "
        "| within-session CV |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for row in run["between_sessions"]:
            out.append(
                f"| {run['threads']} | {row['fifth']} | {row['ops']} | {row['median_p50_ms']:.3f} | "
                f"{row['shift_pct']:+.1f} % | {row['robust_sd_pct']:.1f} % | "
                f"{row['median_abs_change_pct']:.1f} % | {row['within_session_cv_pct']:.1f} % |"
            )
    out += [
        "",
        f"Calibrated fidelity, fit on {a['train']} held-apart networks and tested on the rest "
        f"({a['splits']} splits): the LUT as measured; with the op recheck ({a['recheck']} ops of the "
        "fitted networks, their earlier-session p50 as the re-measurement); and with the noise taken "
        "from all ops at once (the most the recheck could know).",
        "",
        "| threads | networks (run) | as measured | op recheck | noise from all ops | recheck weight "
        "(median) |",
        "|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        e = run["recheck_effect"]
        w = ", ".join(f"{k} {v:.2f}" for k, v in e["recheck_weight_median"].items())
        cells = [
            f"{e['within_10pct'][k]:.1%} (MAPE {e['mape_pct'][k]:.1f})"
            for k in ("measured", "recheck", "all_ops")
        ]
        out.append(
            f"| {run['threads']} | {e['networks']} ({run['source']}) | " + " | ".join(cells) + f" | {w} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, default=200)
    ap.add_argument("--train", type=int, default=10)
    ap.add_argument("--recheck", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    runs = []
    for threads, source in SOURCES:
        later, cv = _p50(SESSIONS / f"later-{SPACE}-{threads}t.parquet")
        earlier, _ = _p50(SESSIONS / f"earlier-{SPACE}-{threads}t.parquet")
        fidelity = json.loads((RESULTS / f"{source}.json").read_text())
        [run] = [x for x in fidelity["runs"] if x["space"] == SPACE and x["threads"] == threads]
        runs.append(
            {
                "threads": threads,
                "source": source,
                "between_sessions": between_sessions(later, earlier, cv),
                "recheck_effect": recheck_effect(run, later, earlier, args),
            }
        )
        e = runs[-1]["recheck_effect"]
        print(f"{threads}t: within +/-10 % {e['within_10pct']}", flush=True)
    payload = {"args": vars(args), "runs": runs}
    print(write_result("op_reproducibility", payload))


if __name__ == "__main__":
    main()
