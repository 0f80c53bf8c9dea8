"""The search engine: a GP accuracy predictor in a Bayesian-optimisation loop over feasible archs.

Loop (defaults in :class:`EngineConfig`, each switchable and measured in ``bench/search_efficiency.py``):

1. **Candidates.** A space of at most ``exhaustive_limit`` archs is enumerated once, its costs
   computed and the infeasible archs dropped: acquisition then ranks *every* feasible arch. A larger
   space is searched through a fresh candidate pool per step: ``pool_size`` uniform samples plus
   every single-dimension mutation of the ``mutate_top`` best archs queried so far, feasible only.
2. **Features.** Ordinal dimensions map to value index / (choices - 1), categorical ones are
   one-hot; with ``cost_feature`` the log of the primary cost, scaled to [0, 1] over the candidates,
   is one more input (accuracy usually grows with size, and the constrained optimum sits near the
   limit, so this one feature carries much of the signal; the GP learns how much through its
   lengthscale).
3. **Initial design.** ``n_init`` feasible archs from a sampler (:mod:`.sampling`; default the
   imbalanced Sobol design that over-represents the constraint boundary).
4. **Model.** BoTorch ``SingleTaskGP``: ARD kernel with BoTorch's dimension-scaled lengthscale
   prior, learned noise, standardised outputs; conditioned on every new result, its hyperparameters
   re-optimised (maximum marginal likelihood, warm-started) after every ``refit_every`` new queries.
5. **Acquisition.** Log expected improvement over the best feasible accuracy found, evaluated
   exactly on every feasible unqueried candidate; batches (``batch_size > 1``, for a parallel
   oracle) are picked by sequential greedy q-LogEI (BoTorch ``optimize_acqf_discrete``). With
   ``trust_region`` the candidates are limited to a Hamming ball around the incumbent (TuRBO-like
   radius adaptation), off by default.

Nothing is pickled: the run is its history (queries in order) plus the GP hyperparameters as JSON.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from chamlab.chamnet.spaces.base import Arch, Dimension
from chamlab.core.errors import ArchError, InputError

from .problem import Problem
from .sampling import SAMPLERS, design

KERNELS = ("rbf", "matern52", "additive")


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    n_init: int = 10
    batch_size: int = 1
    sampler: str = "imbalanced-sobol"
    cost_feature: bool = True
    exhaustive_limit: int = 100_000
    pool_size: int = 4096
    mutate_top: int = 5
    trust_region: bool = False  # restrict acquisition to a Hamming ball around the incumbent (TuRBO-like)
    refit_every: int = 4  # re-optimise the hyperparameters after this many new queries (else reuse)
    kernel: str = "rbf"  # "rbf": BoTorch's default (ARD, dimension-scaled lengthscale prior); "matern52";
    # "additive": one RBF per feature plus a full ARD RBF

    def __post_init__(self) -> None:
        if self.n_init < 1:
            raise InputError(f"the initial design needs at least 1 arch, got n_init={self.n_init}")
        if self.refit_every < 1:
            raise InputError(f"refit_every must be >= 1, got {self.refit_every}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.kernel not in KERNELS:
            raise InputError(f"unknown kernel {self.kernel!r}; known: {', '.join(KERNELS)}")
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
    """Archs -> feature rows in [0, 1]: ordinal dims by value index, categorical dims one-hot."""

    def __init__(self, dims: Sequence[Dimension]) -> None:
        self.dims = tuple(dims)
        self._lookup = [{v: i for i, v in enumerate(d.values)} for d in self.dims]
        self.width = sum(len(d.values) if d.categorical and len(d.values) > 2 else 1 for d in self.dims)

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        out = np.zeros((len(archs), self.width))
        col = 0
        for j, (d, lk) in enumerate(zip(self.dims, self._lookup, strict=True)):
            idx = np.array([lk[a[j]] for a in archs], dtype=int)
            n = len(d.values)
            if d.categorical and n > 2:
                out[np.arange(len(archs)), col + idx] = 1.0
                col += n
            else:
                out[:, col] = idx / (n - 1) if n > 1 else 0.0
                col += 1
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


# -- the model ----------------------------------------------------------------------------------
def fit_gp(X: np.ndarray, y: np.ndarray, warm: Any = None, kernel: str = "rbf", optimise: bool = True) -> Any:
    """A BoTorch SingleTaskGP (standardised outputs) fitted by maximum marginal likelihood; ``warm``
    (the previous step's model) starts the optimiser from its hyperparameters, or, with
    ``optimise=False``, supplies them unchanged (the model is only conditioned on the new data)."""
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
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": 100}})
    except Exception:  # a failed optimisation keeps the prior's hyperparameters; still a usable model
        model.eval()
    return model


def predict_gp(model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation (original units) at the rows of ``X``.

    Computed directly from one Cholesky factor of the training covariance (marginal variances only:
    several times faster than a batched BoTorch posterior over thousands of candidates; the test
    suite checks it against ``model.posterior``)."""
    import torch

    if len(X) == 0:
        return np.zeros(0), np.zeros(0)
    with torch.no_grad():
        train_x = model.train_inputs[0]
        train_y = model.train_targets
        n = train_x.shape[-2]
        noise = model.likelihood.noise.reshape(-1)
        K = model.covar_module(train_x).to_dense() + torch.diag(noise.expand(n))
        L = None
        for jitter in (0.0, 1e-8, 1e-6, 1e-4):
            L, info = torch.linalg.cholesky_ex(K + jitter * torch.eye(n, dtype=K.dtype))
            if int(info) == 0:
                break
        assert L is not None
        alpha = torch.cholesky_solve((train_y - model.mean_module(train_x)).unsqueeze(-1), L)
        tf = model.outcome_transform
        y_mean, y_std = float(tf.means.reshape(-1)[0]), float(tf.stdvs.reshape(-1)[0])
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


def log_ei(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """log expected improvement over ``best`` (numerically stable, as BoTorch's LogEI)."""
    import torch
    from botorch.acquisition.analytic import _log_ei_helper

    u = (torch.as_tensor(mean) - best) / torch.as_tensor(std)
    return (_log_ei_helper(u) + torch.as_tensor(std).log()).numpy()


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
    model: Any = None
    feature_names: tuple[str, ...] = ()
    features: Callable[[Sequence[Arch], np.ndarray], np.ndarray] | None = None
    fitted_on: int = 0
    optimised_on: int = 0
    tr_radius: int = 0  # trust-region radius in changed dimensions (0: not started)
    tr_failures: int = 0
    fit_seconds: float = 0.0

    def predict(self, archs: Sequence[Arch], primary_cost: np.ndarray) -> np.ndarray | None:
        """GP posterior mean of ``archs`` (None before the first fit)."""
        if self.model is None or self.features is None:
            return None
        return predict_gp(self.model, self.features(archs, np.asarray(primary_cost, dtype=float)))[0]


class BayesOptEngine:
    """Runs the loop of the module docstring on a :class:`Problem` (see :meth:`run`)."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()

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
        are never asked again), every feasible arch is queried, or ``stop(state)`` is true.
        ``on_query(state)`` runs after every batch (persist the history there)."""
        cfg = self.config
        if budget < 1:
            raise InputError(f"the query budget must be >= 1, got {budget}")
        space = problem.space
        encoder = Encoder(space.dimensions)
        primary = problem.primary
        limit = problem.limits[primary]
        queried: dict[Arch, Query] = {}
        for q in previous:
            queried[tuple(q.arch)] = dataclasses.replace(q, phase=q.phase)
        state = EngineState(list(queried.values()))
        names = [*self._feature_names(space.dimensions)]

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

        def features(archs: Sequence[Arch], cost: np.ndarray) -> np.ndarray:
            X = encoder(archs)
            return np.column_stack([X, scale(cost)]) if cfg.cost_feature else X

        state.feature_names = tuple(names)
        state.features = features

        # the initial design is a pure function of the seed and the feasible set: a resumed run
        # regenerates it and skips the archs it already holds
        init = [base.archs[i] for i in design(cfg.sampler, base.X, base.cost, limit, cfg.n_init, rng)]
        todo_init = [a for a in init if a not in queried]

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
                fresh = [i for i, a in enumerate(cands.archs) if a not in queried]
                if not fresh:
                    break
                batch = self._acquire(
                    state, queried, cands, fresh, features, min(cfg.batch_size, room), problem
                )
                phase = "bo"
            before = max((q.accuracy for q in queried.values() if _feasible(problem, q)), default=-np.inf)
            accs = problem.oracle(batch)
            bcosts = problem.cost_matrix(batch)
            for k, (a, acc) in enumerate(zip(batch, accs, strict=True)):
                if not np.isfinite(acc):
                    raise ArchError(f"the oracle returned {acc} for {space.format(a)}")
                queried[a] = Query(a, float(acc), {n: float(v[k]) for n, v in bcosts.items()}, phase)
            state.queries = list(queried.values())
            if phase == "bo" and cfg.trust_region:
                after = max((q.accuracy for q in queried.values() if _feasible(problem, q)), default=-np.inf)
                self._update_trust_region(state, after > before, len(space.dimensions))
            if on_query is not None:
                on_query(state)
        if state.queries and (state.model is None or len(state.queries) > state.fitted_on):
            self._fit(state, problem, features)
        return state

    @staticmethod
    def _feature_names(dims: Sequence[Dimension]) -> list[str]:
        names: list[str] = []
        for d in dims:
            if d.categorical and len(d.values) > 2:
                names += [f"{d.name}={v}" for v in d.values]
            else:
                names.append(d.name)
        return names

    def _fit(self, state: EngineState, problem: Problem, features: Callable[..., np.ndarray]) -> None:
        qs = state.queries
        archs = [q.arch for q in qs]
        X = features(archs, np.array([q.costs[problem.primary] for q in qs]))
        y = np.array([q.accuracy for q in qs])
        t0 = time.perf_counter()
        optimise = state.model is None or len(qs) - state.optimised_on >= self.config.refit_every
        state.model = fit_gp(X, y, warm=state.model, kernel=self.config.kernel, optimise=optimise)
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
    ) -> list[Arch]:
        self._fit(state, problem, features)
        best = max(
            (x.accuracy for x in queried.values() if _feasible(problem, x)),
            default=min(x.accuracy for x in queried.values()),
        )
        if self.config.trust_region:
            fresh = self._trust_region(state, queried, cands, fresh, problem)
        Xc = features([cands.archs[i] for i in fresh], cands.cost[fresh])
        if q == 1 or len(fresh) <= q:
            mean, std = predict_gp(state.model, Xc)
            score = log_ei(mean, std, best)
            order = np.argsort(-score, kind="stable")[:q]
            return [cands.archs[fresh[int(i)]] for i in order]
        import torch
        from botorch.acquisition.logei import qLogExpectedImprovement
        from botorch.optim import optimize_acqf_discrete

        acq = qLogExpectedImprovement(state.model, best_f=best)
        tX = torch.as_tensor(Xc, dtype=torch.float64)
        chosen, _ = optimize_acqf_discrete(acq, q=q, choices=tX, max_batch_size=2048, unique=True)
        picked: list[Arch] = []
        for row in chosen.numpy():
            i = int(np.argmin(((Xc - row) ** 2).sum(axis=1)))
            a = cands.archs[fresh[i]]
            if a not in picked:
                picked.append(a)
        return picked

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


def _feasible(problem: Problem, q: Query) -> bool:
    return all(q.costs[n] <= lim for n, lim in problem.limits.items())
