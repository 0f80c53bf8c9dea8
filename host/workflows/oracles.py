"""Choosing a search's accuracy oracle: the one place ``search`` (and ``adapt``) turn options into one.

``table``: the space's own table (macro-cifar10's shipped accuracies, a table space's ``accuracy``
column). ``train``: :class:`chamlab.chamnet.training.TrainingOracle`, training each queried arch on
``--data`` with the proxy schedule (``--schedule``), in worker processes or Ray tasks.

Accuracy dtype (``--accuracy fp32|int8``, default the run's ``--dtype``): which accuracy the search
optimises. The training oracle measures both (int8: quantized after training, see docs/int8.md);
a table oracle holds fp32 accuracy only, so it always answers fp32 (its result says so) and an
explicit ``--accuracy int8`` with it is an :class:`InputError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chamlab.core.errors import InputError
from chamlab.core.registry import Registry

if TYPE_CHECKING:
    from chamlab.chamnet.search.problem import Oracle
    from chamlab.chamnet.spaces.base import Arch
    from chamlab.chamnet.training import TrainRecord


@dataclasses.dataclass(frozen=True)
class OracleOptions:
    """What ``choose_oracle`` was given besides the space and the kind (``accuracy``: resolved, or
    None for the oracle's own default)."""

    data: str | Path | None = None
    executor: str | None = None
    address: str | None = None
    workers: int | None = None
    schedule: str | None = None
    on_result: Callable[[Arch, TrainRecord], None] | None = None
    accuracy: str | None = None
    dtype: str = "fp32"
    quant_recipe: str | None = None


#: oracle kind (``--oracle``) -> its factory (space, options) -> Oracle
ORACLES: Registry[Callable[[Any, OracleOptions], Oracle]] = Registry("oracle")


def choose_oracle(
    space: Any,
    kind: str = "table",
    *,
    data: str | Path | None = None,
    executor: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    schedule: str | None = None,
    on_result: Callable[[Arch, TrainRecord], None] | None = None,
    accuracy: str | None = None,
    dtype: str = "fp32",
    quant_recipe: str | None = None,
) -> Oracle:
    """The accuracy oracle ``kind`` (a name in :data:`ORACLES`) for ``space`` (bad combinations of
    options are :class:`InputError`).

    ``accuracy``: the accuracy dtype to optimise (``--accuracy``); None: ``dtype`` for a training
    oracle, fp32 for a table oracle (the only one it has). ``quant_recipe``: the recipe of a
    training oracle's int8 accuracy (default: the default recipe).

    A ``train`` oracle holds worker processes (or a Ray cluster): close it (``oracle.close()``, or use
    it as a context manager) when the search is over.
    """
    from chamlab.chamnet.search.problem import ACCURACY_DTYPES

    factory = ORACLES.get(kind)
    if accuracy is not None and accuracy not in ACCURACY_DTYPES:
        raise InputError(f"--accuracy {accuracy!r}: choose one of {', '.join(ACCURACY_DTYPES)}")
    opts = OracleOptions(data, executor, address, workers, schedule, on_result, accuracy, dtype, quant_recipe)
    return factory(space, opts)


@ORACLES.register("table")
def _table_oracle(space: Any, o: OracleOptions) -> Oracle:
    """The space's own accuracy table (fp32 only)."""
    if o.accuracy == "int8":
        raise InputError(
            "--accuracy int8: the table oracle holds fp32 accuracy only (no int8 accuracy was measured)",
            hint="measure int8 accuracy with --oracle train --data DIR|digits, or leave --accuracy out "
            "to optimise the table's fp32 accuracy",
        )
    given = [
        name
        for name, v in (
            ("--data", o.data),
            ("--executor", o.executor),
            ("--address", o.address),
            ("--workers", o.workers),
            ("--schedule", o.schedule),
        )
        if v is not None
    ]
    if given:
        raise InputError(f"{', '.join(given)} apply to --oracle train only")
    from chamlab.chamnet.search import oracle_for

    return oracle_for(space)


@ORACLES.register("train")
def _training_oracle(space: Any, o: OracleOptions) -> Oracle:
    """Train each queried arch on ``--data`` (worker processes or a Ray cluster)."""
    if o.data is None:
        raise InputError(
            "--oracle train needs --data: `digits`, an ImageFolder directory, or a directory of IDX files "
            "such as /usr/share/datasets/fashion-mnist"
        )
    from chamlab.chamnet.training import Schedule, TrainingOracle

    return TrainingOracle(
        space,
        o.data,
        schedule=Schedule.parse(o.schedule),
        executor=o.executor or "process",
        workers=o.workers,
        address=o.address,
        on_result=o.on_result,
        accuracy_dtype=o.accuracy or o.dtype,
        quant_recipe=o.quant_recipe,
    )


def fit_space(space: Any, data: str | Path | None) -> Any:
    """``space`` fitted to the dataset ``data`` (``--fit``): its input size and class count follow the
    data's image side and classes (:meth:`~chamlab.chamnet.spaces.base.SearchSpace.fit`). Bad requests
    (no data, a table space, a space already given parameters, a space that cannot fit) are
    :class:`InputError`; a bad dataset is the dataset's error."""
    from chamlab.chamnet.spaces.base import SearchSpace, SpaceParamError
    from chamlab.chamnet.training.data import fit_shape

    name = getattr(space, "name", space)
    if data is None:
        raise InputError(
            f"--fit needs --data: the dataset whose image size and classes {name} should follow",
            hint="e.g. --oracle train --data /usr/share/datasets/fashion-mnist --fit",
        )
    if not isinstance(space, SearchSpace):
        raise SpaceParamError(f"--fit: {name} is a table space; it has no input size or classes to fit")
    if space.space_params():
        raise SpaceParamError(
            f"--fit: --space {name} already sets its parameters",
            hint=f"give --space {space.base_name} with --fit, or drop --fit",
        )
    side, classes = fit_shape(data)
    return space.fit(side, classes)


def oracle_identity(oracle: Oracle) -> dict[str, Any] | None:
    """What a run must store to resume with the same oracle (None for table oracles)."""
    describe = getattr(oracle, "describe", None)
    return describe() if callable(describe) else None


def train_label(record: TrainRecord) -> str:
    """A training oracle's answer for one arch as a progress line: arch, accuracy, seconds or cached."""
    how = "cached" if record.cached else f"{record.train_seconds:.0f} s"
    return f"{record.arch} {record.accuracy:.1f}% ({how})"


def close_oracle(oracle: Oracle) -> None:
    close = getattr(oracle, "close", None)
    if callable(close):
        close()
