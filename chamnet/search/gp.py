"""The engine's accuracy model: a BoTorch ``SingleTaskGP`` (:func:`fit_gp`), its posterior at many
candidates (:func:`predict_gp`), its hyperparameters as JSON (:func:`hyperparameters`) and, for a
resumed run, its exact parameters (:func:`gp_parameters`, :func:`restore_gp`).

Kernels are registered in :data:`KERNELS` (``EngineConfig.kernel``). The engine ships one, ``rbf``:
BoTorch's default (ARD RBF with the dimension-scaled lengthscale prior). Matern 5/2, two additive
kernels, an overlap kernel for categorical dimensions and a linear trend in the cost feature (and
in every feature) were measured and not adopted
(docs/benchmarks.md); ``bench/engine_variants.py`` registers them again to reproduce those runs.

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


KERNELS.add("rbf", RBF())


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
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model = _model(X, y, kernel, groups)
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
    tx = model.train_inputs[0]
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


def _model(X: np.ndarray, y: np.ndarray, kernel: str, groups: Groups) -> Any:
    """An unfitted SingleTaskGP (float64, standardised outputs) on ``X``, ``y`` with ``kernel``."""
    import torch
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize

    tx = torch.as_tensor(X, dtype=torch.float64)
    ty = torch.as_tensor(np.asarray(y, dtype=float).reshape(-1, 1), dtype=torch.float64)
    covar = KERNELS.get(kernel).covar_module(tx.shape[-1], groups)
    return SingleTaskGP(tx, ty, covar_module=covar, outcome_transform=Standardize(m=1))


def gp_parameters(model: Any) -> dict[str, Any]:
    """The model's learned parameters, raw (before their constraints' transforms), as plain JSON: a
    float64 written by ``json`` reads back bit for bit, so :func:`restore_gp` rebuilds the same
    model (:func:`hyperparameters` is the readable view, not exact)."""
    return {name: p.detach().tolist() for name, p in model.named_parameters()}


def restore_gp(
    X: np.ndarray, y: np.ndarray, parameters: Any, kernel: str = "rbf", groups: Groups = ()
) -> Any:
    """The model :func:`fit_gp` gave on ``X``, ``y``, rebuilt from its :func:`gp_parameters` without
    fitting (a resumed run predicts what the finished one predicted). A ``ValueError`` when
    ``parameters`` do not name and shape every parameter of ``kernel``'s model."""
    import torch

    model = _model(X, y, kernel, groups)
    own = dict(model.named_parameters())
    if not isinstance(parameters, dict) or set(parameters) != set(own):
        raise ValueError(f"the stored GP parameters are not {kernel!r}'s: {sorted(own)}")
    with torch.no_grad():
        for name, p in own.items():
            value = torch.as_tensor(parameters[name], dtype=p.dtype)
            if value.shape != p.shape:
                raise ValueError(f"the stored GP parameter {name} has shape {tuple(value.shape)}")
            p.copy_(value)
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
        # a kernel whose lengthscales are not one per feature column names them itself
        label = getattr(base, "lengthscale_names", None)
        names = label(feature_names) if callable(label) else list(feature_names)
        out["lengthscales"] = dict(zip(names, ls.detach().reshape(-1).tolist(), strict=False))
    if hasattr(covar, "outputscale"):
        out["outputscale"] = float(covar.outputscale.detach())
    out["noise_standardised"] = float(model.likelihood.noise.detach().reshape(-1)[0])
    out["mean_constant_standardised"] = float(model.mean_module.constant.detach().reshape(-1)[0])
    tf = model.outcome_transform
    out["y_mean"] = float(tf.means.reshape(-1)[0])
    out["y_std"] = float(tf.stdvs.reshape(-1)[0])
    return out
