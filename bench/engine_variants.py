"""Engine variants that were measured and not adopted, registered again so their benchmark runs
stay reproducible (``bench/search_efficiency.py``; figures in docs/benchmarks.md).

Importing this module registers, in the engine's own registries:

* kernels ``matern52`` (Matern 5/2 ARD, BoTorch's former Gamma priors), ``additive`` (one RBF per
  feature plus a full ARD RBF) and ``additive2`` (Duvenaud et al.'s additive kernel of orders 1 and
  2: main effects and pairwise interactions) and ``overlap`` (an ARD overlap (Hamming) kernel on the
  categorical dimensions, one lengthscale per dimension, times the RBF on the rest: measured on the
  public suite, ``bench/search_suite.py``) and ``rbf-linear-cost`` (the default's RBF plus a linear
  kernel on the cost feature: a global accuracy-vs-cost trend; measured on the suite) and
  ``rbf-linear-all`` (the RBF plus a linear kernel on every feature: a global linear trend in
  every dimension; measured on the suite);
* acquisitions ``pi`` (log probability of improvement; a batch: the q highest), ``mes``
  (max-value entropy search with 64 Gumbel-quantile max-value samples; a batch: the q highest) and
  ``ei-above-noise`` (log EI over the incumbent plus the GP's learned noise sd: measured on the
  public suite, ``bench/search_suite.py``).

The other removed options (trust region, ensembles, Thompson sampling, input warp, several
hyperparameter starts, EI variants, one-hot ordinals) changed the loop itself:
they are gone from the engine, and their recorded runs stay in bench/results/search_efficiency.json
(``EngineConfig.from_json`` refuses those variants with an error naming the option).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


class Overlap(Kernel):
    """RBF on the ordinal features times an ARD overlap (Hamming) kernel on the categorical
    dimensions: ``exp(-0.5 * (sum_o ((x_o - x'_o) / l_o)^2 + sum_c [x_c != x'_c] / l_c^2))``, one
    lengthscale per *dimension* (a categorical one of k values has one, not k), under BoTorch's
    dimension-scaled prior counted in dimensions. Without categorical dimensions of more than 2
    values it is exactly the ``rbf`` kernel (None)."""

    def covar_module(self, d: int, groups: Groups = ()) -> Any:
        if not groups:
            return None
        return _overlap_kernel(d, groups)


def _overlap_kernel(d: int, groups: Groups) -> Any:
    """The :class:`Overlap` covariance as a GPyTorch kernel (built here so GPyTorch is imported only
    when a GP is fitted)."""
    import math

    import torch
    from gpytorch.constraints import GreaterThan
    from gpytorch.kernels import Kernel as GKernel
    from gpytorch.priors import LogNormalPrior

    grouped = {i for g in groups for i in g}
    plain = [i for i in range(d) if i not in grouped]
    cols = [list(g) for g in groups]
    n = len(plain) + len(cols)

    class OverlapKernel(GKernel):
        # its own lengthscale parameter: GPyTorch's ARD lengthscale must have one entry per input column
        def __init__(self) -> None:
            super().__init__()
            self.plain, self.groups = plain, cols
            prior = LogNormalPrior(loc=math.sqrt(2.0) + 0.5 * math.log(n), scale=math.sqrt(3.0))
            constraint = GreaterThan(2.5e-2, transform=None)
            self.register_parameter(
                "raw_lengthscale", torch.nn.Parameter(torch.zeros(1, n, dtype=torch.float64))
            )
            self.register_constraint("raw_lengthscale", constraint)
            self.register_prior("lengthscale_prior", prior, lambda m: m.lengthscale, lambda m, v: m._set(v))
            self._set(torch.full((1, n), float(prior.mode), dtype=torch.float64))

        def lengthscale_names(self, feature_names: Sequence[str]) -> list[str]:
            """The plain features' names, then each categorical dimension's (read by ``hyperparameters``)."""
            names = list(feature_names)
            return [names[i] for i in self.plain] + [names[g[0]].split("=", 1)[0] for g in self.groups]

        @property
        def lengthscale(self) -> Any:
            return self.raw_lengthscale_constraint.transform(self.raw_lengthscale)

        def _set(self, value: Any) -> None:
            value = torch.as_tensor(value).to(self.raw_lengthscale)
            self.initialize(raw_lengthscale=self.raw_lengthscale_constraint.inverse_transform(value))

        def forward(self, x1: Any, x2: Any, diag: bool = False, **params: Any) -> Any:
            ls = self.lengthscale  # (*batch, 1, n): the plain features' first, then one per group
            k = len(self.plain)
            if k:
                dist = self.covar_dist(
                    x1[..., self.plain] / ls[..., :k],
                    x2[..., self.plain] / ls[..., :k],
                    square_dist=True,
                    diag=diag,
                )
            else:
                shape = (*x1.shape[:-1],) if diag else (*x1.shape[:-1], x2.shape[-2])
                dist = torch.zeros(shape, dtype=x1.dtype, device=x1.device)
            for j, g in enumerate(self.groups):
                a, b = x1[..., g], x2[..., g]
                same = (a * b).sum(-1) if diag else a @ b.transpose(-1, -2)
                scale = ls[..., k + j] ** 2  # (*batch, 1)
                dist = dist + (1.0 - same) / (scale if diag else scale.unsqueeze(-1))
            return torch.exp(-0.5 * dist)

    return OverlapKernel()


class RBFLinearCost(Kernel):
    """BoTorch's default ARD RBF plus a linear kernel on the last feature column, which with
    ``cost_feature`` is the log primary cost: a global accuracy-vs-cost trend (a Bayesian linear
    term, its variance learned) that the RBF models the residuals of. Only meaningful with the cost
    feature on (without it the last column is an ordinary dimension)."""

    def covar_module(self, d: int, groups: Groups = ()) -> Any:
        from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
        from gpytorch.kernels import LinearKernel

        return get_covar_module_with_dim_scaled_prior(ard_num_dims=d) + LinearKernel(active_dims=(d - 1,))


class RBFLinearAll(Kernel):
    """BoTorch's default ARD RBF plus one linear kernel on every feature column (one weight variance
    shared by them, learned): a global linear trend in every dimension (and in the cost feature, when
    it is on) that the RBF models the residuals of; for a categorical dimension's one-hot columns the
    trend is a main effect per value."""

    def covar_module(self, d: int, groups: Groups = ()) -> Any:
        from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
        from gpytorch.kernels import LinearKernel

        return get_covar_module_with_dim_scaled_prior(ard_num_dims=d) + LinearKernel()


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


def config_of(method: str, variants: dict[str, dict[str, Any]]) -> Any:
    """The ``EngineConfig`` of a benchmark's engine method: ``engine`` is today's default
    (``EngineConfig()``); any other is ``variants[method]`` read as a stored search's options are
    (``EngineConfig.from_json``): an option it does not name takes its value from before the option
    existed, so the variants measured earlier keep their meaning."""
    from chamlab.chamnet.search import EngineConfig

    if method == "engine":
        return EngineConfig()
    return EngineConfig.from_json(variants[method], f"the options of variant {method!r}")


for _name, _kernel in (
    ("matern52", Matern52()),
    ("additive", Additive()),
    ("additive2", Additive2()),
    ("overlap", Overlap()),
    ("rbf-linear-cost", RBFLinearCost()),
    ("rbf-linear-all", RBFLinearAll()),
):
    if _name not in KERNELS:  # imported twice (as a script's module and by name): registered once
        KERNELS.add(_name, _kernel)
for _name, _acq in (
    ("pi", ProbabilityOfImprovement()),
    ("mes", MaxValueEntropySearch()),
    ("ei-above-noise", EIAboveNoise()),
):
    if _name not in ACQUISITIONS:
        ACQUISITIONS.add(_name, _acq)
