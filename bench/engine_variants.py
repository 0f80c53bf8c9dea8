"""Engine variants that were measured and not adopted, registered again so their benchmark runs
stay reproducible (``bench/search_efficiency.py``; figures in docs/benchmarks.md).

Importing this module registers, in the engine's own registries:

* kernels ``matern52`` (Matern 5/2 ARD, BoTorch's former Gamma priors), ``additive`` (one RBF per
  feature plus a full ARD RBF) and ``additive2`` (Duvenaud et al.'s additive kernel of orders 1 and
  2: main effects and pairwise interactions);
* acquisitions ``pi`` (log probability of improvement; a batch: the q highest), ``mes``
  (max-value entropy search with 64 Gumbel-quantile max-value samples; a batch: the q highest) and
  ``ei-above-noise`` (log EI over the incumbent plus the GP's learned noise sd: measured on the
  public suite, ``bench/search_suite.py``).

The other removed options (trust region, ensembles, Thompson sampling, input warp, several
hyperparameter starts, EI variants, the cost feature, one-hot ordinals) changed the loop itself:
they are gone from the engine, and their recorded runs stay in bench/results/search_efficiency.json
(``EngineConfig.from_json`` refuses those variants with an error naming the option).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chamlab.chamnet.search.acquisition import ACQUISITIONS, Acquisition, top
from chamlab.chamnet.search.gp import KERNELS, Groups, Kernel, predict_gp


class Matern52(Kernel):
    def covar_module(self, d: int, groups: Groups = ()) -> Any:
        from gpytorch.kernels import MaternKernel, ScaleKernel
        from gpytorch.priors import GammaPrior

        return ScaleKernel(
            MaternKernel(nu=2.5, ard_num_dims=d, lengthscale_prior=GammaPrior(3.0, 6.0)),
            outputscale_prior=GammaPrior(2.0, 0.15),
        )


class Additive(Kernel):
    def covar_module(self, d: int, groups: Groups = ()) -> Any:
        from gpytorch.kernels import AdditiveKernel, RBFKernel, ScaleKernel

        return ScaleKernel(AdditiveKernel(*(RBFKernel(active_dims=(i,)) for i in range(d)))) + ScaleKernel(
            RBFKernel(ard_num_dims=d)
        )


class Additive2(Kernel):
    def covar_module(self, d: int, groups: Groups = ()) -> Any:
        from gpytorch.kernels import NewtonGirardAdditiveKernel, RBFKernel
        from gpytorch.priors import LogNormalPrior

        # ARD lengthscales shared by the terms, their prior dimension-scaled for terms of 2 dims
        prior = LogNormalPrior(math.sqrt(2.0) + 0.5 * math.log(2.0), math.sqrt(3.0))
        return NewtonGirardAdditiveKernel(
            RBFKernel(ard_num_dims=d, lengthscale_prior=prior), num_dims=d, max_degree=min(2, d)
        )


class ProbabilityOfImprovement(Acquisition):
    def select(self, model: Any, X: np.ndarray, best: float, q: int, seed: int) -> list[int]:
        from scipy.stats import norm

        mu, sd = predict_gp(model, X)
        return top(norm.logcdf((mu - best) / np.maximum(sd, 1e-12)), q)


class MaxValueEntropySearch(Acquisition):
    samples = 64

    def select(self, model: Any, X: np.ndarray, best: float, q: int, seed: int) -> list[int]:
        mu, sd = predict_gp(model, X)
        return top(mes(mu, sd, best, self.samples), q)


class EIAboveNoise(Acquisition):
    """Log EI over the incumbent plus the GP's learned noise standard deviation (warped units): an
    improvement smaller than one training run's noise is no improvement, so near-ties of the
    incumbent, which the table cannot rank, stop drawing queries (bench/search_suite.py)."""

    def select(self, model: Any, X: np.ndarray, best: float, q: int, seed: int) -> list[int]:
        from chamlab.chamnet.search.acquisition import log_ei

        noise_sd = float(model.likelihood.noise.detach().reshape(-1)[0]) ** 0.5
        y_std = float(model.outcome_transform.stdvs.reshape(-1)[0])
        mu, sd = predict_gp(model, X)
        return top(log_ei(mu, sd, best + noise_sd * y_std), q)


def max_value_quantiles(mean: np.ndarray, std: np.ndarray, best: float, n: int) -> np.ndarray:
    """``n`` samples (evenly spaced quantiles, so deterministic) of the maximum of the latent function
    over the rows of (``mean``, ``std``), by the Gumbel approximation of Wang & Jegelka (2017):
    P(max < y) ~ prod_i Phi((y - mean_i) / std_i), matched at its quartiles; never below ``best``
    (the best value observed)."""
    from scipy.stats import norm

    std = np.maximum(std, 1e-9)

    def cdf(y: float) -> float:
        return float(np.exp(norm.logcdf((y - mean) / std).sum()))

    def quantile(p: float) -> float:
        lo, hi = float(np.min(mean - 8 * std)), float(np.max(mean + 8 * std))
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
        return 0.5 * (lo + hi)

    q1, q2, q3 = quantile(0.25), quantile(0.5), quantile(0.75)
    b = max((q3 - q1) / (np.log(np.log(4.0)) - np.log(np.log(4.0 / 3.0))), 1e-9)
    a = q2 + b * np.log(np.log(2.0))
    u = (np.arange(n) + 0.5) / n
    ystar = a - b * np.log(-np.log(u))
    return np.maximum(ystar, best + 1e-6 * float(np.median(std)))


def mes(mean: np.ndarray, std: np.ndarray, best: float, n_samples: int) -> np.ndarray:
    """Max-value entropy search (Wang & Jegelka 2017): the expected reduction of the entropy of the
    maximum value if each row were evaluated, averaged over ``n_samples`` max-value samples (drawn
    over the same rows; ``best`` is the best value observed, a floor for them)."""
    from scipy.stats import norm

    std = np.maximum(std, 1e-9)
    ystar = max_value_quantiles(mean, std, best, n_samples)
    g = (ystar[None, :] - mean[:, None]) / std[:, None]
    logcdf = norm.logcdf(g)
    return np.mean(g * np.exp(norm.logpdf(g) - logcdf) / 2.0 - logcdf, axis=1)


for _name, _kernel in (("matern52", Matern52()), ("additive", Additive()), ("additive2", Additive2())):
    if _name not in KERNELS:  # imported twice (as a script's module and by name): registered once
        KERNELS.add(_name, _kernel)
for _name, _acq in (
    ("pi", ProbabilityOfImprovement()),
    ("mes", MaxValueEntropySearch()),
    ("ei-above-noise", EIAboveNoise()),
):
    if _name not in ACQUISITIONS:
        ACQUISITIONS.add(_name, _acq)
