"""Acquisition: which fresh candidates the engine asks the oracle next.

Acquisitions are registered in :data:`ACQUISITIONS` (``EngineConfig.acquisition``). The engine
ships one, ``ei``: log expected improvement over the best feasible accuracy found (in the GP's
warped units), evaluated exactly on every fresh candidate; a batch (``q > 1``, for a parallel oracle)
is picked by sequential greedy q-LogEI (BoTorch ``optimize_acqf_discrete``). Thompson sampling,
max-value entropy search and probability of improvement were measured and not adopted
(docs/benchmarks.md); ``bench/engine_variants.py`` registers PI and MES again to reproduce them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chamlab.core.registry import Registry


class Acquisition:
    """Picks ``q`` rows of the fresh candidates' features ``X`` given the fitted GP ``model`` and the
    incumbent ``best`` (warped units); ``seed`` makes any Monte-Carlo draw repeatable (the engine
    passes the number of queries so far)."""

    def select(self, model: Any, X: np.ndarray, best: float, q: int, seed: int) -> list[int]:
        raise NotImplementedError


#: acquisition name -> the acquisition (``EngineConfig.acquisition``)
ACQUISITIONS: Registry[Acquisition] = Registry("acquisition")


def log_ei(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """log expected improvement over ``best`` (numerically stable, as BoTorch's LogEI)."""
    import torch
    from botorch.acquisition.analytic import _log_ei_helper

    u = (torch.as_tensor(mean) - best) / torch.as_tensor(std)
    return (_log_ei_helper(u) + torch.as_tensor(std).log()).numpy()


def top(score: np.ndarray, q: int) -> list[int]:
    """The rows of the ``q`` highest scores, best first (ties: the earlier row)."""
    return [int(i) for i in np.argsort(-score, kind="stable")[:q]]


class ExpectedImprovement(Acquisition):
    """Log EI; a batch by sequential greedy q-LogEI over the candidates (512 Sobol QMC samples)."""

    def select(self, model: Any, X: np.ndarray, best: float, q: int, seed: int) -> list[int]:
        from .gp import predict_gp

        if q == 1 or len(X) <= q:
            return top(log_ei(*predict_gp(model, X), best), q)
        import torch
        from botorch.acquisition.logei import qLogExpectedImprovement
        from botorch.optim import optimize_acqf_discrete
        from botorch.sampling.normal import SobolQMCNormalSampler

        # the MC sampler seeded by the caller (BoTorch's default draws its seed from torch's global
        # generator, so the same run could pick another batch), leaving the run's ``rng`` untouched
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([512]), seed=seed)
        acq = qLogExpectedImprovement(model, best_f=best, sampler=sampler)
        tX = torch.as_tensor(X, dtype=torch.float64)
        chosen, _ = optimize_acqf_discrete(acq, q=q, choices=tX, max_batch_size=2048, unique=True)
        picked: list[int] = []
        for row in chosen.numpy():
            i = int(np.argmin(((X - row) ** 2).sum(axis=1)))
            if i not in picked:
                picked.append(i)
        return picked


ACQUISITIONS.add("ei", ExpectedImprovement())
