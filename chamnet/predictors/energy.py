"""Energy predictor: the sum of the operators' LUT energies, corrected and calibrated like latency.

Each LUT row measured with a power reader holds ``energy_mj``: the op's energy per execution *above
idle* (the idle draw is measured in the same run and subtracted, :mod:`chamlab.agent.power`). A
network's raw prediction is the sum over its op occurrences; like latency, each single-op measurement
also pays one program invocation, so the corrected prediction subtracts ``(n_ops - 1)`` times the
energy of the :data:`~chamlab.operators.INVOCATION_PROBE` when the LUT holds it. Energy is not purely
additive (static power, DVFS, caches): the host calibrates the sum against whole-network energy
measured on the device (:mod:`chamlab.host.prediction.calibrate`, quantity ``energy``), the same model as
latency on (``lut_sum_mj``, ``n_ops``, ``weight_mib``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chamlab.operators import OpSpec

from .latency import LutLatencyPredictor


@dataclasses.dataclass(frozen=True)
class OpEnergy:
    op: OpSpec
    count: int
    energy_mj: float  # per execution, above idle
    interpolated: bool = False

    @property
    def total_mj(self) -> float:
        return self.count * self.energy_mj


@dataclasses.dataclass(frozen=True)
class EnergyPrediction:
    energy_mj: float  # per inference above idle: corrected (and calibrated when ``calibrated``)
    lut_sum_mj: float  # the raw sum of the ops' energies
    invocation_overhead_mj: float | None
    ops: tuple[OpEnergy, ...]
    readers: tuple[str, ...]  # the power readers that measured the rows
    interpolated_ops: int = 0
    calibrated: bool = False
    uncalibrated_mj: float | None = None
    calibration: Mapping[str, Any] | None = None
    calibration_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "energy_mj": self.energy_mj,
            "lut_sum_mj": self.lut_sum_mj,
            "invocation_overhead_mj": self.invocation_overhead_mj,
            "readers": list(self.readers),
            "interpolated_ops": self.interpolated_ops,
            "calibrated": self.calibrated,
            "uncalibrated_mj": self.uncalibrated_mj,
            "calibration": dict(self.calibration) if self.calibration else None,
            "calibration_note": self.calibration_note,
        }


def predict_energy(
    energy_mj: Mapping[str, float],
    ops: Sequence[OpSpec],
    *,
    readers: Sequence[str] = (),
    correct_overhead: bool = True,
    what: str = "the LUT",
    fill: Callable[[OpSpec], float | None] | None = None,
) -> EnergyPrediction:
    """The LUT energy of ``ops`` (a network's op occurrences); missing ops raise
    :class:`~chamlab.core.errors.MissingLutEntriesError` unless ``fill`` predicts them."""
    sums = LutLatencyPredictor(energy_mj, correct_overhead=correct_overhead, what=what, fill=fill)
    p = sums.predict(ops)  # the same sum and correction, in mJ instead of ms
    return EnergyPrediction(
        energy_mj=p.latency_ms,
        lut_sum_mj=p.lut_sum_ms,
        invocation_overhead_mj=p.invocation_overhead_ms,
        ops=tuple(OpEnergy(c.op, c.count, c.p50_ms, c.interpolated) for c in p.ops),
        readers=tuple(sorted(readers)),
        interpolated_ops=p.interpolated_ops,
    )
