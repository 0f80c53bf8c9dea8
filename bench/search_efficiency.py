"""Sample efficiency of the search engine against baselines, in one harness (resumable).

For macro-cifar10 (6,561 archs with measured CIFAR-10 accuracy, oracle = mean_acc) under two cost
models, FLOPs (the table's MACs, as the anchors in NOTES.md were measured) and the latency of the
LUT frozen in bench/data (LUT p50 sum with the invocation-overhead correction), and for a synthetic
table of another structure (bench/synthetic_table.py: 6 dimensions, 3 categorical, 1,440 archs,
generated from a seed, not shipped) under its latency column, at limits at the 25th/50th/75th
percentile of the cost over the space, every method runs 10 seeds and we record:

* ``hit``: oracle queries until the true best arch under the limit is first queried (any of them
  when several archs tie for the best accuracy; None: not within the method's budget, reported as
  ">budget");
* ``regret50``: true best accuracy minus the best feasible accuracy found in the first 50 queries.

Methods: the engine (defaults) and its ablations (each design choice switched, one at a time, 10
seeds on every cost model; the later ones at the hard limits first, ``--cells``), plain GP-EI
(scikit-learn, NOTES.md), random search, regularised evolution (50/10) and Optuna TPE. A run stops
once it has hit the best and made 50 queries. Plus the predictor quality (RMSE, Kendall tau) vs
training points for each initial design, on all feasible archs and near the constraint boundary.

    .venv/bin/python -m bench.search_efficiency --jobs 2   # full (resumes from the results file)
    .venv/bin/python -m bench.search_efficiency --smoke --out /tmp/smoke.json   # CI: < 1 minute
    .venv/bin/python -m bench.search_efficiency --methods yj-trust-region --cells flops:50,lut_latency:25

Every run is saved as it ends (key ``cost|percentile|method|seed``): a stopped benchmark continues
where it stopped; ``--jobs N`` runs N seeds at once (one BLAS thread each).

The summary also pairs every engine variant with the default by (cell, seed) (``summary_paired``:
better/worse/tied, the median difference, the Wilcoxon signed-rank p). Seeds from 10 on
(``--first-seed 10 --seeds 10``) are a robustness read, kept out of the main medians
(``summary_extra_seeds``: the median over all seeds and a bootstrap interval of a 10-seed median):

    .venv/bin/python -m bench.search_efficiency --methods ncf-yeo-johnson --first-seed 10 --skip-quality
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

# one BLAS/OpenMP thread per process: the machine is shared, and oversubscribed pools crawl
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from bench._common import RESULTS, platform_id, platform_tag, write_result  # noqa: E402

LUT = Path(__file__).resolve().parent / "data" / "macro-cifar10-local-cpu.parquet"
PCTS = (25, 50, 75)
#: the seeds of the main tables (0 .. MAIN_SEEDS - 1): runs of later seeds (``--first-seed``) are a
#: robustness read, summarised apart (``summary_extra_seeds``), never mixed into the main medians
MAIN_SEEDS = 10
BUDGETS = {"engine": 150, "plain-gp-ei": 150, "optuna-tpe": 150, "regularized-evolution": 300, "random": 300}
#: the first engine (greedy log-EI, one RBF GP with the cost feature, imbalanced-Sobol design) ...
V1: dict[str, Any] = {
    "acquisition": "ei",
    "ensemble": False,
    "sampler": "imbalanced-sobol",
    "cost_feature": True,
    "kernel": "rbf",
    "refit_every": 4,
    "trust_region": False,
    "batch_size": 1,
    "incumbent": "observed",
    "output_warp": "none",
    "ei_target": "latent",
    "input_warp": False,
    "ordinal_encoding": "index",
    "hyper_starts": 1,
    "merge_equivalent": False,
}
#: v1 without the cost feature (the default from 8f11b45 until the output warp) ...
NCF: dict[str, Any] = {**V1, "cost_feature": False}
#: ... and every variant, as a full configuration (not relative to the defaults, so stored runs keep
#: their meaning when the defaults change): v1 with one design choice switched, then the new designs
#: (Thompson sampling, the kernel/feature ensemble) alone, together and with the uniform design.
ENGINE_VARIANTS: dict[str, dict[str, Any]] = {
    "engine": {},  # the current defaults (the smoke run; in the full run, the variant equal to them)
    "v1": V1,
    "v1-no-cost-feature": {**V1, "cost_feature": False},
    "v1-uniform-init": {**V1, "sampler": "uniform"},
    "v1-sobol-init": {**V1, "sampler": "sobol"},
    "v1-matern52": {**V1, "kernel": "matern52"},
    "v1-additive": {**V1, "kernel": "additive"},
    "v1-refit-every-step": {**V1, "refit_every": 1},
    "v1-trust-region": {**V1, "trust_region": True},
    "v1-batch4": {**V1, "batch_size": 4},
    "thompson": {**V1, "acquisition": "thompson"},
    "ensemble": {**V1, "ensemble": True},
    "thompson-ensemble": {**V1, "acquisition": "thompson", "ensemble": True},
    "thompson-uniform-init": {**V1, "acquisition": "thompson", "sampler": "uniform"},
    "ensemble-uniform-init": {**V1, "ensemble": True, "sampler": "uniform"},
    "thompson-ensemble-uniform-init": {
        **V1,
        "acquisition": "thompson",
        "ensemble": True,
        "sampler": "uniform",
    },
    "thompson-no-cost-feature": {**V1, "acquisition": "thompson", "cost_feature": False},
    "v1-no-cost-feature-ensemble": {**V1, "cost_feature": False, "ensemble": True},
    "v1-no-cost-feature-sobol-init": {**V1, "cost_feature": False, "sampler": "sobol"},
    "v1-no-cost-feature-uniform-init": {**V1, "cost_feature": False, "sampler": "uniform"},
    "v1-no-cost-feature-matern52": {**V1, "cost_feature": False, "kernel": "matern52"},
    # the same configuration as v1-no-cost-feature, whose runs were made on another machine: rerun
    # here, so the variants below (run here) compare with it on one machine
    "v1-no-cost-feature-here": {**V1, "cost_feature": False},
    # ... and what was measured after it (issue9c; run here, at the hard limits first): the output
    # warps (Yeo-Johnson, the default now, and the rank copula) and the noise-aware incumbent
    "ncf-yeo-johnson": {**NCF, "output_warp": "yeo-johnson"},
    "ncf-copula": {**NCF, "output_warp": "copula"},
    "ncf-posterior-incumbent": {**NCF, "incumbent": "posterior-mean"},
    # ... then, on top of the Yeo-Johnson warp: the noise-aware incumbent, the EI of an observation,
    # a learned input warp, and the options of v1 not yet run with 10 seeds
    "yj-posterior-incumbent": {**NCF, "output_warp": "yeo-johnson", "incumbent": "posterior-mean"},
    "yj-observation-ei": {**NCF, "output_warp": "yeo-johnson", "ei_target": "observation"},
    "yj-input-warp": {**NCF, "output_warp": "yeo-johnson", "input_warp": True},
    "yj-refit-every-step": {**NCF, "output_warp": "yeo-johnson", "refit_every": 1},
    "yj-trust-region": {**NCF, "output_warp": "yeo-johnson", "trust_region": True},
    "yj-batch4": {**NCF, "output_warp": "yeo-johnson", "batch_size": 4},
    "yj-additive": {**NCF, "output_warp": "yeo-johnson", "kernel": "additive"},
    # ... then (issue9d, after tracing where the default spends its queries: bench/search_trace.py)
    # the GP's view of ordinal levels, the cost feature under the warp, other acquisitions (MES, PI)
    # and several hyperparameter starting points
    "yj-index-one-hot": {**NCF, "output_warp": "yeo-johnson", "ordinal_encoding": "index+one-hot"},
    "yj-cost-feature": {**NCF, "output_warp": "yeo-johnson", "cost_feature": True},
    "yj-mes": {**NCF, "output_warp": "yeo-johnson", "acquisition": "mes"},
    "yj-hyper-starts4": {**NCF, "output_warp": "yeo-johnson", "hyper_starts": 4},
    "yj-pi": {**NCF, "output_warp": "yeo-johnson", "acquisition": "pi"},
    # ... then (issue9e) the initial design size, never measured before: the default with 5 and 20
    # archs in the initial design (the default is 10)
    "yj-init5": {**NCF, "output_warp": "yeo-johnson", "n_init": 5},
    "yj-init20": {**NCF, "output_warp": "yeo-johnson", "n_init": 20},
    # ... then EI's improvement threshold xi (in standard deviations of the warped accuracies): the
    # traces show queries spent on near-ties of the incumbent while an isolated best waits
    "yj-xi0.1": {**NCF, "output_warp": "yeo-johnson", "ei_xi": 0.1},
    "yj-xi0.3": {**NCF, "output_warp": "yeo-johnson", "ei_xi": 0.3},
    # ... and a kernel of main effects plus pairwise interactions (the traces: an isolated best whose
    # rare choice pays off only with the others around it)
    "yj-additive2": {**NCF, "output_warp": "yeo-johnson", "kernel": "additive2"},
    # ... and (issue9f) one query per network: macro-cifar10 names 6,561 archs but holds 3,969
    # networks (an identity inside a stage is no layer, wherever it sits); the engine asks one arch of
    # each class of archs with the same op list (the synthetic table has no such classes: unchanged)
    "yj-merge-equivalent": {**NCF, "output_warp": "yeo-johnson", "merge_equivalent": True},
    # ... and (issue 24) the cost feature again, on top of that: the public suite's choice
    # (bench/search_suite.py), measured here on the shipped tables
    "yj-merge-equivalent-cost-feature": {
        **NCF,
        "output_warp": "yeo-johnson",
        "merge_equivalent": True,
        "cost_feature": True,
    },
}
#: the order runs are made in (a stopped run has the most informative ones): these first
PRIORITY = (
    "v1",
    "thompson",
    "ensemble",
    "thompson-ensemble",
    "plain-gp-ei",
    "random",
    "regularized-evolution",
    "v1-no-cost-feature",
    "v1-uniform-init",
    "thompson-uniform-init",
    "ensemble-uniform-init",
    "thompson-ensemble-uniform-init",
    "thompson-no-cost-feature",
    "v1-no-cost-feature-ensemble",
    "v1-no-cost-feature-sobol-init",
    "v1-no-cost-feature-uniform-init",
    "v1-no-cost-feature-matern52",
    "v1-matern52",
    "v1-sobol-init",
    "v1-trust-region",
    "v1-refit-every-step",
    "v1-additive",
    "v1-batch4",
    "optuna-tpe",
)


#: earlier defaults: the one before the cost feature came back (issue9f .. issue 24), and the one
#: before the output warp (8f11b45 .. issue9c) with its device runs and its rerun here
PREVIOUS_DEFAULTS = ("yj-merge-equivalent", "v1-no-cost-feature", "v1-no-cost-feature-here")


def engine_config(method: str) -> Any:
    """The ``EngineConfig`` of an engine variant's runs (:func:`bench.engine_variants.config_of`)."""
    from bench.engine_variants import config_of

    return config_of(method, ENGINE_VARIANTS)


def default_variant() -> str:
    """The variant whose configuration is the engine's default ("engine" when none is)."""
    import bench.engine_variants  # noqa: F401  # registers the measured kernels and acquisitions
    from chamlab.chamnet.search import EngineConfig
    from chamlab.core.errors import InputError

    default = EngineConfig()
    for name, cfg in ENGINE_VARIANTS.items():
        try:
            # local_search acts on candidate pools only, and this benchmark's spaces are all enumerated
            # (at most exhaustive_limit archs): a variant recorded before it existed ran as the default
            variant = dataclasses.replace(EngineConfig.from_json(cfg), local_search=default.local_search)
            if name != "engine" and variant == default:
                return name
        except InputError:  # a variant using an option removed from the engine (results kept)
            continue
    return "engine"


#: cost name -> the space it belongs to
SPACE_OF = {"flops": "macro-cifar10", "lut_latency": "macro-cifar10", "synthetic_latency": "synthetic-table"}


def setup(with_lut: bool = True, synthetic: bool = True) -> dict[str, dict[str, Any]]:
    """cost name -> {space, archs, acc, table (arch -> cost)}."""
    from chamlab.chamnet.spaces import SPACES
    from chamlab.chamnet.spaces.macro_cifar10 import accuracy_table

    sp = SPACES.get("macro-cifar10")
    t = accuracy_table()
    archs = [sp.parse(a) for a in t["arch"]]
    acc = dict(zip(archs, t["mean_acc"].astype(float), strict=True))
    envs = {
        "flops": {
            "space": sp,
            "archs": archs,
            "acc": acc,
            "table": dict(zip(archs, t["macs"].astype(float), strict=True)),
        }
    }
    if with_lut and LUT.exists():
        from chamlab.chamnet.predictors.latency import LutLatencyPredictor
        from chamlab.host.luts.lut import Lut  # not host.api: the benchmark needs no device stack

        lut = Lut.read(LUT)
        predictor = LutLatencyPredictor(lut.p50_by_key(lut.choose(LUT)))
        lat = {a: predictor.predict(sp.ops(a)).latency_ms for a in archs}
        envs["lut_latency"] = {"space": sp, "archs": archs, "acc": acc, "table": lat}
    if synthetic:
        from bench.synthetic_table import make_frame
        from chamlab.chamnet.spaces.table import TableSpace

        ts = TableSpace.from_frame(make_frame(0), name="synthetic-table", what="bench/synthetic_table.py")
        rows = list(ts.rows)
        envs["synthetic_latency"] = {
            "space": ts,
            "archs": rows,
            "acc": dict(zip(rows, ts.accuracy.astype(float), strict=True)),
            "table": dict(zip(rows, ts.costs["latency_ms"].astype(float), strict=True)),
        }
    return envs


def problem_for(env: dict[str, Any], cost: str, limit: float) -> Any:
    from chamlab.chamnet.search import Problem, oracle_for

    return Problem(env["space"], oracle_for(env["space"]), {cost: env["table"].__getitem__}, {cost: limit})


def run_one(
    env: dict[str, Any], cost: str, limit: float, method: str, seed: int, budget: int
) -> dict[str, Any]:
    from bench.baselines import BASELINES, Candidates, first_hit
    from chamlab.chamnet.search import BayesOptEngine
    from chamlab.chamnet.search.engine import Encoder

    table = env["table"]
    feasible = [a for a in env["archs"] if table[a] <= limit]
    best_acc = max(env["acc"][a] for a in feasible)
    # the true best: several archs when tied (macro-cifar10 holds equivalent networks, e.g. an
    # identity before or after a block of the same stage, with the same accuracy row)
    best = {a for a in feasible if env["acc"][a] == best_acc}

    def stop(queried: list) -> bool:
        return len(queried) >= 50 and any(a in best for a in queried)

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if method in ENGINE_VARIANTS:
        state = BayesOptEngine(engine_config(method)).run(
            problem_for(env, cost, limit), budget, rng, stop=lambda s: stop([q.arch for q in s.queries])
        )
        queried = [q.arch for q in state.queries]
    else:
        sp = env["space"]
        cands = Candidates(
            sp.dimensions,
            feasible,
            Encoder(sp.dimensions)(feasible),
            env["acc"].__getitem__,
            lambda a: table[a] <= limit,
        )
        queried = BASELINES[method](cands, budget, rng, stop)
    seconds = time.perf_counter() - t0
    first50 = [env["acc"][a] for a in queried[:50] if table[a] <= limit]
    hit = first_hit(queried, best)
    return {
        "hit": hit,
        # queries up to the hit (or all) that asked a network already asked under another name
        "repeats": repeats(env["space"], queried[: hit or len(queried)]),
        "queries": len(queried),
        "regret50": round(best_acc - max(first50, default=float("nan")), 4),
        "seconds": round(seconds, 2),
    }


def repeats(space: Any, queried: list) -> int:
    """How many of ``queried`` build a network asked before them under another arch string (the
    space's ``equivalence_key``; 0 for a table space)."""
    from chamlab.chamnet.search.engine import equivalence_key_of

    key = equivalence_key_of(space)
    keys = [key(a) for a in queried]
    return len(keys) - len(set(keys))


_ENVS: dict[str, dict[str, Any]] = {}
#: what a run's trajectory depends on (bench/_common.py): each run records its id, the file maps it back
_PLATFORM = platform_tag()
_PLATFORM_ID = platform_id(_PLATFORM)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _work(job: tuple[str, str, str, int, float, int]) -> tuple[str, dict[str, Any]]:
    key, cost, method, seed, limit, budget = job
    return key, {**run_one(_ENVS[cost], cost, limit, method, seed, budget), "platform": _PLATFORM_ID}


def summarise(runs: dict[str, Any], budgets: dict[str, int]) -> dict[str, Any]:
    """Per cell and method over the main seeds (0 .. MAIN_SEEDS - 1)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for key, r in runs.items():
        cost, pct, method, seed = key.split("|")
        if int(seed) >= MAIN_SEEDS:
            continue
        groups.setdefault((cost, pct, method), []).append(r)
    out: dict[str, Any] = {}
    for (cost, pct, method), rs in sorted(groups.items()):
        budget = budgets[method]
        hits = np.array([r["hit"] if r["hit"] is not None else np.inf for r in rs], dtype=float)
        med = float(np.median(hits))
        out.setdefault(cost, {}).setdefault(pct, {})[method] = {
            "seeds": len(rs),
            "median_hit": med if np.isfinite(med) else f">{budget}",
            "found": int(np.isfinite(hits).sum()),
            "median_regret50": float(np.nanmedian([r["regret50"] for r in rs])),
            "max_regret50": float(np.nanmax([r["regret50"] for r in rs])),
            "median_seconds": float(np.median([r["seconds"] for r in rs])),
            # share of the queries up to the hit spent on a network asked before (runs that count it)
            **(
                {
                    "repeat_share": sum(r["repeats"] for r in rs)
                    / max(1, sum(r["hit"] or r["queries"] for r in rs))
                }
                if all("repeats" in r for r in rs)
                else {}
            ),
        }
    return out


def _hits_by_pair(runs: dict[str, Any], budget: int) -> dict[str, dict[tuple[str, str, int], float]]:
    """method -> {(cost, pct, seed): queries to the best}, a miss counted as budget + 1."""
    out: dict[str, dict[tuple[str, str, int], float]] = {}
    for key, r in runs.items():
        cost, pct, method, seed = key.split("|")
        out.setdefault(method, {})[(cost, pct, int(seed))] = float(
            r["hit"] if r["hit"] is not None else budget + 1
        )
    return out


def paired_comparison(
    runs: dict[str, Any], default: str, summary: dict[str, Any], budget: int | None = None
) -> dict[str, Any]:
    """Every engine variant against ``default`` over the (cell, seed) pairs both ran.

    Difference = variant minus default queries to the best (a miss: budget + 1; negative: the
    variant found the best sooner). Per variant: the pairs, better/worse/tied counts, the median
    difference, the two-sided Wilcoxon signed-rank p (scipy: zero differences dropped, exact for
    small samples without ties, else the normal approximation; 1.0 when every pair ties) and, from
    the main-seed medians of ``summary``, the largest per-cell excess of the variant's median over
    the default's (misses as budget + 1) and the cells both ran.
    """
    import warnings

    from scipy.stats import wilcoxon

    budget = BUDGETS["engine"] if budget is None else budget
    hits = _hits_by_pair(runs, budget)
    base = hits.get(default, {})

    def med(v: Any) -> float:
        return float(v) if isinstance(v, float) and np.isfinite(v) else float(budget + 1)

    out: dict[str, Any] = {}
    for m in ENGINE_VARIANTS:
        if m in ("engine", default) or m not in hits:
            continue
        pairs = sorted(set(hits[m]) & set(base))
        if not pairs:
            continue
        d = np.array([hits[m][k] - base[k] for k in pairs])
        nonzero = d[d != 0]
        if len(nonzero):
            with warnings.catch_warnings():  # ties/small samples: scipy warns and approximates
                warnings.simplefilter("ignore")
                p = float(wilcoxon(nonzero).pvalue)
        else:
            p = 1.0
        cells = sorted({(c, q) for c, q, _ in pairs})
        excess = [
            med(summary[c][q][m]["median_hit"]) - med(summary[c][q][default]["median_hit"])
            for c, q in cells
            if m in summary.get(c, {}).get(q, {}) and default in summary[c][q]
        ]
        out[m] = {
            "pairs": len(pairs),
            "cells": len(cells),
            "better": int((d < 0).sum()),
            "worse": int((d > 0).sum()),
            "tied": int((d == 0).sum()),
            "median_difference": float(np.median(d)),
            "mean_difference": round(float(np.mean(d)), 2),
            "wilcoxon_p": float(f"{p:.3g}"),
            "worst_cell_median_excess": max(excess) if excess else None,
        }
    return out


def extra_seeds(
    runs: dict[str, Any], budget: int | None = None, draws: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Cells where a method ran more than the main seeds: the median over all its seeds and how
    much a MAIN_SEEDS-seed median moves (a miss: budget + 1).

    The bootstrap draws MAIN_SEEDS hits with replacement from all the method's seeds at the cell,
    ``draws`` times (numpy Generator seeded with ``seed``), and gives the 2.5/97.5 % percentiles of
    their median and the share of draws whose median is <= 35 (the target).
    """
    budget = BUDGETS["engine"] if budget is None else budget
    out: dict[str, Any] = {}
    for m, by_pair in sorted(_hits_by_pair(runs, budget).items()):
        cells = sorted({(c, q) for c, q, s in by_pair if s >= MAIN_SEEDS})
        for c, q in cells:
            h = np.array([v for (c2, q2, _s), v in sorted(by_pair.items()) if (c2, q2) == (c, q)])
            rng = np.random.default_rng(seed)
            meds = np.median(rng.choice(h, size=(draws, MAIN_SEEDS), replace=True), axis=1)
            lo, hi = np.percentile(meds, [2.5, 97.5])
            out.setdefault(m, {}).setdefault(c, {})[q] = {
                "seeds": len(h),
                "median_hit": float(np.median(h)),
                "found": int((h <= budget).sum()),
                "bootstrap_median_95": [float(lo), float(hi)],
                "bootstrap_share_le_35": round(float(np.mean(meds <= 35)), 3),
            }
    return out


def predictor_quality(env: dict[str, Any], seeds: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    """GP trained on n archs of each initial design; RMSE and Kendall tau on held-out feasible archs."""
    from scipy.stats import kendalltau

    from chamlab.chamnet.search.engine import Encoder, fit_gp, predict_gp
    from chamlab.chamnet.search.sampling import design

    table = env["table"]
    all_cost = np.array([table[a] for a in env["archs"]])
    limit = float(np.percentile(all_cost, 50))
    feasible = [a for a in env["archs"] if table[a] <= limit]
    cost = np.array([table[a] for a in feasible])
    y = np.array([env["acc"][a] for a in feasible])
    enc = Encoder(env["space"].dimensions)
    Xo = enc(feasible)
    with_cost = False  # the engine's features (the cost feature was removed from it)
    X = Xo
    band = cost >= np.percentile(cost, 75)  # the quarter of feasible archs nearest the limit
    out: dict[str, Any] = {
        "limit_flops": limit,
        "boundary": "feasible archs in the top quarter of cost",
        "cost_feature": with_cost,
    }
    for sampler in ("uniform", "sobol", "imbalanced-sobol"):
        for n in sizes:
            rows = []
            for seed in range(seeds):
                idx = design(sampler, Xo, cost, limit, n, np.random.default_rng(seed))
                model = fit_gp(X[idx], y[idx])
                mask = np.ones(len(feasible), dtype=bool)
                mask[idx] = False
                mu, _ = predict_gp(model, X)
                for name, m in (("all", mask), ("boundary", mask & band)):
                    err = mu[m] - y[m]
                    rows.append((name, float(np.sqrt(np.mean(err**2))), float(kendalltau(mu[m], y[m])[0])))
            for name in ("all", "boundary"):
                r = [x for x in rows if x[0] == name]
                out.setdefault(sampler, {}).setdefault(str(n), {})[name] = {
                    "rmse": round(float(np.median([x[1] for x in r])), 4),
                    "kendall_tau": round(float(np.median([x[2] for x in r])), 4),
                }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="1 seed, median FLOPs limit, budget 12")
    ap.add_argument("--seeds", type=int, default=MAIN_SEEDS, help="how many seeds (default: %(default)s)")
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds run are first-seed .. first-seed + seeds - 1 (seeds >= 10 are summarised apart)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "search_efficiency.json")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--methods", help="comma-separated subset of methods to run now (default: all)")
    ap.add_argument("--costs", help="comma-separated subset of cost models to run now (default: all)")
    ap.add_argument(
        "--cells", help="comma-separated cost:percentile cells to run now, e.g. flops:50,lut_latency:25"
    )
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (processes; one thread each)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with_lut, synthetic = not a.smoke, not a.smoke
    envs = setup(with_lut, synthetic)
    budgets = dict(BUDGETS)
    for v in ENGINE_VARIANTS:
        budgets[v] = BUDGETS["engine"]
    pcts: tuple[int, ...] = PCTS
    if a.first_seed < 0 or a.seeds < 1:
        ap.error(f"--first-seed must be >= 0 and --seeds >= 1, got {a.first_seed} and {a.seeds}")
    seeds, costs = range(a.first_seed, a.first_seed + a.seeds), list(envs)
    methods = [*ENGINE_VARIANTS, *BASELINES_ORDER]  # every variant: every cost model, every limit, 10 seeds
    if a.smoke:
        budgets = {m: 12 for m in budgets}
        pcts, seeds, costs = (50,), range(1), ["flops"]
        methods = ["engine", *BASELINES_ORDER]
    if a.methods:
        methods = [m for m in methods if m in a.methods.split(",")]
    old = json.loads(a.out.read_text()) if a.out.exists() else {}
    runs: dict[str, Any] = old.get("runs", {}) if old.get("smoke", False) == a.smoke else {}
    limits = {
        c: {str(p): float(np.percentile(list(envs[c]["table"].values()), p)) for p in PCTS} for c in costs
    }
    limits = {**old.get("limits", {}), **limits} if not a.smoke else limits
    run_costs = [c for c in costs if not a.costs or c in a.costs.split(",")]
    platforms: dict[str, str] = dict(old.get("platforms", {}))

    def save(quality: Any = None) -> None:
        write_result(
            "search_efficiency",
            {
                "smoke": a.smoke,
                "spaces": {c: SPACE_OF[c] for c in limits},
                "lut": str(LUT.relative_to(LUT.parents[2])) if "lut_latency" in limits else None,
                "limits": limits,
                "budgets": budgets,
                "summary": (summary := summarise(runs, budgets)),
                # every engine variant against the default, paired by (cell, seed)
                "summary_paired": paired_comparison(runs, default_variant(), summary),
                # cells run with more than the main seeds (--first-seed): a robustness read
                "summary_extra_seeds": extra_seeds(runs),
                "predictor_quality": quality if quality is not None else old.get("predictor_quality"),
                # where runs were made elsewhere (merged from another machine's results file)
                **({"device_runs": old["device_runs"]} if "device_runs" in old and not a.smoke else {}),
                # platform id (a run's "platform") -> what its floating-point results depend on
                "platforms": platforms,
                "runs": runs,
            },
            out=a.out,
        )

    if not a.smoke:  # "engine" duplicates the variant equal to the defaults (or stands for them)
        methods = [m for m in methods if m != "engine" or default_variant() == "engine"]
    rank = {m: i for i, m in enumerate(PRIORITY)}
    methods = sorted(methods, key=lambda m: rank.get(m, -1))
    plan = [(c, p, m, s) for m in methods for s in seeds for c in run_costs for p in pcts]
    if a.cells:
        plan = [x for x in plan if f"{x[0]}:{x[1]}" in a.cells.split(",")]
    jobs = [
        (f"{c}|{p}|{m}|{s}", c, m, s, limits[c][str(p)], budgets[m])
        for c, p, m, s in plan
        if f"{c}|{p}|{m}|{s}" not in runs
    ]
    _ENVS.update(envs)  # forked workers inherit it
    if jobs:
        platforms[_PLATFORM_ID] = _PLATFORM
    if a.jobs > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(a.jobs, _init_worker) as pool:
            for key, r in pool.imap_unordered(_work, jobs):
                runs[key] = r
                print(key, r, flush=True)
                save()
    else:
        for job in jobs:
            key, r = _work(job)
            runs[key] = r
            print(key, r, flush=True)
            save()
    quality = None
    if not a.skip_quality:
        quality = predictor_quality(
            envs["flops"], 1 if a.smoke else 5, (10,) if a.smoke else (10, 20, 40, 80)
        )
    save(quality)
    print(json.dumps(summarise(runs, budgets), indent=1))
    return 0


BASELINES_ORDER = ("plain-gp-ei", "random", "regularized-evolution", "optuna-tpe")

if __name__ == "__main__":
    raise SystemExit(main())


COST_TITLES = {
    "flops": "macro-cifar10, FLOPs limits",
    "lut_latency": "macro-cifar10, frozen-LUT latency limits",
    "synthetic_latency": "synthetic table (bench/synthetic_table.py), latency limits",
}


def _hit(v: dict[str, Any]) -> str:
    hit = v["median_hit"]
    return f"{hit:g}" if isinstance(hit, float) else str(hit)


def ablation_table(s: dict[str, Any], default: str) -> list[str]:
    """Median queries to the best of every engine variant at every limit (markdown rows)."""
    cells = [(c, p) for c in s for p in s[c]]
    short = {"flops": "FLOPs", "lut_latency": "LUT", "synthetic_latency": "synthetic"}
    out = [
        "| variant | " + " | ".join(f"{short.get(c, c)} p{p}" for c, p in cells) + " | worst |",
        "|---|" + "---|" * (len(cells) + 1),
    ]
    for m in ENGINE_VARIANTS:
        vals = [s[c][p].get(m) for c, p in cells]
        if m == "engine" or not any(vals):
            continue
        worst = max(
            (v["median_hit"] if isinstance(v["median_hit"], float) else np.inf for v in vals if v), default=0
        )
        seeds = {v["seeds"] for v in vals if v}
        name = f"**{m}** (default)" if m == default else m
        if seeds != {10}:
            name += f" ({'/'.join(str(x) for x in sorted(seeds))} seeds)"
        cols = [_hit(v) if v else "" for v in vals]
        # the worst median only where every limit ran (a partial row names the limits it covers)
        shown = f"{worst:g}" if np.isfinite(worst) else f">{BUDGETS['engine']}"
        last = shown if all(vals) else f"({sum(1 for v in vals if v)} limits)"
        out.append(f"| {name} | " + " | ".join(cols) + f" | {last} |")
    return out


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def paired_table(paired: dict[str, Any], default: str, r: dict[str, Any]) -> list[str]:
    """The paired comparison of every variant with the default (markdown lines)."""
    elsewhere = {k.split("|")[2] for k in (r.get("device_runs") or {}).get("runs", [])}
    budget = BUDGETS["engine"]
    out = [
        f"**Paired comparison with the default** (`{default}`): for every engine variant, the (cell, seed)",
        "pairs both ran, difference = the variant's queries to the best minus the default's (a miss counts",
        f"as {budget + 1}; negative: the variant found the best sooner); better/worse/tied: pairs where the",
        "variant needed fewer/more/as many queries; the two-sided Wilcoxon signed-rank p (scipy, zero",
        "differences dropped); worst cell: the largest excess of the variant's median over the default's",
        f"at a cell both ran (10-seed medians of the table above, a miss as {budget + 1}). Variants marked †",
        "have runs made on the second machine, the default's were made here: `v1-no-cost-feature`",
        "against `v1-no-cost-feature-here` (one configuration, two machines) shows how far that alone",
        "moves the hits.",
        "",
        "| variant | cells | pairs | better / worse / tied | median diff | mean diff | Wilcoxon p "
        "| worst cell |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, v in paired.items():
        name = f"{m} †" if m in elsewhere else m
        worst = v["worst_cell_median_excess"]
        out.append(
            f"| {name} | {v['cells']} | {v['pairs']} | {v['better']} / {v['worse']} / {v['tied']} | "
            f"{v['median_difference']:+g} | {v['mean_difference']:+.1f} | {_p(v['wilcoxon_p'])} | "
            + (f"{worst:+g} |" if worst is not None else " |")
        )
    return [*out, ""]


def extra_seeds_table(
    extra: dict[str, Any],
    s: dict[str, Any],
    budget: int | None = None,
    titles: dict[str, str] | None = None,
) -> list[str]:
    """Cells run with more seeds than the main table's (markdown lines); ``budget``: the runs' query
    budget (default: this benchmark's engine budget); ``titles``: a cell's name in the table."""
    short = titles or {"flops": "FLOPs", "lut_latency": "LUT", "synthetic_latency": "synthetic"}
    budget = BUDGETS["engine"] if budget is None else budget

    def show(x: float) -> str:
        return f"{x:g}" if x <= budget else f">{budget}"

    out: list[str] = []
    for m, by_cost in extra.items():
        out += [
            f"**More seeds for `{m}`** (a robustness read; the target stays the {MAIN_SEEDS}-seed median",
            "of the table above): the median over all its seeds, and a bootstrap 95 % interval of a",
            f"{MAIN_SEEDS}-seed median ({MAIN_SEEDS} hits drawn with replacement from all the seeds, 10,000",
            f"draws, numpy seed 0; a miss counts as {budget + 1}) with the share of those medians <= 35:",
            "",
            f"| cell | {MAIN_SEEDS}-seed median | seeds | median, all seeds (found) | "
            f"bootstrap 95 % of a {MAIN_SEEDS}-seed median | share <= 35 |",
            "|---|---|---|---|---|---|",
        ]
        for c, by_pct in by_cost.items():
            for p, v in by_pct.items():
                main = s.get(c, {}).get(p, {}).get(m)
                lo, hi = v["bootstrap_median_95"]
                out.append(
                    f"| {short.get(c, c)} p{p} | {_hit(main) if main else ''} | {v['seeds']} | "
                    f"{show(v['median_hit'])} ({v['found']}/{v['seeds']}) | {show(lo)} .. {show(hi)} | "
                    f"{v['bootstrap_share_le_35']:.2f} |"
                )
        out.append("")
    return out


def render(r: dict[str, Any], env_line: str) -> list[str]:
    """The docs/benchmarks.md section (called by bench/report.py)."""
    s = r["summary"]
    default = default_variant()
    lim = r["limits"]
    out = [
        "## Search sample efficiency",
        "",
        env_line,
        "",
    ]
    dev = r.get("device_runs")
    if dev:
        out += [
            f"_{dev['methods']} ran on {dev['where']}, at commit `{dev['commit']}`; the other runs and the "
            "predictor quality ran here (the line above). The benchmark counts oracle queries, not seconds._",
            "",
        ]
    out += [
        "Oracle queries until the true best arch under the limit is first queried (ties: any of them),",
        "median over the seeds (`found/seeds` within the budget; `>N`: the median run did not find it",
        "within N queries), and the regret (true best minus best found, accuracy points) after 50",
        "queries, median/max. Limits at the 25th/50th/75th percentile of the cost over the space (FLOPs: "
        + ", ".join(f"{v / 1e6:.1f}" for v in lim.get("flops", {}).values())
        + " M MACs; LUT latency: "
        + ", ".join(f"{v:.3f}" for v in lim.get("lut_latency", {}).values())
        + " ms; synthetic table: "
        + ", ".join(f"{v:.3f}" for v in lim.get("synthetic_latency", {}).values())
        + " ms). Budgets: "
        + ", ".join(f"{m} {b}" for m, b in r["budgets"].items() if m not in ENGINE_VARIANTS)
        + f", every engine variant {BUDGETS['engine']}. `{default}` is the engine's default configuration,"
        " `v1` the first one (cost feature on). Produced by `bench/search_efficiency.py`.",
        "",
    ]
    for cost, by_pct in s.items():
        methods = [
            m
            for m in [default, "engine", *PREVIOUS_DEFAULTS, "v1", *BASELINES_ORDER]
            if any(m in v for v in by_pct.values())
        ]
        out += [f"**{COST_TITLES.get(cost, cost)}**", ""]
        header = "| method | " + " | ".join(f"p{p}: queries to best | p{p}: regret@50" for p in by_pct) + " |"
        out += [header, "|---|" + "---|---|" * len(by_pct)]
        for m in dict.fromkeys(methods):
            cells = []
            for p in by_pct:
                v = by_pct[p].get(m)
                if v is None:
                    cells += ["", ""]
                    continue
                cells += [
                    f"{_hit(v)} ({v['found']}/{v['seeds']})",
                    f"{v['median_regret50']:.3f} / {v['max_regret50']:.3f}",
                ]
            label = f"engine ({m})" if m == default else m
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
    extra = r.get("summary_extra_seeds")
    if extra is None:
        extra = extra_seeds(r["runs"])
    if extra:
        out += extra_seeds_table(extra, s)
    if any(
        m in v for by_pct in s.values() for v in by_pct.values() for m in ENGINE_VARIANTS if m != "engine"
    ):
        out += [
            "**Engine ablations**: median queries to the best (10 seeds unless marked) of every variant",
            "(`bench/search_efficiency.py` `ENGINE_VARIANTS`: v1 with one design choice switched, Thompson",
            "sampling, the kernel/feature ensemble, and their combinations; then the output warps and the",
            "options measured on top of them, at the hard limits first; docs/search.md explains them):",
            "",
            *ablation_table(s, default),
            "",
        ]
    paired = r.get("summary_paired")
    if paired is None:  # a results file from before the paired comparison
        paired = paired_comparison(r["runs"], default, s)
    if paired:
        out += paired_table(paired, default, r)
    q = r.get("predictor_quality")
    if q:
        feat = "with" if q.get("cost_feature", True) else "without"
        out += [
            f"**Predictor quality vs training points** (GP {feat} the cost feature and without the output "
            "warp, trained on n archs of",
            f"each initial design at the median FLOPs limit; median over seeds; held-out feasible archs, "
            f"all and near the boundary = {q['boundary']}):",
            "",
            "| design | n | RMSE all | tau all | RMSE boundary | tau boundary |",
            "|---|---|---|---|---|---|",
        ]
        for sampler in ("uniform", "sobol", "imbalanced-sobol"):
            for n, v in q.get(sampler, {}).items():
                a, b = v["all"], v["boundary"]
                out.append(
                    f"| {sampler} | {n} | {a['rmse']:.3f} | {a['kendall_tau']:.3f} | {b['rmse']:.3f} | "
                    f"{b['kendall_tau']:.3f} |"
                )
        out.append("")
    return out
