"""Constrained search on fixed predictors: the safety margin, exact enumeration and the seeded GA.

Numpy only (no GP, no torch): accuracy and costs are closed-form functions, so every answer is
checked against brute force over the whole space.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import pytest

from chamlab.chamnet.search import GAConfig, constrained_search, safety_margin
from chamlab.chamnet.search.constrained import DEFAULT_SPREAD_PCT, MARGIN_K, pareto_front
from chamlab.chamnet.spaces.base import Arch, Dimension
from chamlab.chamnet.spaces.table import TableSpace
from chamlab.core.errors import ArchError, InputError


class Grid:
    """``d`` ordinal dimensions of ``n`` values: 8 x 7 = 5.8M archs with the defaults (GA territory)."""

    name = "grid"

    def __init__(self, d: int = 8, n: int = 7) -> None:
        self._dims = tuple(Dimension(f"x{i}", tuple(range(n))) for i in range(d))

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dims

    @property
    def size(self) -> int:
        return int(np.prod([len(d.values) for d in self._dims]))

    def enumerate(self) -> Iterator[Arch]:
        yield from itertools.product(*(d.values for d in self._dims))

    def sample(self, rng: np.random.Generator, n: int) -> list[Arch]:
        return [
            tuple(int(v) for v in row)
            for row in rng.integers(0, len(self._dims[0].values), (n, len(self._dims)))
        ]

    def validate(self, arch: Sequence[int]) -> Arch:
        if len(arch) != len(self._dims) or any(not 0 <= v < len(self._dims[0].values) for v in arch):
            raise ArchError(f"bad arch {arch}")
        return tuple(int(v) for v in arch)

    def format(self, arch: Arch) -> str:
        return "".join(map(str, arch))


WEIGHTS = np.array([3.0, 1.0, 2.5, 0.5, 2.0, 1.5, 0.8, 1.2])  # accuracy per unit of each dimension
COSTS = np.array([1.0, 1.0, 2.0, 0.5, 1.5, 1.0, 0.7, 1.1])  # latency per unit


def accuracy(archs: Sequence[Arch]) -> np.ndarray:
    return np.array([float(WEIGHTS[: len(a)] @ np.asarray(a)) for a in archs])


def latency(arch: Arch) -> float:
    return 1.0 + float(COSTS[: len(arch)] @ np.asarray(arch))


def brute_force(space: Grid, limit: float) -> float:
    return max(accuracy([a])[0] for a in space.enumerate() if latency(a) <= limit)


def test_safety_margin_is_k_times_the_loo_spread_or_the_documented_default() -> None:
    m = safety_margin(20.0, [3.0, -4.0, 0.0, 5.0])  # median |e| = 3.5 %
    assert m.spread_pct == pytest.approx(1.4826 * 3.5)
    assert m.effective == pytest.approx(20.0 * (1 - MARGIN_K * 1.4826 * 3.5 / 100))
    assert m.source.startswith("calibration (4")
    # one disturbed network (measured 3x slow) barely moves it
    errors = [1.0, -2.0, 0.5, 3.0, -1.5, 2.5, -0.5, 1.5, -1.0, -64.0]
    assert safety_margin(20.0, errors).spread_pct < 3.0
    d = safety_margin(20.0, None)
    assert d.spread_pct == DEFAULT_SPREAD_PCT and d.effective == pytest.approx(20.0 * (1 - 0.1 * MARGIN_K))
    assert "no calibration" in d.source
    assert safety_margin(20.0, [9.0], k=0).effective == 20.0
    with pytest.raises(InputError, match="leaves no latency budget") as exc:
        safety_margin(1.0, [50.0, -70.0, 60.0])
    assert "over 3 networks" in (exc.value.hint or "") and "--n 10" in (exc.value.hint or "")
    with pytest.raises(InputError, match="leaves no latency budget") as exc:
        safety_margin(1.0, None, default_spread_pct=70.0)
    assert "so its spread is known" in (exc.value.hint or "")
    with pytest.raises(InputError, match="positive"):
        safety_margin(-1.0, None)


def test_enumeration_is_exact_and_returns_the_pareto_front() -> None:
    space = Grid(d=4, n=5)  # 625 archs: enumerated
    limit = 9.0
    res = constrained_search(
        space, accuracy, {"latency_ms": latency}, {"latency_ms": limit}, np.random.default_rng(0)
    )
    assert res.method == "enumeration" and res.evaluated == 625
    assert res.best is not None and res.best.accuracy == pytest.approx(brute_force(space, limit))
    assert res.best.costs["latency_ms"] <= limit
    front = res.front
    lat = [c.costs["latency_ms"] for c in front]
    acc = [c.accuracy for c in front]
    assert lat == sorted(lat) and acc == sorted(acc) and len(set(acc)) == len(acc)
    # nothing evaluated dominates a front member
    for a in space.enumerate():
        for c in front:
            assert not (latency(a) < c.costs["latency_ms"] and accuracy([a])[0] > c.accuracy)
    assert res.fastest.arch == (0, 0, 0, 0)


def test_known_accuracies_replace_predictions() -> None:
    space = Grid(d=3, n=3)
    target = (0, 0, 1)  # cheap, and predicted poorly
    res = constrained_search(
        space,
        accuracy,
        {"latency_ms": latency},
        {"latency_ms": 100.0},
        np.random.default_rng(0),
        known={target: 1000.0},
    )
    assert res.best is not None and res.best.arch == target and res.best.known


@pytest.mark.parametrize("limit", [8.0, 14.0, 22.0])
def test_ga_finds_the_constrained_optimum_of_a_large_space(limit: float) -> None:
    space = Grid()  # 5.7M archs: GA
    best = brute_force_dp(limit)
    res = constrained_search(
        space, accuracy, {"latency_ms": latency}, {"latency_ms": limit}, np.random.default_rng(1)
    )
    assert res.method == "ga" and res.evaluated < 10_000
    assert res.best is not None and res.best.costs["latency_ms"] <= limit
    assert res.best.accuracy >= 0.97 * best  # a GA: near, not always at, the optimum


def brute_force_dp(limit: float) -> float:
    """Exact optimum of the separable knapsack of :class:`Grid` (costs in tenths: integer DP)."""
    cap = round((limit - 1.0) * 10)
    dp = np.full(cap + 1, -np.inf)
    dp[0] = 0.0
    for w, c in zip(WEIGHTS, COSTS, strict=True):
        new = np.full_like(dp, -np.inf)
        for v in range(7):
            cost = round(c * v * 10)
            if cost <= cap:
                new[cost:] = np.maximum(new[cost:], dp[: cap + 1 - cost] + w * v)
        dp = new
    return float(dp.max())


def test_ga_is_seeded_and_uses_its_seeds() -> None:
    space = Grid()
    args = (space, accuracy, {"latency_ms": latency}, {"latency_ms": 14.0})
    cfg = GAConfig(generations=5)
    a = constrained_search(*args, np.random.default_rng(7), config=cfg)
    b = constrained_search(*args, np.random.default_rng(7), config=cfg)
    assert a.best == b.best and a.evaluated == b.evaluated
    seed = (6, 0, 0, 0, 0, 0, 0, 6)  # a good feasible arch planted in generation 0
    assert latency(seed) <= 14.0
    c = constrained_search(*args, np.random.default_rng(7), config=GAConfig(generations=1), seeds=[seed])
    assert c.best is not None and c.best.accuracy >= accuracy([seed])[0]


def test_every_limit_is_met_including_a_table_spaces_energy_column() -> None:
    rows = [
        {
            "w": w,
            "d": d,
            "accuracy": 50 + 5 * w + 3 * d,
            "latency_ms": 1.0 + w + d,
            "energy_mj": 2.0 * w + 0.5 * d,
        }
        for w in range(6)
        for d in range(6)
    ]
    space = TableSpace.from_frame(pd.DataFrame(rows), name="table:t")
    costs = {c: (lambda a, c=c: space.cost_of(a, c)) for c in ("latency_ms", "energy_mj")}

    def acc(archs: Sequence[Arch]) -> np.ndarray:
        return np.array([space.accuracy_of(a) for a in archs])

    limits = {"latency_ms": 8.0, "energy_mj": 5.0}
    res = constrained_search(space, acc, costs, limits, np.random.default_rng(0))
    ok = [r for r in rows if r["latency_ms"] <= 8.0 and r["energy_mj"] <= 5.0]
    assert res.best is not None
    assert res.best.accuracy == max(r["accuracy"] for r in ok)
    assert res.best.costs["energy_mj"] <= 5.0 and res.best.costs["latency_ms"] <= 8.0
    # the GA on the same table (enumeration switched off) meets both limits too
    ga = constrained_search(
        space,
        acc,
        costs,
        limits,
        np.random.default_rng(0),
        config=GAConfig(enumeration_limit=0, population=16),
    )
    assert ga.method == "ga" and ga.best is not None
    assert ga.best.costs["energy_mj"] <= 5.0 and ga.best.costs["latency_ms"] <= 8.0


def test_nothing_feasible_reports_the_fastest() -> None:
    space = Grid(d=3, n=3)
    res = constrained_search(
        space, accuracy, {"latency_ms": latency}, {"latency_ms": 0.5}, np.random.default_rng(0)
    )
    assert res.best is None and res.fastest.costs["latency_ms"] == 1.0


def test_bad_configuration_is_an_input_error() -> None:
    with pytest.raises(InputError, match="population"):
        GAConfig(population=2)
    with pytest.raises(InputError, match="tournament"):
        GAConfig(tournament=1)
    with pytest.raises(InputError, match="no cost model"):
        constrained_search(
            Grid(2, 2), accuracy, {"latency_ms": latency}, {"energy_mj": 1.0}, np.random.default_rng(0)
        )


def test_pareto_front_helper() -> None:
    from chamlab.chamnet.search.constrained import Candidate

    cands = [
        Candidate((i,), acc, {"c": cost}, False)
        for i, (cost, acc) in enumerate([(1, 5), (2, 4), (3, 7), (3, 6), (4, 7)])
    ]
    assert [c.arch for c in pareto_front(cands, "c")] == [(0,), (2,)]


@pytest.mark.parametrize("bad", [math.inf, math.nan, -1.0, 0.0])
def test_a_cost_or_limit_that_is_not_finite_is_an_error_never_met(bad: float) -> None:
    """A damaged LUT or calibration predicting inf/NaN/negative ms must not pass as meeting a limit
    (inf "met" an inf limit, NaN compared false both ways), and such a limit (or 0) is refused. A cost
    of 0 is allowed (a table space's energy column holds it)."""
    space = Grid(d=2, n=3)
    rng = np.random.default_rng(0)
    if bad != 0.0:
        with pytest.raises(InputError, match="not a finite number >= 0"):
            constrained_search(space, accuracy, {"latency": lambda a: bad}, {"latency": 5.0}, rng)
    with pytest.raises(InputError, match="must be a positive finite number"):
        constrained_search(space, accuracy, {"latency": latency}, {"latency": bad}, rng)
