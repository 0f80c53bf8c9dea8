"""Op-level model columns: one MAC column against MACs split by kernel, on the fidelity run's real ops.

For each chamnet-mbv2 piece of ``bench/results/latency_fidelity.json`` whose LUT the fidelity run
kept (``bench/results/fidelity-lut-<space>-<threads>t.parquet``), this does what that run's
*interpolated* variant does, once per column set of :mod:`chamlab.chamnet.predictors.op_model`:

* fit the op-level model on the ops of the run's 10 calibration networks only, predict every other
  op the LUT holds, and report the op errors (median and mean absolute %, bias);
* predict each held-apart network with its ops from that thin LUT or the model, apply the run's
  calibration (its stored coefficients and features), and compare with the network's measured
  median: share within +/-10 % and MAPE. The same calibration with every op measured (the run's
  *calibrated* variant) is printed beside it.

No device time: it reads what the fidelity run measured, so it runs in seconds.

    python -m bench.op_model_features
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, write_result
from chamlab.chamnet.predictors import calibration as cal_model
from chamlab.chamnet.predictors import op_model
from chamlab.chamnet.spaces import SPACES
from chamlab.host.luts.lut import Lut
from chamlab.operators import INVOCATION_PROBE, OPS

COLUMNS = {
    "one MAC column": op_model.single_mac_features,
    "MACs split by kernel": op_model.op_features,
}


def evaluate(run: dict[str, Any], lut_path: Path) -> dict[str, Any]:
    space = SPACES.get(run["space"])
    lut = Lut.read(lut_path)
    mset = lut.choose(lut_path, threads=run["threads"], dtype=run["dtype"])
    p50 = {k: v for k, v in lut.p50_by_key(mset).items() if k != INVOCATION_PROBE.key}
    ops = {OPS.from_key(k): v for k, v in p50.items()}
    thin = {op.key for n in run["calibration"]["networks"] for op in space.ops(space.parse(n))}
    coef = run["calibration"]["coefficients"]
    fit = cal_model.CalibrationFit(tuple(k for k in coef if k != "intercept_ms"), coef)
    out: dict[str, Any] = {
        "space": run["space"],
        "threads": run["threads"],
        "lut_ops": len(ops),
        "fitted_on_ops": len(thin),
        "calibration_features": list(fit.features),
        "columns": {},
    }
    for name, columns in COLUMNS.items():
        model = op_model.OpLatencyModel({o: v for o, v in ops.items() if o.key in thin}, columns)
        errs = np.array([100 * (model.predict(o) - v) / v for o, v in ops.items() if o.key not in thin])
        nets, full = [], []
        for p in run["pairs"]:
            arch_ops = space.ops(space.parse(p["arch"]))
            mib = sum(o.params for o in arch_ops) * 4 / 2**20
            for total, sink in (
                (sum(p50[o.key] if o.key in thin else model.predict(o) for o in arch_ops), nets),
                (sum(p50[o.key] for o in arch_ops), full),
            ):
                pred = fit.predict(cal_model.feature_values(total, len(arch_ops), mib))
                sink.append(abs(pred - p["measured_median_ms"]) / p["measured_median_ms"] * 100)
        out["columns"][name] = {
            "predicted_ops": int(errs.size),
            "op_median_abs_pct": float(np.median(np.abs(errs))),
            "op_mean_abs_pct": float(np.mean(np.abs(errs))),
            "op_bias_pct": float(np.mean(errs)),
            "networks": len(nets),
            "interpolated_within_10pct": float(np.mean(np.array(nets) <= 10)),
            "interpolated_mape_pct": float(np.mean(nets)),
            "all_measured_within_10pct": float(np.mean(np.array(full) <= 10)),
            "all_measured_mape_pct": float(np.mean(full)),
        }
    return out


def render(r: dict[str, Any], env: str) -> list[str]:
    out = [
        "## Op-level model columns: one MAC column vs MACs split by kernel",
        "",
        "`python -m bench.op_model_features`: on the ops the latency fidelity run measured "
        f"(run of {r['source_when']}), the op-level model fitted on the calibration networks' ops "
        "predicts the LUT's other ops and, with the run's calibration, the held-apart networks. "
        "No new measurement.",
        "",
        env,
        "",
        "| space | threads | columns | ops predicted | op median abs % | op bias % | networks "
        "| interpolated within ±10 % (MAPE) | all ops measured within ±10 % (MAPE) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for name, c in run["columns"].items():
            out.append(
                f"| {run['space']} | {run['threads']} | {name} | {c['predicted_ops']} of {run['lut_ops']} | "
                f"{c['op_median_abs_pct']:.1f} | {c['op_bias_pct']:+.1f} | {c['networks']} | "
                f"{c['interpolated_within_10pct']:.0%} ({c['interpolated_mape_pct']:.1f}) | "
                f"{c['all_measured_within_10pct']:.0%} ({c['all_measured_mape_pct']:.1f}) |"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=RESULTS / "latency_fidelity.json")
    args = ap.parse_args()
    src = json.loads(args.source.read_text())
    runs = []
    for run in src["runs"]:
        lut_path = args.source.parent / f"fidelity-lut-{run['space']}-{run['threads']}t.parquet"
        if run["space"] != "chamnet-mbv2" or not lut_path.exists():
            continue
        runs.append(evaluate(run, lut_path))
        for name, c in runs[-1]["columns"].items():
            print(
                f"{run['space']} {run['threads']}t {name}: op median {c['op_median_abs_pct']:.1f} %, "
                f"interpolated networks {c['interpolated_within_10pct']:.0%} within 10 %",
                flush=True,
            )
    if not runs:
        raise SystemExit(f"no chamnet-mbv2 fidelity LUT beside {args.source}: run bench/latency_fidelity.py")
    print(write_result("op_model_features", {"source_when": src["environment"]["when"], "runs": runs}))


if __name__ == "__main__":
    main()
