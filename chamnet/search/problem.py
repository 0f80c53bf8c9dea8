"""What a search works on: a space, an accuracy oracle, cost functions and their limits.

``Problem`` ties them together; the engine and the baselines only see this. A *space* is anything
with ``dimensions`` (:class:`~chamlab.chamnet.spaces.base.Dimension`, ordinal or categorical),
``size``, ``enumerate()``, ``sample(rng, n)``, ``validate(arch)`` and ``format(arch)``: every
:class:`~chamlab.chamnet.spaces.base.SearchSpace` and :class:`~chamlab.chamnet.spaces.table.TableSpace`.

An *oracle* maps a batch of archs to accuracies (a batch lets a parallel oracle, e.g. training in part 2,
work on several at once); every call is counted as one query per arch. Oracles here:

* :class:`TableOracle`: a look-up in a table (the shipped macro-cifar10 accuracies, a user's table);
* :func:`oracle_for`: the oracle a space brings, or a clear error when it has none yet.

Accuracy dtype: an oracle may say which accuracy it answers with (``accuracy_dtype``, ``"fp32"`` or
``"int8"``; :func:`accuracy_dtype` reads it, ``"fp32"`` when absent) and, optionally, give every
accuracy it knows of an arch it answered for (``accuracies(arch) -> {"fp32": ..., "int8": ...}``,
:func:`accuracies_of`): the training oracle measures both. Table oracles hold fp32 accuracy only
(``accuracy_note`` says so in a run's result).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from chamlab.chamnet.spaces.base import Arch, Dimension
from chamlab.core.errors import ArchError, InputError


@runtime_checkable
class Space(Protocol):
    """The part of a search space the engine uses."""

    name: str

    @property
    def dimensions(self) -> tuple[Dimension, ...]: ...

    @property
    def size(self) -> int: ...

    def enumerate(self) -> Iterator[Arch]: ...

    def sample(self, rng: np.random.Generator, n: int) -> list[Arch]: ...

    def validate(self, arch: Sequence[Any]) -> Arch: ...

    def format(self, arch: Arch) -> str: ...


class Oracle(Protocol):
    name: str

    def __call__(self, archs: Sequence[Arch]) -> list[float]: ...


ACCURACY_DTYPES = ("fp32", "int8")
TABLE_ACCURACY_NOTE = (
    "the table oracle holds fp32 accuracy only: the search optimised fp32 accuracy whatever the dtype "
    "(train with --oracle train to measure and optimise int8 accuracy)"
)


class TableOracle:
    """Accuracy by look-up: ``lookup(arch) -> float``; unknown archs are :class:`ArchError`.
    A table holds fp32 accuracy only."""

    accuracy_dtype = "fp32"
    accuracy_note = TABLE_ACCURACY_NOTE

    def __init__(self, name: str, lookup: Callable[[Arch], float]) -> None:
        self.name = name
        self._lookup = lookup

    def __call__(self, archs: Sequence[Arch]) -> list[float]:
        return [float(self._lookup(a)) for a in archs]

    def accuracies(self, arch: Arch) -> dict[str, float]:
        return {"fp32": float(self._lookup(arch))}


def accuracy_dtype(oracle: Any) -> str:
    """Which accuracy ``oracle`` answers with (``"fp32"`` unless it says otherwise)."""
    return str(getattr(oracle, "accuracy_dtype", "fp32"))


def accuracies_of(oracle: Any, arch: Arch) -> dict[str, float]:
    """Every accuracy ``oracle`` knows of ``arch`` by dtype (``{}`` when it cannot say)."""
    fn = getattr(oracle, "accuracies", None)
    return dict(fn(arch)) if callable(fn) else {}


class NoOracleError(InputError):
    """The space has no accuracy oracle (yet)."""


def oracle_for(space: Any) -> Oracle:
    """The accuracy oracle of a space: a table space's ``accuracy`` column, macro-cifar10's shipped
    table (mean accuracy over its 3 seeds); other spaces have none of their own (train them with
    :class:`chamlab.chamnet.training.TrainingOracle`)."""
    from chamlab.chamnet.spaces.table import TableSpace

    if isinstance(space, TableSpace):
        return TableOracle(f"{space.name} accuracy column", space.accuracy_of)
    if space.name == "macro-cifar10":
        from chamlab.chamnet.spaces.macro_cifar10 import accuracy_table

        acc = dict(zip(accuracy_table()["arch"], accuracy_table()["mean_acc"].astype(float), strict=True))

        def lookup(arch: Arch) -> float:
            key = space.format(arch)
            if key not in acc:
                raise ArchError(f"macro-cifar10 accuracy table has no arch {key}")
            return acc[key]

        return TableOracle("macro-cifar10 accuracy table (mean_acc)", lookup)
    raise NoOracleError(
        f"search space {space.name!r} has no accuracy oracle of its own: its networks have to be trained "
        "(chamnet.training.TrainingOracle)",
        hint="train them with --oracle train --data PATH, or search macro-cifar10, or your own benchmark "
        "with --space table:PATH",
    )


@dataclasses.dataclass(frozen=True)
class Problem:
    """Maximise ``oracle(arch)`` subject to ``costs[name](arch) <= limits[name]`` for every limit.

    ``costs``: name -> function of one arch (e.g. ``latency_ms`` from a LUT, ``macs``); the first
    limit's cost is the *primary* one (the engine's cost feature and the Pareto plot use it).
    """

    space: Space
    oracle: Oracle
    costs: Mapping[str, Callable[[Arch], float]]
    limits: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.limits:
            raise InputError("a search needs at least one cost limit (e.g. --latency MS)")
        for name, limit in self.limits.items():
            if name not in self.costs:
                raise InputError(f"no cost model for the limit on {name!r} (have: {', '.join(self.costs)})")
            if not np.isfinite(limit) or limit <= 0:
                raise InputError(f"the limit on {name} must be a positive number, got {limit}")

    @property
    def primary(self) -> str:
        return next(iter(self.limits))

    def cost_matrix(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        return {n: np.array([float(self.costs[n](a)) for a in archs]) for n in self.costs}

    def feasible(self, costs: Mapping[str, np.ndarray]) -> np.ndarray:
        ok = np.ones(len(next(iter(costs.values()))), dtype=bool)
        for n, limit in self.limits.items():
            ok &= costs[n] <= limit
        return ok


def table_problem(space: Any, limits: Mapping[str, float]) -> Problem:
    """A table space constrained on its own cost columns (``latency_ms``, ``energy_mj``)."""
    costs = {c: (lambda a, c=c: space.cost_of(a, c)) for c in limits}
    for c in limits:
        if c not in space.costs:
            space.cost_of(space.rows[0], c)  # raises naming the missing column
    return Problem(space, oracle_for(space), costs, dict(limits))
