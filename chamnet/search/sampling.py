"""Initial designs: which feasible architectures to query before the model is fitted.

Every sampler picks ``n`` distinct rows of a candidate set (feature matrix ``X`` in [0, 1], the
primary cost ``cost`` and the limit), so the same code serves enumerated spaces, tables and candidate
pools. Methods (``SAMPLERS``):

* ``uniform``: uniformly at random among the feasible candidates;
* ``sobol``: a scrambled Sobol sequence over the feature cube, each point mapped to the nearest
  unused feasible candidate (low-discrepancy coverage of the feasible set);
* ``imbalanced-sobol`` (our reading of ChamNet's "imbalanced quasi-Monte Carlo", see METHOD.md): half
  of the points as ``sobol``, the other half from an 8x oversampled Sobol draw, keeping the mapped
  candidates whose cost is closest to the limit, so the region near the constraint boundary (where
  the constrained optimum lies when accuracy grows with cost) is over-represented while the rest of
  the feasible set keeps low-discrepancy coverage.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chamlab.core.registry import Registry


def _sobol(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.stats import qmc

    m = int(np.ceil(np.log2(max(n, 2))))
    pts = qmc.Sobol(d, scramble=True, rng=rng).random_base2(m)
    return pts[:n]


def _nearest_unused(X: np.ndarray, points: np.ndarray, used: set[int], n: int) -> list[int]:
    out: list[int] = []
    for p in points:
        if len(out) >= n:
            break
        d = ((X - p) ** 2).sum(axis=1)
        for i in np.argsort(d, kind="stable"):
            if int(i) not in used:
                used.add(int(i))
                out.append(int(i))
                break
    return out


def uniform(X: np.ndarray, cost: np.ndarray, limit: float, n: int, rng: np.random.Generator) -> list[int]:
    return [int(i) for i in rng.permutation(len(X))[:n]]


def sobol(X: np.ndarray, cost: np.ndarray, limit: float, n: int, rng: np.random.Generator) -> list[int]:
    return _nearest_unused(X, _sobol(X.shape[1], n, rng), set(), n)


def imbalanced_sobol(
    X: np.ndarray, cost: np.ndarray, limit: float, n: int, rng: np.random.Generator
) -> list[int]:
    n_near = n // 2
    used: set[int] = set()
    near: list[int] = []
    if n_near:
        pool = _nearest_unused(X, _sobol(X.shape[1], 8 * n_near, rng), set(), 8 * n_near)
        gap = np.abs(np.log(np.maximum(cost[pool], 1e-300) / limit))
        near = [pool[int(i)] for i in np.argsort(gap, kind="stable")[:n_near]]
        used.update(near)
    rest = _nearest_unused(X, _sobol(X.shape[1], n, rng), used, n - len(near))
    return near + rest


Sampler = Callable[[np.ndarray, np.ndarray, float, int, np.random.Generator], list[int]]
#: sampler name -> the sampler (``EngineConfig.sampler``, ``chamlab search --sampler``)
SAMPLERS: Registry[Sampler] = Registry("sampler")
SAMPLERS.add("uniform", uniform)
SAMPLERS.add("sobol", sobol)
SAMPLERS.add("imbalanced-sobol", imbalanced_sobol)


def design(
    method: str, X: np.ndarray, cost: np.ndarray, limit: float, n: int, rng: np.random.Generator
) -> list[int]:
    """``min(n, len(X))`` distinct row indices of ``X`` chosen by ``method``."""
    sampler = SAMPLERS.get(method)
    n = min(n, len(X))
    if n <= 0:
        return []
    picked = sampler(np.asarray(X, dtype=float), np.asarray(cost, dtype=float), limit, n, rng)
    assert len(set(picked)) == len(picked) == n
    return picked
