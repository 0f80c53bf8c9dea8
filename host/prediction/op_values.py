"""The op-level model's use on LUT values: fitted once per distinct set of rows (cached), and op values
shrunk towards it (what a calibration with an ``op_noise`` record sums: ``calibrate`` fits it, every
prediction from it applies it). The model itself is :mod:`chamlab.chamnet.predictors.op_model`."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from chamlab.chamnet.predictors.op_model import OpLatencyModel
from chamlab.host.luts.lut import Lut, MeasurementSet
from chamlab.operators import INVOCATION_PROBE, OPS


@functools.lru_cache(maxsize=8)
def _op_model(p50_items: tuple[tuple[str, float], ...]) -> OpLatencyModel:
    return OpLatencyModel({OPS.from_key(k): v for k, v in p50_items if k != INVOCATION_PROBE.key})


def op_model_of(values: Mapping[str, float]) -> OpLatencyModel:
    """The op-level model fitted on ``{op key: value}`` (the invocation probe left out), cached per
    distinct set of rows."""
    return _op_model(tuple(sorted(values.items())))


def op_model(lut: Lut, mset: MeasurementSet, quantity: str = "latency") -> OpLatencyModel:
    """The op-level model fitted on the ops ``mset`` holds (cached per distinct set of rows); with
    ``quantity`` ``energy``, fitted on the ops' energies (mJ) instead of their p50."""
    return op_model_of(lut.p50_by_key(mset) if quantity == "latency" else lut.energy_by_key(mset))


@functools.lru_cache(maxsize=8)
def _shrunk(
    p50_items: tuple[tuple[str, float], ...], weights: tuple[tuple[str, float], ...]
) -> dict[str, float]:
    return _op_model(p50_items).shrunk(dict(weights))


def shrunk_p50(p50_ms: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, float]:
    """``p50_ms`` with each measured op of a kind in ``weights`` moved towards the op-level model
    fitted on these rows (:meth:`~chamlab.chamnet.predictors.op_model.OpLatencyModel.shrunk`); the
    invocation probe and ops of other kinds keep their values. What a calibration with an ``op_noise``
    record sums (``calibrate`` fits it, ``predict`` applies it)."""
    out = dict(p50_ms)
    out.update(_shrunk(tuple(sorted(p50_ms.items())), tuple(sorted(weights.items()))))
    return out
