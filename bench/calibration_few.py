"""A calibration on few networks: every coefficient free, or no more than the networks support.

Reads the held-apart networks of ``bench/results/latency_fidelity.json`` (as
``bench.calibration_repeats`` does) and, per (space, threads) run and calibration size ``n``
(``--sizes``), draws ``--draws`` random sets of ``n`` networks. Each set is fitted under two rules:

* *all free*: the intercept and every feature's coefficient estimated whatever ``n`` (the rule
  before 2026-12-07; the ridge alone held them near the plain sum);
* *n - 1 free* (shipped, :func:`chamlab.chamnet.predictors.calibration.free_coefficients`): at
  most one coefficient fewer than the networks fitted, in feature order, the intercept last.

and under four kinds of values: the noise protocol's medians (*clean*), one session's p50s (*one
session*, the fidelity run's first), and the clean values with one network of the set scaled by 2
or by 0.7 (*one x2*, *one x0.7*: a disturbed session, or a LUT op that was). It reports the
leave-one-out spread ``calibrate`` stores, which sizes ``adapt``'s safety margin (median, p95, max,
and the share of sets whose margin leaves no budget at k = 1.645), and *real*: the robust spread
of the fit's errors on the networks not drawn, against their protocol medians. No new
measurement: it refits the fidelity run's numbers (about nine minutes here, mostly the
leave-one-out refits).

    python -m bench.calibration_few [--draws 200] [--sizes 3 4 5 6 10] [--seed 0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench.calibration_repeats import point, run_over_sizes
from chamlab.chamnet.predictors import calibration as model
from chamlab.chamnet.search.constrained import MARGIN_K, loo_spread_pct

ALL_FREE = ("intercept_ms", *model.FEATURES)
RULES: dict[str, tuple[str, ...] | None] = {"all free": ALL_FREE, "n - 1 free": None}


def _scaled(factor: float) -> Callable[[list[float], np.random.Generator], list[float]]:
    def apply(values: list[float], rng: np.random.Generator) -> list[float]:
        out = list(values)
        i = int(rng.integers(len(out)))
        out[i] *= factor
        return out

    return apply


def _as_is(values: list[float], rng: np.random.Generator) -> list[float]:
    return values


#: kind of values -> (which measurement of each network, how the set's values are disturbed)
VALUES: dict[str, tuple[Callable[[dict[str, Any]], float], Callable[..., list[float]]]] = {
    "clean": (lambda p: p["measured_median_ms"], _as_is),
    "one session": (lambda p: p["measured_ms"][0], _as_is),
    "one x2": (lambda p: p["measured_median_ms"], _scaled(2.0)),
    "one x0.7": (lambda p: p["measured_median_ms"], _scaled(0.7)),
}


def draws(pairs: list[dict[str, Any]], n: int, count: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    spreads: dict[tuple[str, str], list[float]] = {(v, r): [] for v in VALUES for r in RULES}
    real: dict[tuple[str, str], list[float]] = {k: [] for k in spreads}
    for _ in range(count):
        order = rng.permutation(len(pairs))
        chosen, rest = [pairs[i] for i in order[:n]], [pairs[i] for i in order[n:]]
        truth = [point(p, p["measured_median_ms"]) for p in rest]
        for vname, (measured, disturb) in VALUES.items():
            values = disturb([measured(p) for p in chosen], rng)
            pts = [point(p, v) for p, v in zip(chosen, values, strict=True)]
            for rname, free in RULES.items():
                spreads[vname, rname].append(loo_spread_pct(model.leave_one_out(pts, free=free)))
                f = model.fit(pts, free=free)
                errs = [abs(f.predict(q.features) - q.measured) / q.measured * 100 for q in truth]
                real[vname, rname].append(1.4826 * float(np.median(errs)))
    out: dict[str, Any] = {}
    for (vname, rname), s in spreads.items():
        a = np.asarray(s)
        out.setdefault(vname, {})[rname] = {
            "spread_median_pct": float(np.median(a)),
            "spread_p95_pct": float(np.percentile(a, 95)),
            "spread_max_pct": float(a.max()),
            "share_no_budget": float(np.mean(MARGIN_K * a >= 100.0)),
            "real_spread_median_pct": float(np.median(real[vname, rname])),
        }
    return out


def render(r: dict[str, Any], env: str) -> list[str]:
    a = r["args"]
    out = [
        "## Calibration on few networks: every coefficient free, or n - 1",
        "",
        f"`python -m bench.calibration_few --draws {a['draws']} --sizes {' '.join(map(str, a['sizes']))} "
        f"--seed {a['seed']}`: random sets of n held-apart networks of the latency fidelity run of "
        f"{r['source_when']}, fitted with every coefficient free or with at most n - 1 (shipped); "
        "values: protocol medians (*clean*), one session's p50s, or clean with one network of the set "
        "scaled by 2 or 0.7. The leave-one-out spread `calibrate` stores (it sizes `adapt`'s margin, "
        f"k = {MARGIN_K}: *no budget* is the share of sets whose margin is 100 % or more); *real*: the "
        "robust spread of the fit's errors on the networks not drawn. No new measurement.",
        "",
        env,
        "",
        "| space | threads | n | values | rule | spread median % | p95 % | max % | no budget | real % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for n, by in run["sizes"].items():
            for vname, rules in by.items():
                for rname, s in rules.items():
                    out.append(
                        f"| {run['space']} | {run['threads']} | {n} | {vname} | {rname} | "
                        f"{s['spread_median_pct']:.1f} | {s['spread_p95_pct']:.1f} | "
                        f"{s['spread_max_pct']:.0f} | {s['share_no_budget']:.1%} | "
                        f"{s['real_spread_median_pct']:.1f} |"
                    )
    return out


def main() -> None:
    run_over_sizes(
        "calibration_few",
        __doc__ or "",
        draws,
        lambda by: (
            "one x2 spread p95 "
            + ", ".join(f"{k} {v['spread_p95_pct']:.1f}%" for k, v in by["one x2"].items())
        ),
        default_draws=200,
        default_sizes=[3, 4, 5, 6, 10],
    )


if __name__ == "__main__":
    main()
