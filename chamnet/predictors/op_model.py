"""Op-level latency model: predicts an op the LUT lacks from measured ops of the same kind (numpy only).

No LUT holds every op of a large space (chamnet-mbv2 has ~634k distinct inverted-residual ops), so
a prediction for an arbitrary arch fills the missing ops from this model and says how many it
filled (``interpolated_ops``).

Model, one per op type: a non-negative additive cost model

    p50_ms ~= c0 + sum_t c_t * MACs_t + c_w * weights + c_in * input elements + c_out * output elements

(:func:`op_features`; every c >= 0): a fixed cost plus compute plus the bytes each op moves, which is
how a CPU kernel's time adds up (XNNPACK's convolutions are close to linear in MACs at a given
shape class). The MACs come split by kernel where an op runs several (``OpSpec.mac_terms``: an
inverted residual's 1x1 expand, kxk depthwise and 1x1 project), each with its own cost per MAC: a
depthwise MAC is far dearer than a pointwise one, and with one MAC column the model mispriced blocks
whose mix of the two differs from the measured ones. On the chamnet-mbv2 LUT of the 1-thread
fidelity run (fit on the 138 ops of the 10 calibration networks, predict the other 729), the split
took the median absolute op error from 8.6 % to 6.9 % and the held-apart networks predicted with
interpolated ops from 67 % to 89 % within +/-10 % (``bench/op_model_features.py``; at 2 threads
10.8 % -> 9.5 % and 67 % -> 81 %).

It is fitted in *relative* least squares (each op's residual divided by its p50, so a
0.01 ms op weighs as much as a 2 ms one) with a small ridge (:data:`RIDGE`, on standardised columns),
and non-negativity by an active set (a column whose coefficient comes out negative is dropped and
the rest refitted). A kind with fewer than :data:`MIN_ROWS` measured ops uses the nearest measured op
(in log-feature space) scaled by the MAC ratio; a kind with none cannot be predicted (the caller
reports the missing ops, never a silent zero). A log-linear (power-law) regression on the same
counts and the op's arguments was tried first: 10-11 % median error on held-out ops of a synthetic
additive law, against under 1 % for this model (tests/chamnet/test_op_model.py).

:meth:`OpLatencyModel.leave_one_out` measures the model: each measured op predicted by the model fitted
without it (``bench/latency_fidelity.py`` reports it beside the network-level figures).

**Shrinkage** (:meth:`OpLatencyModel.shrunk`, :func:`shrinkage_weights`, :func:`session_noise`): a
measured op is itself a noisy estimate where op timings move between measurement sessions (on this
2-vCPU VM at 2 threads, the robust SD of one op's change between sessions hours apart is 16-31 %
for all but the smallest ops, against 2-3 % at 1 thread: ``bench/op_reproducibility.py``).
``chamlab calibrate`` re-measures a few ops to estimate that session noise and combines each
measured op with the model's prediction of it, weighted by their precisions (empirical Bayes in
log space); where ops reproduce, the weights are near 0 and the LUT is used as measured.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from chamlab.operators import OpSpec

RIDGE = 1e-4
MIN_ROWS = 4
CV_FOLDS = 10


def op_features(op: OpSpec) -> np.ndarray:
    """The model's columns for ``op``: 1, its MAC terms, weight elements, input and output elements."""
    return np.array(
        [
            1.0,
            *(float(m) for m in op.mac_terms()),
            float(op.params),
            float(math.prod(op.input_shape)),
            float(math.prod(op.output_shape)),
        ]
    )


def _fit_nonneg(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xr = x / y[:, None]  # relative residuals: (x b - y) / y = xr b - 1
    scale = np.sqrt(np.mean(xr**2, axis=0))
    scale[scale == 0] = 1.0
    z = xr / scale
    active = list(range(x.shape[1]))
    b = np.zeros(0)
    for _ in range(x.shape[1]):
        za = z[:, active]
        b = np.linalg.solve(za.T @ za + RIDGE * len(y) * np.eye(len(active)), za.T @ np.ones(len(y)))
        if np.all(b >= 0):
            break
        active = [a for a, v in zip(active, b, strict=True) if v >= 0]
    beta = np.zeros(x.shape[1])
    beta[active] = b / scale[active]
    return beta


def single_mac_features(op: OpSpec) -> np.ndarray:
    """The columns before MACs were split by kernel (one MAC column): kept to measure the split."""
    return np.array([1.0, float(op.macs), *op_features(op)[-3:]])


Features = Callable[[OpSpec], np.ndarray]


class _KindModel:
    def __init__(
        self, ops: Sequence[OpSpec], p50_ms: Sequence[float], features: Features = op_features
    ) -> None:
        self.features = features
        self.x = np.array([features(o) for o in ops])
        self.y = np.asarray(p50_ms, dtype=float)
        self.logx = np.log1p(self.x[:, 1:])
        self.macs = np.array([float(o.macs) for o in ops])
        self.beta = _fit_nonneg(self.x, self.y) if len(ops) >= MIN_ROWS else None

    def predict(self, op: OpSpec) -> float:
        f = self.features(op)
        if self.beta is not None and float(f @ self.beta) > 0:
            return float(f @ self.beta)
        i = int(np.argmin(np.linalg.norm(self.logx - np.log1p(f[1:]), axis=1)))
        return float(self.y[i] * (op.macs + 1.0) / (self.macs[i] + 1.0))

    def cv_log_residuals(self, folds: int = CV_FOLDS) -> np.ndarray:
        """``log(p50 / predicted)`` of every row, each predicted by the model fitted without its fold
        (rows dealt to ``folds`` folds in turn): the model's error on ops it did not see."""
        n = len(self.y)
        fold = np.arange(n) % folds
        out = np.empty(n)
        for f in range(min(folds, n)):
            test, train = fold == f, fold != f
            pred = np.full(int(test.sum()), np.nan)
            if train.sum() >= MIN_ROWS:
                pred = self.x[test] @ _fit_nonneg(self.x[train], self.y[train])
            for j, i in enumerate(np.flatnonzero(test)):
                if not pred[j] > 0:  # as predict: the nearest op seen, scaled by the MAC ratio
                    d = np.linalg.norm(self.logx[train] - self.logx[i], axis=1)
                    k = np.flatnonzero(train)[int(np.argmin(d))]
                    pred[j] = self.y[k] * (self.macs[i] + 1.0) / (self.macs[k] + 1.0)
            out[test] = np.log(self.y[test] / pred)
        return out


class OpLatencyModel:
    """Per-kind regressors fitted on measured ops: ``{op: p50_ms}`` in, ``predict(op)`` out;
    ``features`` gives an op's columns (default :func:`op_features`)."""

    def __init__(self, measured: Mapping[OpSpec, float], features: Features = op_features) -> None:
        self.features = features
        by_kind: dict[str, list[tuple[OpSpec, float]]] = defaultdict(list)
        for op, p50 in measured.items():
            if p50 > 0 and math.isfinite(p50):
                by_kind[op.op_type].append((op, p50))
        self._rows = dict(by_kind)
        self._models = {
            k: _KindModel([o for o, _ in v], [p for _, p in v], features) for k, v in by_kind.items()
        }

    def can_predict(self, op: OpSpec) -> bool:
        return op.op_type in self._models and len(op.params_dict()) == len(
            self._rows[op.op_type][0][0].params_dict()
        )

    def predict(self, op: OpSpec) -> float:
        """Predicted p50 (ms) of ``op``; ``KeyError`` when no op of its kind was measured."""
        if op.op_type not in self._models:
            raise KeyError(op.op_type)
        return self._models[op.op_type].predict(op)

    def leave_one_out(self) -> list[tuple[str, float]]:
        """``(op key, % error)`` of each measured op predicted without it (kinds with >= 2 ops)."""
        out = []
        for rows in self._rows.values():
            if len(rows) < 2:
                continue
            for i, (op, p50) in enumerate(rows):
                rest = [r for j, r in enumerate(rows) if j != i]
                m = _KindModel([o for o, _ in rest], [p for _, p in rest], self.features)
                out.append((op.key, 100.0 * (m.predict(op) - p50) / p50))
        return out

    def misfit_log_var(self) -> dict[str, float]:
        """Per kind with a fitted regression, the robust variance (MAD squared) of its ops'
        cross-validated ``log(p50 / predicted)`` (:data:`CV_FOLDS` folds: in-sample residuals would
        flatter a kind of a dozen ops fitted with seven columns): how far measured ops lie from the
        model, its misfit plus the ops' own measurement noise. Kinds too small for a regression are
        left out (their ops are never shrunk)."""
        return {
            kind: robust_var(m.cv_log_residuals()) for kind, m in self._models.items() if m.beta is not None
        }

    def shrunk(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Every measured op's p50 moved towards the model in log space, ``exp((1 - w) log p50 +
        w log predicted)``, with ``w`` the weight of its kind (:func:`shrinkage_weights`); ops of a
        kind without a weight keep their p50. Keyed by op key."""
        out = {}
        for kind, rows in self._rows.items():
            w = float(weights.get(kind, 0.0))
            m = self._models[kind]
            for op, p50 in rows:
                if w > 0.0:
                    p50 = math.exp((1.0 - w) * math.log(p50) + w * math.log(m.predict(op)))
                out[op.key] = p50
        return out


def robust_var(values: Sequence[float] | np.ndarray) -> float:
    """The squared normalised median absolute deviation: a variance that one wild value cannot inflate."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return 0.0
    return float((1.4826 * np.median(np.abs(v - np.median(v)))) ** 2)


#: the misfit variance never drops below this (log units): a perfect fit on a handful of ops is no
#: reason to replace measurements by the model entirely
MIN_MISFIT_LOG_VAR = 1e-4


def session_noise(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """How much op timings moved between two measurement sessions of the same ops (p50 by op key).

    ``shift_pct``: the median change (the whole device faster or slower: a calibration absorbs it);
    ``median_abs_pct``: the typical change of one op; ``log_var``: the robust variance of one
    session's log p50 about the op's value, half that of the log ratios (each session adds its own
    noise). Ops in only one of the two are ignored."""
    keys = sorted(k for k in before if k in after and before[k] > 0 and after[k] > 0)
    if not keys:
        raise ValueError("no op was measured in both sessions")
    r = np.array([math.log(after[k] / before[k]) for k in keys])
    return {
        "n_ops": len(keys),
        "shift_pct": 100.0 * math.expm1(float(np.median(r))),
        "median_abs_pct": 100.0 * math.expm1(float(np.median(np.abs(r - np.median(r))))),
        "log_var": robust_var(r) / 2.0,
    }


def shrinkage_weights(misfit_log_var: Mapping[str, float], noise_log_var: float) -> dict[str, float]:
    """Per kind, the weight of the op model against a measured op (empirical Bayes in log space).

    A measured log p50 is the op's lasting cost plus session noise of variance ``noise_log_var``;
    the model's scatter about the measured ops (``misfit_log_var``) is its misfit plus that same
    noise. The weight ``noise / (noise + misfit)`` (misfit = scatter - noise, at least
    :data:`MIN_MISFIT_LOG_VAR`) is the precision-weighted combination of the two estimates: close
    to 0 where ops reproduce far better than the model fits (a measured op is kept), towards 1
    where they vary between sessions as much as the model misses."""
    noise = max(float(noise_log_var), 0.0)
    out = {}
    for kind, scatter in misfit_log_var.items():
        misfit = max(float(scatter) - noise, MIN_MISFIT_LOG_VAR)
        out[kind] = noise / (noise + misfit)
    return out
