"""The search engine: a GP accuracy predictor in a Bayesian-optimisation loop over feasible archs.

Loop (options in :class:`~.config.EngineConfig`; the design choices measured in
``bench/search_efficiency.py``, figures in docs/benchmarks.md):

1. **Candidates.** A space of at most ``exhaustive_limit`` archs is enumerated once, its costs
   computed and the infeasible archs dropped: acquisition then ranks *every* feasible arch. A larger
   space is searched through a fresh candidate pool per step: ``pool_size`` uniform samples plus
   every single-dimension mutation of the ``mutate_top`` best archs queried so far, feasible only;
   before each pick the acquisition is climbed locally from the pool (``local_search`` rounds of
   scoring the single mutations of its ``mutate_top`` best candidates, :meth:`BayesOptEngine._climb`).
   With ``merge_equivalent``, an arch that builds a network already asked under another name (the
   space's ``equivalence_key``, for a search space its op list: macro-cifar10's 6,561 archs are
   3,969 networks) is no candidate: a deterministic oracle would answer the same, a training oracle
   would train the same network again.
2. **Features** (:mod:`.encoding`). Ordinal dimensions map to value index / (choices - 1),
   categorical ones are one-hot; with ``cost_feature`` (the default) the log primary cost, mapped
   onto [0, 1] over the feasible candidates' range, is one more column (:class:`~.encoding.Features`).
3. **Initial design** (:mod:`.sampling`). ``n_init`` feasible archs from a sampler (default the
   imbalanced Sobol design that over-represents the constraint boundary), asked as one batch
   whatever ``batch_size`` says: none depends on another's answer, so a parallel oracle (training
   on several workers) answers them side by side, and the queries are the same.
4. **Model** (:mod:`.gp`, :mod:`.warp`). BoTorch ``SingleTaskGP`` on *warped* accuracies
   (``output_warp``, default ``"yeo-johnson"``, re-fitted with the hyperparameters, so a long tail
   of poor networks does not flatten the top): ARD RBF kernel with BoTorch's dimension-scaled
   lengthscale prior, learned noise, standardised outputs; conditioned on every new result, its
   hyperparameters re-optimised (maximum marginal likelihood, warm-started) after every
   ``refit_every`` new queries. A failed fit warns and is recorded (``EngineState.fit_failures``).
5. **Acquisition** (:mod:`.acquisition`). Log expected improvement over the best feasible accuracy
   found (warped units), evaluated exactly on every fresh feasible candidate; batches
   (``batch_size > 1``) by sequential greedy q-LogEI.

Options that were measured and not adopted (trust region, GP ensembles, Thompson sampling, MES, PI,
other kernels, input warp, several hyperparameter starts, EI variants, one-hot ordinals) were
removed from the engine; :data:`~.config.REMOVED_FIELDS` says how stored histories
that name them are read.

Nothing is pickled: the run is its history (queries in order) plus the GP hyperparameters as JSON.
A resumed run rebuilds the finished run's GP from that JSON (:meth:`EngineState.resume_json`: its
exact parameters, warp and fit counts), so it predicts what the finished run predicted; it refits
only when the JSON is missing, damaged or from another history.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from chamlab.chamnet.spaces.base import Arch
from chamlab.core.errors import ArchError, InputError

from .acquisition import ACQUISITIONS, log_ei
from .config import ADDED_FIELDS, REMOVED_FIELDS, EngineConfig, engine_fields
from .encoding import Candidates, Encoder, Features, equivalence_key_of
from .gp import KERNELS, GPFitWarning, fit_gp, gp_parameters, hyperparameters, predict_gp, restore_gp
from .problem import Problem
from .sampling import design
from .warp import OUTPUT_WARPS, OutputWarp

__all__ = [
    "ACQUISITIONS",
    "ADDED_FIELDS",
    "KERNELS",
    "OUTPUT_WARPS",
    "REMOVED_FIELDS",
    "BayesOptEngine",
    "Encoder",
    "EngineConfig",
    "EngineState",
    "GPFitWarning",
    "OutputWarp",
    "Query",
    "engine_fields",
    "equivalence_key_of",
    "fit_gp",
    "hyperparameters",
    "log_ei",
    "predict_gp",
]


@dataclasses.dataclass(frozen=True)
class Query:
    arch: Arch
    accuracy: float
    costs: Mapping[str, float]
    phase: str  # "init", "bo" or "resumed"


@dataclasses.dataclass
class EngineState:
    """What the loop exposes after each batch (for persistence and results)."""

    queries: list[Query]
    model: Any = None  # the GP (None before the first fit); its features and their names below
    feature_names: tuple[str, ...] = ()
    features: Callable[[Sequence[Arch]], np.ndarray] | None = None
    fitted_on: int = 0
    optimised_on: int = 0
    fit_seconds: float = 0.0
    warp: OutputWarp = dataclasses.field(default_factory=lambda: OutputWarp("none"))  # accuracy -> GP output
    groups: tuple[tuple[int, ...], ...] = ()  # the categorical dims' one-hot feature columns
    fit_failures: list[str] = dataclasses.field(default_factory=list)  # one message per failed fit

    def predict(self, archs: Sequence[Arch], primary_cost: Any = None) -> np.ndarray | None:
        """Posterior median accuracy of ``archs`` (None before the first fit). ``primary_cost`` is
        ignored (the GP's features no longer include the cost; kept for callers)."""
        if self.model is None or self.features is None:
            return None
        mean, _ = predict_gp(self.model, self.features(archs))
        return self.warp.inverse(mean)  # the warped mean maps to the predictive median

    def resume_json(self) -> dict[str, Any] | None:
        """What a resumed run needs to rebuild this GP exactly (None before the first fit): the
        queries it was conditioned on and last optimised on, its features and raw parameters."""
        if self.model is None:
            return None
        return {
            "fitted_on": self.fitted_on,
            "queries_digest": queries_digest(self.queries[: self.fitted_on]),
            "optimised_on": self.optimised_on,
            "features": list(self.feature_names),
            "parameters": gp_parameters(self.model),
        }


def queries_digest(queries: Sequence[Query]) -> str:
    """A digest of the queries' archs and accuracies, in order (a stored GP names what it saw); an
    arch's numpy values count as the Python values a stored history reads back."""
    import hashlib

    def plain(v: Any) -> Any:
        return v.item() if isinstance(v, np.generic) else v

    rows = [(tuple(plain(v) for v in q.arch), float(q.accuracy)) for q in queries]
    return hashlib.sha256(repr(rows).encode()).hexdigest()


class BayesOptEngine:
    """Runs the loop of the module docstring on a :class:`Problem` (see :meth:`run`)."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.acquisition = ACQUISITIONS.get(self.config.acquisition)

    def run(
        self,
        problem: Problem,
        budget: int,
        rng: np.random.Generator,
        *,
        previous: Sequence[Query] = (),
        on_query: Callable[[EngineState], None] | None = None,
        stop: Callable[[EngineState], bool] | None = None,
        gp: Mapping[str, Any] | None = None,
    ) -> EngineState:
        """Query the oracle until ``budget`` archs are queried in total (``previous`` included, which
        are never asked again), every feasible arch is queried (with ``merge_equivalent``: every
        feasible network), or ``stop(state)`` is true.
        ``on_query(state)`` runs after every batch (persist the history there). ``gp``: the stored
        hyperparameters of the run that asked ``previous`` (``accuracy_gp.json``); when they were
        fitted on all of ``previous`` the GP is rebuilt from them instead of refitted."""
        cfg = self.config
        if budget < 1:
            raise InputError(f"the query budget must be >= 1, got {budget}")
        space = problem.space
        encoder = Encoder(space.dimensions)
        # what was asked: with merge_equivalent the networks (archs with one equivalence key build the
        # same network, so asking another of its names would learn nothing), else the archs themselves
        key: Callable[[Arch], Hashable] = (
            equivalence_key_of(space) if cfg.merge_equivalent else (lambda arch: arch)
        )
        queried: dict[Arch, Query] = {tuple(q.arch): q for q in previous}
        asked: set[Hashable] = {key(a) for a in queried}
        state = EngineState(
            list(queried.values()),
            groups=encoder.groups(),
        )

        def fresh_in(archs: Sequence[Arch]) -> list[int]:
            """Indices of the archs whose key was not asked yet."""
            return [i for i, a in enumerate(archs) if key(a) not in asked]

        exhaustive = space.size <= cfg.exhaustive_limit
        features = Features(encoder)
        base = self._enumerate(problem, features) if exhaustive else self._pool(problem, features, rng, [])
        # the initial design is a pure function of the seed and the feasible set: a resumed run
        # regenerates it and skips the archs it already holds; of two names of one network in the
        # design only the first is asked. It is drawn in the encoder's features, with or without the
        # cost feature (the design itself samples the constraint boundary)
        limit = problem.limits[problem.primary]
        init = [base.archs[i] for i in design(cfg.sampler, base.X, base.cost, limit, cfg.n_init, rng)]
        if cfg.cost_feature:
            primary = problem.primary
            top = float(base.cost.max(initial=0.0)) if exhaustive else limit
            features = features.with_cost(
                primary, base.cost, top, lambda archs: problem.cost_matrix(archs)[primary]
            )
            base = Candidates(base.archs, features.rows(base.archs, base.cost), base.cost)
        state.features, state.feature_names = features, tuple(features.names())
        if previous and gp is not None:
            self._restore(state, gp)
        first: dict[Hashable, Arch] = {}
        for a in (init[i] for i in fresh_in(init)):
            first.setdefault(key(a), a)
        todo_init = list(first.values())

        climb = None
        if not exhaustive and cfg.local_search:

            def climb(c: Candidates, f: list[int], best: float) -> tuple[Candidates, list[int]]:
                return self._climb(state, problem, features, c, f, best, fresh_in)

        while len(queried) < budget:
            if stop is not None and stop(state):
                break
            room = budget - len(queried)
            if todo_init and not any(q.phase == "bo" for q in queried.values()):
                batch, todo_init, phase = todo_init[:room], todo_init[room:], "init"
            else:
                cands = base if exhaustive else self._pool(problem, features, rng, list(queried.values()))
                fresh = fresh_in(cands.archs)
                if not fresh:
                    break
                picks = min(cfg.batch_size, room)
                batch, phase = self._acquire(state, queried, cands, fresh, picks, problem, climb), "bo"
            for q in self._ask(problem, batch, phase):
                queried[q.arch] = q
                asked.add(key(q.arch))
            state.queries = list(queried.values())
            if on_query is not None:
                on_query(state)
        if state.queries and (state.model is None or len(state.queries) > state.fitted_on):
            self._fit(state, problem)
        return state

    @staticmethod
    def _ask(problem: Problem, batch: list[Arch], phase: str) -> list[Query]:
        """The oracle's answers for ``batch`` with their costs (a non-finite accuracy is an error)."""
        accs = problem.oracle(batch)
        costs = problem.cost_matrix(batch)
        out = []
        for k, (a, acc) in enumerate(zip(batch, accs, strict=True)):
            if not np.isfinite(acc):
                raise ArchError(f"the oracle returned {acc} for {problem.space.format(a)}")
            out.append(Query(a, float(acc), {n: float(v[k]) for n, v in costs.items()}, phase))
        return out

    def _fit(self, state: EngineState, problem: Problem) -> None:
        """Condition the GP on every query; re-optimise it (and re-fit the output warp) after every
        ``refit_every`` new queries."""
        assert state.features is not None
        qs = state.queries
        t0 = time.perf_counter()
        optimise = state.model is None or len(qs) - state.optimised_on >= self.config.refit_every
        y = np.array([q.accuracy for q in qs])
        if optimise:  # between re-optimisations the warp stays fixed, as the hyperparameters do
            state.warp = OutputWarp.fit(self.config.output_warp, y)
        with warnings.catch_warnings():
            if float(np.ptp(y)) == 0.0:
                # every accuracy equal: the GP is flat (a constant table says so once, when read);
                # BoTorch's advice to standardise them is no news to the user
                from botorch.exceptions.warnings import InputDataWarning

                warnings.simplefilter("ignore", InputDataWarning)
            state.model = fit_gp(
                state.features([q.arch for q in qs]),
                state.warp(y),
                warm=state.model,
                kernel=self.config.kernel,
                optimise=optimise,
                failures=state.fit_failures,
                groups=state.groups,
            )
        if optimise:
            state.optimised_on = len(qs)
        state.fit_seconds += time.perf_counter() - t0
        state.fitted_on = len(qs)

    def _restore(self, state: EngineState, stored: Mapping[str, Any]) -> None:
        """The stored GP (:meth:`EngineState.resume_json` beside the hyperparameters) when it was
        fitted on exactly ``state.queries`` with these features; otherwise nothing (the loop fits)."""
        held = stored.get("resume") if isinstance(stored, Mapping) else None
        if (
            not isinstance(held, Mapping)
            or held.get("fitted_on") != len(state.queries)
            or held.get("queries_digest") != queries_digest(state.queries)
            or held.get("features") != list(state.feature_names)
            or not isinstance(held.get("optimised_on"), int)
        ):
            return
        assert state.features is not None
        try:
            warp = OutputWarp.from_json(stored.get("output_warp", {"kind": "none"}))
            y = warp(np.array([q.accuracy for q in state.queries]))
            X = state.features([q.arch for q in state.queries])
            model = restore_gp(X, y, held.get("parameters"), self.config.kernel, state.groups)
        except (KeyError, TypeError, ValueError):
            return
        state.model, state.warp = model, warp
        state.fitted_on, state.optimised_on = len(state.queries), int(held["optimised_on"])

    def _acquire(
        self,
        state: EngineState,
        queried: Mapping[Arch, Query],
        cands: Candidates,
        fresh: list[int],
        q: int,
        problem: Problem,
        grow: Callable[[Candidates, list[int], float], tuple[Candidates, list[int]]] | None = None,
    ) -> list[Arch]:
        """Refit, then the acquisition's ``q`` picks among the fresh candidates (first grown by
        ``grow(cands, fresh, best)``, the local search, when given)."""
        self._fit(state, problem)
        assert state.features is not None
        best = max(
            (x.accuracy for x in queried.values() if _feasible(problem, x)),
            default=min(x.accuracy for x in queried.values()),
        )
        warped = float(state.warp(best))
        if grow is not None:
            cands, fresh = grow(cands, fresh, warped)
        fresh_archs = [cands.archs[i] for i in fresh]
        rows = self.acquisition.select(state.model, state.features(fresh_archs), warped, q, seed=len(queried))
        return [fresh_archs[i] for i in rows]

    @staticmethod
    def _enumerate(problem: Problem, features: Features) -> Candidates:
        """Every feasible arch of the space (a space of at most ``exhaustive_limit`` archs)."""
        archs = list(problem.space.enumerate())
        costs = problem.cost_matrix(archs)
        ok = problem.feasible(costs)
        archs = [a for a, f in zip(archs, ok, strict=True) if f]
        cost = costs[problem.primary][ok]
        return Candidates(archs, features.rows(archs, cost), cost)

    def _pool(
        self, problem: Problem, features: Features, rng: np.random.Generator, queried: Sequence[Query]
    ) -> Candidates:
        """``pool_size`` uniform samples plus every single-dimension mutation of the ``mutate_top``
        best archs queried, feasible ones only."""
        cfg = self.config
        space = problem.space
        archs = list(dict.fromkeys(tuple(a) for a in space.sample(rng, cfg.pool_size)))
        for q in sorted(queried, key=lambda x: -x.accuracy)[: cfg.mutate_top]:
            archs += _mutations(space, q.arch)
        return self._feasible_of(problem, features, list(dict.fromkeys(archs)))

    @staticmethod
    def _feasible_of(problem: Problem, features: Features, archs: list[Arch]) -> Candidates:
        costs = problem.cost_matrix(archs)
        ok = problem.feasible(costs)
        kept = [a for a, f in zip(archs, ok, strict=True) if f]
        cost = costs[problem.primary][ok]
        return Candidates(kept, features.rows(kept, cost), cost)

    def _climb(
        self,
        state: EngineState,
        problem: Problem,
        features: Features,
        cands: Candidates,
        fresh: list[int],
        best: float,
        fresh_in: Callable[[Sequence[Arch]], list[int]],
    ) -> tuple[Candidates, list[int]]:
        """The local search of a pool (``local_search`` rounds): from the ``mutate_top`` fresh
        candidates of highest log EI over ``best`` (warped units), every feasible, fresh single
        mutation is scored and joins the candidates; the next round starts from the best
        ``mutate_top`` of everything scored, and the climb ends early when none of those is new.
        Returns the grown candidates and their fresh indices."""
        cfg = self.config
        mean, std = predict_gp(state.model, cands.X[fresh])
        scored = {cands.archs[i]: float(v) for i, v in zip(fresh, log_ei(mean, std, best), strict=True)}
        seen = set(cands.archs)
        front = sorted(scored, key=scored.__getitem__, reverse=True)[: cfg.mutate_top]
        parts = [cands]
        for _ in range(cfg.local_search):
            near = [m for a in front for m in _mutations(problem.space, a) if m not in seen]
            near = list(dict.fromkeys(near))
            seen.update(near)
            near = [near[i] for i in fresh_in(near)]
            if not near:
                break
            new = self._feasible_of(problem, features, near)
            if not new.archs:
                break
            parts.append(new)
            mean, std = predict_gp(state.model, new.X)
            scored.update(zip(new.archs, (float(v) for v in log_ei(mean, std, best)), strict=True))
            top = sorted(scored, key=scored.__getitem__, reverse=True)[: cfg.mutate_top]
            if set(top) <= set(front):
                break
            front = [a for a in top if a not in front]
        if len(parts) == 1:
            return cands, fresh
        archs = [a for p in parts for a in p.archs]
        grown = Candidates(archs, np.vstack([p.X for p in parts]), np.concatenate([p.cost for p in parts]))
        return grown, fresh + list(range(len(cands.archs), len(archs)))


def _mutations(space: Any, arch: Arch) -> list[Arch]:
    """Every arch of ``space`` that differs from ``arch`` in one dimension."""
    out = []
    for j, d in enumerate(space.dimensions):
        for v in d.values:
            if v == arch[j]:
                continue
            try:
                out.append(space.validate((*arch[:j], v, *arch[j + 1 :])))
            except ArchError:
                continue  # a mutation outside the space (a constrained space) is no candidate
    return out


def _feasible(problem: Problem, q: Query) -> bool:
    return all(q.costs[n] <= lim for n, lim in problem.limits.items())
