"""The output warp: a monotone increasing map of accuracies to the GP's outputs (:class:`OutputWarp`).

:data:`OUTPUT_WARPS` holds the fitting function of each kind (``chamlab search --output-warp``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from chamlab.core.registry import Registry


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
        """The warp ``kind`` (a name in :data:`OUTPUT_WARPS`) fitted on the accuracies ``y`` (the
        identity for fewer than 3 accuracies or when they are all equal)."""
        fit = OUTPUT_WARPS.get(kind)
        y = np.asarray(y, dtype=float)
        if kind == "none" or len(y) < 3 or float(np.ptp(y)) == 0.0:
            return cls("none")
        return fit(y)

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

    @classmethod
    def from_json(cls, held: Any) -> OutputWarp:
        """The warp :meth:`to_json` wrote (a ``ValueError`` names what does not fit)."""
        if not isinstance(held, dict) or held.get("kind") not in OUTPUT_WARPS:
            raise ValueError(f"not a stored output warp: {held!r}")
        kind = held["kind"]
        if kind == "yeo-johnson":
            return cls(kind, float(held["mean"]), float(held["std"]), float(held["lmbda"]))
        if kind == "copula":
            return cls(kind, knots=([float(v) for v in held["values"]], [float(v) for v in held["scores"]]))
        return cls(kind)


#: output warp name -> its fit on the accuracies seen (at least 3, not all equal)
OUTPUT_WARPS: Registry[Callable[[np.ndarray], OutputWarp]] = Registry("output warp")


@OUTPUT_WARPS.register("none")
def _fit_none(y: np.ndarray) -> OutputWarp:
    return OutputWarp("none")


@OUTPUT_WARPS.register("yeo-johnson")
def _fit_yeo_johnson(y: np.ndarray) -> OutputWarp:
    from scipy.stats import yeojohnson

    mean, std = float(y.mean()), float(y.std())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, lmbda = yeojohnson((y - mean) / std)
    return OutputWarp("yeo-johnson", mean, std, float(np.clip(lmbda, -3.0, 5.0)))


@OUTPUT_WARPS.register("copula")
def _fit_copula(y: np.ndarray) -> OutputWarp:
    from scipy.stats import norm, rankdata

    vals = np.unique(y)
    ranks = rankdata(y)  # ties share their mean rank
    scores = norm.ppf((np.array([ranks[y == v].mean() for v in vals]) - 0.5) / len(y))
    return OutputWarp("copula", knots=(vals.tolist(), scores.tolist()))
