"""The LUT latency predictor: sums, repeats, the invocation-overhead correction, missing entries."""

from __future__ import annotations

import pytest

from chamlab.chamnet.predictors.latency import LutLatencyPredictor
from chamlab.core.errors import MissingLutEntriesError
from chamlab.operators import (
    INVOCATION_PROBE,
    ConvBNAct,
    InvertedResidual,
    PoolLinear,
    QuantEdge,
    boundary_probes,
)

A = ConvBNAct(3, 8, 3, 2, 16, 16)
B = InvertedResidual(8, 8, 3, 1, 2, 8, 8)
C = PoolLinear(8, 10, 8, 8)
P50 = {A.key: 1.0, B.key: 0.5, C.key: 0.25, INVOCATION_PROBE.key: 0.05}


def test_raw_sum_counts_every_occurrence() -> None:
    pred = LutLatencyPredictor(P50, correct_overhead=False).predict([A, B, B, B, C])
    assert pred.latency_ms == pred.lut_sum_ms == pytest.approx(1.0 + 3 * 0.5 + 0.25)
    assert pred.invocation_overhead_ms is None
    assert [(c.op, c.count, c.total_ms) for c in pred.ops] == [(A, 1, 1.0), (B, 3, 1.5), (C, 1, 0.25)]


def test_overhead_correction_subtracts_n_minus_one_invocations() -> None:
    pred = LutLatencyPredictor(P50).predict([A, B, B, B, C])
    assert pred.invocation_overhead_ms == 0.05
    assert pred.latency_ms == pytest.approx(2.75 - 4 * 0.05)
    single = LutLatencyPredictor(P50).predict([C])
    assert single.latency_ms == pytest.approx(0.25)  # one op pays its one invocation


def test_correction_never_goes_below_one_invocation() -> None:
    tiny = {A.key: 0.01, INVOCATION_PROBE.key: 0.05}
    pred = LutLatencyPredictor(tiny).predict([A] * 10)
    assert pred.latency_ms == pytest.approx(0.05)


def test_without_the_probe_the_prediction_is_the_raw_sum() -> None:
    no_probe = {k: v for k, v in P50.items() if k != INVOCATION_PROBE.key}
    pred = LutLatencyPredictor(no_probe).predict([A, C])
    assert pred.invocation_overhead_ms is None and pred.latency_ms == pytest.approx(1.25)


def test_missing_entries_are_listed_never_zero() -> None:
    predictor = LutLatencyPredictor({A.key: 1.0}, what="LUT x.parquet")
    assert predictor.missing([A, B, B, C]) == [B, C]
    with pytest.raises(
        MissingLutEntriesError, match=r"LUT x\.parquet has no entry for 2 distinct op"
    ) as info:
        predictor.predict([A, B, B, C])
    assert info.value.missing == (B.key, C.key)


def test_int8_subtracts_each_boundary_quantize_dequantize_pair() -> None:
    # boundaries of [A, B, B, C]: A's output (8x8x8), B's output twice (8x8x8): one distinct shape
    edge = QuantEdge(8, 8, 8)
    assert [p.key for p in boundary_probes([A, B, B, C])] == [edge.key] * 3
    p50 = {**P50, edge.key: 0.07}  # one invocation (0.05) plus the pair (0.02)
    pred = LutLatencyPredictor(p50, quant_edges=True).predict([A, B, B, C])
    assert pred.quant_edge_ms == pytest.approx(3 * 0.02)
    assert pred.latency_ms == pytest.approx(2.25 - 3 * 0.05 - 3 * 0.02)
    raw = LutLatencyPredictor(p50, quant_edges=True, correct_overhead=False).predict([A, B, B, C])
    assert raw.quant_edge_ms is None and raw.latency_ms == pytest.approx(2.25)


def test_int8_missing_boundary_probe_is_a_missing_entry() -> None:
    predictor = LutLatencyPredictor(P50, quant_edges=True)
    assert predictor.missing([A, B]) == [QuantEdge(8, 8, 8)]
    with pytest.raises(MissingLutEntriesError, match="quant_edge:cin=8,in_h=8,in_w=8"):
        predictor.predict([A, B])
    assert LutLatencyPredictor(P50).predict([A, B]).quant_edge_ms is None  # fp32: no probes needed
