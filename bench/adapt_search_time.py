"""Search time of ``adapt`` once the predictors exist (target: under 5 s here; OFA's finder ~22 s on a CPU).

``adapt``'s ``search_seconds`` is the constrained search on fixed predictors: the GP accuracy model
the BO loop fitted and the LUT latency model (:func:`chamlab.chamnet.search.constrained_search`). This
benchmark times exactly that call, no device involved:

* macro-cifar10, latency from the LUT frozen in bench/data (raw, with the invocation-overhead
  correction), accuracy GP fitted by the BO loop on 50 queries of the shipped table, limit at the
  median predicted latency; exact enumeration of the 6,561 archs;
* chamnet-mbv2, latency from the LUT the constraint-fidelity benchmark profiled (references plus the
  winners' ops, the op-level model for the rest), accuracy GP fitted on 30 queries of that
  benchmark's proxy oracle (log10 MACs), limit at the median reference's latency; the GA.

Each is timed *cold* (no latency predicted yet: every arch the search visits is predicted inside the
timed call) and *warm* (the latency cache the BO loop filled, as inside ``adapt``), 5 seeds each;
medians reported. Resumable: finished (space, seed) pairs are kept in the results file.

    .venv/bin/python -m bench.adapt_search_time [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from bench._common import RESULTS, write_result  # noqa: E402
from bench.constraint_fidelity import DEVICE, ProxyAccuracy  # noqa: E402

FROZEN = Path(__file__).resolve().parent / "data" / "macro-cifar10-local-cpu.parquet"


def setup(name: str) -> tuple[Any, Any, Any, int] | None:
    from chamlab.chamnet.search import oracle_for
    from chamlab.core.files import cache_root
    from chamlab.host import api
    from chamlab.host.prediction.predict import LatencyModel

    space = api.SPACES.get(name)
    if name == "macro-cifar10":
        path, budget, oracle = FROZEN, 50, oracle_for(space)
    else:
        path = cache_root() / "bench" / "constraint_fidelity" / name / f"{DEVICE}.parquet"
        budget, oracle = 30, ProxyAccuracy(space)
        if not path.exists():
            return None
    lut = api.Lut.read(path)
    mset = lut.choose(path, threads=1, backend="xnnpack", dtype="fp32", batch=1)
    model = LatencyModel(space, lut, path, mset, interpolate=space.size > api.EXHAUSTIVE_LIMIT)
    return space, model, oracle, budget


def one(name: str, seed: int) -> dict[str, Any]:
    from chamlab.chamnet.search import BayesOptEngine, EngineConfig, Problem, constrained_search
    from chamlab.host.workflows.adapt import CachedLatency, latency_pool

    found = setup(name)
    assert found is not None
    space, model, oracle, budget = found
    warm = CachedLatency(model)
    pool = list(space.references.values()) if space.size > 100_000 else latency_pool(space, 0)
    limit = float(np.median([warm(a) for a in pool]))
    problem = Problem(space, oracle, {"latency_ms": warm}, {"latency_ms": limit})
    t0 = time.perf_counter()
    state = BayesOptEngine(EngineConfig()).run(problem, budget, np.random.default_rng(seed))
    bo_s = time.perf_counter() - t0
    known = {q.arch: q.accuracy for q in state.queries}
    out: dict[str, Any] = {"seed": seed, "limit_ms": limit, "queries": len(state.queries), "bo_s": bo_s}
    for mode in ("cold", "warm"):
        lat = CachedLatency(model) if mode == "cold" else warm

        def accuracy(archs: list[tuple[int, ...]], lat: CachedLatency = lat) -> np.ndarray:
            pred = state.predict(archs, np.array([lat(a) for a in archs]))
            assert pred is not None
            return pred

        t0 = time.perf_counter()
        res = constrained_search(
            space,
            accuracy,
            {"latency_ms": lat},
            {"latency_ms": limit},
            np.random.default_rng(seed),
            seeds=[q.arch for q in state.queries if warm(q.arch) <= limit],
            known=known,
        )
        out[f"{mode}_s"] = time.perf_counter() - t0
        out["method"], out["evaluated"] = res.method, res.evaluated
        out["best"] = None if res.best is None else space.format(res.best.arch)
    out["load_avg"] = os.getloadavg()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS / "adapt_search_time.json")
    args = p.parse_args()
    payload: dict[str, Any] = {"runs": {}}
    if args.out.exists():
        payload["runs"] = json.loads(args.out.read_text()).get("runs", {})
    for name in ("macro-cifar10", "chamnet-mbv2"):
        if setup(name) is None:
            payload.setdefault("skipped", {})[name] = "no LUT yet: run bench/constraint_fidelity.py first"
            continue
        runs = payload["runs"].setdefault(name, {})
        for seed in range(args.seeds):
            if str(seed) in runs:
                continue
            runs[str(seed)] = one(name, seed)
            print(json.dumps({name: runs[str(seed)]}), flush=True)
            write_result("adapt_search_time", payload, args.out)
        rs = list(runs.values())
        payload.setdefault("summary", {})[name] = {
            "method": rs[0]["method"],
            "evaluated_median": statistics.median(r["evaluated"] for r in rs),
            "cold_s_median": statistics.median(r["cold_s"] for r in rs),
            "warm_s_median": statistics.median(r["warm_s"] for r in rs),
            "cold_s_max": max(r["cold_s"] for r in rs),
            "bo_s_median": statistics.median(r["bo_s"] for r in rs),
            "n": len(rs),
        }
        payload.get("skipped", {}).pop(name, None)
    write_result("adapt_search_time", payload, args.out)


if __name__ == "__main__":
    main()


def render(r: dict[str, Any], env: str) -> list[str]:
    """The section of docs/benchmarks.md (bench/report.py)."""
    out = [
        "## Search time of `adapt` once the predictors exist",
        "",
        "`python -m bench.adapt_search_time`",
        "",
        env,
        "",
        "The constrained search on the fitted GP and the LUT latency model (`search_seconds` of "
        "`adapt`). *Cold*: every latency predicted inside the timed call; *warm*: the latency cache the "
        "BO loop filled (as inside `adapt`). Target: under 5 s on this 2-core machine (OFA's "
        "evolutionary finder: ~22 s on a CPU). Load: 1-minute load average per run.",
        "",
        "| space | method | archs evaluated (median) | cold s (median / max) | warm s (median) | "
        "BO loop s (median) | runs | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r.get("summary", {}).items():
        loads = [x["load_avg"][0] for x in r["runs"][name].values()]
        out.append(
            f"| {name} | {s['method']} | {s['evaluated_median']:.0f} | {s['cold_s_median']:.2f} / "
            f"{s['cold_s_max']:.2f} | {s['warm_s_median']:.2f} | {s['bo_s_median']:.1f} | {s['n']} | "
            f"{min(loads):.1f}-{max(loads):.1f} |"
        )
    for name, why in r.get("skipped", {}).items():
        out.append(f"| {name} | not run: {why} | | | | | | |")
    return out
