"""The search engine's configuration (:class:`EngineConfig`) and how stored engine options map to it.

Stored search histories hold ``EngineConfig.to_json()`` as it was when they were written. Two
tables keep old histories resumable:

* :data:`ADDED_FIELDS`: options added after histories were first stored, each with the value that
  reproduces what the engine did before it existed (a history without it resumes with that value;
  ``cost_feature`` was v1's default, removed, then implemented again as the default: a history
  that does not name it was made without it);
* :data:`REMOVED_FIELDS`: options that were measured (``bench/search_efficiency.py``, figures in
  docs/benchmarks.md) and not adopted, then removed from the engine (issue 25), each with the only
  value the engine still implements. A stored history that holds a removed option at that value
  resumes (the key is dropped); at any other value it is an :class:`InputError` naming the option
  (:func:`engine_fields`): the engine can no longer continue that search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from chamlab.core.errors import InputError

ADDED_FIELDS: dict[str, Any] = {"merge_equivalent": False, "local_search": 0, "cost_feature": False}

REMOVED_FIELDS: dict[str, Any] = {
    "trust_region": False,  # a TuRBO-like Hamming ball around the incumbent
    "mes_samples": 64,  # max-value entropy search's samples (acquisition "mes")
    "thompson_pool": 2000,  # Thompson sampling's candidate pool (acquisition "thompson")
    "input_warp": False,  # a learned Kumaraswamy warp of every feature
    "ensemble": False,  # an equal-weight mixture of GPs (kernels x with/without the cost feature)
    "hyper_starts": 1,  # GPs fitted from several hyperparameter starting points
    "ei_target": "latent",  # EI of a new observation (latent + noise)
    "ordinal_encoding": "index",  # ordinal dims one-hot or index+one-hot in the GP's features
    "incumbent": "observed",  # EI's best_f from the posterior mean
    "ei_xi": 0.0,  # EI's improvement threshold
}


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """The engine's options (see :mod:`.engine` for the loop they configure)."""

    n_init: int = 10  # initial design size
    batch_size: int = 1  # archs per oracle batch (> 1: sequential greedy q-LogEI)
    sampler: str = "imbalanced-sobol"  # the initial design (:data:`.sampling.SAMPLERS`)
    exhaustive_limit: int = 100_000  # spaces up to this size are enumerated once, else pools
    pool_size: int = 4096  # uniform samples per candidate pool (large spaces)
    mutate_top: int = 5  # the pool also holds every single mutation of this many best archs
    local_search: int = 3  # pools only: rounds of hill-climbing the acquisition from its mutate_top
    # best candidates through their single mutations before the pick (0: the pool as drawn)
    refit_every: int = 4  # re-optimise the hyperparameters after this many new queries (else reuse)
    kernel: str = "rbf"  # a name in :data:`.gp.KERNELS`
    acquisition: str = "ei"  # a name in :data:`.acquisition.ACQUISITIONS`
    output_warp: str = "yeo-johnson"  # a name in :data:`.warp.OUTPUT_WARPS`
    cost_feature: bool = True  # the log primary cost as one more GP input (:class:`.encoding.Features`;
    # the default since issue 24's suite: stored histories without it had it off, ADDED_FIELDS)
    merge_equivalent: bool = True  # never ask a network twice under two names: an arch whose
    # ``space.equivalence_key`` (a SearchSpace's: its op list) equals one asked is no candidate

    def __post_init__(self) -> None:
        from .acquisition import ACQUISITIONS
        from .gp import KERNELS
        from .sampling import SAMPLERS
        from .warp import OUTPUT_WARPS

        if self.n_init < 1:
            raise InputError(f"the initial design needs at least 1 arch, got n_init={self.n_init}")
        if self.local_search < 0:
            raise InputError(f"local_search must be >= 0 rounds, got {self.local_search}")
        if self.refit_every < 1:
            raise InputError(f"refit_every must be >= 1, got {self.refit_every}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        KERNELS.check(self.kernel)
        ACQUISITIONS.check(self.acquisition)
        OUTPUT_WARPS.check(self.output_warp)
        SAMPLERS.check(self.sampler)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, fields: Mapping[str, Any], where: str = "engine options") -> EngineConfig:
        """The configuration of stored (or benchmark) engine options: :func:`engine_fields`."""
        return cls(**engine_fields(fields, where))


def engine_fields(fields: Mapping[str, Any], where: str = "engine options") -> dict[str, Any]:
    """Stored engine options as the current engine reads them: added options take the values of
    :data:`ADDED_FIELDS` where absent, removed ones (:data:`REMOVED_FIELDS`) are dropped where they
    hold the value the engine still implements; any other value of a removed option is an
    :class:`InputError` naming it (``where``: what holds the options, for the message)."""
    out = {**ADDED_FIELDS, **fields}
    for name, kept in REMOVED_FIELDS.items():
        if name not in out:
            continue
        value = out.pop(name)
        if value != kept:
            raise InputError(
                f"{where} use engine option {name}={value!r}, which chamlab no longer has "
                f"(measured and not adopted, see docs/benchmarks.md; only {name}={kept!r} remains)",
                hint="start a new search (another --out DIR) or use the chamlab version that made it",
            )
    return out
