"""The search engine against its baselines on a suite of public tabular benchmarks (resumable).

Every table lives under bench/data as a small derived Parquet file with its source, licence and
conversion (a README per table), so the suite runs offline. A *cell* is a (table, cost, limit)
triple: limits at the 25th/50th/75th percentile of the cost over the table. Every method runs
``--seeds`` seeds per cell with a budget of 100 queries and we record, as
``bench/search_efficiency.py`` does:

* ``hit``: queries until the true best row under the limit is first queried (None: not within the
  budget); a run stops once it has hit the best and made 50 queries;
* ``regret50``: true best accuracy minus the best feasible accuracy found in the first 50 queries.

Per cell the summary also gives the optimum's lead over the runner-up under the limit and the
table's noise (the standard deviation of one training run's accuracy, from the table's README): the
target (median <= 35 queries, found in every seed) is judged where the lead exceeds the noise; where
it does not, no method can tell the two apart and the regret is the measure.

    .venv/bin/python -m bench.search_suite --jobs 2             # the whole suite (resumes)
    .venv/bin/python -m bench.search_suite --smoke --out /tmp/s.json   # CI: seconds
    .venv/bin/python -m bench.search_suite --methods engine --seeds 3 --cells anb-zcu102:50

NAS-Bench-201's cell space (with HW-NAS-Bench's latencies on it) and Channel-Bench-Macro are kept
out of this suite on purpose: they are the independent check of the engine's default, never tuned on.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from bench._common import RESULTS, platform_id, platform_tag, write_result  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
PCTS = (25, 50, 75)
BUDGET = 100
#: table -> its file, the cost columns it is searched under (suite name -> column) and the noise of
#: one accuracy entry in points (README of the table: how it was estimated)
TABLES: dict[str, dict[str, Any]] = {
    "accel-nasbench": {
        "file": DATA / "accel-nasbench" / "accel-nasbench.parquet",
        "costs": {"anb-zcu102": "latency_ms", "anb-macs": "_macs_m"},
        "noise": 0.24,
    },
    # NAS-Bench-Graph: the light files hold the mean of 3 seeds and no per-seed values, so the noise
    # is not known: the lower bound used is one test node of one seed (100 / (3 * test nodes)) pt
    "nas-bench-graph-cora": {
        "file": DATA / "nas-bench-graph" / "nas-bench-graph-cora.parquet",
        "costs": {"nbg-cora": "latency_ms"},
        "noise": round(100 / (3 * 1000), 4),
    },
    "nas-bench-graph-arxiv": {
        "file": DATA / "nas-bench-graph" / "nas-bench-graph-arxiv.parquet",
        "costs": {"nbg-arxiv": "latency_ms"},
        "noise": round(100 / (3 * 48603), 4),
    },
}
#: the shipped tables the engine was developed on, run beside the public ones so a change of the
#: default is measured on them too: cell name -> (bench/search_efficiency.py's cost, noise, source).
#: macro-cifar10 (NAS-Bench-Macro) holds the mean of 3 training seeds, median seed sd 0.14 pt, so an
#: entry's standard error is about 0.08 pt; the synthetic table's noise is its e2 term, sd 0.15 pt
SHIPPED: dict[str, tuple[str, float, str]] = {
    "macro-cifar10-flops": ("flops", 0.08, "macro-cifar10"),
    "synthetic": ("synthetic_latency", 0.15, "bench/synthetic_table.py"),
}
BASELINES_ORDER = ("random", "regularized-evolution", "plain-gp-ei", "optuna-tpe", "optuna-gp")
#: every option of the engine's default as of issue 24's linear-cost run (cost feature, one query per
#: network, local search of pools): the base of the variants measured against that default
ON_DEFAULT: dict[str, Any] = {
    "n_init": 10, "batch_size": 1, "sampler": "imbalanced-sobol", "exhaustive_limit": 100_000,
    "pool_size": 4096, "mutate_top": 5, "local_search": 3, "refit_every": 4, "kernel": "rbf",
    "acquisition": "ei", "output_warp": "yeo-johnson", "cost_feature": True, "merge_equivalent": True,
}  # fmt: skip
#: engine configurations measured on the suite (EngineConfig fields, read by :func:`engine_config`;
#: "engine" = the current defaults)
VARIANTS: dict[str, dict[str, Any]] = {
    "engine": {},
    # the default before the cost feature (its runs were recorded as "engine" until then); every
    # variant below it was measured without the cost feature, and is paired with this run
    "no-cost-feature": {"cost_feature": False},
    # near-ties: EI counts only an improvement beyond the GP's learned noise (bench/engine_variants.py)
    "ei-above-noise": {"acquisition": "ei-above-noise", "cost_feature": False},
    # Matern-5/2 ARD (measured on the shipped tables before: worse on the synthetic table)
    "matern52": {"kernel": "matern52", "cost_feature": False},
    # categorical dims: one overlap (Hamming) lengthscale per dimension instead of one per one-hot column
    "overlap": {"kernel": "overlap", "cost_feature": False},
    # candidate pools instead of enumeration (as in a space of more than exhaustive_limit archs), without
    # and with the local search of the acquisition: what the local search buys where pools are used
    "pool": {"exhaustive_limit": 0, "local_search": 0, "cost_feature": False},
    "pool-local": {"exhaustive_limit": 0, "local_search": 3, "cost_feature": False},
    # the GP's hyperparameters re-optimised after every query (the default: every 4th)
    "refit1": {"refit_every": 1, "cost_feature": False},
    # pools of 256 draws: a space far larger than its pool (chamnet-mbv2 is ~10^19 archs per 4,096)
    "pool256": {"exhaustive_limit": 0, "pool_size": 256, "local_search": 0, "cost_feature": False},
    "pool256-local": {"exhaustive_limit": 0, "pool_size": 256, "local_search": 3, "cost_feature": False},
    # today's default plus a linear kernel on the cost feature: a global accuracy-vs-cost trend
    "linear-cost": {**ON_DEFAULT, "kernel": "rbf-linear-cost"},
    # today's default plus a linear kernel on every feature: a global linear trend in each dimension
    "linear-all": {**ON_DEFAULT, "kernel": "rbf-linear-all"},
    # today's default with half and twice its initial design (10): fewer queries spent before the GP
    # guides them, or a GP that starts from a better-covered space
    "init5": {**ON_DEFAULT, "n_init": 5},
    "init20": {**ON_DEFAULT, "n_init": 20},
}


def engine_config(method: str) -> Any:
    """The ``EngineConfig`` of an engine method's runs (:func:`bench.engine_variants.config_of`):
    ``engine`` is the current default; the variants measured before the cost feature name only what
    they changed and take the rest as it was then (no cost feature, no merge of equivalent archs, no
    local search); a variant of today's default names every option (:data:`ON_DEFAULT`). The results
    file records each method's configuration."""
    from bench.engine_variants import config_of

    return config_of(method, VARIANTS)


def setup(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """cost cell name -> {space, archs, acc, table (arch -> cost), noise, source}."""
    from chamlab.chamnet.spaces.table import TableSpace, read_frame

    envs: dict[str, dict[str, Any]] = {}
    for tname, t in TABLES.items():
        if names and not set(names) & set(t["costs"]):
            continue
        df = read_frame(t["file"])
        ts = TableSpace.from_frame(df, name=tname, what=str(t["file"]))
        rows = list(ts.rows)
        acc = dict(zip(rows, ts.accuracy.astype(float), strict=True))
        for cname, col in t["costs"].items():
            if names and cname not in names:
                continue
            envs[cname] = {
                "space": ts,
                "archs": rows,
                "acc": acc,
                "table": dict(zip(rows, df[col].astype(float), strict=True)),
                "noise": t["noise"],
                "source": tname,
                "column": col,
                # a second evaluation of every row (another split), where the table has one
                "valid": dict(zip(rows, df["_valid_accuracy"].astype(float), strict=True))
                if "_valid_accuracy" in df.columns
                else None,
            }
    if not names or "macro-cifar10-flops" in names or "synthetic" in names:
        from bench.search_efficiency import setup as shipped

        for cname, (key, noise, source) in SHIPPED.items():
            if names and cname not in names:
                continue
            env = shipped(with_lut=False, synthetic=key == "synthetic_latency")[key]
            envs[cname] = {**env, "noise": noise, "source": source, "column": key}
    return envs


def cell_facts(env: dict[str, Any], limit: float) -> dict[str, Any]:
    """The feasible rows, the optimum's lead over the runner-up and whether it exceeds the noise;
    where the table has a validation accuracy too, ``validation_pick_regret``: the accuracy lost by
    the row best on validation (what a search that knew every validation accuracy would pick)."""
    feasible = [a for a in env["archs"] if env["table"][a] <= limit]
    accs = sorted((env["acc"][a] for a in feasible), reverse=True)
    lead = accs[0] - accs[1] if len(accs) > 1 else float("inf")
    out = {
        "feasible": len(accs),
        "best": accs[0],
        "lead": round(lead, 4),
        "within_noise": int(sum(1 for a in accs[1:] if accs[0] - a <= env["noise"])),
        "decidable": bool(lead > env["noise"]),
    }
    valid = env.get("valid")
    if valid:
        pick = max(feasible, key=lambda a: (valid[a], env["acc"][a]))  # ties: the better test row
        out["validation_pick_regret"] = round(accs[0] - env["acc"][pick], 4)
    return out


def run_one(env: dict[str, Any], limit: float, method: str, seed: int, budget: int) -> dict[str, Any]:
    from bench.baselines import BASELINES, Candidates, first_hit
    from chamlab.chamnet.search import BayesOptEngine, Problem, oracle_for
    from chamlab.chamnet.search.engine import Encoder

    table = env["table"]
    feasible = [a for a in env["archs"] if table[a] <= limit]
    best_acc = max(env["acc"][a] for a in feasible)
    best = {a for a in feasible if env["acc"][a] == best_acc}

    def stop(queried: list) -> bool:
        return len(queried) >= 50 and any(a in best for a in queried)

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if method in VARIANTS:
        cfg = engine_config(method)
        sp = env["space"]
        problem = Problem(sp, oracle_for(sp), {"cost": table.__getitem__}, {"cost": limit})
        state = BayesOptEngine(cfg).run(
            problem, budget, rng, stop=lambda s: stop([q.arch for q in s.queries])
        )
        queried = [q.arch for q in state.queries]
    else:
        sp = env["space"]
        cands = Candidates(
            sp.dimensions,
            feasible,
            Encoder(sp.dimensions)(feasible),
            env["acc"].__getitem__,
            lambda a: a in table and table[a] <= limit,
            in_space=table.__contains__,
        )
        queried = BASELINES[method](cands, budget, rng, stop)
    seconds = time.perf_counter() - t0
    first50 = [env["acc"][a] for a in queried[:50] if table[a] <= limit]
    return {
        "hit": first_hit(queried, best),
        "queries": len(queried),
        "regret50": round(best_acc - max(first50, default=float("nan")), 4),
        "seconds": round(seconds, 2),
    }


_ENVS: dict[str, dict[str, Any]] = {}
_PLATFORM = platform_tag()
#: a run records its platform by this short id; the results file's ``platforms`` maps it to the tag
_PLATFORM_ID = platform_id(_PLATFORM)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _work(job: tuple[str, str, str, int, float, int]) -> tuple[str, dict[str, Any]]:
    key, cell, method, seed, limit, budget = job
    # the platform each run was made on: merged files hold runs of several machines (platform_tag)
    return key, {**run_one(_ENVS[cell], limit, method, seed, budget), "platform": _PLATFORM_ID}


def summarise(runs: dict[str, Any], seeds: int) -> dict[str, Any]:
    """Per cost, percentile and method over seeds 0 .. seeds - 1."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for key, r in runs.items():
        cell, pct, method, seed = key.split("|")
        if int(seed) < seeds:
            groups.setdefault((cell, pct, method), []).append(r)
    out: dict[str, Any] = {}
    for (cell, pct, method), rs in sorted(groups.items()):
        hits = np.array([r["hit"] if r["hit"] is not None else np.inf for r in rs], dtype=float)
        med = float(np.median(hits))
        out.setdefault(cell, {}).setdefault(pct, {})[method] = {
            "seeds": len(rs),
            "median_hit": med if np.isfinite(med) else f">{BUDGET}",
            "found": int(np.isfinite(hits).sum()),
            "median_regret50": float(np.nanmedian([r["regret50"] for r in rs])),
            "max_regret50": float(np.nanmax([r["regret50"] for r in rs])),
            "median_seconds": float(np.median([r["seconds"] for r in rs])),
        }
    return out


#: a variant that isolates one option is paired with the run without it (every other: the default)
PAIRED_WITH = {
    "pool-local": "pool",
    "pool256-local": "pool256",
    **{m: "no-cost-feature" for m in ("ei-above-noise", "matern52", "overlap", "pool", "refit1", "pool256")},
}


def paired(runs: dict[str, Any], base: str, seeds: int) -> dict[str, Any]:
    """Every other engine variant against ``base`` (or its :data:`PAIRED_WITH` entry), paired by
    (cell, seed): queries to the optimum (a miss: BUDGET + 1) and the regret after 50 queries."""
    import warnings

    from scipy.stats import wilcoxon

    hits: dict[str, dict[tuple[str, str, str], float]] = {}
    regrets: dict[str, dict[tuple[str, str, str], float]] = {}
    platforms: dict[str, dict[tuple[str, str, str], str | None]] = {}
    for key, r in runs.items():
        cell, pct, method, seed = key.split("|")
        if int(seed) < seeds:
            hits.setdefault(method, {})[(cell, pct, seed)] = float(r["hit"] or BUDGET + 1)
            regrets.setdefault(method, {})[(cell, pct, seed)] = float(r["regret50"])
            platforms.setdefault(method, {})[(cell, pct, seed)] = r.get("platform")
    out: dict[str, Any] = {}
    for m in VARIANTS:
        b = PAIRED_WITH.get(m, base)
        if m == b or m not in hits or b not in hits:
            continue
        pairs = sorted(set(hits[m]) & set(hits[b]))
        if not pairs:
            continue
        d = np.array([hits[m][k] - hits[b][k] for k in pairs])
        # a run made before the platform was recorded (None) may have been made anywhere
        mixed = sum(1 for k in pairs if platforms[m][k] is None or platforms[m][k] != platforms[b][k])
        dr = np.array([regrets[m][k] - regrets[b][k] for k in pairs])
        nz = d[d != 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(wilcoxon(nz).pvalue) if len(nz) else 1.0
        out[m] = {
            "base": b,
            "pairs": len(pairs),
            "better": int((d < 0).sum()),
            "worse": int((d > 0).sum()),
            "tied": int((d == 0).sum()),
            "median_difference": float(np.median(d)),
            "wilcoxon_p": float(f"{p:.3g}"),
            "regret50_better_worse_tied": [int((dr < 0).sum()), int((dr > 0).sum()), int((dr == 0).sum())],
            # pairs not known to be made on one platform: there a difference mixes the design's effect
            # with the floating-point chaos of the trajectories (docs/benchmarks.md)
            "pairs_not_on_one_platform": mixed,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="1 seed, one median-limit cell, budget 12")
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0 .. N-1 (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=RESULTS / "search_suite.json")
    ap.add_argument("--methods", help="comma-separated methods to run now (default: engine + baselines)")
    ap.add_argument("--cells", help="comma-separated cost:percentile cells, e.g. anb-zcu102:50")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (processes; one thread each)")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="only add the runs of these results files (runs made at once into other --out files) to --out",
    )
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if a.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {a.seeds}")
    cells_wanted = a.cells.split(",") if a.cells else None
    if a.smoke:
        cells_wanted = ["anb-zcu102:50"]
    envs = setup(sorted({c.split(":")[0] for c in cells_wanted}) if cells_wanted else None)
    budget, pcts, seeds = BUDGET, PCTS, range(a.seeds)
    methods = ["engine", *BASELINES_ORDER]
    if a.methods:
        known = [*VARIANTS, *BASELINES_ORDER]
        methods = [m.strip() for m in a.methods.split(",")]
        for m in methods:
            if m not in known:
                ap.error(f"unknown method {m!r}; known: {', '.join(known)}")
    if a.smoke:
        budget, pcts, seeds = 12, (50,), range(1)
    old = json.loads(a.out.read_text()) if a.out.exists() else {}
    runs: dict[str, Any] = old.get("runs", {}) if old.get("smoke", False) == a.smoke else {}
    platforms: dict[str, str] = dict(old.get("platforms", {}))
    limits = {
        c: {str(p): float(np.percentile(list(e["table"].values()), p)) for p in PCTS} for c, e in envs.items()
    }
    facts = {c: {p: cell_facts(envs[c], lim) for p, lim in by_p.items()} for c, by_p in limits.items()}

    def save() -> None:
        from bench.search_efficiency import extra_seeds

        write_result(
            "search_suite",
            {
                "smoke": a.smoke,
                "budget": budget,
                "seeds": a.seeds if not a.smoke else 1,
                "tables": {
                    c: {
                        "table": e["source"],
                        "cost_column": e["column"],
                        "rows": len(e["archs"]),
                        "noise": e["noise"],
                    }
                    for c, e in envs.items()
                },
                "limits": limits,
                "cells": facts,
                # each engine method's configuration as its runs use it (engine_config)
                "configs": {
                    m: engine_config(m).to_json() for m in VARIANTS if any(k.split("|")[2] == m for k in runs)
                },
                "summary": summarise(runs, a.seeds),
                "paired_with_engine": paired(runs, "engine", a.seeds),
                # cells where a method ran more seeds than the main 10: a robustness read of the median
                "summary_extra_seeds": extra_seeds(runs, budget),
                # platform id (a run's "platform") -> what its floating-point results depend on
                "platforms": platforms,
                **({"note": old["note"]} if "note" in old else {}),  # kept by hand: how the run was cut
                "runs": runs,
            },
            out=a.out,
        )

    for path in a.merge or ():
        other = json.loads(path.read_text())
        if other.get("smoke", False) != a.smoke:
            ap.error(f"{path} is a {'smoke' if other.get('smoke') else 'full'} run; --out is not")
        for key, r in other.get("runs", {}).items():
            runs.setdefault(key, r)
        platforms.update(other.get("platforms", {}))
    if a.merge:
        save()
        print(f"merged {len(runs)} runs into {a.out}")
        return 0
    plan = [(c, p, m, s) for m in methods for s in seeds for c in envs for p in pcts]
    if cells_wanted:
        plan = [x for x in plan if f"{x[0]}:{x[1]}" in cells_wanted]
    jobs = [
        (f"{c}|{p}|{m}|{s}", c, m, s, limits[c][str(p)], budget)
        for c, p, m, s in plan
        if f"{c}|{p}|{m}|{s}" not in runs
    ]
    print(f"{len(jobs)} runs to make ({len(plan) - len(jobs)} already in {a.out})", flush=True)
    if jobs:
        platforms[_PLATFORM_ID] = _PLATFORM
    _ENVS.update(envs)
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
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


CELL_TITLES = {
    "nbg-cora": "NAS-Bench-Graph Cora, latency",
    "nbg-arxiv": "NAS-Bench-Graph ogbn-arxiv, latency",
    "anb-zcu102": "Accel-NASBench, ZCU102 FPGA latency",
    "anb-macs": "Accel-NASBench, MACs",
    "macro-cifar10-flops": "macro-cifar10, FLOPs",
    "synthetic": "synthetic table, latency",
}


def _hit(v: dict[str, Any]) -> str:
    h = v["median_hit"]
    return f"{h:g}" if isinstance(h, float) else str(h)


def _platform_lines(r: dict[str, Any]) -> list[str]:
    """Which platform made how many runs, per method (a run's trajectory depends on it)."""
    counts: dict[str | None, dict[str, int]] = {}
    for key, run in r["runs"].items():
        by_method = counts.setdefault(run.get("platform"), {})
        method = key.split("|")[2]
        by_method[method] = by_method.get(method, 0) + 1
    if set(counts) == {None}:
        return []
    out = ["Platforms (a seed's trajectory depends on the CPU and the library versions, docs/search.md):", ""]
    for pid, by_method in sorted(counts.items(), key=lambda kv: kv[0] or ""):
        what = r.get("platforms", {}).get(pid, "not recorded") if pid else "not recorded"
        runs = ", ".join(f"{m} {n}" for m, n in sorted(by_method.items()))
        out.append(f"* `{pid or 'unknown'}` ({what}): {runs}")
    return [*out, ""]


def render(r: dict[str, Any], env_line: str) -> list[str]:
    """The docs/benchmarks.md section (called by bench/report.py)."""
    from bench.search_efficiency import extra_seeds_table

    s, cells = r["summary"], r["cells"]
    out = [
        "## Search on public tabular benchmarks (the suite)",
        "",
        env_line,
        "",
        "Produced by `bench/search_suite.py` (tables, sources and licences under bench/data, one README",
        "per table). Per cell (table, cost, limit at the 25th/50th/75th percentile of the cost over the",
        "table): the median number of oracle queries until the true best row under the limit is first",
        f"queried (`found/seeds` within the budget of {r['budget']}; `>{r['budget']}`: the median run did",
        "not find it), and the median / max regret after 50 queries (accuracy points). `lead`: the",
        "optimum's lead over the runner-up under the limit; `noise`: the sd of one training run's",
        "accuracy (the table's README); where the lead is within the noise (marked *) no method can",
        "rank the two, and the target (median <= 35, found in every seed) is not judged there.",
        "A third figure there, for tables with a validation accuracy (NAS-Bench-Graph), is the test",
        "accuracy lost by the row best on validation: what a search that knew every validation",
        "accuracy would lose, a measure of how far the test ranking at the top is noise.",
        "",
        *([f"_{r['note']}_", ""] if r.get("note") else []),
        *_platform_lines(r),
    ]
    methods = [
        m for m in [*VARIANTS, *BASELINES_ORDER] if any(m in v for c in s.values() for v in c.values())
    ]
    out += [
        "| cell | rows feasible | lead / noise (/ validation pick's regret) | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for c, by_p in s.items():
        for p, by_m in by_p.items():
            f = cells[c][p]
            noise = r["tables"][c]["noise"]
            mark = "" if f["decidable"] else " *"
            vpr = f.get("validation_pick_regret")
            lead = f"{f['lead']:.3f} / {noise:g}" + (f" / {vpr:.3f}" if vpr is not None else "")
            row = [f"{CELL_TITLES.get(c, c)} p{p}{mark}", str(f["feasible"]), lead]
            for m in methods:
                v = by_m.get(m)
                if v is None:
                    row.append("")
                    continue
                regret = f"{v['median_regret50']:.3f} / {v['max_regret50']:.3f}"
                row.append(f"{_hit(v)} ({v['found']}/{v['seeds']}); {regret}")
            out.append("| " + " | ".join(row) + " |")
    out.append("")
    out += extra_seeds_table(r.get("summary_extra_seeds") or {}, s, r["budget"], CELL_TITLES)
    pw = r.get("paired_with_engine") or {}
    if pw:
        out += [
            "**Engine variants paired by (cell, seed)** with the default, or with the run that differs"
            " only in the option measured: queries to the optimum (a miss counts as "
            f"{r['budget'] + 1}; difference = variant minus base; two-sided Wilcoxon signed-rank p) and"
            " the regret after 50 queries (lower is better):",
            "",
            "| variant | paired with | pairs (on one platform) | queries: better / worse / tied "
            "| median diff | Wilcoxon p | regret50: better / worse / tied |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, v in pw.items():
            rg = v.get("regret50_better_worse_tied")
            counts = f"{v['better']} / {v['worse']} / {v['tied']}"
            one_platform = v["pairs"] - v.get("pairs_not_on_one_platform", v["pairs"])
            out.append(
                f"| {m} | {v.get('base', 'engine')} | {v['pairs']} ({one_platform}) | {counts} | "
                f"{v['median_difference']:+g} | {v['wilcoxon_p']:.2g} | "
                + (" / ".join(map(str, rg)) if rg else "")
                + " |"
            )
        out.append("")
    return out
