"""Latency predictor: the sum of the operators' LUT entries (p50), as in ChamNet, with an optional
invocation-overhead correction.

Raw prediction (the paper's): ``sum(p50_ms[op.key] for op in space.ops(arch))`` over the LUT rows of
one (device, backend, dtype, threads). Repeated ops count once per occurrence.

Correction (our default, switchable with ``--raw``): every single-op microbenchmark includes the
fixed cost of one program invocation, which a whole network pays only once. The LUT holds that cost
as the p50 of :data:`~chamlab.operators.INVOCATION_PROBE` (``chamlab profile`` always measures
it), and the corrected prediction is ``raw - (n_ops - 1) * overhead``. ``bench/latency_fidelity.py``
reports both, so the effect of the correction is measured, not assumed.

int8 (``quant_edges``): a per-op int8 program also quantizes its input and dequantizes its output,
which a whole int8 network does once; at each of the ``n_ops - 1`` boundaries between consecutive ops
the LUT sum counts one dequantize and one quantize of the boundary tensor that the network never
runs. The LUT holds that pair per shape as the p50 of a :class:`~chamlab.operators.QuantEdge` probe
(itself one invocation), and the corrected prediction also subtracts
``sum over boundaries of (probe p50 - overhead)`` (:attr:`LatencyPrediction.quant_edge_ms`). The
probes are LUT entries like any op: a missing one is reported with the missing ops.

A missing entry is an error listing every missing op (never a silent zero), unless the predictor is
given ``fill`` (an op-level model, :mod:`chamlab.chamnet.predictors.op_model`): then the missing ops
are predicted by it, marked ``interpolated`` and counted in :attr:`LatencyPrediction.interpolated_ops`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chamlab.core.errors import MissingLutEntriesError
from chamlab.operators import INVOCATION_PROBE, OpSpec, boundary_probes


@dataclasses.dataclass(frozen=True)
class OpContribution:
    op: OpSpec
    count: int
    p50_ms: float
    interpolated: bool = False  # predicted by the op-level model, not measured

    @property
    def total_ms(self) -> float:
        return self.count * self.p50_ms


@dataclasses.dataclass(frozen=True)
class LatencyPrediction:
    latency_ms: float  # corrected when invocation_overhead_ms is set, else the raw sum
    lut_sum_ms: float  # the raw sum of the ops' p50
    invocation_overhead_ms: float | None
    ops: tuple[OpContribution, ...]  # in first-occurrence order
    interpolated_ops: int = 0  # distinct ops predicted by the op-level model (not in the LUT)
    calibrated: bool = False  # latency_ms is the calibrated value (host.calibration)
    uncalibrated_ms: float | None = None  # what latency_ms would be without the calibration
    calibration: Mapping[str, Any] | None = None  # the calibration's summary, applied or not
    calibration_note: str | None = None  # why no calibration was applied
    quant_edge_ms: float | None = None  # int8: boundary quantize/dequantize cost subtracted (ms)
    not_delegated_ops: tuple[str, ...] = ()  # int8: ops whose LUT row says delegated = false


class LutLatencyPredictor:
    """Predicts network latency from per-op p50 entries (``op key -> ms``).

    ``correct_overhead``: subtract ``(n_ops - 1)`` invocation overheads when the entries hold the
    :data:`INVOCATION_PROBE`; with ``False`` (or without the probe) the prediction is the raw sum.
    ``quant_edges`` (int8 measurement sets): also subtract the boundary quantize/dequantize pairs
    (module docstring); ignored when ``correct_overhead`` is False.
    """

    def __init__(
        self,
        p50_ms: Mapping[str, float],
        *,
        correct_overhead: bool = True,
        what: str = "the LUT",
        fill: Callable[[OpSpec], float | None] | None = None,
        quant_edges: bool = False,
    ) -> None:
        self._p50 = dict(p50_ms)
        self._what = what
        self._fill = fill
        self.invocation_overhead_ms = self._p50.get(INVOCATION_PROBE.key) if correct_overhead else None
        self.quant_edges = quant_edges and correct_overhead

    def _needed(self, ops: Sequence[OpSpec]) -> list[OpSpec]:
        return [*ops, *boundary_probes(ops)] if self.quant_edges else list(ops)

    def missing(self, ops: Sequence[OpSpec]) -> list[OpSpec]:
        return [op for op in dict.fromkeys(self._needed(ops)) if op.key not in self._p50]

    def predict(self, ops: Sequence[OpSpec]) -> LatencyPrediction:
        missing = self.missing(ops)
        filled: dict[str, float] = {}
        if missing and self._fill is not None:
            for op in missing:
                value = self._fill(op)
                if value is not None:
                    filled[op.key] = value
            missing = [op for op in missing if op.key not in filled]
        if missing:
            raise MissingLutEntriesError(
                f"{self._what} has no entry for {len(missing)} distinct op(s) of this network: "
                + "; ".join(op.key for op in missing[:5])
                + (" ..." if len(missing) > 5 else ""),
                [op.key for op in missing],
            )
        counts = Counter(ops)
        contributions = tuple(
            OpContribution(
                op, counts[op], self._p50[op.key] if op.key in self._p50 else filled[op.key], op.key in filled
            )
            for op in dict.fromkeys(ops)
        )
        raw = sum(c.total_ms for c in contributions)
        overhead = self.invocation_overhead_ms
        edges = None
        if self.quant_edges:
            known = {**self._p50, **filled}
            edges = sum(max(known[p.key] - (overhead or 0.0), 0.0) for p in boundary_probes(ops))
        latency = raw if overhead is None else raw - (len(ops) - 1) * overhead
        latency -= edges or 0.0
        if overhead is not None or edges:
            latency = max(latency, overhead or 0.0)
        return LatencyPrediction(
            latency, raw, overhead, contributions, interpolated_ops=len(filled), quant_edge_ms=edges
        )
