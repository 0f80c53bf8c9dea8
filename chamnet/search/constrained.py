"""Constrained search with fixed predictors: the most accurate arch whose predicted costs meet limits.

Once the predictors exist (the GP accuracy model of the BO loop, the LUT latency model), ChamNet's
search is cheap: maximise predicted accuracy subject to ``cost(arch) <= limit`` for every limit.

* **Exact enumeration** when the space holds at most :data:`ENUMERATION_LIMIT` archs (20,000:
  macro-cifar10's 6,561 archs are predicted in about a second here, so every such space is searched
  exactly, with no GA error); a larger space (chamnet-mbv2: ~1e20) goes to the GA.
* **Genetic algorithm** (METHOD.md; :class:`GAConfig`): a seeded population (the caller's seeds,
  e.g. the feasible archs the BO loop queried, plus uniform samples), *feasibility-first tournament
  selection* (a feasible arch beats an infeasible one; two feasible ones compare predicted accuracy,
  ties broken by lower primary cost; two infeasible ones compare total relative violation), *uniform
  crossover*, *mutation of one choice at a time* and *elitism*; it stops after ``generations`` or
  ``patience`` generations without a better feasible arch. Every arch it evaluates is kept, so the
  Pareto front covers all of them.

Accuracy is the caller's batch function (the GP posterior mean); archs whose accuracy is *known*
(queried from the oracle) use that value instead of the prediction.

**Safety margin.** A predictor whose errors are unbiased with spread ``s`` puts about half of the
archs predicted just under the limit over it on the device. :func:`safety_margin` therefore searches
under ``limit * (1 - k * s / 100)``, with ``s`` the robust spread (:func:`loo_spread_pct`:
1.4826 x the median absolute error) of the leave-one-out errors (%) of the latency calibration
(``chamlab calibrate``: measured whole networks the fit did not see, so it includes the device's own
run-to-run noise) and ``k =`` :data:`MARGIN_K` ``= 1.645``: for normally
distributed errors, a winner predicted exactly at the searched limit exceeds the real limit with
probability 5 % (one-sided). Without a calibration the spread is unknown and
:data:`DEFAULT_SPREAD_PCT` (10 %, the +/-10 % band the raw LUT sums of this project's latency
benchmark were judged by) stands in: a 16.45 % margin, which says "calibrate" loudly by its cost.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from chamlab.chamnet.spaces.base import Arch
from chamlab.core.errors import ArchError, InputError

#: spaces with at most this many archs are searched by exact enumeration
ENUMERATION_LIMIT = 20_000
#: the margin's multiple of the calibration's leave-one-out spread (one-sided 95 % for normal errors)
MARGIN_K = 1.645
#: the spread assumed without a calibration (%)
DEFAULT_SPREAD_PCT = 10.0


@dataclasses.dataclass(frozen=True)
class Margin:
    """The limit searched under: ``effective = limit * (1 - k * spread_pct / 100)``."""

    limit: float
    effective: float
    k: float
    spread_pct: float
    source: str  # "calibration (n networks)", "default (no calibration)" or "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "effective_limit": self.effective,
            "k": self.k,
            "spread_pct": self.spread_pct,
            "margin_pct": 100.0 * (1.0 - self.effective / self.limit),
            "source": self.source,
        }


def loo_spread_pct(loo_errors_pct: Sequence[float]) -> float:
    """Robust spread of the leave-one-out errors (%): ``1.4826 * median(|error|)``, the normal-consistent
    median absolute deviation about *zero* (so a bias counts as spread), which one disturbed network
    among ten cannot inflate (a root-mean-square would: one network measured 3x slow under load gave
    an RMS of 23 % against 9.5 % here)."""
    e = np.asarray(loo_errors_pct, dtype=float)
    e = e[np.isfinite(e)]
    if e.size == 0:
        raise InputError("the calibration holds no leave-one-out errors to size the safety margin from")
    return float(1.4826 * np.median(np.abs(e)))


def safety_margin(
    limit: float,
    loo_errors_pct: Sequence[float] | None,
    *,
    k: float = MARGIN_K,
    default_spread_pct: float = DEFAULT_SPREAD_PCT,
    quantity: str = "latency",
    unit: str = "ms",
) -> Margin:
    """The margin of the module docstring; ``loo_errors_pct`` None: no calibration (the default
    spread); ``k = 0`` searches under the limit itself. ``quantity``/``unit`` name the limit in
    errors (the same rule sizes an energy limit's margin from the energy calibration)."""
    if not math.isfinite(limit) or limit <= 0:
        raise InputError(f"the {quantity} limit must be a positive number of {unit}, got {limit}")
    if not math.isfinite(k) or k < 0:
        raise InputError(f"the margin's k must be >= 0, got {k}")
    if loo_errors_pct is None:
        spread, source = default_spread_pct, "default (no calibration)"
    else:
        spread, source = loo_spread_pct(loo_errors_pct), f"calibration ({len(loo_errors_pct)} networks)"
    if k == 0:
        source = "none (k = 0)"
    effective = limit * (1.0 - k * spread / 100.0)
    if effective <= 0:
        hint = (
            "calibrate the LUT (`chamlab calibrate`) so its spread is known, or lower the margin's k"
            if loo_errors_pct is None
            else f"the spread is the calibration's leave-one-out error over {len(loo_errors_pct)} networks: "
            "calibrate again with more of them (`chamlab calibrate --n 10`, each measured in three "
            "sessions by default), or lower the margin's k"
        )
        raise InputError(
            f"a safety margin of {k:g} x {spread:.1f} % leaves no {quantity} budget under {limit:g} {unit}",
            hint=hint,
        )
    return Margin(limit, effective, k, spread, source)


@dataclasses.dataclass(frozen=True)
class GAConfig:
    """The genetic algorithm's settings (module docstring); ``enumeration_limit``: spaces up to this
    size are enumerated instead. The defaults reached the exact optimum in 10 of 15 seeded runs
    (and >= 98.7 % of it in all) on a separable 8-dimension test problem of 5.8M archs whose optimum
    a dynamic programme knows (tests/chamnet/test_constrained.py), evaluating ~2,300 archs: larger
    populations or fewer generations did worse there."""

    population: int = 64
    generations: int = 100
    tournament: int = 3
    crossover_rate: float = 0.9
    mutation_rate: float = 0.5  # probability that a child gets one choice changed (always when a clone)
    elite: int = 4
    patience: int = 30
    polish_steps: int = 50  # then hill-climb from the best: best single-choice change, while it improves
    enumeration_limit: int = ENUMERATION_LIMIT

    def __post_init__(self) -> None:
        if self.population < 4:
            raise InputError(f"the GA population must be >= 4, got {self.population}")
        if self.generations < 1 or self.patience < 1:
            raise InputError("the GA needs at least 1 generation and a patience of at least 1")
        if not 2 <= self.tournament <= self.population:
            raise InputError(f"the tournament size must be from 2 to the population, got {self.tournament}")
        if not 0 <= self.elite < self.population:
            raise InputError(f"elite must be from 0 to population - 1, got {self.elite}")
        for name in ("crossover_rate", "mutation_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {v}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Candidate:
    arch: Arch
    accuracy: float  # known (oracle) when ``known``, else predicted
    costs: Mapping[str, float]
    known: bool

    def to_json(self, space: Any) -> dict[str, Any]:
        return {
            "arch": space.format(self.arch),
            "accuracy": self.accuracy,
            "accuracy_known": self.known,
            **{k: float(v) for k, v in self.costs.items()},
        }


@dataclasses.dataclass(frozen=True)
class ConstrainedResult:
    best: Candidate | None  # None: nothing evaluated meets the limits
    front: tuple[Candidate, ...]  # Pareto front (primary cost up, accuracy up) of everything evaluated
    fastest: Candidate  # the lowest primary cost evaluated (what to say when nothing is feasible)
    limits: Mapping[str, float]
    method: str  # "enumeration" or "ga"
    evaluated: int
    generations: int
    seconds: float

    @property
    def primary(self) -> str:
        return next(iter(self.limits))

    def to_json(self, space: Any) -> dict[str, Any]:
        return {
            "method": self.method,
            "evaluated": self.evaluated,
            "generations": self.generations,
            "seconds": round(self.seconds, 4),
            "limits": dict(self.limits),
            "best": None if self.best is None else self.best.to_json(space),
            "fastest": self.fastest.to_json(space),
            "pareto": [c.to_json(space) for c in self.front],
        }


def pareto_indices(cost: Sequence[float] | np.ndarray, acc: Sequence[float] | np.ndarray) -> np.ndarray:
    """Indices of the Pareto-optimal points (no other has both lower cost and higher accuracy), by
    increasing cost; of equal costs, the most accurate."""
    cost, acc = np.asarray(cost, dtype=float), np.asarray(acc, dtype=float)
    order = np.lexsort((-acc, cost))
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(int(i))
            best = acc[i]
    return np.array(front, dtype=int)


def pareto_front(cands: Sequence[Candidate], primary: str) -> tuple[Candidate, ...]:
    """The candidates no other beats on both lower ``primary`` cost and higher accuracy, by cost."""
    idx = pareto_indices([c.costs[primary] for c in cands], [c.accuracy for c in cands])
    return tuple(cands[i] for i in idx)


def _cost(name: str, model: Callable[[Arch], float], arch: Arch) -> float:
    """``model(arch)``, which must be a finite number >= 0 (a table space's energy column holds 0):
    anything else (a damaged LUT or calibration) is an error, never a cost that meets or misses a
    limit."""
    value = float(model(arch))
    if not math.isfinite(value) or value < 0:
        raise InputError(
            f"the {name} model predicts {value!r} for {arch}: not a finite number >= 0",
            hint="check the LUT and its calibration with `chamlab lut validate`",
        )
    return value


class _Evaluator:
    """Accuracy and costs of archs, each arch evaluated once."""

    def __init__(
        self,
        accuracy: Callable[[Sequence[Arch]], np.ndarray],
        costs: Mapping[str, Callable[[Arch], float]],
        limits: Mapping[str, float],
        known: Mapping[Arch, float],
    ) -> None:
        self.accuracy, self.costs, self.limits, self.known = accuracy, costs, limits, known
        self.seen: dict[Arch, Candidate] = {}

    def __call__(self, archs: Sequence[Arch]) -> list[Candidate]:
        new = [a for a in dict.fromkeys(archs) if a not in self.seen]
        if new:
            cost_rows = [{n: _cost(n, f, a) for n, f in self.costs.items()} for a in new]
            pred = np.asarray(self.accuracy(new), dtype=float).reshape(-1)
            if pred.shape != (len(new),):
                raise ValueError(f"the accuracy function returned {pred.shape} values for {len(new)} archs")
            for a, p, c in zip(new, pred, cost_rows, strict=True):
                k = self.known.get(a)
                self.seen[a] = Candidate(a, float(k if k is not None else p), c, k is not None)
        return [self.seen[a] for a in archs]

    def violation(self, c: Candidate) -> float:
        return sum(max(0.0, c.costs[n] / lim - 1.0) for n, lim in self.limits.items())

    def feasible(self, c: Candidate) -> bool:
        return all(c.costs[n] <= lim for n, lim in self.limits.items())


def _rank_key(ev: _Evaluator, primary: str) -> Callable[[Candidate], tuple[float, float, float]]:
    """Smaller is better: feasible first (by accuracy, then cost), then by violation."""

    def key(c: Candidate) -> tuple[float, float, float]:
        if ev.feasible(c):
            return (0.0, -c.accuracy, c.costs[primary])
        return (1.0, ev.violation(c), -c.accuracy)

    return key


def constrained_search(
    space: Any,
    accuracy: Callable[[Sequence[Arch]], np.ndarray],
    costs: Mapping[str, Callable[[Arch], float]],
    limits: Mapping[str, float],
    rng: np.random.Generator,
    *,
    config: GAConfig | None = None,
    seeds: Sequence[Arch] = (),
    known: Mapping[Arch, float] | None = None,
) -> ConstrainedResult:
    """Maximise ``accuracy`` subject to ``costs[n](arch) <= limits[n]`` (module docstring).

    ``accuracy(archs) -> (n,) array`` (predicted); ``known``: archs whose accuracy the oracle gave
    (used instead of the prediction); ``seeds``: archs put into the GA's first population. The first
    limit is the *primary* cost (the Pareto front's axis).
    """
    config = config or GAConfig()
    if not limits:
        raise InputError("a constrained search needs at least one limit")
    for n, lim in limits.items():
        if n not in costs:
            raise InputError(f"no cost model for the limit on {n!r} (have: {', '.join(costs)})")
        if not math.isfinite(lim) or lim <= 0:
            raise InputError(f"the limit on {n} must be a positive finite number, got {lim!r}")
    primary = next(iter(limits))
    ev = _Evaluator(accuracy, costs, limits, dict(known or {}))
    t0 = time.perf_counter()
    generations = 0
    if space.size <= config.enumeration_limit:
        method = "enumeration"
        ev(list(space.enumerate()))
    else:
        method = "ga"
        generations = _ga(space, ev, rng, config, [space.validate(s) for s in seeds], primary)
    everything = list(ev.seen.values())
    feasible = [c for c in everything if ev.feasible(c)]
    best = min(feasible, key=_rank_key(ev, primary), default=None)
    # the front over the archs that meet every limit but the primary one
    others = {n: lim for n, lim in limits.items() if n != primary}
    front_pool = [c for c in everything if all(c.costs[n] <= lim for n, lim in others.items())]
    return ConstrainedResult(
        best=best,
        front=pareto_front(front_pool, primary),
        fastest=min(everything, key=lambda c: c.costs[primary]),
        limits=dict(limits),
        method=method,
        evaluated=len(everything),
        generations=generations,
        seconds=time.perf_counter() - t0,
    )


def _ga(
    space: Any,
    ev: _Evaluator,
    rng: np.random.Generator,
    cfg: GAConfig,
    seeds: list[Arch],
    primary: str,
) -> int:
    dims = space.dimensions
    key = _rank_key(ev, primary)
    start = list(dict.fromkeys([*seeds[: cfg.population // 2], *space.sample(rng, cfg.population)]))
    pop = ev(start[: cfg.population])

    def tournament() -> Candidate:
        idx = rng.choice(len(pop), size=cfg.tournament, replace=False)
        return min((pop[int(i)] for i in idx), key=key)

    def mutate(arch: Arch) -> Arch:
        j = int(rng.integers(len(dims)))
        values = [v for v in dims[j].values if v != arch[j]]
        if not values:
            return arch
        return (*arch[:j], values[int(rng.integers(len(values)))], *arch[j + 1 :])

    best = min(pop, key=key)
    stale, gen = 0, 0
    for gen in range(1, cfg.generations + 1):  # noqa: B007 (the count is returned)
        ranked = sorted(pop, key=key)
        children: list[Arch] = [c.arch for c in ranked[: cfg.elite]]
        taken = set(children)
        attempts = 0
        while len(children) < cfg.population and attempts < 20 * cfg.population:
            attempts += 1
            a, b = tournament().arch, tournament().arch
            if rng.random() < cfg.crossover_rate:
                mask = rng.random(len(dims)) < 0.5
                child: Arch = tuple(x if m else y for x, y, m in zip(a, b, mask, strict=True))
            else:
                child = a
            if child in taken or rng.random() < cfg.mutation_rate:
                child = mutate(child)
            try:
                child = space.validate(child)
            except ArchError:  # e.g. a table space's combination that is not a row
                continue
            if child in taken:
                continue
            taken.add(child)
            children.append(child)
        pop = ev(children)
        new_best = min([best, *pop], key=key)
        if key(new_best) < key(best):
            best, stale = new_best, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    for _ in range(cfg.polish_steps):
        neighbours = []
        for j, d in enumerate(dims):
            for v in d.values:
                if v != best.arch[j]:
                    try:
                        neighbours.append(space.validate((*best.arch[:j], v, *best.arch[j + 1 :])))
                    except ArchError:
                        continue
        if not neighbours:
            break
        step = min(ev(neighbours), key=key)
        if key(step) >= key(best):
            break
        best = step
    return gen


__all__ = [
    "DEFAULT_SPREAD_PCT",
    "ENUMERATION_LIMIT",
    "MARGIN_K",
    "Candidate",
    "ConstrainedResult",
    "GAConfig",
    "Margin",
    "constrained_search",
    "loo_spread_pct",
    "pareto_front",
    "pareto_indices",
    "safety_margin",
]
