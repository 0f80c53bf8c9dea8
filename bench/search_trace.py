"""Where does the engine spend its queries? A per-seed trace of one cell of bench/search_efficiency.py.

After every query from the first fit on, it records where the GP ranks the true best arch (several when
tied) among the feasible archs not yet queried, by posterior mean and by the acquisition (log EI over
the best feasible accuracy found), with the best arch's predicted accuracy and standard deviation:

    .venv/bin/python -m bench.search_trace lut_latency 25 --seeds 0,1,8 [--variant ncf-yeo-johnson] [-v]

A best arch ranked low by the mean until it is hit says the model misses it (it is found by
exploration); ranked high by the mean but low by EI says the acquisition passes it over (near-ties
with the incumbent). Diagnostic only: it writes nothing.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from bench import search_efficiency as se  # noqa: E402


def trace(
    env: dict[str, Any], cost: str, limit: float, variant: str, seed: int, budget: int
) -> dict[str, Any]:
    """One run, stopped at the first hit: the hit and one row per BO step (see the module docstring)."""
    from chamlab.chamnet.search import BayesOptEngine
    from chamlab.chamnet.search.engine import log_ei, predict_gp

    table = env["table"]
    feas = [a for a in env["archs"] if table[a] <= limit]
    best_acc = max(env["acc"][a] for a in feas)
    best = {a for a in feas if env["acc"][a] == best_acc}
    cfg = se.engine_config(variant)  # "engine": today's default; a named variant: its options
    rows: list[dict[str, float]] = []

    def on_query(state: Any) -> None:
        if state.model is None:
            return
        queried = {q.arch for q in state.queries}
        fresh = [a for a in feas if a not in queried]
        if not best & set(fresh):
            return
        mu, sd = predict_gp(state.model, state.features(fresh))  # the run's own features
        inc = max(q.accuracy for q in state.queries if table[q.arch] <= limit)
        ei = log_ei(mu, sd, float(state.warp(inc)))
        i = next(k for k, a in enumerate(fresh) if a in best)
        rows.append(
            {
                "queries": len(state.queries),
                "rank_mean": int((mu > mu[i]).sum()) + 1,
                "rank_ei": int((ei > ei[i]).sum()) + 1,
                "mean": float(state.warp.inverse(mu[i])),
                "sd_warped": float(sd[i]),
                "incumbent": inc,
                "last": state.queries[-1].accuracy,
            }
        )

    state = BayesOptEngine(cfg).run(
        se.problem_for(env, cost, limit),
        budget,
        np.random.default_rng(seed),
        on_query=on_query,
        stop=lambda s: any(q.arch in best for q in s.queries),
    )
    hit = next((k + 1 for k, q in enumerate(state.queries) if q.arch in best), None)
    return {"hit": hit, "best_acc": best_acc, "n_best": len(best), "feasible": len(feas), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cost", choices=sorted(se.SPACE_OF))
    ap.add_argument("percentile", type=int)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variant", default=se.default_variant())
    ap.add_argument("--budget", type=int, default=150)
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per BO step")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    env = se.setup(a.cost == "lut_latency", a.cost == "synthetic_latency")[a.cost]
    limit = float(np.percentile(list(env["table"].values()), a.percentile))
    for seed in (int(s) for s in a.seeds.split(",")):
        t = trace(env, a.cost, limit, a.variant, seed, a.budget)
        rm = np.array([r["rank_mean"] for r in t["rows"]])
        re_ = np.array([r["rank_ei"] for r in t["rows"]])
        print(
            f"{a.cost} p{a.percentile} {a.variant} seed {seed}: hit {t['hit']} (best {t['best_acc']:.3f}, "
            f"{t['n_best']} tied, {t['feasible']} feasible); BO steps {len(rm)}: best ranked by mean "
            f"median {np.median(rm) if len(rm) else 0:.0f}, in top 5 {int((rm <= 5).sum())}, "
            f"beyond 100 {int((rm > 100).sum())}; by EI beyond 500 {int((re_ > 500).sum())}"
        )
        if a.verbose:
            for r in t["rows"]:
                print(
                    "  n={queries} rank mean {rank_mean} EI {rank_ei}: predicted {mean:.3f} "
                    "(sd {sd_warped:.3f} warped), incumbent {incumbent:.3f}, last {last:.3f}".format(**r)
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
