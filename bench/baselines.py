"""Baselines the engine is benchmarked against, in one harness (``bench/search_efficiency.py``; they
live in bench/, outside the wheel: only the benchmark uses them).

Each baseline queries feasible architectures of a *finite* candidate set one at a time and returns
them in order (never the same arch twice: a repeated arch costs no query). ``Candidates`` holds the
enumerated feasible archs, their ordinal features and the oracle.

* ``random_search``: the feasible archs in a random order;
* ``regularized_evolution``: Real et al. (2019): population 50, tournament sample 10, mutate one
  dimension of the winner (re-drawn until feasible and new; in a table space, where a mutation is
  rarely a row, a random new feasible row among those nearest the winner), the oldest member dies;
* ``plain_gp_ei``: the plain GP of NOTES.md: scikit-learn GP (Matern-5/2 ARD + white noise,
  normalised outputs), 10 random initial points, expected improvement over all feasible archs,
  refitted every step (scikit-learn is a dev/benchmark dependency);
* ``optuna_tpe``: Optuna's TPE sampler, one categorical parameter per dimension, the cost limit as
  its constraint (optuna is a dev/benchmark dependency);
* ``optuna_gp``: Optuna's GP sampler, the same encoding and constraint (``bench/search_suite.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence

import numpy as np

from chamlab.chamnet.spaces.base import Arch, Dimension
from chamlab.core.registry import Registry

Stop = Callable[[list[Arch]], bool]


@dataclasses.dataclass
class Candidates:
    dims: tuple[Dimension, ...]
    archs: list[Arch]  # feasible archs
    X: np.ndarray  # ordinal features in [0, 1]
    accuracy: Callable[[Arch], float]
    feasible: Callable[[Arch], bool]  # for archs outside ``archs`` (mutations, TPE proposals)
    #: whether an arch is in the space at all (a table space: a row); None: every combination is
    in_space: Callable[[Arch], bool] | None = None


def random_search(c: Candidates, budget: int, rng: np.random.Generator, stop: Stop) -> list[Arch]:
    out: list[Arch] = []
    for i in rng.permutation(len(c.archs))[:budget]:
        out.append(c.archs[int(i)])
        if stop(out):
            break
    return out


def regularized_evolution(
    c: Candidates,
    budget: int,
    rng: np.random.Generator,
    stop: Stop,
    *,
    population: int = 50,
    sample: int = 10,
) -> list[Arch]:
    import collections

    out: list[Arch] = []
    seen: set[Arch] = set()
    acc: dict[Arch, float] = {}
    pop: collections.deque[Arch] = collections.deque()
    for i in rng.permutation(len(c.archs))[: min(population, budget)]:
        a = c.archs[int(i)]
        out.append(a)
        seen.add(a)
        acc[a] = c.accuracy(a)
        pop.append(a)
        if stop(out):
            return out
    while len(out) < budget and len(seen) < len(c.archs):
        members = [pop[int(i)] for i in rng.choice(len(pop), size=min(sample, len(pop)), replace=False)]
        parent = max(members, key=lambda a: acc[a])
        child = None
        if c.in_space is not None:  # a table space: a one-dimension mutation is rarely a row
            child = _nearest_new(c, parent, seen, rng)
        for _ in range(0 if child is not None else 200):
            j = int(rng.integers(len(c.dims)))
            values = [v for v in c.dims[j].values if v != parent[j]]
            if not values:
                continue
            cand = (*parent[:j], values[int(rng.integers(len(values)))], *parent[j + 1 :])
            if cand not in seen and c.feasible(cand):
                child = cand
                break
        if child is None:  # parent's neighbourhood exhausted: a random new feasible arch
            rest = [a for a in c.archs if a not in seen]
            child = rest[int(rng.integers(len(rest)))]
        out.append(child)
        seen.add(child)
        acc[child] = c.accuracy(child)
        pop.append(child)
        pop.popleft()
        if stop(out):
            break
    return out


def _nearest_new(c: Candidates, parent: Arch, seen: set[Arch], rng: np.random.Generator) -> Arch | None:
    """A random feasible row not yet seen among those differing from ``parent`` in the fewest
    dimensions (a table space's mutation: the rows nearest the parent)."""
    free = [a for a in c.archs if a not in seen]
    if not free:
        return None
    dist = np.array([sum(x != y for x, y in zip(a, parent, strict=True)) for a in free])
    near = np.flatnonzero(dist == dist.min())
    return free[int(near[int(rng.integers(len(near)))])]


def plain_gp_ei(
    c: Candidates, budget: int, rng: np.random.Generator, stop: Stop, *, n_init: int = 10
) -> list[Arch]:
    import warnings

    from scipy.stats import norm
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    d = c.X.shape[1]
    order = [int(i) for i in rng.permutation(len(c.archs))[:n_init]]
    out: list[Arch] = []
    idx: list[int] = []
    y: list[float] = []
    for i in order:
        idx.append(i)
        out.append(c.archs[i])
        y.append(c.accuracy(c.archs[i]))
        if stop(out) or len(out) >= budget:
            return out
    while len(out) < budget and len(out) < len(c.archs):
        kernel = ConstantKernel(1.0) * Matern(length_scale=np.ones(d), nu=2.5) + WhiteKernel(1e-3)
        gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(c.X[idx], np.array(y))
        mask = np.ones(len(c.archs), dtype=bool)
        mask[idx] = False
        rest = np.flatnonzero(mask)
        mu, sd = gp.predict(c.X[rest], return_std=True)
        sd = np.maximum(sd, 1e-9)
        z = (mu - max(y)) / sd
        ei = (mu - max(y)) * norm.cdf(z) + sd * norm.pdf(z)
        i = int(rest[int(np.argmax(ei))])
        idx.append(i)
        out.append(c.archs[i])
        y.append(c.accuracy(c.archs[i]))
        if stop(out):
            break
    return out


def optuna_tpe(
    c: Candidates, budget: int, rng: np.random.Generator, stop: Stop, *, max_trials_factor: int = 4
) -> list[Arch]:
    import optuna

    sampler = optuna.samplers.TPESampler(seed=int(rng.integers(2**31)))
    return _optuna(c, budget, stop, sampler, max_trials_factor)


def optuna_gp(
    c: Candidates, budget: int, rng: np.random.Generator, stop: Stop, *, max_trials_factor: int = 4
) -> list[Arch]:
    """Optuna's GP sampler (a GP with a categorical-aware kernel, log EI, constraints as a feasibility
    GP); the same one-categorical-parameter-per-dimension encoding as TPE."""
    import optuna

    sampler = optuna.samplers.GPSampler(seed=int(rng.integers(2**31)))
    return _optuna(c, budget, stop, sampler, max_trials_factor)


def _optuna(c: Candidates, budget: int, stop: Stop, sampler: object, max_trials_factor: int) -> list[Arch]:
    """Optuna on one categorical parameter per dimension. A proposal over the cost limit is a
    violated constraint (``Trial.set_constraint``, Optuna >= 5; no query). In a table space
    (``c.in_space`` given) most combinations of dimension values are no row: such a proposal is
    answered by the nearest feasible row not yet asked (fewest differing dimensions, then row order),
    added to the study as a completed trial of its own, and the proposal itself is recorded as failed
    (a search that can only ask rows)."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed (snapped) proposals log a warning each
    out: list[Arch] = []
    cache: dict[Arch, float] = {}
    feasible_cache: dict[Arch, bool] = {}
    dists = {d.name: CategoricalDistribution(list(range(len(d.values)))) for d in c.dims}
    lookup = [{v: i for i, v in enumerate(d.values)} for d in c.dims]
    rows = np.array([[lk[v] for lk, v in zip(lookup, a, strict=True)] for a in c.archs], dtype=np.int64)
    asked = np.zeros(len(c.archs), dtype=bool)
    row_of = {a: i for i, a in enumerate(c.archs)}

    def ask(arch: Arch) -> float:
        if arch not in cache:
            cache[arch] = c.accuracy(arch)
            out.append(arch)
            if arch in row_of:
                asked[row_of[arch]] = True
        return cache[arch]

    def objective(trial: optuna.Trial) -> float:
        idx = [trial.suggest_categorical(d.name, list(range(len(d.values)))) for d in c.dims]
        arch = tuple(d.values[i] for d, i in zip(c.dims, idx, strict=True))
        if c.in_space is not None and not c.in_space(arch):
            trial.set_constraint("violation", 1.0)
            free = np.flatnonzero(~asked)
            if len(free) == 0:
                trial.study.stop()
                return float("nan")
            dist = (rows[free] != np.asarray(idx)).sum(axis=1)
            j = int(free[int(np.argmin(dist))])
            snapped = c.archs[j]
            value = ask(snapped)
            trial.study.add_trial(
                create_trial(
                    params={d.name: int(rows[j, k]) for k, d in enumerate(c.dims)},
                    distributions=dists,
                    value=value,
                    system_attrs={"constraints:violation": 0.0},  # what set_constraint stores
                )
            )
            if stop(out) or len(out) >= budget:
                trial.study.stop()
            return float("nan")  # the proposal itself: no row, recorded as failed
        ok = feasible_cache.setdefault(arch, c.feasible(arch))
        trial.set_constraint("violation", 0.0 if ok else 1.0)
        if not ok:
            return 0.0 if not cache else min(cache.values())  # infeasible: never trained, no query
        value = ask(arch)
        if stop(out) or len(out) >= budget:
            trial.study.stop()
        return value

    study = optuna.create_study(direction="maximize", sampler=sampler)  # type: ignore[arg-type]
    study.optimize(objective, n_trials=max_trials_factor * budget)
    return out


BASELINES: Registry[Callable[..., list[Arch]]] = Registry("baseline")
BASELINES.add("random", random_search)
BASELINES.add("regularized-evolution", regularized_evolution)
BASELINES.add("plain-gp-ei", plain_gp_ei)
BASELINES.add("optuna-tpe", optuna_tpe)
BASELINES.add("optuna-gp", optuna_gp)


def first_hit(queried: Sequence[Arch], best: Collection[Arch]) -> int | None:
    """1-based position of the first arch of ``best`` (the true best; several when tied) in
    ``queried`` (None when never queried)."""
    for i, a in enumerate(queried):
        if a in best:
            return i + 1
    return None
