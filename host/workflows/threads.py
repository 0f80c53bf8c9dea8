"""Several runtime thread counts searched with the arch: ``--threads 1,2,4`` of ``adapt`` and ``search``.

The thread count changes a program's latency (on phones by up to 20x), never what it computes: an
arch's accuracy is the same at every thread count. So a joint search of (arch, threads) pairs is one
accuracy search (one BO loop, one accuracy GP) over the archs, with a latency per thread count:

* each thread count has its own LUT rows (measurement set) and calibration, so its own predicted
  latency, and in ``adapt`` its own safety margin (search limit);
* an arch is feasible when it is predicted under the limit at *some* thread count: the BO loop's cost
  is :class:`BestThreads`, the lowest over the thread counts of ``predicted latency / search limit``
  (``search``: the lowest predicted latency, its limit the limit itself);
* the winner is the most accurate feasible pair; of the thread counts at which that arch is feasible,
  the one with the most headroom (lowest predicted latency relative to its search limit: the
  measurement most likely to meet the limit). Ties of accuracy between different archs go to the
  same headroom rule.

This module holds what both commands share: the parsing and checking of a thread-count list and the
joint cost. ``adapt``'s steps are in :mod:`chamlab.host.workflows.adapt_threads`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chamlab.chamnet.spaces.base import Arch
from chamlab.core.errors import InputError

#: the most runtime threads a run may ask for (as :func:`~chamlab.host.measurement.pipeline.resolve_run`)
MAX_THREADS = 256


def parse_threads(text: str | None, flag: str = "--threads") -> tuple[int, ...] | None:
    """``"1,2,4"`` -> ``(1, 2, 4)`` (None: not given). Each an integer from 1 to :data:`MAX_THREADS`,
    each once; anything else is an :class:`InputError` naming the value."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    counts: list[int] = []
    for part in parts:
        try:
            counts.append(int(part))
        except ValueError:
            raise InputError(
                f"{flag} {text!r}: {part!r} is not a thread count; give integers from 1 to {MAX_THREADS}, "
                "comma-separated (e.g. 1,2,4)"
            ) from None
    return check_threads(counts, flag)


def check_threads(counts: Sequence[Any], flag: str = "--threads") -> tuple[int, ...]:
    """``counts`` as a tuple when each is an integer from 1 to :data:`MAX_THREADS` and none repeats."""
    shown = ",".join(str(c) for c in counts)
    if not counts:
        raise InputError(f"{flag} needs at least one thread count (e.g. 1,2,4)")
    for c in counts:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_THREADS:
            raise InputError(f"{flag} {shown}: each thread count must be an integer from 1 to {MAX_THREADS}")
    twice = sorted({c for c in counts if list(counts).count(c) > 1})
    if twice:
        raise InputError(
            f"{flag} {shown} names {', '.join(map(str, twice))} more than once: give each thread count once"
        )
    return tuple(int(c) for c in counts)


def cost_name(threads: int, quantity: str = "latency_ms") -> str:
    """The history column of one thread count's prediction: ``latency_ms@2``."""
    return f"{quantity}@{threads}"


class BestThreads:
    """``arch -> min over thread counts t of predict_t(arch) / limit_t``: below 1 (or, with every limit
    1, below the limit) when the arch meets its limit at some thread count. :meth:`threads_of` says
    at which (the lowest ratio; the first listed on a tie), :meth:`latency` its prediction there."""

    def __init__(
        self, predict: Mapping[int, Callable[[Arch], float]], limits: Mapping[int, float] | None = None
    ) -> None:
        self.predict = dict(predict)
        self.limits = {t: float((limits or {}).get(t, 1.0)) for t in self.predict}

    def ratio(self, threads: int, arch: Arch) -> float:
        return self.predict[threads](arch) / self.limits[threads]

    def threads_of(self, arch: Arch) -> int:
        return min(self.predict, key=lambda t: (self.ratio(t, arch), list(self.predict).index(t)))

    def __call__(self, arch: Arch) -> float:
        return self.ratio(self.threads_of(arch), arch)

    def latency(self, arch: Arch) -> float:
        """The arch's prediction at :meth:`threads_of`."""
        return self.predict[self.threads_of(arch)](arch)

    def costs(self, quantity: str = "latency_ms") -> dict[str, Callable[[Arch], float]]:
        """Each thread count's prediction under its history column name (:func:`cost_name`)."""
        return {cost_name(t, quantity): f for t, f in self.predict.items()}


__all__ = ["MAX_THREADS", "BestThreads", "check_threads", "cost_name", "parse_threads"]


def check_thread_options(threads: Sequence[int], energy_mj: float | None) -> None:
    """What several thread counts cannot be combined with (exit 2 before any work)."""
    counts = check_threads(list(threads))
    if len(counts) > 1 and energy_mj is not None:
        raise InputError(
            f"--energy with several --threads ({','.join(map(str, counts))}) is not supported yet: an energy "
            "limit is searched at one thread count",
            hint="run adapt once per thread count with --energy, or drop --energy",
        )
