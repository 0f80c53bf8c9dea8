"""Baselines the engine is benchmarked against, in one harness (``bench/search_efficiency.py``; they
live in bench/, outside the wheel: only the benchmark uses them).

Each baseline queries feasible architectures of a *finite* candidate set one at a time and returns
them in order (never the same arch twice: a repeated arch costs no query). ``Candidates`` holds the
enumerated feasible archs, their ordinal features and the oracle.

* ``random_search``: the feasible archs in a random order;
* ``regularized_evolution``: Real et al. (2019): population 50, tournament sample 10, mutate one
  dimension of the winner (re-drawn until feasible and new), the oldest member dies;
* ``plain_gp_ei``: the plain GP of NOTES.md: scikit-learn GP (Matern-5/2 ARD + white noise,
  normalised outputs), 10 random initial points, expected improvement over all feasible archs,
  refitted every step (scikit-learn is a dev/benchmark dependency);
* ``optuna_tpe``: Optuna's TPE sampler, one categorical parameter per dimension, the cost limit as
  its constraint (optuna is a dev/benchmark dependency).
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
        for _ in range(200):
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

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: list[Arch] = []
    cache: dict[Arch, float] = {}
    feasible_cache: dict[Arch, bool] = {}

    def objective(trial: optuna.Trial) -> float:
        arch = tuple(d.values[trial.suggest_categorical(d.name, list(range(len(d.values))))] for d in c.dims)
        ok = feasible_cache.setdefault(arch, c.feasible(arch))
        trial.set_user_attr("violation", 0.0 if ok else 1.0)
        if not ok:
            return 0.0 if not cache else min(cache.values())  # infeasible: never trained, no query
        if arch not in cache:
            cache[arch] = c.accuracy(arch)
            out.append(arch)
            if stop(out) or len(out) >= budget:
                trial.study.stop()
        return cache[arch]

    sampler = optuna.samplers.TPESampler(
        seed=int(rng.integers(2**31)), constraints_func=lambda t: (t.user_attrs["violation"],)
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=max_trials_factor * budget)
    return out


BASELINES: Registry[Callable[..., list[Arch]]] = Registry("baseline")
BASELINES.add("random", random_search)
BASELINES.add("regularized-evolution", regularized_evolution)
BASELINES.add("plain-gp-ei", plain_gp_ei)
BASELINES.add("optuna-tpe", optuna_tpe)


def first_hit(queried: Sequence[Arch], best: Collection[Arch]) -> int | None:
    """1-based position of the first arch of ``best`` (the true best; several when tied) in
    ``queried`` (None when never queried)."""
    for i, a in enumerate(queried):
        if a in best:
            return i + 1
    return None
