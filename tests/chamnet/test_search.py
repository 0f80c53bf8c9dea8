"""The search engine on tiny synthetic tables: samplers, the BO loop, batches, pools, resume.

Behaviour, not quality (quality is bench/search_efficiency.py's job): <= 20 queries each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chamlab.chamnet.search import (
    BayesOptEngine,
    EngineConfig,
    NoOracleError,
    Problem,
    TableOracle,
    oracle_for,
    search,
    table_problem,
)
from chamlab.chamnet.search.engine import Encoder, Features
from chamlab.chamnet.search.run import HISTORY_KIND, check_same_arguments
from chamlab.chamnet.search.sampling import SAMPLERS, design
from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.spaces.base import Arch, Dimension
from chamlab.chamnet.spaces.table import TableSpace
from chamlab.core.errors import InputError, UnknownNameError
from chamlab.core.store import read_table


def synthetic(n_width: int = 4, seed: int = 0) -> TableSpace:
    """A 4 x 3 x {a,b,c} x bool table: accuracy grows with size, latency with size too."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(1, n_width + 1):
        for depth in (1, 2, 3):
            for op in ("a", "b", "c"):
                for se in (False, True):
                    lat = w * depth * (1.3 if op == "c" else 1.0) + 0.2 * se
                    acc = 60 + 10 * np.log(lat) + (1.5 if op == "b" else 0) + rng.normal(0, 0.1)
                    rows.append(
                        {"w": w, "depth": depth, "op": op, "se": se, "accuracy": acc, "latency_ms": lat}
                    )
    return TableSpace.from_frame(pd.DataFrame(rows), name="table:synthetic")


class Counting:
    """An oracle that records every arch it is asked about (and can fail on the n-th call)."""

    def __init__(self, inner: TableOracle, fail_at: int | None = None) -> None:
        self.inner, self.fail_at, self.asked, self.name = inner, fail_at, [], "counting"
        self.calls = 0

    def __call__(self, archs: Sequence[Arch]) -> list[float]:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise KeyboardInterrupt
        self.asked += list(archs)
        return self.inner(archs)


def edit_stored_engine(path: Path, edit: Callable[[dict], None]) -> None:
    """Rewrite a stored history's engine options in place (as an older chamlab would have stored
    them): ``edit`` changes the options' dict."""
    import json

    import pyarrow.parquet as pq

    t = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    args = json.loads(meta["chamlab.search"])
    edit(args["engine"])
    meta["chamlab.search"] = json.dumps(args)
    pq.write_table(t.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()}), path)


def test_encoder_groups_are_the_categorical_one_hot_columns() -> None:
    assert Encoder(synthetic().dimensions).groups() == ((2, 3, 4),)  # w, depth, op=a/b/c, se


def test_encoder_one_hots_categories() -> None:
    sp = synthetic()
    enc = Encoder(sp.dimensions)
    assert enc.width == 1 + 1 + 3 + 1
    X = enc([(4, 2, "c", True), (1, 1, "a", False)])
    assert X.tolist() == [[1.0, 0.5, 0, 0, 1, 1.0], [0.0, 0.0, 1, 0, 0, 0.0]]
    assert enc.names() == ["w", "depth", "op=a", "op=b", "op=c", "se"]
    # ordinal dims of > 2 values one-hot too, or instead; categoricals and 2-value dims unchanged
    both = Encoder(sp.dimensions, "index+one-hot")
    names = ["w", "w=1", "w=2", "w=3", "w=4", "depth", "depth=1", "depth=2", "depth=3", "op=a", "op=b"]
    assert both.names() == [*names, "op=c", "se"]
    assert both([(4, 2, "c", True)]).tolist() == [[1.0, 0, 0, 0, 1, 0.5, 0, 1, 0, 0, 0, 1, 1.0]]
    only = Encoder(sp.dimensions, "one-hot")
    assert only.width == 4 + 3 + 3 + 1
    assert only([(1, 3, "a", False)]).tolist() == [[1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0.0]]
    with pytest.raises(InputError, match="unknown ordinal encoding 'ranks'"):
        Encoder(sp.dimensions, "ranks")


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_samplers_pick_distinct_rows_deterministically(method: str) -> None:
    rng = np.random.default_rng(1)
    X = rng.random((200, 3))
    cost = X.sum(axis=1)
    picked = design(method, X, cost, 1.5, 16, np.random.default_rng(7))
    assert len(set(picked)) == 16 and all(0 <= i < 200 for i in picked)
    assert picked == design(method, X, cost, 1.5, 16, np.random.default_rng(7))
    assert len(design(method, X[:5], cost[:5], 1.5, 16, np.random.default_rng(7))) == 5


def test_imbalanced_sobol_over_represents_the_boundary() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((2000, 4))
    cost = X.sum(axis=1) + 0.1
    limit = float(np.percentile(cost, 60))
    gap = {
        m: np.median(
            [
                np.abs(np.log(cost[design(m, X, cost, limit, 20, np.random.default_rng(s))] / limit)).mean()
                for s in range(5)
            ]
        )
        for m in ("uniform", "sobol", "imbalanced-sobol")
    }
    assert gap["imbalanced-sobol"] < 0.7 * min(gap["uniform"], gap["sobol"])


def test_engine_queries_feasible_distinct_archs_within_budget() -> None:
    sp = synthetic()
    problem = table_problem(sp, {"latency_ms": 6.0})
    state = BayesOptEngine(EngineConfig(n_init=5)).run(problem, 12, np.random.default_rng(0))
    archs = [q.arch for q in state.queries]
    assert len(archs) == 12 == len(set(archs))
    assert all(q.costs["latency_ms"] <= 6.0 for q in state.queries)
    assert [q.phase for q in state.queries] == ["init"] * 5 + ["bo"] * 7
    assert state.model is not None and state.fitted_on == 12
    pred = state.predict(archs[:2], np.array([q.costs["latency_ms"] for q in state.queries[:2]]))
    assert pred is not None and pred.shape == (2,)


def test_engine_stops_when_every_feasible_arch_is_queried() -> None:
    sp = synthetic()
    problem = table_problem(sp, {"latency_ms": 2.0})
    n_feasible = int((sp.costs["latency_ms"] <= 2.0).sum())
    assert n_feasible < 20
    state = BayesOptEngine(EngineConfig(n_init=3)).run(problem, 20, np.random.default_rng(0))
    assert len(state.queries) == n_feasible
    best = max(state.queries, key=lambda q: q.accuracy).accuracy
    assert best == pytest.approx(float(sp.accuracy[sp.costs["latency_ms"] <= 2.0].max()))


def test_merge_equivalent_asks_each_network_once() -> None:
    """macro-cifar10 under a tiny FLOPs limit: 14 feasible arch strings, 12 networks. Merged, the engine
    asks each network once and stops when all are asked; a history holding two names of one network
    (an earlier run that asked every name) adds nothing to ask; --ask-every-name asks every string."""
    from chamlab.chamnet.search.engine import Query, equivalence_key_of

    sp = SPACES.get("macro-cifar10")
    limit = 17_240_576
    key = equivalence_key_of(sp)
    names = [a for a in sp.enumerate() if sp.macs(a) <= limit]
    assert (len(names), len({key(a) for a in names})) == (14, 12)

    def run(cfg: EngineConfig, previous: Sequence[Query] = ()) -> tuple[list[Arch], list[Arch]]:
        oracle = Counting(oracle_for(sp))
        problem = Problem(sp, oracle, {"macs": sp.macs}, {"macs": limit})
        state = BayesOptEngine(cfg).run(problem, 20, np.random.default_rng(0), previous=previous)
        return [q.arch for q in state.queries], oracle.asked

    cfg = EngineConfig(n_init=3)
    queried, asked = run(cfg)
    assert len(queried) == len(asked) == len({key(a) for a in asked}) == 12  # every network, once
    twins = [sp.parse("00000001"), sp.parse("00000010")]  # the identity before or after the block
    assert key(twins[0]) == key(twins[1])
    assert key(sp.parse("00001000")) != key(sp.parse("00000100"))  # a stage's first layer is strided
    earlier = [Query(a, 64.3, {"macs": float(sp.macs(a))}, "init") for a in twins]
    queried, asked = run(cfg, earlier)
    assert len(queried) == 13 and len(asked) == 11 and key(twins[0]) not in {key(a) for a in asked}
    queried, asked = run(dataclasses.replace(cfg, merge_equivalent=False))
    assert sorted(queried) == sorted(names)  # every string


def test_merge_equivalent_in_candidate_pools() -> None:
    """The pool path (a space too large to enumerate) never asks a network twice either."""
    from chamlab.chamnet.search.engine import equivalence_key_of

    sp = SPACES.get("macro-cifar10")
    oracle = Counting(oracle_for(sp))
    problem = Problem(sp, oracle, {"macs": sp.macs}, {"macs": 40e6})
    cfg = EngineConfig(n_init=4, exhaustive_limit=10, pool_size=256)
    state = BayesOptEngine(cfg).run(problem, 16, np.random.default_rng(1))
    key = equivalence_key_of(sp)
    assert len(state.queries) == len(oracle.asked) == 16 == len({key(a) for a in oracle.asked})
    assert all(sp.macs(a) <= 40e6 for a in oracle.asked)


def test_batches_and_energy_limit() -> None:
    sp = TableSpace.from_frame(
        pd.DataFrame(
            [
                {"x": x, "y": y, "accuracy": x + y, "latency_ms": 1 + x, "energy_mj": 1 + y}
                for x in range(5)
                for y in range(4)
            ]
        )
    )
    problem = table_problem(sp, {"latency_ms": 4.0, "energy_mj": 4.0})
    seen: list[int] = []
    state = BayesOptEngine(EngineConfig(n_init=4, batch_size=3)).run(
        problem, 13, np.random.default_rng(0), on_query=lambda s: seen.append(len(s.queries))
    )
    assert seen == [4, 7, 10, 13]  # the initial design is one batch, then batches of 3
    assert all(q.costs["latency_ms"] <= 4 and q.costs["energy_mj"] <= 4 for q in state.queries)
    # batch 1 (the default): still one batch for the design, whose archs no answer chooses;
    # a budget below the design's size cuts it
    asked: list[int] = []

    def oracle(archs: list[tuple]) -> list[float]:
        asked.append(len(archs))
        return problem.oracle(archs)

    one = table_problem(sp, {"latency_ms": 4.0, "energy_mj": 4.0})
    one = dataclasses.replace(one, oracle=oracle)
    single = BayesOptEngine(EngineConfig(n_init=4)).run(one, 7, np.random.default_rng(0))
    assert asked == [4, 1, 1, 1] and [q.phase for q in single.queries] == ["init"] * 4 + ["bo"] * 3
    assert [q.arch for q in single.queries[:4]] == [q.arch for q in state.queries[:4]]  # the same design
    asked.clear()
    BayesOptEngine(EngineConfig(n_init=4)).run(one, 2, np.random.default_rng(0))
    assert asked == [2]


def test_candidate_pool_on_a_large_space() -> None:
    """Spaces above exhaustive_limit are searched through sampled pools plus incumbent mutations."""
    sp = SPACES.get("macro-cifar10")
    oracle = oracle_for(sp)
    problem = Problem(sp, oracle, {"macs": sp.macs}, {"macs": 60e6})
    cfg = EngineConfig(n_init=4, exhaustive_limit=0, pool_size=48)
    state = BayesOptEngine(cfg).run(problem, 8, np.random.default_rng(0))
    assert len({q.arch for q in state.queries}) == 8
    assert all(q.costs["macs"] <= 60e6 for q in state.queries)


def test_local_search_climbs_the_acquisition_through_feasible_fresh_mutations() -> None:
    """local_search (pools only): from the best-scored fresh candidates, their single mutations join
    the candidates, round by round; each is feasible, distinct and not asked before."""
    from chamlab.chamnet.search.engine import _mutations

    sp = SPACES.get("macro-cifar10")
    problem = Problem(sp, oracle_for(sp), {"macs": sp.macs}, {"macs": 60e6})
    cfg = EngineConfig(n_init=4, exhaustive_limit=0, pool_size=8, local_search=3, mutate_top=2)
    engine = BayesOptEngine(cfg)
    state = engine.run(problem, 6, np.random.default_rng(0))
    encoder = state.features  # the run's features (the encoder's columns and the cost's)
    assert isinstance(encoder, Features)
    asked = {q.arch for q in state.queries}
    pool = engine._pool(problem, encoder, np.random.default_rng(1), [])
    fresh = [i for i, a in enumerate(pool.archs) if a not in asked]
    best = float(state.warp(max(q.accuracy for q in state.queries)))

    def fresh_in(archs: Sequence[Arch]) -> list[int]:
        return [i for i, a in enumerate(archs) if a not in asked]

    grown, fresh2 = engine._climb(state, problem, encoder, pool, fresh, best, fresh_in)
    added = grown.archs[len(pool.archs) :]
    assert added and fresh2 == fresh + list(range(len(pool.archs), len(grown.archs)))
    assert len(set(grown.archs)) == len(grown.archs) and not set(added) & asked
    assert all(sp.macs(a) <= 60e6 for a in added) and grown.X.shape == (
        len(grown.archs),
        len(state.feature_names),
    )
    assert grown.cost == pytest.approx([sp.macs(a) for a in grown.archs])
    # the first round's archs are single mutations of the pool's archs
    starts = {m for a in pool.archs for m in _mutations(sp, a)}
    assert added[0] in starts
    # a search with it queries feasible distinct archs, deterministically
    runs = [BayesOptEngine(cfg).run(problem, 10, np.random.default_rng(0)) for _ in range(2)]
    archs = [q.arch for q in runs[0].queries]
    assert len(set(archs)) == 10 and archs == [q.arch for q in runs[1].queries]
    assert all(q.costs["macs"] <= 60e6 for q in runs[0].queries)
    with pytest.raises(InputError, match="local_search must be >= 0"):
        EngineConfig(local_search=-1)


def test_search_resumes_without_asking_again(tmp_path: Path) -> None:
    sp = synthetic()
    problem = table_problem(sp, {"latency_ms": 6.0})
    inner = oracle_for(sp)
    stopped = Counting(inner, fail_at=4)  # interrupted during its 7th query (the design of 4 is one call)
    p1 = Problem(sp, stopped, problem.costs, problem.limits)
    with pytest.raises(KeyboardInterrupt):
        search(p1, budget=12, seed=3, config=EngineConfig(n_init=4), out=tmp_path)
    stored = read_table(tmp_path / "history.parquet", HISTORY_KIND).table.to_pandas()
    assert stored["query"].tolist() == [1, 2, 3, 4, 5, 6]
    assert list(stored.columns) == [
        "query", "w", "depth", "op", "se", "accuracy", "accuracy_fp32", "accuracy_int8", "latency_ms", "phase"
    ]  # fmt: skip
    assert stored["accuracy_int8"].isna().all()  # this wrapped oracle says nothing per dtype

    again = Counting(inner)
    result = search(
        Problem(sp, again, problem.costs, problem.limits),
        budget=12,
        seed=3,
        config=EngineConfig(n_init=4),
        out=tmp_path,
    )
    assert len(again.asked) == 6 and not set(again.asked) & set(stopped.asked)
    assert result.queries == 12 and result.new_queries == 6
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"

    more = Counting(inner)
    result = search(
        Problem(sp, more, problem.costs, problem.limits),
        budget=14,
        seed=3,
        config=EngineConfig(n_init=4),
        out=tmp_path,
    )
    assert len(more.asked) == 2 and result.queries == 14
    with pytest.raises(InputError, match=r"other arguments .*seed: 3 there, 4 now"):
        search(problem, budget=14, seed=4, config=EngineConfig(n_init=4), out=tmp_path)
    with pytest.raises(
        InputError, match=r"other arguments \(engine.merge_equivalent: True there, False now\)"
    ):
        search(
            problem, budget=14, seed=3, config=EngineConfig(n_init=4, merge_equivalent=False), out=tmp_path
        )


def test_a_resumed_run_rebuilds_the_finished_runs_gp_instead_of_refitting_it(tmp_path: Path) -> None:
    """The finished run's last fit only conditioned on its last queries (10 is not a multiple of
    ``refit_every`` after the design of 4), so a refit on the history gives other hyperparameters;
    the resumed run rebuilds the stored GP and predicts bit for bit what the finished run predicted.
    A stored GP of other queries, or a damaged one, is refitted."""
    import json

    sp = synthetic()
    problem = table_problem(sp, {"latency_ms": 6.0})
    cfg = EngineConfig(n_init=4)
    archs = list(sp.enumerate())
    done = BayesOptEngine(cfg).run(problem, 10, np.random.default_rng(3))
    assert (done.fitted_on, done.optimised_on) == (10, 8)  # the last fit only conditioned

    def resumed(gp: dict | None) -> np.ndarray:
        state = BayesOptEngine(cfg).run(problem, 10, np.random.default_rng(3), previous=done.queries, gp=gp)
        assert state.queries == done.queries
        return state.predict(archs)

    stored = json.loads(json.dumps({"output_warp": done.warp.to_json(), "resume": done.resume_json()}))
    assert np.array_equal(resumed(stored), done.predict(archs))
    refit = resumed(None)
    assert not np.allclose(refit, done.predict(archs), rtol=0, atol=1e-6)
    other = json.loads(json.dumps(stored))
    other["resume"]["queries_digest"] = "0" * 64  # the GP of another history with as many queries
    damaged = json.loads(json.dumps(stored))
    damaged["resume"]["parameters"].popitem()
    for bad in (other, damaged, {"resume": "x"}):
        assert np.array_equal(resumed(bad), refit)

    # through search(): resuming a finished run rewrites its accuracy_gp.json as it was
    search(problem, budget=10, seed=3, config=cfg, out=tmp_path, plot=False)
    first = (tmp_path / "accuracy_gp.json").read_text()
    assert json.loads(first)["resume"]["optimised_on"] == 8
    again = search(problem, budget=10, seed=3, config=cfg, out=tmp_path, plot=False)
    assert again.new_queries == 0 and (tmp_path / "accuracy_gp.json").read_text() == first


def test_a_resume_under_another_training_schedule_hints_the_stored_one(tmp_path: Path) -> None:
    """A run made under the old proxy defaults, resumed after they changed: the hint gives the
    ``--schedule`` fields that reproduce the stored schedule (only those that differ)."""
    then = {"kind": "train", "data": "d", "schedule": {"epochs": 2, "batch_size": 32, "max_train": 2000}}
    now = {"kind": "train", "data": "d", "schedule": {"epochs": 1, "batch_size": 32, "max_train": 8000}}
    with pytest.raises(InputError) as err:
        check_same_arguments({"oracle": then, "seed": 0}, {"oracle": now, "seed": 0}, tmp_path, "a search")
    assert "oracle.schedule" in str(err.value)
    assert err.value.hint is not None and "--schedule epochs=2,max_train=2000: the training" in err.value.hint
    # another kind of difference: no schedule in the hint
    with pytest.raises(InputError) as err:
        check_same_arguments({"oracle": then, "seed": 0}, {"oracle": then, "seed": 1}, tmp_path, "a search")
    assert err.value.hint is not None and "--schedule" not in err.value.hint
    check_same_arguments({"oracle": then, "budget": 5}, {"oracle": then, "budget": 9}, tmp_path, "a search")


def test_dimension_stays_back_compatible() -> None:
    d = Dimension("x", (1, 2, 3))
    assert not d.categorical and d.index(2) == 1
    assert Dimension("c", ("a", "b"), categorical=True).categorical


def test_spaces_without_an_oracle_say_so() -> None:
    with pytest.raises(NoOracleError, match=r"chamnet-mbv2.*no accuracy oracle"):
        oracle_for(SPACES.get("chamnet-mbv2"))
    with pytest.raises(InputError, match="at least one cost limit"):
        Problem(synthetic(), oracle_for(synthetic()), {}, {})
    with pytest.raises(InputError, match="unknown sampler"):
        EngineConfig(sampler="grid")


def test_predict_gp_matches_the_botorch_posterior() -> None:
    import torch

    from chamlab.chamnet.search.engine import fit_gp, predict_gp

    rng = np.random.default_rng(0)
    X = rng.random((15, 3))
    model = fit_gp(X, X.sum(axis=1) * 3 + 70)
    Xc = rng.random((40, 3))
    mean, std = predict_gp(model, Xc)
    with torch.no_grad():
        post = model.posterior(torch.as_tensor(Xc).unsqueeze(-2))
    assert mean == pytest.approx(post.mean.reshape(-1).numpy(), abs=1e-8)
    assert std == pytest.approx(post.variance.sqrt().reshape(-1).numpy(), abs=1e-8)


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"batch_size": 3},
        {"output_warp": "copula", "batch_size": 3},
        {"output_warp": "none"},
        {"cost_feature": True},
        {"cost_feature": True, "exhaustive_limit": 0, "pool_size": 32},
    ],
    ids=["default", "batch", "copula-batch", "no-warp", "cost-feature", "cost-feature-pools"],
)
def test_engine_queries_feasible_distinct_archs_deterministically(cfg: dict) -> None:
    import torch

    sp = synthetic()
    problem = table_problem(sp, {"latency_ms": 6.0})
    config = EngineConfig(n_init=4, **cfg)
    torch.manual_seed(1)  # torch's global generator differs between the two runs: the engine must
    state = BayesOptEngine(config).run(problem, 13, np.random.default_rng(0))  # not depend on it
    archs = [q.arch for q in state.queries]
    assert len(archs) == 13 == len(set(archs))
    assert all(q.costs["latency_ms"] <= 6.0 for q in state.queries)
    pred = state.predict(archs[:3])
    assert pred is not None and pred.shape == (3,)
    # in accuracy units whatever the output warp (the warped outputs are standard-normal-like)
    assert np.abs(pred - np.array([q.accuracy for q in state.queries[:3]])).max() < 3.0
    # deterministic per seed
    torch.manual_seed(2)
    again = BayesOptEngine(config).run(problem, 13, np.random.default_rng(0))
    assert [q.arch for q in again.queries] == archs


def test_cost_feature_is_the_log_primary_cost_scaled_over_the_first_candidates() -> None:
    """cost_feature: one more GP column, log(cost) mapped onto [0, 1] (in an enumerated space, the
    cheapest feasible arch 0, the costliest 1; in pools, 1 at the limit), after the encoder's columns."""
    sp = synthetic()
    problem = table_problem(sp, {"latency_ms": 6.0})
    state = BayesOptEngine(EngineConfig(n_init=4, cost_feature=True)).run(
        problem, 6, np.random.default_rng(0)
    )
    enc = Encoder(sp.dimensions)
    assert state.feature_names == (*enc.names(), "log_latency_ms")
    feasible = [a for a in sp.enumerate() if problem.cost_matrix([a])["latency_ms"][0] <= 6.0]
    cost = problem.cost_matrix(feasible)["latency_ms"]
    assert state.features is not None
    X = state.features(feasible)
    np.testing.assert_array_equal(X[:, :-1], enc(feasible))
    lo, hi = np.log(cost.min()), np.log(cost.max())
    np.testing.assert_allclose(X[:, -1], (np.log(cost) - lo) / (hi - lo))
    assert X[:, -1].min() == 0.0 and X[:, -1].max() == pytest.approx(1.0)
    # the model was fitted on those features: it predicts every feasible arch
    pred = state.predict(feasible)
    assert pred is not None and pred.shape == (len(feasible),) and np.isfinite(pred).all()
    # without the option the features are the encoder's, and the initial design is the same
    plain = BayesOptEngine(EngineConfig(n_init=4, cost_feature=False)).run(
        problem, 6, np.random.default_rng(0)
    )
    assert plain.feature_names == tuple(enc.names())
    assert [q.arch for q in plain.queries[:4]] == [q.arch for q in state.queries[:4]]
    # pools: 1 at the limit, so every feasible arch a later pool holds is within [0, 1]
    pooled = BayesOptEngine(EngineConfig(n_init=4, exhaustive_limit=0, pool_size=8)).run(
        problem, 6, np.random.default_rng(0)
    )
    assert pooled.features is not None
    col = pooled.features(feasible)[:, -1]
    assert col.min() >= 0.0 and col.max() <= 1.0
    assert col[np.argmin(np.abs(cost - 6.0))] == pytest.approx(1.0)  # the synthetic table has cost 6


def test_engine_names_are_validated_against_their_registries() -> None:
    with pytest.raises(UnknownNameError, match="unknown acquisition 'ucb'; known: ei"):
        EngineConfig(acquisition="ucb")
    with pytest.raises(UnknownNameError, match=r"unknown kernel 'periodic'; known: .*rbf"):
        EngineConfig(kernel="periodic")  # (bench/engine_variants.py registers the kernels measured)
    with pytest.raises(UnknownNameError, match="unknown output warp 'log'; known: copula, none, yeo-johnson"):
        EngineConfig(output_warp="log")


def test_removed_engine_options_read_from_stored_options() -> None:
    """Options removed from the engine (measured, not adopted): stored at the value the engine still
    implements they are dropped; at any other value the stored options are refused, naming it."""
    from chamlab.chamnet.search.config import REMOVED_FIELDS

    stored = {**EngineConfig().to_json(), **REMOVED_FIELDS}
    assert EngineConfig.from_json(stored) == EngineConfig()
    assert EngineConfig.from_json({k: v for k, v in stored.items() if k != "merge_equivalent"}) == (
        EngineConfig(merge_equivalent=False)  # stored before the option existed: it was off
    )
    # the cost feature was removed, then implemented again: a history without it had it off
    assert EngineConfig.from_json({k: v for k, v in stored.items() if k != "cost_feature"}) == (
        EngineConfig(cost_feature=False)
    )
    assert EngineConfig.from_json({**stored, "cost_feature": True}) == EngineConfig(cost_feature=True)
    with pytest.raises(InputError, match=r"ensemble=True, which chamlab no longer has"):
        EngineConfig.from_json({**stored, "ensemble": True})
    with pytest.raises(TypeError):  # a name that never was an option is a programming error
        EngineConfig.from_json({**stored, "bogus": 1})


def test_a_failed_gp_fit_is_reported_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hyperparameter optimiser fails (fault injected into BoTorch's fit): the search warns in
    chamlab's words, records each failure in the state and result.json, and goes on with the prior's
    (then the previous fit's) hyperparameters."""
    import json

    import botorch.fit

    from chamlab.chamnet.search.engine import GPFitWarning

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected: the line search found no descent direction")

    monkeypatch.setattr(botorch.fit, "fit_gpytorch_mll", broken)
    problem = table_problem(synthetic(), {"latency_ms": 6.0})
    with pytest.warns(GPFitWarning, match=r"fitting the accuracy GP's hyperparameters on 4 queries failed"):
        result = search(problem, budget=7, seed=0, config=EngineConfig(n_init=4), out=tmp_path, plot=False)
    assert result.queries == 7 and result.predicted_accuracy is not None  # a usable model still
    # refit_every=4: optimised once, at 4 queries (from the prior); conditioned only at 5, 6 and 7
    failures = json.loads((tmp_path / "result.json").read_text())["gp_fit_failures"]
    assert failures == result.gp_fit_failures and len(failures) == 1
    assert "RuntimeError: injected" in failures[0] and "the prior's default hyperparameters" in failures[0]


def test_output_warps_are_monotone_and_invertible() -> None:
    from chamlab.chamnet.search.engine import OutputWarp

    rng = np.random.default_rng(0)
    # a left-skewed accuracy sample (a tail of poor networks), as accuracy tables usually are
    y = np.concatenate([rng.normal(91.0, 0.8, 40), rng.normal(70.0, 8.0, 6)])
    yj = OutputWarp.fit("yeo-johnson", y)
    assert yj.lmbda > 1.0  # stretches the top, compresses the tail
    for kind in ("none", "yeo-johnson", "copula"):
        w = OutputWarp.fit(kind, y)
        t = w(y)
        assert np.all(np.diff(t[np.argsort(y)]) >= 0), kind
        assert w.inverse(t) == pytest.approx(y, abs=1e-9), kind
        assert w.inverse(w(95.0)) == pytest.approx(95.0), kind  # beyond the values seen too
        assert w.to_json()["kind"] == kind
    # the top decile spans more of the warped range than of the raw range
    top = y >= np.percentile(y, 90)
    share = lambda v: np.ptp(v[top]) / np.ptp(v)  # noqa: E731
    assert share(yj(y)) > 2 * share(y)


def test_history_v1_reads_as_v2_and_resumes(tmp_path: Path) -> None:
    """A history written before int8 accuracy (version 1) and before the newer engine options
    resumes: its accuracy was fp32, the options were off; the options removed since were at the
    values the engine kept."""
    import json

    import pyarrow.parquet as pq

    from chamlab.chamnet.search.config import REMOVED_FIELDS

    sp = synthetic()
    problem = table_problem(sp, {"latency_ms": 6.0})
    old = EngineConfig(n_init=4, merge_equivalent=False)  # what the engine did before the option
    first = search(problem, budget=5, seed=3, config=old, out=tmp_path)
    assert first.accuracy_dtype == "fp32" and "fp32 accuracy only" in str(first.accuracy_note)
    assert first.oracle_accuracies == {"fp32": first.oracle_accuracy}
    path = tmp_path / "history.parquet"
    v2 = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in v2.schema.metadata.items()}
    args = json.loads(meta["chamlab.search"])
    assert args.pop("accuracy_dtype") == "fp32"
    # as the engine of then stored them: with the options removed since (at their kept values) ...
    args["engine"].update(REMOVED_FIELDS)
    for added in (  # ... and without those newer than the file
        "ordinal_encoding",
        "hyper_starts",
        "mes_samples",
        "ei_xi",
        "merge_equivalent",
    ):
        args["engine"].pop(added, None)
    meta.update({"chamlab.search": json.dumps(args), "chamlab.schema_version": "1"})
    v1 = v2.drop_columns(["accuracy_fp32", "accuracy_int8"])
    pq.write_table(v1.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()}), path)

    up = read_table(path, HISTORY_KIND)
    assert up.meta_json("chamlab.search")["accuracy_dtype"] == "fp32"
    df = up.table.to_pandas()
    assert df["accuracy_fp32"].tolist() == df["accuracy"].tolist() and df["accuracy_int8"].isna().all()
    again = Counting(oracle_for(sp))
    result = search(
        Problem(sp, again, problem.costs, problem.limits), budget=7, seed=3, config=old,
        out=tmp_path,
    )  # fmt: skip
    assert len(again.asked) == 2 and result.queries == 7  # resumed, not restarted
    df = read_table(path, HISTORY_KIND).table.to_pandas()
    assert df["accuracy_fp32"].iloc[:5].tolist() == df["accuracy"].iloc[:5].tolist()  # kept from the file


def test_a_history_from_before_the_cost_feature_default_is_refused_with_the_flag_that_resumes_it(
    tmp_path: Path,
) -> None:
    """A history stored before ``cost_feature`` was an option again holds no such key: it was made
    without the feature. Under the default (on) it is refused by name, the hint names
    --no-cost-feature; with the feature off it resumes without asking again."""
    sp = synthetic()
    problem = table_problem(sp, {"latency_ms": 6.0})
    then = EngineConfig(n_init=4, cost_feature=False)
    search(problem, budget=5, seed=3, config=then, out=tmp_path, plot=False)
    edit_stored_engine(tmp_path / "history.parquet", lambda engine: engine.pop("cost_feature"))
    assert EngineConfig().cost_feature  # the default
    with pytest.raises(InputError, match=r"engine\.cost_feature: False there, True now") as e:
        search(problem, budget=7, seed=3, config=EngineConfig(n_init=4), out=tmp_path, plot=False)
    assert "--no-cost-feature" in str(e.value.hint)
    again = Counting(oracle_for(sp))
    result = search(
        Problem(sp, again, problem.costs, problem.limits),
        budget=7,
        seed=3,
        config=then,
        out=tmp_path,
        plot=False,
    )
    assert len(again.asked) == 2 and result.queries == 7


def test_a_history_from_before_the_local_search_resumes_where_it_changes_nothing(tmp_path: Path) -> None:
    """local_search acts on candidate pools only: a history stored before the option (read as 0)
    resumes under the default (3) when the space is enumerated; a pooled one is refused by name, with
    the flag that resumes it, and resumes with local_search=0."""
    sp = synthetic()
    problem = table_problem(sp, {"latency_ms": 6.0})
    for pooled in (False, True):
        out = tmp_path / ("pooled" if pooled else "enumerated")
        limit = 0 if pooled else EngineConfig().exhaustive_limit
        then = EngineConfig(n_init=4, exhaustive_limit=limit, pool_size=32, local_search=0)
        search(problem, budget=5, seed=3, config=then, out=out)
        edit_stored_engine(out / "history.parquet", lambda engine: engine.pop("local_search"))
        now = dataclasses.replace(then, local_search=3)
        if pooled:
            with pytest.raises(InputError, match=r"engine\.local_search: 0 there, 3 now") as e:
                search(problem, budget=7, seed=3, config=now, out=out)
            assert "--local-search 0" in str(e.value.hint)
            now = then
        again = Counting(oracle_for(sp))
        result = search(
            Problem(sp, again, problem.costs, problem.limits), budget=7, seed=3, config=now, out=out
        )
        assert len(again.asked) == 2 and result.queries == 7  # resumed, not restarted


def test_a_history_made_with_a_removed_option_is_refused_by_name(tmp_path: Path) -> None:
    problem = table_problem(synthetic(), {"latency_ms": 6.0})
    search(problem, budget=5, seed=3, config=EngineConfig(n_init=4), out=tmp_path, plot=False)
    # as a history of the former trust-region option held it
    edit_stored_engine(tmp_path / "history.parquet", lambda engine: engine.update(trust_region=True))
    with pytest.raises(InputError, match=r"whose arguments use engine option trust_region=True"):
        search(problem, budget=7, seed=3, config=EngineConfig(n_init=4), out=tmp_path, plot=False)
