"""The engine's accuracy model: a BoTorch ``SingleTaskGP`` (:func:`fit_gp`), its posterior at many
candidates (:func:`predict_gp`) and its hyperparameters as JSON (:func:`hyperparameters`).

Kernels are registered in :data:`KERNELS` (``EngineConfig.kernel``). The engine ships one, ``rbf``:
BoTorch's default (ARD RBF with the dimension-scaled lengthscale prior). Matern 5/2 and two additive
kernels were measured and not adopted (docs/benchmarks.md); ``bench/engine_variants.py`` registers
them again to reproduce those runs.

A hyperparameter fit that fails is never silent: it keeps the starting hyperparameters (the warm
model's, or the prior's), warns (:class:`GPFitWarning`) and, given a ``failures`` list, appends the
message there (the engine records them in ``EngineState.fit_failures`` and ``result.json``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from chamlab.core.errors import ChamlabWarning
from chamlab.core.registry import Registry


class GPFitWarning(ChamlabWarning):
    """Optimising the GP's hyperparameters failed; the search went on with its starting values."""


Groups = Sequence[Sequence[int]]


class Kernel:
    """A GP covariance: :meth:`covar_module` builds it for ``d`` input features, of which ``groups``
    are the one-hot column groups of the categorical dimensions (:meth:`.encoding.Encoder.groups`);
    None: BoTorch's default for SingleTaskGP."""

    def covar_module(self, d: int, groups: Groups = ()) -> Any:
        raise NotImplementedError


#: kernel name -> the kernel (``EngineConfig.kernel``)
KERNELS: Registry[Kernel] = Registry("kernel")


class RBF(Kernel):
    """BoTorch's default: ARD RBF, dimension-scaled log-normal lengthscale prior, one lengthscale per
    feature column (a categorical dimension's one-hot columns each have their own)."""

    def covar_module(self, d: int, groups: Groups = ()) -> Any:
        return None


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


KERNELS.add("rbf", RBF())
KERNELS.add("overlap", Overlap())


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


def fit_gp(
    X: np.ndarray,
    y: np.ndarray,
    warm: Any = None,
    kernel: str = "rbf",
    optimise: bool = True,
    failures: list[str] | None = None,
    groups: Groups = (),
) -> Any:
    """A BoTorch SingleTaskGP (standardised outputs) fitted by maximum marginal likelihood; ``warm``
    (the previous step's model) starts the optimiser from its hyperparameters, or, with
    ``optimise=False``, supplies them unchanged (the model is only conditioned on the new data).
    ``groups``: the categorical dimensions' one-hot column groups (for kernels that use them).

    A failed optimisation keeps the starting hyperparameters (still a usable model): it warns
    (:class:`GPFitWarning`) and appends the message to ``failures`` when given."""
    import torch
    from botorch.exceptions.warnings import OptimizationWarning
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    tx = torch.as_tensor(X, dtype=torch.float64)
    ty = torch.as_tensor(np.asarray(y, dtype=float).reshape(-1, 1), dtype=torch.float64)
    covar = KERNELS.get(kernel).covar_module(tx.shape[-1], groups)
    model = SingleTaskGP(tx, ty, covar_module=covar, outcome_transform=Standardize(m=1))
    if warm is not None:
        try:
            model.covar_module.load_state_dict(warm.covar_module.state_dict())
            model.likelihood.load_state_dict(warm.likelihood.state_dict())
            model.mean_module.load_state_dict(warm.mean_module.state_dict())
        except (RuntimeError, AttributeError):
            optimise = True  # shapes changed: start from the prior
    if warm is not None and not optimise:
        model.eval()
        return model
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizationWarning)  # a stopped optimiser still gives a model
            # BoTorch retries a failed fit from hyperparameters drawn from the priors with torch's global
            # RNG: a private, seeded one keeps the search reproducible whatever ran before it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(len(tx))
                fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": 100}})
    except Exception as e:  # any optimiser failure: reported below, the model kept
        start = "the previous fit's" if warm is not None else "the prior's default"
        message = (
            f"fitting the accuracy GP's hyperparameters on {len(tx)} queries failed "
            f"({type(e).__name__}: {e}); the search goes on with {start} hyperparameters"
        )
        if failures is not None:
            failures.append(message)
        warnings.warn(message, GPFitWarning, stacklevel=2)
        model.eval()
    return model


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


def predict_gp(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation (original units) of the latent function at the rows of
    ``X``.

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
            tx = torch.as_tensor(X[start : start + 4096], dtype=train_x.dtype)
            Ks = model.covar_module(tx, train_x).to_dense()
            mu = model.mean_module(tx) + (Ks @ alpha).squeeze(-1)
            v = torch.linalg.solve_triangular(L, Ks.T, upper=False)
            var = model.covar_module(tx, diag=True) - (v**2).sum(0)
            means.append((mu * y_std + y_mean).numpy())
            stds.append((var.clamp_min(1e-18).sqrt() * y_std).numpy())
    return np.concatenate(means), np.concatenate(stds)


def hyperparameters(model: Any, feature_names: Sequence[str]) -> dict[str, Any]:
    """The fitted GP's hyperparameters as plain JSON (lengthscale per feature, noise, output scale)."""
    out: dict[str, Any] = {"model": "botorch.SingleTaskGP", "kernel": type(model.covar_module).__name__}
    covar = model.covar_module
    base = getattr(covar, "base_kernel", covar)
    ls = getattr(base, "lengthscale", None)
    if ls is not None:
        names = list(feature_names)
        if hasattr(base, "groups"):  # an overlap kernel: the plain features, then one per categorical dim
            names = [names[i] for i in base.plain] + [names[g[0]].split("=", 1)[0] for g in base.groups]
        out["lengthscales"] = dict(zip(names, ls.detach().reshape(-1).tolist(), strict=False))
    if hasattr(covar, "outputscale"):
        out["outputscale"] = float(covar.outputscale.detach())
    out["noise_standardised"] = float(model.likelihood.noise.detach().reshape(-1)[0])
    out["mean_constant_standardised"] = float(model.mean_module.constant.detach().reshape(-1)[0])
    tf = model.outcome_transform
    out["y_mean"] = float(tf.means.reshape(-1)[0])
    out["y_std"] = float(tf.stdvs.reshape(-1)[0])
    return out
