"""``chamlab measure --space S --arch A``: export one network, measure it on a device, and compare the
measurement with the LUT's prediction (:mod:`chamlab.host.prediction.predict`). The measuring itself is
:func:`~chamlab.host.measurement.networks.measure_networks`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import LutError, MissingLutEntriesError
from chamlab.host.devices.transports.base import Transport
from chamlab.host.measurement.networks import NetworkMeasurement, measure_networks
from chamlab.host.measurement.pipeline import Progress, RunSpec
from chamlab.host.prediction.predict import check_recipe, find_lut, predict_latency


@dataclasses.dataclass(frozen=True)
class MeasureReport:
    """A measured network beside its LUT prediction (``predicted_ms`` None without a usable LUT)."""

    space: str
    arch: str
    spec: RunSpec
    macs: int
    params: int
    measurement: NetworkMeasurement
    predicted_ms: float | None
    lut_path: Path | None
    note: str | None = None
    calibrated: bool = False  # predicted_ms is calibrated (host.calibration)

    @property
    def error_pct(self) -> float | None:
        """``100 * (predicted - measured) / measured`` (p50)."""
        if self.predicted_ms is None:
            return None
        return 100.0 * (self.predicted_ms - self.measurement.p50_ms) / self.measurement.p50_ms

    def to_json(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "space": self.space,
            "arch": self.arch,
            "target": self.spec.target,
            "backend": self.spec.backend.value,
            "dtype": self.spec.dtype.value,
            "quant_recipe": m.quant_recipe,
            "not_delegated": m.not_delegated,
            "threads": self.spec.threads,
            "batch": self.spec.batch,
            "macs": self.macs,
            "params": self.params,
            "measured_p50_ms": m.stats["p50_ms"],
            "measured_p10_ms": m.stats["p10_ms"],
            "measured_p90_ms": m.stats["p90_ms"],
            "measured_mean_ms": m.stats["mean_ms"],
            "n_samples": m.n_samples,
            "measured_energy_mj": m.energy_mj,
            "unstable": m.unstable,
            "unstable_reasons": list(m.unstable_reasons),
            "predicted_ms": self.predicted_ms,
            "calibrated": self.calibrated,
            "error_pct": self.error_pct,
            "lut": str(self.lut_path) if self.lut_path else None,
            "artifact": str(m.artifact),
            "breakdown": list(m.breakdown) if m.breakdown is not None else None,
        }


def measure(
    spec: RunSpec,
    space: SearchSpace,
    arch: Arch,
    *,
    lut_path: Path | None = None,
    raw: bool = False,
    breakdown: bool = False,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
) -> MeasureReport:
    """Measure ``arch`` on ``spec`` and set it beside the prediction from ``lut_path`` (default: the
    target's default LUT when it exists). The LUT is read first, so a bad one fails fast."""
    found = find_lut(lut_path, spec.target, space=space.name, required=lut_path is not None)
    [m] = measure_networks(
        spec, space, [arch], breakdown=breakdown, transport=transport, progress=progress, no_wait=no_wait
    )
    predicted = note = None
    calibrated = False
    if found is not None:
        lut, path = found
        try:
            mset = spec.choose_in(lut, path)
            recipe = check_recipe(lut, mset, path)
            if recipe is not None and recipe != spec.quant_recipe:
                raise LutError(
                    f"the LUT's int8 rows use quantization recipe {recipe}, this network {spec.quant_recipe}"
                )
            pred = predict_latency(space, arch, lut, path, mset, raw=raw)
            predicted, calibrated = pred.latency_ms, pred.calibrated
        except (LutError, MissingLutEntriesError) as exc:
            note = f"no prediction: {exc}"
    return MeasureReport(
        space.name,
        space.format(arch),
        spec,
        space.macs(arch),
        space.params(arch),
        m,
        predicted,
        found[1] if found else None,
        note,
        calibrated,
    )
