"""The public-benchmark suite (bench/search_suite.py): its derived tables load as table spaces with a
source and licence each, the baselines search a table space by its rows, the one-off pickle
conversion refuses code, and the smoke run renders."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO


def test_every_suite_table_loads_and_names_source_and_licence() -> None:
    from bench.search_suite import TABLES
    from chamlab.chamnet.spaces.table import TableSpace

    for name, t in TABLES.items():
        path = Path(t["file"])
        assert path.stat().st_size < 4_000_000, name  # small derived tables, not the sources
        ts = TableSpace.read(path)
        assert ts.size >= 1000, name
        for column in t["costs"].values():
            assert column in pd.read_parquet(path).columns, (name, column)
        readme = (path.parent / "README.md").read_text()
        assert "**Source.**" in readme and "**Licence.**" in readme and "https://github.com/" in readme


def test_cell_facts_give_the_validation_picks_regret_where_a_table_has_one() -> None:
    """A row best on validation that is not the test optimum loses its difference; a table without
    a validation column has no such figure."""
    from bench.search_suite import cell_facts

    a, b, c = (0,), (1,), (2,)
    env = {"archs": [a, b, c], "table": {a: 1.0, b: 1.0, c: 9.0}, "noise": 0.1}
    env["acc"] = {a: 80.0, b: 79.5, c: 90.0}
    assert "validation_pick_regret" not in cell_facts(env, 2.0)
    facts = cell_facts({**env, "valid": {a: 70.0, b: 71.0, c: 99.0}}, 2.0)  # c is over the limit
    assert facts["validation_pick_regret"] == 0.5 and facts["lead"] == 0.5 and facts["feasible"] == 2


def _sparse_table() -> tuple[object, dict[tuple, float], dict[tuple, float]]:
    """6 dimensions of 4 values (4,096 combinations) but 60 rows: a proposal is rarely a row."""
    from chamlab.chamnet.spaces.table import TableSpace

    rng = np.random.default_rng(0)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < 60:
        seen.add(tuple(int(v) for v in rng.integers(0, 4, 6)))
    rows = [
        {
            **{f"d{i}": v for i, v in enumerate(r)},
            "accuracy": 50 + sum(r) + 0.01 * k,
            "latency_ms": 1.0 + r[0],
        }
        for k, r in enumerate(sorted(seen))
    ]
    ts = TableSpace.from_frame(pd.DataFrame(rows), name="sparse")
    acc = dict(zip(ts.rows, ts.accuracy.astype(float), strict=True))
    lat = dict(zip(ts.rows, ts.costs["latency_ms"].astype(float), strict=True))
    return ts, acc, lat


@pytest.mark.parametrize("method", ["optuna-tpe", "regularized-evolution"])
def test_baselines_ask_rows_of_a_table_space(method: str) -> None:
    from bench.baselines import BASELINES, Candidates
    from chamlab.chamnet.search.engine import Encoder

    ts, acc, lat = _sparse_table()
    limit = 3.0
    feasible = [a for a in ts.rows if lat[a] <= limit]  # type: ignore[attr-defined]
    c = Candidates(
        ts.dimensions,  # type: ignore[attr-defined]
        feasible,
        Encoder(ts.dimensions)(feasible),  # type: ignore[attr-defined]
        acc.__getitem__,
        lambda a: a in lat and lat[a] <= limit,
        in_space=lat.__contains__,
    )
    budget = 25 if method == "optuna-tpe" else len(feasible)
    out = BASELINES[method](c, budget, np.random.default_rng(1), lambda q: False)
    # every query is a distinct feasible row, and the whole budget is spent on rows
    assert len(out) == budget and len(set(out)) == budget
    assert all(a in lat and lat[a] <= limit for a in out)


def test_regularized_evolution_mutates_to_the_nearest_rows() -> None:
    from bench.baselines import Candidates, _nearest_new

    ts, acc, lat = _sparse_table()
    rows = list(ts.rows)  # type: ignore[attr-defined]
    c = Candidates(
        ts.dimensions, rows, np.zeros((len(rows), 1)), acc.__getitem__, lat.__contains__, lat.__contains__
    )  # type: ignore[attr-defined]
    parent = rows[0]
    dist = [sum(x != y for x, y in zip(a, parent, strict=True)) for a in rows[1:]]
    child = _nearest_new(c, parent, {parent}, np.random.default_rng(0))
    assert child is not None and sum(x != y for x, y in zip(child, parent, strict=True)) == min(dist)


def _converter() -> object:
    path = REPO / "bench" / "data" / "nas-bench-graph" / "convert.py"
    spec = importlib.util.spec_from_file_location("nbg_convert", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pickle_conversion_reads_numbers_and_refuses_code(tmp_path: Path) -> None:
    conv = _converter()
    good = tmp_path / "good.bench"
    good.write_bytes(
        pickle.dumps({81234: {"perf": 0.8, "valid_perf": 0.79, "latency": 0.004, "para": np.float64(1.5)}})
    )
    df = conv.convert(good)  # type: ignore[attr-defined]
    assert df.loc[0, ["link", "op1", "op2", "op3", "op4"]].tolist() == ["0123", "gcn", "gin", "cheb", "sage"]
    assert df.loc[0, "accuracy"] == pytest.approx(80.0) and df.loc[0, "latency_ms"] == pytest.approx(4.0)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.getcwd, ())

    bad = tmp_path / "bad.bench"
    bad.write_bytes(pickle.dumps({1: Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        conv.convert(bad)  # type: ignore[attr-defined]


def test_smoke_run_renders(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    cmd = [sys.executable, "-m", "bench.search_suite", "--smoke", "--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    (cell,) = r["summary"]
    assert set(r["summary"][cell]["50"]) == {
        "engine",
        "random",
        "regularized-evolution",
        "plain-gp-ei",
        "optuna-tpe",
        "optuna-gp",
    }
    facts = r["cells"][cell]["50"]
    assert facts["feasible"] > 0 and facts["lead"] >= 0
    # every run names the platform it was made on: a trajectory's floating point depends on it
    (pid,) = {run["platform"] for run in r["runs"].values()}
    assert "botorch" in r["platforms"][pid] and "torch" in r["platforms"][pid]
    from bench.search_suite import render

    text = "\n".join(render(r, "_env_"))
    assert "## Search on public tabular benchmarks" in text and "| cell |" in text
    assert f"* `{pid}` ({r['platforms'][pid]}): engine 1," in text  # which platform made which runs


def test_the_engine_method_is_the_engines_current_default_and_variants_keep_their_options() -> None:
    """``engine`` in both search benchmarks runs ``EngineConfig()``: read as a stored history's
    options, ``{}`` would silently drop the cost feature and the merge of equivalent networks. A named
    variant keeps the options of its time (those it does not name: their values before they existed)."""
    from bench import search_efficiency, search_suite
    from chamlab.chamnet.search import EngineConfig
    from chamlab.chamnet.search.config import ADDED_FIELDS

    for bench in (search_suite, search_efficiency):
        assert bench.engine_config("engine") == EngineConfig()
    old = search_suite.engine_config("no-cost-feature")  # measured before the local search existed
    assert not old.cost_feature and old.local_search == ADDED_FIELDS["local_search"]
    assert not old.merge_equivalent
    new = search_suite.engine_config("linear-cost")  # a variant of the default of its time, in full
    assert new.kernel == "rbf-linear-cost" and new.cost_feature and new.merge_equivalent
    assert set(search_suite.ON_DEFAULT) == set(EngineConfig().to_json())  # every option named


def test_pairs_not_made_on_one_platform_are_counted() -> None:
    """A paired difference is the design's effect only when both runs had one floating-point
    platform; a run recorded without one (made before platforms were recorded) may be from anywhere."""
    from bench.search_suite import paired

    def run(hit: int, platform: str | None) -> dict:
        return {"hit": hit, "regret50": 0.0, **({"platform": platform} if platform else {})}

    runs = {
        "c|50|engine|0": run(30, "a"), "c|50|linear-cost|0": run(20, "a"),
        "c|50|engine|1": run(30, "a"), "c|50|linear-cost|1": run(40, "b"),
        "c|50|engine|2": run(30, None), "c|50|linear-cost|2": run(30, None),
    }  # fmt: skip
    v = paired(runs, "engine", 3)["linear-cost"]
    assert (v["pairs"], v["better"], v["worse"], v["tied"]) == (3, 1, 1, 1)
    assert v["pairs_not_on_one_platform"] == 2
