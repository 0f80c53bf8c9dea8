"""Why `chamlab calibrate` measures each network in three sessions: the safety margin's spread from one.

Reads the held-apart networks of ``bench/results/latency_fidelity.json``: each has the p50 of three
separate interleaved sessions as first measured (``measured_ms``) and the noise protocol's median
after disturbed windows were re-measured (``measured_median_ms``). Per (space, threads) run and per
calibration size ``n`` (``--sizes``), it draws ``--draws`` random sets of ``n`` networks and computes,
as ``chamlab calibrate`` does, the leave-one-out spread that sizes ``adapt``'s safety margin
(:func:`chamlab.chamnet.search.constrained.loo_spread_pct` of
:func:`chamlab.chamnet.predictors.calibration.leave_one_out`), once from a single session's values
(``--repeats 1``: the first session) and once from the protocol medians (``--repeats 3``), and the
fit's real error on the networks not drawn (against their protocol medians). No new measurement: it
runs in seconds on the fidelity run's numbers.

    python -m bench.calibration_repeats [--draws 300] [--sizes 3 5 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import RESULTS, write_result
from chamlab.chamnet.predictors import calibration as model
from chamlab.chamnet.search.constrained import MARGIN_K, loo_spread_pct

SOURCES = {"one session": lambda p: p["measured_ms"][0], "protocol median": lambda p: p["measured_median_ms"]}


def point(p: dict[str, Any], measured: float) -> model.CalibrationPoint:
    return model.CalibrationPoint(
        p["arch"], model.feature_values(p["raw_ms"], p["n_ops"], p["weights_mib"]), measured
    )


def draws(pairs: list[dict[str, Any]], n: int, count: int, seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    spreads: dict[str, list[float]] = {k: [] for k in SOURCES}
    real: dict[str, list[float]] = {k: [] for k in SOURCES}
    for _ in range(count):
        order = rng.permutation(len(pairs))
        chosen, rest = [pairs[i] for i in order[:n]], [pairs[i] for i in order[n:]]
        truth = [point(p, p["measured_median_ms"]) for p in rest]
        for name, value in SOURCES.items():
            pts = [point(p, value(p)) for p in chosen]
            spreads[name].append(loo_spread_pct(model.leave_one_out(pts)))
            f = model.fit(pts)
            errs = [abs(f.predict(q.features) - q.measured) / q.measured * 100 for q in truth]
            real[name].append(1.4826 * float(np.median(errs)))
    out = {}
    for name in SOURCES:
        s = np.asarray(spreads[name])
        out[name] = {
            "spread_median_pct": float(np.median(s)),
            "spread_p95_pct": float(np.percentile(s, 95)),
            "share_margin_over_half": float(np.mean(MARGIN_K * s >= 50.0)),
            "share_no_budget": float(np.mean(MARGIN_K * s >= 100.0)),
            "real_spread_median_pct": float(np.median(real[name])),
        }
    return out


def render(r: dict[str, Any], env: str) -> list[str]:
    a = r["args"]
    out = [
        "## Calibration: one session or three per network",
        "",
        f"`python -m bench.calibration_repeats --draws {a['draws']} --sizes {' '.join(map(str, a['sizes']))} "
        f"--seed {a['seed']}`: random sets of n held-apart networks of the latency fidelity run of "
        f"{r['source_when']}; the leave-one-out spread `calibrate` stores (what sizes `adapt`'s margin, "
        f"k = {MARGIN_K}) from one session's p50s and from the noise protocol's medians; *real*: the same "
        "robust spread of the fit's errors on the networks not drawn (against protocol medians). "
        "No new measurement.",
        "",
        env,
        "",
        "| space | threads | n | values | spread median % | spread p95 % | margin >= 50 % | no budget "
        "| real % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for n, by in run["sizes"].items():
            for name, s in by.items():
                out.append(
                    f"| {run['space']} | {run['threads']} | {n} | {name} | {s['spread_median_pct']:.1f} | "
                    f"{s['spread_p95_pct']:.1f} | {s['share_margin_over_half']:.1%} | "
                    f"{s['share_no_budget']:.1%} | "
                    f"{s['real_spread_median_pct']:.1f} |"
                )
    return out


def run_over_sizes(
    name: str,
    doc: str,
    draws_of: Callable[[list[dict[str, Any]], int, int, int], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
    *,
    default_draws: int,
    default_sizes: list[int],
) -> None:
    """The command line of a benchmark over random sets of the fidelity run's held-apart networks:
    per (space, threads) run and size ``n``, ``draws_of(pairs, n, draws, seed)``; prints
    ``describe`` of each size's result and writes them all as the result ``name``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--draws", type=int, default=default_draws)
    ap.add_argument("--sizes", type=int, nargs="+", default=default_sizes)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source", type=Path, default=RESULTS / "latency_fidelity.json")
    args = ap.parse_args()
    src = json.loads(args.source.read_text())
    runs = []
    for run in src["runs"]:
        pairs = [p for p in run["pairs"] if p.get("measured_ms")]
        sizes = {str(n): draws_of(pairs, n, args.draws, args.seed) for n in args.sizes if n < len(pairs)}
        runs.append({"space": run["space"], "threads": run["threads"], "n": len(pairs), "sizes": sizes})
        for n, by in sizes.items():
            print(f"{run['space']} {run['threads']}t n={n}: {describe(by)}", flush=True)
    payload = {
        "args": {"draws": args.draws, "sizes": args.sizes, "seed": args.seed},
        "source_when": src["environment"]["when"],
        "runs": runs,
    }
    print(write_result(name, payload))


def main() -> None:
    run_over_sizes(
        "calibration_repeats",
        __doc__ or "",
        draws,
        lambda by: ", ".join(
            f"{k} spread {v['spread_median_pct']:.1f}% (p95 {v['spread_p95_pct']:.1f}%)"
            for k, v in by.items()
        ),
        default_draws=300,
        default_sizes=[3, 5, 10],
    )


if __name__ == "__main__":
    main()
