"""Archs as GP features (:class:`Encoder`), the candidate set of a step (:class:`Candidates`) and
equivalence keys (:func:`equivalence_key_of`: which archs build the same network)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from chamlab.chamnet.spaces.base import Arch, Dimension
from chamlab.core.errors import InputError

#: how an ordinal dimension of more than 2 values is encoded (the engine uses "index"; the others
#: remain for analyses such as bench/search_trace.py)
ORDINAL_ENCODINGS = ("index", "one-hot", "index+one-hot")


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

    def groups(self) -> tuple[tuple[int, ...], ...]:
        """The column indices of each categorical dimension's one-hot columns (dims of more than 2
        values; a 2-valued one is a single index column), in dimension order."""
        out: list[tuple[int, ...]] = []
        col = 0
        for d, (index, onehot) in zip(self.dims, self._parts, strict=True):
            col += int(index)
            if onehot:
                if d.categorical:
                    out.append(tuple(range(col, col + len(d.values))))
                col += len(d.values)
        return tuple(out)

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


class Features:
    """The GP's features of archs: the :class:`Encoder`'s columns and, given a cost scale
    (:meth:`with_cost`), the log primary cost as one more column (``EngineConfig.cost_feature``)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self._cost: tuple[str, float, float, Callable[[Sequence[Arch]], np.ndarray]] | None = None

    def with_cost(
        self, name: str, seen: np.ndarray, top: float, cost_of: Callable[[Sequence[Arch]], np.ndarray]
    ) -> Features:
        """These features plus ``log(cost)`` mapped onto [0, 1]: 0 at the cheapest positive cost
        ``seen`` (the first candidates': a resumed search, which regenerates them, gets the same
        scale; a cheaper arch, met in a later pool, maps to 0 too), 1 at ``top``: the costliest
        feasible arch of an enumerated space, the limit of a pooled one (every arch a later pool
        holds is within it; an infinite limit: the costliest seen). ``cost_of(archs)``: their
        primary cost."""
        positive = np.asarray(seen, dtype=float)
        positive = positive[positive > 0]
        lo = float(np.log(positive.min())) if len(positive) else 0.0
        if not (np.isfinite(top) and top > 0):
            top = float(positive.max()) if len(positive) else 1.0
        hi = max(float(np.log(top)), lo)
        out = Features(self.encoder)
        out._cost = (name, lo, (hi - lo) or 1.0, cost_of)
        return out

    def names(self) -> list[str]:
        return self.encoder.names() + ([f"log_{self._cost[0]}"] if self._cost else [])

    def groups(self) -> tuple[tuple[int, ...], ...]:
        return self.encoder.groups()  # the cost column comes last: the groups' indices hold

    def rows(self, archs: Sequence[Arch], cost: np.ndarray | None = None) -> np.ndarray:
        """The feature rows of ``archs`` whose primary costs are ``cost`` (computed when None and
        needed)."""
        X = self.encoder(archs)
        if self._cost is None:
            return X
        _, lo, span, cost_of = self._cost
        c = np.asarray(cost_of(archs) if cost is None else cost, dtype=float)
        # a cost below the smallest positive one seen (0 included) maps to 0, not towards -inf
        logc = np.log(np.maximum(c, np.exp(lo)))
        return np.column_stack([X, (logc - lo) / span])

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.rows(archs)


@dataclasses.dataclass
class Candidates:
    """Feasible archs, their features and their primary cost (one step's choice)."""

    archs: list[Arch]
    X: np.ndarray
    cost: np.ndarray  # primary cost


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
