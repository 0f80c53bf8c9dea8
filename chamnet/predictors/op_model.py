"""Op-level latency model: predicts an op the LUT lacks from measured ops of the same kind (numpy only).

No LUT holds every op of a large space (chamnet-mbv2 has ~634k distinct inverted-residual ops), so
a prediction for an arbitrary arch fills the missing ops from this model and says how many it
filled (``interpolated_ops``).

Model, one per op type: ridge regression of ``log(p50_ms)`` on

    1, log(1 + MACs), log(1 + weight elements), log(input elements), log(output elements),
    and log(1 + v) of every integer argument of the op (cin, cout, kernel, stride, expand, ...)

(:func:`op_features`). A roofline-like log-linear form: latency grows as a power of the work (MACs)
and of the bytes moved (weights, activations), with the arguments capturing what the counts miss
(a depthwise kernel's shape, a stride). The ridge strength is :data:`RIDGE` on standardised features,
so kinds with few measured ops stay smooth. A kind with fewer than :data:`MIN_ROWS` measured ops
uses the nearest measured op (in feature space) scaled by the MAC ratio; a kind with none cannot be
predicted (the caller reports the missing ops, never a silent zero).

:meth:`OpLatencyModel.leave_one_out` measures the model: each measured op predicted by the model fitted
without it (``bench/latency_fidelity.py`` reports it beside the network-level figures).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from chamlab.operators import OpSpec

RIDGE = 1e-2
MIN_ROWS = 4


def op_features(op: OpSpec) -> np.ndarray:
    """The model's feature vector of ``op`` (see the module docstring)."""
    ints = [float(v) for v in op.params_dict().values() if isinstance(v, int)]
    in_el = math.prod(op.input_shape)
    out_el = math.prod(op.output_shape)
    return np.array(
        [
            1.0,
            math.log1p(op.macs),
            math.log1p(op.params),
            math.log(max(in_el, 1)),
            math.log(max(out_el, 1)),
            *(math.log1p(v) for v in ints),
        ]
    )


class _KindModel:
    def __init__(self, ops: Sequence[OpSpec], p50_ms: Sequence[float]) -> None:
        self.x = np.array([op_features(o) for o in ops])
        self.y = np.log(np.asarray(p50_ms, dtype=float))
        self.macs = np.array([float(o.macs) for o in ops])
        self.mu = self.x[:, 1:].mean(axis=0)
        sd = self.x[:, 1:].std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)
        self.beta: np.ndarray | None = None
        if len(ops) >= MIN_ROWS:
            z = self._z(self.x)
            a = z.T @ z + RIDGE * len(ops) * np.diag([0.0, *np.ones(z.shape[1] - 1)])
            self.beta = np.linalg.solve(a + 1e-12 * np.eye(z.shape[1]), z.T @ self.y)

    def _z(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(x)), (x[:, 1:] - self.mu) / self.sd])

    def predict(self, op: OpSpec) -> float:
        f = op_features(op)[None, :]
        if self.beta is not None:
            return float(np.exp(self._z(f) @ self.beta)[0])
        d = np.linalg.norm(self._z(self.x)[:, 1:] - self._z(f)[:, 1:], axis=1)
        i = int(np.argmin(d))
        ratio = (op.macs + 1.0) / (self.macs[i] + 1.0)
        return float(np.exp(self.y[i]) * ratio)


class OpLatencyModel:
    """Per-kind regressors fitted on measured ops: ``{op: p50_ms}`` in, ``predict(op)`` out."""

    def __init__(self, measured: Mapping[OpSpec, float]) -> None:
        by_kind: dict[str, list[tuple[OpSpec, float]]] = defaultdict(list)
        for op, p50 in measured.items():
            if p50 > 0 and math.isfinite(p50):
                by_kind[op.op_type].append((op, p50))
        self._rows = dict(by_kind)
        self._models = {k: _KindModel([o for o, _ in v], [p for _, p in v]) for k, v in by_kind.items()}

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
                m = _KindModel([o for o, _ in rest], [p for _, p in rest])
                out.append((op.key, 100.0 * (m.predict(op) - p50) / p50))
        return out
