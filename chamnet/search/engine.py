"""The search engine: a GP accuracy predictor in a Bayesian-optimisation loop over feasible archs.

Loop (defaults in :class:`EngineConfig`, each switchable and measured in ``bench/search_efficiency.py``):

1. **Candidates.** A space of at most ``exhaustive_limit`` archs is enumerated once, its costs
   computed and the infeasible archs dropped: acquisition then ranks *every* feasible arch. A larger
   space is searched through a fresh candidate pool per step: ``pool_size`` uniform samples plus
   every single-dimension mutation of the ``mutate_top`` best archs queried so far, feasible only.
   With ``merge_equivalent``, an arch that builds a network already asked under another name (the
   space's ``equivalence_key``, for a search space its op list: macro-cifar10's 6,561 archs are
   3,969 networks) is no candidate: a deterministic oracle would answer the same, a training oracle
   would train the same network again.
2. **Features.** Ordinal dimensions map to value index / (choices - 1), categorical ones are
   one-hot; with ``cost_feature`` (off by default: it pulls the search to the constraint boundary,
   which cost tens of queries where the optimum lies inside, see docs/search.md) the log of the
   primary cost, scaled to [0, 1] over the candidates, is one more input; ``ordinal_encoding``
   ("index", "one-hot", "index+one-hot") is the GP's view of an ordinal dim of more than 2 values.
3. **Initial design.** ``n_init`` feasible archs from a sampler (:mod:`.sampling`; default the
   imbalanced Sobol design that over-represents the constraint boundary).
4. **Model.** BoTorch ``SingleTaskGP`` on *warped* accuracies (``output_warp``, default
   ``"yeo-johnson"``: a power transform fitted by maximum likelihood, re-fitted with the
   hyperparameters, so a long tail of poor networks does not flatten the top; see
   :class:`OutputWarp`): ARD kernel with BoTorch's dimension-scaled lengthscale
   prior, learned noise, standardised outputs; conditioned on every new result, its hyperparameters
   re-optimised (maximum marginal likelihood, warm-started) after every ``refit_every`` new queries.
   With ``ensemble``: an equal-weight mixture of GPs ({kernel, the other of rbf/matern52} x {with,
   without the cost feature}); with ``hyper_starts`` K > 1 every member is fitted from K
   hyperparameter starting points (the prior's default, then draws from the priors) and acquisition
   averages over them.
5. **Acquisition.** Log expected improvement over the best feasible accuracy found (in warped
   units; ``incumbent="posterior-mean"``: over the highest posterior mean of a queried feasible
   arch instead; ``ei_target="observation"``: EI of a new observation, the learned noise added to
   the latent variance; ``ei_xi`` > 0: the incumbent raised by that many standard deviations of the
   warped accuracies), evaluated exactly on every feasible unqueried candidate; batches
   (``batch_size > 1``, for a parallel oracle) are picked by sequential greedy q-LogEI (BoTorch
   ``optimize_acqf_discrete``, latent EI). Or ``acquisition="thompson"``: the argmax of joint
   posterior draws; ``acquisition="mes"``: max-value entropy search; ``"pi"``: probability of
   improvement. With ``trust_region`` the candidates are limited to a Hamming ball around the
   incumbent (TuRBO-like radius adaptation), off by default.

Nothing is pickled: the run is its history (queries in order) plus the GP hyperparameters as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from chamlab.chamnet.spaces.base import Arch, Dimension
from chamlab.core.errors import ArchError, InputError

from .problem import Problem
from .sampling import SAMPLERS, design

KERNELS = ("rbf", "matern52", "additive", "additive2")
ACQUISITIONS = ("ei", "thompson", "mes", "pi")
INCUMBENTS = ("observed", "posterior-mean")
OUTPUT_WARPS = ("none", "yeo-johnson", "copula")
ORDINAL_ENCODINGS = ("index", "one-hot", "index+one-hot")
EI_TARGETS = ("latent", "observation")


#: EngineConfig fields added after search histories were first stored, each with the value that
#: reproduces what the engine did before it existed: a history stored without them resumes with
#: those values (:func:`chamlab.chamnet.search.run.read_history` fills them in before comparing
#: arguments; a history from before ``merge_equivalent`` resumes with it off: ``--ask-every-name``)
ADDED_FIELDS: dict[str, Any] = {
    "ordinal_encoding": "index",
    "hyper_starts": 1,
    "mes_samples": 64,
    "ei_xi": 0.0,
    "merge_equivalent": False,
}


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    n_init: int = 10
    batch_size: int = 1
    sampler: str = "imbalanced-sobol"
    cost_feature: bool = False  # the log primary cost as one more GP input (v1 default; see docs/search.md)
    exhaustive_limit: int = 100_000
    pool_size: int = 4096
    mutate_top: int = 5
    trust_region: bool = False  # restrict acquisition to a Hamming ball around the incumbent (TuRBO-like)
    refit_every: int = 4  # re-optimise the hyperparameters after this many new queries (else reuse)
    kernel: str = "rbf"  # "rbf": BoTorch's default (ARD, dimension-scaled lengthscale prior); "matern52";
    # "additive": one RBF per feature plus a full ARD RBF; "additive2": main effects and pairwise
    # interactions (additive kernel of orders 1 and 2)
    acquisition: str = "ei"  # "ei": (q-)log expected improvement; "thompson": argmax of posterior draws;
    # "mes": max-value entropy search (information about the best accuracy among the candidates);
    # "pi": probability of improvement (more exploitative than EI)
    mes_samples: int = 64  # max-value samples of "mes" (Gumbel quantiles: deterministic)
    thompson_pool: int = 2000  # Thompson draws are joint over this many candidates of highest UCB
    input_warp: bool = False  # a learned Kumaraswamy warp of every feature (ordinal level spacing)
    ensemble: bool = False  # an equal-weight mixture of GPs: {kernel, the other of rbf/matern52} x
    # {with, without the cost feature} (the first member is `kernel` with `cost_feature` as set)
    hyper_starts: int = 1  # GPs fitted from this many hyperparameter starting points (the prior's
    # default, then draws from the lengthscale and noise priors), each warm-started from its own fit
    # after that; acquisition averages over them (EI: the EI of their equal-weight mixture)
    output_warp: str = "yeo-johnson"  # a monotone map of the accuracies before the GP: "yeo-johnson"
    # (power transform, lambda by maximum likelihood), "copula" (normal scores of the ranks), "none"
    ei_target: str = "latent"  # EI of the latent function, or of the "observation" (latent + the
    # learned noise: a table entry is a noisy measurement and the best entry is what is sought)
    ordinal_encoding: str = "index"  # GP features of an ordinal dim of > 2 values: "index" (value index
    # / (choices - 1)), "one-hot" (as a categorical dim), "index+one-hot" (both: ARD weighs the order
    # against the levels' own effects); the initial design always works on "index"
    incumbent: str = "observed"  # EI's best_f: "observed" (the best feasible accuracy queried) or
    # "posterior-mean" (the highest posterior mean over the feasible archs queried: noise-aware)
    ei_xi: float = 0.0  # EI's (and PI's) improvement threshold: best_f raised by ei_xi standard
    # deviations of the warped accuracies queried (0: plain EI; > 0 discounts near-ties with the
    # incumbent, so archs whose improvement is uncertain gain on those just below it: explores)
    merge_equivalent: bool = True  # never ask a network twice under two names: an arch whose
    # ``space.equivalence_key`` (a SearchSpace's: its op list) equals one asked is no candidate

    def __post_init__(self) -> None:
        if self.n_init < 1:
            raise InputError(f"the initial design needs at least 1 arch, got n_init={self.n_init}")
        if self.refit_every < 1:
            raise InputError(f"refit_every must be >= 1, got {self.refit_every}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.kernel not in KERNELS:
            raise InputError(f"unknown kernel {self.kernel!r}; known: {', '.join(KERNELS)}")
        if self.acquisition not in ACQUISITIONS:
            raise InputError(f"unknown acquisition {self.acquisition!r}; known: {', '.join(ACQUISITIONS)}")
        if self.output_warp not in OUTPUT_WARPS:
            raise InputError(f"unknown output warp {self.output_warp!r}; known: {', '.join(OUTPUT_WARPS)}")
        if self.ei_target not in EI_TARGETS:
            raise InputError(f"unknown EI target {self.ei_target!r}; known: {', '.join(EI_TARGETS)}")
        if self.ordinal_encoding not in ORDINAL_ENCODINGS:
            raise InputError(
                f"unknown ordinal encoding {self.ordinal_encoding!r}; known: {', '.join(ORDINAL_ENCODINGS)}"
            )
        if self.incumbent not in INCUMBENTS:
            raise InputError(f"unknown incumbent {self.incumbent!r}; known: {', '.join(INCUMBENTS)}")
        if self.hyper_starts < 1:
            raise InputError(f"hyper_starts must be >= 1, got {self.hyper_starts}")
        if self.mes_samples < 1:
            raise InputError(f"mes_samples must be >= 1, got {self.mes_samples}")
        if not (self.ei_xi >= 0.0 and np.isfinite(self.ei_xi)):
            raise InputError(f"ei_xi must be a finite number >= 0, got {self.ei_xi}")
        if self.thompson_pool < 1:
            raise InputError(f"thompson_pool must be >= 1, got {self.thompson_pool}")
        if self.sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Query:
    arch: Arch
    accuracy: float
    costs: Mapping[str, float]
    phase: str  # "init", "bo" or "resumed"


# -- features -----------------------------------------------------------------------------------
class Encoder:
    """Archs -> feature rows in [0, 1]: ordinal dims by value index (``ordinal="index"``), one-hot
    (``"one-hot"``) or both (``"index+one-hot"``: the index column, then the one-hot columns) when
    they have more than 2 values; categorical dims one-hot (one column when there are two values)."""

    def __init__(self, dims: Sequence[Dimension], ordinal: str = "index") -> None:
        if ordinal not in ORDINAL_ENCODINGS:
            raise InputError(f"unknown ordinal encoding {ordinal!r}; known: {', '.join(ORDINAL_ENCODINGS)}")
        self.dims = tuple(dims)
        self._lookup = [{v: i for i, v in enumerate(d.values)} for d in self.dims]
        self._parts = [self._columns(d, ordinal) for d in self.dims]
        self.width = sum(
            int(index) + (len(d.values) if onehot else 0)
            for d, (index, onehot) in zip(self.dims, self._parts, strict=True)
        )

    @staticmethod
    def _columns(d: Dimension, ordinal: str) -> tuple[bool, bool]:
        """(an index column, one-hot columns) for dimension ``d``."""
        if len(d.values) <= 2:
            return True, False
        if d.categorical:
            return False, True
        return ordinal != "one-hot", ordinal != "index"

    def names(self) -> list[str]:
        """One name per feature column: the dimension's name, or ``name=value`` for a one-hot column."""
        out: list[str] = []
        for d, (index, onehot) in zip(self.dims, self._parts, strict=True):
            out += [d.name] if index else []
            out += [f"{d.name}={v}" for v in d.values] if onehot else []
        return out

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        out = np.zeros((len(archs), self.width))
        col = 0
        for j, (d, lk, (index, onehot)) in enumerate(zip(self.dims, self._lookup, self._parts, strict=True)):
            idx = np.array([lk[a[j]] for a in archs], dtype=int)
            n = len(d.values)
            if index:
                out[:, col] = idx / (n - 1) if n > 1 else 0.0
                col += 1
            if onehot:
                out[np.arange(len(archs)), col + idx] = 1.0
                col += n
        return out


@dataclasses.dataclass
class _Candidates:
    archs: list[Arch]
    X: np.ndarray
    cost: np.ndarray  # primary cost


class _CostScale:
    """log(cost) scaled to [0, 1] by the range seen when the search started."""

    def __init__(self, costs: np.ndarray) -> None:
        logc = np.log(np.maximum(costs, 1e-12))
        self.lo, self.hi = float(logc.min()), float(logc.max())

    def __call__(self, costs: np.ndarray) -> np.ndarray:
        span = self.hi - self.lo or 1.0
        return (np.log(np.maximum(costs, 1e-12)) - self.lo) / span


class OutputWarp:
    """A monotone increasing map of accuracies to the GP's outputs, fitted on the accuracies seen.

    Accuracy tables are usually skewed (a long tail of poor networks: macro-cifar10's skewness is
    -4): a stationary GP on raw accuracies spends its fit on that tail and resolves the top, where
    the search decides, poorly. ``yeo-johnson``: standardise, then the Yeo-Johnson power transform
    with lambda by maximum likelihood (as HEBO warps its outputs); ``copula``: the normal scores of
    the ranks, interpolated between the values seen; ``none``: the identity."""

    def __init__(
        self,
        kind: str,
        mean: float = 0.0,
        std: float = 1.0,
        lmbda: float = 1.0,
        knots: tuple[list[float], list[float]] = ([], []),
    ) -> None:
        self.kind, self.mean, self.std, self.lmbda, self.knots = kind, mean, std, lmbda, knots

    @classmethod
    def fit(cls, kind: str, y: np.ndarray) -> OutputWarp:
        y = np.asarray(y, dtype=float)
        if kind == "none" or len(y) < 3 or float(np.ptp(y)) == 0.0:
            return cls("none")
        mean, std = float(y.mean()), float(y.std())
        if kind == "yeo-johnson":
            from scipy.stats import yeojohnson

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                _, lmbda = yeojohnson((y - mean) / std)
            return cls(kind, mean, std, float(np.clip(lmbda, -3.0, 5.0)))
        from scipy.stats import norm, rankdata

        vals = np.unique(y)
        ranks = rankdata(y)  # ties share their mean rank
        scores = norm.ppf((np.array([ranks[y == v].mean() for v in vals]) - 0.5) / len(y))
        return cls(kind, knots=(vals.tolist(), scores.tolist()))

    def __call__(self, y: np.ndarray | float) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        if self.kind == "yeo-johnson":
            z, lm = (y - self.mean) / self.std, self.lmbda
            pos = z >= 0
            zp, zn = np.where(pos, z, 0.0), np.where(pos, 0.0, z)
            return np.where(
                pos,
                np.log1p(zp) if abs(lm) < 1e-9 else ((zp + 1.0) ** lm - 1.0) / lm,
                -np.log1p(-zn) if abs(lm - 2.0) < 1e-9 else -((1.0 - zn) ** (2.0 - lm) - 1.0) / (2.0 - lm),
            )
        if self.kind == "copula":
            return self._interp(y, *self.knots)
        return y

    def inverse(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=float)
        if self.kind == "yeo-johnson":
            lm = self.lmbda
            pos = w >= 0
            wp, wn = np.where(pos, w, 0.0), np.where(pos, 0.0, w)
            # keep (lm * w + 1) positive: beyond it the map has no inverse (clip to its edge)
            zp = np.expm1(wp) if abs(lm) < 1e-9 else np.maximum(lm * wp + 1.0, 1e-12) ** (1.0 / lm) - 1.0
            if abs(lm - 2.0) < 1e-9:
                zn = -np.expm1(-wn)
            else:
                zn = 1.0 - np.maximum(1.0 - (2.0 - lm) * wn, 1e-12) ** (1.0 / (2.0 - lm))
            return np.where(pos, zp, zn) * self.std + self.mean
        if self.kind == "copula":
            return self._interp(w, self.knots[1], self.knots[0])
        return w

    @staticmethod
    def _interp(x: np.ndarray, xs: list[float], ys: list[float]) -> np.ndarray:
        """Piecewise linear through the knots, extended linearly beyond them (the end slopes)."""
        xa, ya = np.asarray(xs), np.asarray(ys)
        if len(xa) < 2:
            return np.asarray(x, dtype=float)
        out = np.interp(x, xa, ya)
        lo_slope = (ya[1] - ya[0]) / (xa[1] - xa[0])
        hi_slope = (ya[-1] - ya[-2]) / (xa[-1] - xa[-2])
        out = np.where(x < xa[0], ya[0] + (x - xa[0]) * lo_slope, out)
        return np.where(x > xa[-1], ya[-1] + (x - xa[-1]) * hi_slope, out)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "yeo-johnson":
            out.update(mean=self.mean, std=self.std, lmbda=self.lmbda)
        elif self.kind == "copula":
            out.update(values=self.knots[0], scores=self.knots[1])
        return out


# -- the model ----------------------------------------------------------------------------------
def fit_gp(
    X: np.ndarray,
    y: np.ndarray,
    warm: Any = None,
    kernel: str = "rbf",
    optimise: bool = True,
    input_warp: bool = False,
    start: np.random.Generator | None = None,
) -> Any:
    """A BoTorch SingleTaskGP (standardised outputs) fitted by maximum marginal likelihood; ``warm``
    (the previous step's model) starts the optimiser from its hyperparameters, or, with
    ``optimise=False``, supplies them unchanged (the model is only conditioned on the new data).
    Without ``warm``, ``start`` draws the optimiser's starting lengthscales and noise from their
    log-normal priors (else it starts at the priors' defaults)."""
    import torch
    from botorch.exceptions.warnings import OptimizationWarning
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    tx = torch.as_tensor(X, dtype=torch.float64)
    ty = torch.as_tensor(np.asarray(y, dtype=float).reshape(-1, 1), dtype=torch.float64)
    covar = None
    if kernel == "matern52":
        from gpytorch.kernels import MaternKernel, ScaleKernel
        from gpytorch.priors import GammaPrior

        covar = ScaleKernel(
            MaternKernel(nu=2.5, ard_num_dims=tx.shape[-1], lengthscale_prior=GammaPrior(3.0, 6.0)),
            outputscale_prior=GammaPrior(2.0, 0.15),
        )
    elif kernel == "additive":
        # first-order additive terms (one RBF per feature) plus the full ARD RBF for interactions
        from gpytorch.kernels import AdditiveKernel, RBFKernel, ScaleKernel

        d = tx.shape[-1]
        covar = ScaleKernel(AdditiveKernel(*(RBFKernel(active_dims=(i,)) for i in range(d)))) + ScaleKernel(
            RBFKernel(ard_num_dims=d)
        )
    elif kernel == "additive2":
        # Duvenaud et al.'s additive kernel of orders 1 and 2 (Newton-Girard): every main effect and
        # every pairwise interaction, a learned weight per order, ARD lengthscales shared by the terms
        # (their prior dimension-scaled for terms of 2 dims, as BoTorch's is for d)
        import math

        from gpytorch.kernels import NewtonGirardAdditiveKernel, RBFKernel
        from gpytorch.priors import LogNormalPrior

        d = tx.shape[-1]
        prior = LogNormalPrior(math.sqrt(2.0) + 0.5 * math.log(2.0), math.sqrt(3.0))
        covar = NewtonGirardAdditiveKernel(
            RBFKernel(ard_num_dims=d, lengthscale_prior=prior), num_dims=d, max_degree=min(2, d)
        )
    warp = None
    if input_warp:  # a learned Kumaraswamy CDF per feature (Snoek et al. 2014): level spacing learned
        from botorch.models.transforms.input import Warp
        from gpytorch.priors import LogNormalPrior

        d = tx.shape[-1]
        warp = Warp(
            d=d,
            indices=list(range(d)),
            concentration1_prior=LogNormalPrior(0.0, 0.75**0.5),
            concentration0_prior=LogNormalPrior(0.0, 0.75**0.5),
        )
    model = SingleTaskGP(tx, ty, covar_module=covar, outcome_transform=Standardize(m=1), input_transform=warp)
    if warm is not None:
        try:
            if input_warp:
                model.input_transform.load_state_dict(warm.input_transform.state_dict())
            model.covar_module.load_state_dict(warm.covar_module.state_dict())
            model.likelihood.load_state_dict(warm.likelihood.state_dict())
            model.mean_module.load_state_dict(warm.mean_module.state_dict())
        except (RuntimeError, AttributeError):
            optimise = True  # shapes changed: start from the prior
    if warm is not None and not optimise:
        model.eval()
        return model
    if warm is None and start is not None:
        _draw_start(model, start)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizationWarning)  # a stopped optimiser still gives a model
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": 100}})
    except Exception:  # a failed optimisation keeps the prior's hyperparameters; still a usable model
        model.eval()
    return model


def _draw_start(model: Any, rng: np.random.Generator) -> None:
    """Set a GP's lengthscales and noise to draws from their log-normal priors (a hyperparameter
    starting point; hyperparameters without a log-normal prior keep their defaults)."""
    import torch

    def lognormal(prior: Any, shape: tuple[int, ...]) -> Any:
        loc, scale = getattr(prior, "loc", None), getattr(prior, "scale", None)
        if loc is None or scale is None:
            return None
        draw = rng.normal(float(loc.reshape(-1)[0]), float(scale.reshape(-1)[0]), size=shape)
        return torch.as_tensor(np.exp(draw), dtype=torch.float64)

    covar = model.covar_module
    base = getattr(covar, "base_kernel", covar)
    prior = getattr(base, "lengthscale_prior", None)
    if prior is not None:
        ls = lognormal(prior, tuple(base.lengthscale.shape))
        if ls is not None:
            base.lengthscale = ls.clamp_min(0.05)
    noise = model.likelihood.noise_covar
    prior = getattr(noise, "noise_prior", None)
    if prior is not None:
        nz = lognormal(prior, tuple(noise.noise.shape))
        if nz is not None:
            noise.noise = nz.clamp(1e-4, 1.0)


def _factor(model: Any) -> tuple[Any, Any, float, float]:
    """Cholesky factor of the training covariance (noise added), the weights ``alpha`` and the output
    standardisation (mean, std) of a fitted model."""
    import torch

    train_x = model.train_inputs[0]
    n = train_x.shape[-2]
    noise = model.likelihood.noise.reshape(-1)
    K = model.covar_module(train_x).to_dense() + torch.diag(noise.expand(n))
    L = None
    for jitter in (0.0, 1e-8, 1e-6, 1e-4):
        L, info = torch.linalg.cholesky_ex(K + jitter * torch.eye(n, dtype=K.dtype))
        if int(info) == 0:
            break
    assert L is not None
    alpha = torch.cholesky_solve((model.train_targets - model.mean_module(train_x)).unsqueeze(-1), L)
    tf = model.outcome_transform
    return L, alpha, float(tf.means.reshape(-1)[0]), float(tf.stdvs.reshape(-1)[0])


def _inputs(model: Any, tx: Any) -> Any:
    """Test inputs as the model's kernel sees them (its input warp applied; in eval mode its
    ``train_inputs`` are already warped)."""
    return model.transform_inputs(tx) if getattr(model, "input_transform", None) is not None else tx


def predict_gp(model: Any, X: np.ndarray, observation: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation (original units) at the rows of ``X``: of the latent
    function, or with ``observation`` of a new observation there (the learned noise added).

    Computed directly from one Cholesky factor of the training covariance (marginal variances only:
    several times faster than a batched BoTorch posterior over thousands of candidates; the test
    suite checks it against ``model.posterior``)."""
    import torch

    if len(X) == 0:
        return np.zeros(0), np.zeros(0)
    with torch.no_grad():
        train_x = model.train_inputs[0]
        L, alpha, y_mean, y_std = _factor(model)
        means, stds = [], []
        for start in range(0, len(X), 4096):
            tx = _inputs(model, torch.as_tensor(X[start : start + 4096], dtype=train_x.dtype))
            Ks = model.covar_module(tx, train_x).to_dense()
            mu = model.mean_module(tx) + (Ks @ alpha).squeeze(-1)
            v = torch.linalg.solve_triangular(L, Ks.T, upper=False)
            var = model.covar_module(tx, diag=True) - (v**2).sum(0)
            if observation:
                var = var.clamp_min(0.0) + model.likelihood.noise.reshape(-1)[0]
            means.append((mu * y_std + y_mean).numpy())
            stds.append((var.clamp_min(1e-18).sqrt() * y_std).numpy())
    return np.concatenate(means), np.concatenate(stds)


def sample_gp(model: Any, X: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``n_samples`` joint draws of the latent function (original units) at the rows of ``X``:
    an array (n_samples, len(X)). Exact (one Cholesky factor of the joint posterior covariance):
    keep ``X`` to a few thousand rows."""
    import torch

    if len(X) == 0:
        return np.zeros((n_samples, 0))
    with torch.no_grad():
        train_x = model.train_inputs[0]
        L, alpha, y_mean, y_std = _factor(model)
        tx = _inputs(model, torch.as_tensor(X, dtype=train_x.dtype))
        Ks = model.covar_module(tx, train_x).to_dense()
        mu = model.mean_module(tx) + (Ks @ alpha).squeeze(-1)
        v = torch.linalg.solve_triangular(L, Ks.T, upper=False)
        cov = model.covar_module(tx).to_dense() - v.T @ v
        cov = 0.5 * (cov + cov.T)
        m = len(X)
        C = None
        scale = float(cov.diagonal().abs().max().clamp_min(1e-12))
        for jitter in (1e-10, 1e-8, 1e-6, 1e-4, 1e-2):
            C, info = torch.linalg.cholesky_ex(cov + jitter * scale * torch.eye(m, dtype=cov.dtype))
            if int(info) == 0:
                break
        assert C is not None
        z = torch.as_tensor(rng.standard_normal((m, n_samples)), dtype=cov.dtype)
        f = mu.unsqueeze(-1) + C @ z
    return (f.T * y_std + y_mean).numpy()


def log_ei(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """log expected improvement over ``best`` (numerically stable, as BoTorch's LogEI)."""
    import torch
    from botorch.acquisition.analytic import _log_ei_helper

    u = (torch.as_tensor(mean) - best) / torch.as_tensor(std)
    return (_log_ei_helper(u) + torch.as_tensor(std).log()).numpy()


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


def hyperparameters(model: Any, feature_names: Sequence[str]) -> dict[str, Any]:
    """The fitted GP's hyperparameters as plain JSON (lengthscale per feature, noise, output scale)."""
    out: dict[str, Any] = {"model": "botorch.SingleTaskGP", "kernel": type(model.covar_module).__name__}
    covar = model.covar_module
    base = getattr(covar, "base_kernel", covar)
    ls = getattr(base, "lengthscale", None)
    if ls is not None:
        out["lengthscales"] = dict(zip(feature_names, ls.detach().reshape(-1).tolist(), strict=False))
    if hasattr(covar, "outputscale"):
        out["outputscale"] = float(covar.outputscale.detach())
    out["noise_standardised"] = float(model.likelihood.noise.detach().reshape(-1)[0])
    out["mean_constant_standardised"] = float(model.mean_module.constant.detach().reshape(-1)[0])
    tf = model.outcome_transform
    out["y_mean"] = float(tf.means.reshape(-1)[0])
    out["y_std"] = float(tf.stdvs.reshape(-1)[0])
    return out


# -- the loop -----------------------------------------------------------------------------------
@dataclasses.dataclass
class EngineState:
    """What the loop exposes after each batch (for persistence and results)."""

    queries: list[Query]
    model: Any = None  # the first (or only) GP; its features and their names below
    feature_names: tuple[str, ...] = ()
    features: Callable[[Sequence[Arch], np.ndarray], np.ndarray] | None = None
    models: list[Any] = dataclasses.field(default_factory=list)  # every member (ensemble), model first
    member_features: list[Callable[[Sequence[Arch], np.ndarray], np.ndarray]] = dataclasses.field(
        default_factory=list
    )
    fitted_on: int = 0
    optimised_on: int = 0
    tr_radius: int = 0  # trust-region radius in changed dimensions (0: not started)
    tr_failures: int = 0
    fit_seconds: float = 0.0
    warp: OutputWarp = dataclasses.field(default_factory=lambda: OutputWarp("none"))  # accuracy -> GP output

    def predict(self, archs: Sequence[Arch], primary_cost: np.ndarray) -> np.ndarray | None:
        """Posterior mean of ``archs`` (the members' average for an ensemble; None before the first fit)."""
        if self.model is None or self.features is None:
            return None
        cost = np.asarray(primary_cost, dtype=float)
        pairs = list(zip(self.models, self.member_features, strict=True)) or [(self.model, self.features)]
        mean = np.mean([predict_gp(m, f(archs, cost))[0] for m, f in pairs], axis=0)
        return self.warp.inverse(mean)  # the warped mean maps to the predictive median


class BayesOptEngine:
    """Runs the loop of the module docstring on a :class:`Problem` (see :meth:`run`)."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._members: list[tuple[str, bool]] = [(self.config.kernel, self.config.cost_feature)]

    def run(
        self,
        problem: Problem,
        budget: int,
        rng: np.random.Generator,
        *,
        previous: Sequence[Query] = (),
        on_query: Callable[[EngineState], None] | None = None,
        stop: Callable[[EngineState], bool] | None = None,
    ) -> EngineState:
        """Query the oracle until ``budget`` archs are queried in total (``previous`` included, which
        are never asked again), every feasible arch is queried (with ``merge_equivalent``: every
        feasible network), or ``stop(state)`` is true.
        ``on_query(state)`` runs after every batch (persist the history there)."""
        cfg = self.config
        if budget < 1:
            raise InputError(f"the query budget must be >= 1, got {budget}")
        space = problem.space
        encoder = Encoder(space.dimensions)  # the initial design's (and the pool's) features
        gp_encoder = Encoder(space.dimensions, cfg.ordinal_encoding)  # the GP's
        primary = problem.primary
        limit = problem.limits[primary]
        # what was asked: with merge_equivalent the networks (the space's equivalence key: archs with
        # one key build the same network, so asking another of its names would learn nothing), else
        # the archs themselves
        key: Callable[[Arch], Hashable] = (
            equivalence_key_of(space) if cfg.merge_equivalent else (lambda arch: arch)
        )
        queried: dict[Arch, Query] = {}
        for q in previous:
            queried[tuple(q.arch)] = dataclasses.replace(q, phase=q.phase)
        asked: set[Hashable] = {key(a) for a in queried}
        state = EngineState(list(queried.values()))

        def fresh_in(archs: Sequence[Arch]) -> list[int]:
            """Indices of the archs whose key was not asked yet."""
            return [i for i, a in enumerate(archs) if key(a) not in asked]

        names = gp_encoder.names()

        exhaustive = space.size <= cfg.exhaustive_limit
        if exhaustive:
            archs = list(space.enumerate())
            costs = problem.cost_matrix(archs)
            ok = problem.feasible(costs)
            archs = [a for a, f in zip(archs, ok, strict=True) if f]
            scale_ref = costs[primary]
            base = _Candidates(archs, encoder(archs), costs[primary][ok])
        else:
            base = self._pool(problem, encoder, rng, [])
            scale_ref = base.cost
        scale = _CostScale(scale_ref if len(scale_ref) else np.array([limit]))
        if cfg.cost_feature:
            names.append(f"log_{primary}")

        def features_with(use_cost: bool) -> Callable[[Sequence[Arch], np.ndarray], np.ndarray]:
            def features(archs: Sequence[Arch], cost: np.ndarray) -> np.ndarray:
                X = gp_encoder(archs)
                return np.column_stack([X, scale(cost)]) if use_cost else X

            return features

        features = features_with(cfg.cost_feature)
        self._members = [(cfg.kernel, cfg.cost_feature)]
        if cfg.ensemble:
            other = "matern52" if cfg.kernel == "rbf" else "rbf"
            self._members = [
                (k, c) for k in (cfg.kernel, other) for c in dict.fromkeys((cfg.cost_feature, False))
            ]
        # every member from hyper_starts starting points (the first: the prior's default)
        self._members = [m for m in self._members for _ in range(cfg.hyper_starts)]
        state.feature_names = tuple(names)
        state.features = features
        state.member_features = [features_with(c) for _, c in self._members]

        # the initial design is a pure function of the seed and the feasible set: a resumed run
        # regenerates it and skips the archs it already holds
        init = [base.archs[i] for i in design(cfg.sampler, base.X, base.cost, limit, cfg.n_init, rng)]
        # two names of one network in the design: ask the first only (distinct archs otherwise)
        first: dict[Hashable, Arch] = {}
        for a in (init[i] for i in fresh_in(init)):
            first.setdefault(key(a), a)
        todo_init = list(first.values())

        while len(queried) < budget:
            if stop is not None and stop(state):
                break
            room = budget - len(queried)
            if todo_init and not any(q.phase == "bo" for q in queried.values()):
                batch = todo_init[: min(cfg.batch_size, room)]
                todo_init = todo_init[len(batch) :]
                phase = "init"
            else:
                cands = base if exhaustive else self._pool(problem, encoder, rng, list(queried.values()))
                fresh = fresh_in(cands.archs)
                if not fresh:
                    break
                batch = self._acquire(
                    state, queried, cands, fresh, features, min(cfg.batch_size, room), problem, rng
                )
                phase = "bo"
            before = max((q.accuracy for q in queried.values() if _feasible(problem, q)), default=-np.inf)
            accs = problem.oracle(batch)
            bcosts = problem.cost_matrix(batch)
            for k, (a, acc) in enumerate(zip(batch, accs, strict=True)):
                if not np.isfinite(acc):
                    raise ArchError(f"the oracle returned {acc} for {space.format(a)}")
                queried[a] = Query(a, float(acc), {n: float(v[k]) for n, v in bcosts.items()}, phase)
                asked.add(key(a))
            state.queries = list(queried.values())
            if phase == "bo" and cfg.trust_region:
                after = max((q.accuracy for q in queried.values() if _feasible(problem, q)), default=-np.inf)
                self._update_trust_region(state, after > before, len(space.dimensions))
            if on_query is not None:
                on_query(state)
        if state.queries and (state.model is None or len(state.queries) > state.fitted_on):
            self._fit(state, problem, features)
        return state

    def _fit(self, state: EngineState, problem: Problem, features: Callable[..., np.ndarray]) -> None:
        qs = state.queries
        archs = [q.arch for q in qs]
        cost = np.array([q.costs[problem.primary] for q in qs])
        y = np.array([q.accuracy for q in qs])
        t0 = time.perf_counter()
        optimise = state.model is None or len(qs) - state.optimised_on >= self.config.refit_every
        if optimise:  # between re-optimisations the warp stays fixed, as the hyperparameters do
            state.warp = OutputWarp.fit(self.config.output_warp, y)
        y = state.warp(y)
        members = self._members
        feats = state.member_features or [features]
        old = state.models or [state.model] * len(members)
        starts = self.config.hyper_starts
        state.models = [
            fit_gp(
                f(archs, cost),
                y,
                warm=w,
                kernel=k,
                optimise=optimise,
                input_warp=self.config.input_warp,
                # a fixed generator per starting point: a resumed run starts from the same draws
                start=np.random.default_rng(i % starts) if i % starts else None,
            )
            for i, ((k, _), f, w) in enumerate(zip(members, feats, old, strict=True))
        ]
        state.model = state.models[0]
        if optimise:
            state.optimised_on = len(qs)
        state.fit_seconds += time.perf_counter() - t0
        state.fitted_on = len(qs)

    def _acquire(
        self,
        state: EngineState,
        queried: Mapping[Arch, Query],
        cands: _Candidates,
        fresh: list[int],
        features: Callable[..., np.ndarray],
        q: int,
        problem: Problem,
        rng: np.random.Generator,
    ) -> list[Arch]:
        self._fit(state, problem, features)
        best = max(
            (x.accuracy for x in queried.values() if _feasible(problem, x)),
            default=min(x.accuracy for x in queried.values()),
        )
        best = float(state.warp(best))  # in the GP's units from here on
        if self.config.incumbent == "posterior-mean":
            feas = [x for x in queried.values() if _feasible(problem, x)]
            if feas:
                mu = state.predict([x.arch for x in feas], np.array([x.costs[problem.primary] for x in feas]))
                assert mu is not None
                best = float(state.warp(np.max(mu)))
        if self.config.ei_xi > 0:
            warped = state.warp(np.array([x.accuracy for x in queried.values()]))
            best += self.config.ei_xi * float(np.std(warped))
        if self.config.trust_region:
            fresh = self._trust_region(state, queried, cands, fresh, problem)
        fresh_archs = [cands.archs[i] for i in fresh]
        feats = state.member_features or [features]
        Xs = [f(fresh_archs, cands.cost[fresh]) for f in feats]
        Xc = Xs[0]
        if self.config.acquisition == "thompson":
            return [fresh_archs[i] for i in self._thompson(state.models, Xs, q, rng)]
        if self.config.acquisition == "pi":
            # log PI of the equal-weight mixture: the members' average probability; a batch: the q highest
            from scipy.stats import norm

            logs = np.array(
                [
                    norm.logcdf((mu - best) / np.maximum(sd, 1e-12))
                    for mu, sd in (predict_gp(m, X) for m, X in zip(state.models, Xs, strict=True))
                ]
            )
            score = np.logaddexp.reduce(logs, axis=0) - np.log(len(logs))
            return [fresh_archs[int(i)] for i in np.argsort(-score, kind="stable")[:q]]
        if self.config.acquisition == "mes":
            # the members' average MES; a batch takes the q highest (no diversity: for q = 1)
            preds = [predict_gp(m, X) for m, X in zip(state.models, Xs, strict=True)]
            score = np.mean([mes(mu, sd, best, self.config.mes_samples) for mu, sd in preds], axis=0)
            return [fresh_archs[int(i)] for i in np.argsort(-score, kind="stable")[:q]]
        if q == 1 or len(fresh) <= q:
            # EI of the equal-weight mixture = the members' average EI (one member: its own EI)
            obs = self.config.ei_target == "observation"
            logs = np.array(
                [log_ei(*predict_gp(m, X, obs), best) for m, X in zip(state.models, Xs, strict=True)]
            )
            score = np.logaddexp.reduce(logs, axis=0) - np.log(len(logs))
            order = np.argsort(-score, kind="stable")[:q]
            return [fresh_archs[int(i)] for i in order]
        if len(state.models) > 1:
            # a batch from an ensemble: slot k takes member k's (mod M) best-EI arch not yet picked
            ranks = [
                np.argsort(
                    -log_ei(*predict_gp(m, X, self.config.ei_target == "observation"), best), kind="stable"
                )
                for m, X in zip(state.models, Xs, strict=True)
            ]
            slots: list[int] = []
            for k in range(q):
                slots.append(next(int(i) for i in ranks[k % len(ranks)] if int(i) not in slots))
            return [fresh_archs[i] for i in slots]
        import torch
        from botorch.acquisition.logei import qLogExpectedImprovement
        from botorch.optim import optimize_acqf_discrete
        from botorch.sampling.normal import SobolQMCNormalSampler

        # the MC sampler seeded from the state (BoTorch's default draws its seed from torch's global
        # generator, so the same run could pick another batch), leaving ``rng``'s stream untouched
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([512]), seed=len(queried))
        acq = qLogExpectedImprovement(state.model, best_f=best, sampler=sampler)
        tX = torch.as_tensor(Xc, dtype=torch.float64)
        chosen, _ = optimize_acqf_discrete(acq, q=q, choices=tX, max_batch_size=2048, unique=True)
        picked: list[Arch] = []
        for row in chosen.numpy():
            i = int(np.argmin(((Xc - row) ** 2).sum(axis=1)))
            a = cands.archs[fresh[i]]
            if a not in picked:
                picked.append(a)
        return picked

    def _thompson(
        self, models: Sequence[Any], Xs: Sequence[np.ndarray], q: int, rng: np.random.Generator
    ) -> list[int]:
        """Candidate rows chosen by Thompson sampling: each of ``q`` posterior draws (from a member
        drawn at random for an ensemble: a draw from the mixture) votes for its argmax (a repeated
        winner yields to that draw's best unpicked row), so a batch spreads over the archs that could
        plausibly be best. Draws are joint over the ``thompson_pool`` rows of highest mean + 3 sd
        (a row outside them is very unlikely to win any draw)."""
        who = rng.integers(len(models), size=q) if len(models) > 1 else np.zeros(q, dtype=int)
        draws: list[tuple[np.ndarray, np.ndarray]] = []
        for j in sorted(set(who.tolist())):
            mean, std = predict_gp(models[j], Xs[j])
            m = self.config.thompson_pool
            rows = (
                np.argsort(-(mean + 3.0 * std), kind="stable")[:m] if len(mean) > m else np.arange(len(mean))
            )
            for d in sample_gp(models[j], Xs[j][rows], int((who == j).sum()), rng):
                draws.append((rows, d))
        picked: list[int] = []
        for rows, d in draws:
            for k in np.argsort(-d, kind="stable"):
                if int(rows[k]) not in picked:
                    picked.append(int(rows[k]))
                    break
        return picked[:q]

    def _trust_region(
        self,
        state: EngineState,
        queried: Mapping[Arch, Query],
        cands: _Candidates,
        fresh: list[int],
        problem: Problem,
    ) -> list[int]:
        """The fresh candidates within ``state.tr_radius`` changed dimensions of the best feasible
        arch; the radius grows by one after an improving step, shrinks by one after 3 failures, and
        restarts at the full width when the ball holds no fresh candidate."""
        d = len(problem.space.dimensions)
        feas = [x for x in queried.values() if _feasible(problem, x)]
        if not feas:
            return fresh
        inc = max(feas, key=lambda x: x.accuracy).arch
        if state.tr_radius == 0:
            state.tr_radius = max(1, (d + 1) // 2)
        dist = np.array([sum(a != b for a, b in zip(cands.archs[i], inc, strict=True)) for i in fresh])
        inside = [i for i, r in zip(fresh, dist, strict=True) if r <= state.tr_radius]
        if not inside:
            state.tr_radius = d
            return fresh
        return inside

    @staticmethod
    def _update_trust_region(state: EngineState, improved: bool, d: int) -> None:
        if state.tr_radius == 0:
            return
        if improved:
            state.tr_radius, state.tr_failures = min(d, state.tr_radius + 1), 0
        else:
            state.tr_failures += 1
            if state.tr_failures >= 3:
                state.tr_radius, state.tr_failures = max(1, state.tr_radius - 1), 0

    def _pool(
        self, problem: Problem, encoder: Encoder, rng: np.random.Generator, queried: Sequence[Query]
    ) -> _Candidates:
        cfg = self.config
        space = problem.space
        archs = list(dict.fromkeys(tuple(a) for a in space.sample(rng, cfg.pool_size)))
        top = sorted(queried, key=lambda x: -x.accuracy)[: cfg.mutate_top]
        for q in top:
            for j, d in enumerate(space.dimensions):
                for v in d.values:
                    if v != q.arch[j]:
                        m = (*q.arch[:j], v, *q.arch[j + 1 :])
                        try:
                            archs.append(space.validate(m))
                        except ArchError:
                            continue
        archs = list(dict.fromkeys(archs))
        costs = problem.cost_matrix(archs)
        ok = problem.feasible(costs)
        kept = [a for a, f in zip(archs, ok, strict=True) if f]
        return _Candidates(kept, encoder(kept), costs[problem.primary][ok])


#: memoised equivalence keys kept per run (a pool-mode run meets new archs every step)
_KEY_CACHE = 200_000


def equivalence_key_of(space: Any) -> Callable[[Arch], Hashable]:
    """A compact form of the space's ``equivalence_key`` (archs with equal keys build the same network;
    a :class:`~chamlab.chamnet.spaces.base.SearchSpace`'s is its op list): a 128-bit digest of the key's
    repr, memoised (a table space's is its ``_network`` column or the row); the arch itself for a space
    without one."""
    fn = getattr(space, "equivalence_key", None)
    if not callable(fn):
        return lambda arch: arch
    cache: dict[Arch, bytes] = {}

    def key(arch: Arch) -> bytes:
        k = cache.get(arch)
        if k is None:
            if len(cache) >= _KEY_CACHE:
                cache.clear()
            k = cache[arch] = hashlib.blake2b(repr(fn(arch)).encode(), digest_size=16).digest()
        return k

    return key


def _feasible(problem: Problem, q: Query) -> bool:
    return all(q.costs[n] <= lim for n, lim in problem.limits.items())
