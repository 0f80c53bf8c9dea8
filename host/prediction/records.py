"""Calibration records: what ``calibrate`` stores in a LUT's metadata (``chamlab.calibrations``) and
what every prediction looks up and applies.

* :func:`build_record` fits the model (:mod:`chamlab.chamnet.predictors.calibration`, numpy only) on
  measured networks and their LUT features (:func:`lut_features`);
* :func:`store` writes the record into the LUT file's metadata (a JSON list; one record per (space,
  device, backend, dtype, threads, batch, quantity), a new one replaces the old) under the LUT's
  sibling lock, re-reading the file inside it like :func:`~chamlab.host.luts.lut.add_rows`;
* :func:`lookup` finds the record a prediction may use and says whether it is *stale*: the digest of
  the LUT rows it was fitted on (the ops of the networks it saw) no longer matches the LUT, e.g.
  after ``profile --force``. A stale calibration is reported and never applied (:func:`apply`);
  nor is an *invalid* one: a record that fails :func:`problems` (a damaged or edited file: an
  unknown model, a missing, extra, non-finite or absurd coefficient, a NaN leave-one-out figure).
  ``chamlab lut validate`` lists the same problems (:func:`problems` is the model's own check,
  :func:`chamlab.chamnet.predictors.calibration.record_problems`, which the LUT layer calls too).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from chamlab.chamnet.predictors import calibration as model
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.files import check_writable
from chamlab.core.locks import sibling_lock
from chamlab.core.store import tool_version
from chamlab.host.luts.lut import Lut, MeasurementSet
from chamlab.host.prediction.op_values import shrunk_p50
from chamlab.operators import INVOCATION_PROBE, OpSpec, boundary_probes

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


#: what a calibration predicts: its features and the unit of its measured values
QUANTITIES: dict[str, tuple[tuple[str, ...], str]] = {
    "latency": (model.FEATURES, "ms"),
    "energy": (model.ENERGY_FEATURES, "mj"),
}


def values_of(lut: Lut, mset: MeasurementSet, quantity: str) -> dict[str, float]:
    """The LUT values a ``quantity`` calibration sums: p50 (ms) or energy above idle (mJ) by op key."""
    return lut.p50_by_key(mset) if quantity == "latency" else lut.energy_by_key(mset)


def needed_ops(ops: list[OpSpec], dtype: str) -> list[OpSpec]:
    """The LUT entries a network's features need: its ops, plus the boundary quant_edge probes (int8)."""
    return [*ops, *boundary_probes(ops)] if dtype == "int8" else list(ops)


def lut_features(
    space: SearchSpace, arch: Arch, p50_ms: Mapping[str, float], dtype: str, quantity: str = "latency"
) -> dict[str, float]:
    """The calibration features of ``arch`` (``KeyError`` naming an op the mapping lacks);
    for ``quantity`` ``energy``, ``p50_ms`` holds the ops' energies (mJ) and the sum is ``lut_sum_mj``.
    For int8 latency, ``lut_sum_ms`` is the sum less the boundary quantize/dequantize pairs (as the
    predictor's)."""
    ops = space.ops(arch)
    total = float(sum(p50_ms[op.key] for op in ops))
    if dtype == "int8" and quantity == "latency":
        inv = p50_ms.get(INVOCATION_PROBE.key, 0.0)
        total -= sum(max(p50_ms[p.key] - inv, 0.0) for p in boundary_probes(ops))
    weight_mib = sum(op.params for op in ops) * DTYPE_BYTES.get(dtype, 4) / 2**20
    return model.feature_values(total, len(ops), weight_mib, QUANTITIES[quantity][1])


#: every problem of a stored record, one line each (empty: it may be applied)
problems = model.record_problems


def _key(space: str, mset: MeasurementSet) -> dict[str, Any]:
    return {"space": space, **mset._asdict()}


def _quantity(record: Mapping[str, Any]) -> str:
    return str(record.get("quantity", "latency"))  # records before energy calibrations were latency


@dataclasses.dataclass(frozen=True)
class Found:
    """The calibration of a (space, measurement set). ``stale``: why it is not applied, or None:
    its rows changed since it was fitted, or (``invalid`` set) the record itself fails
    :func:`problems`. Either way it is reported and never applied."""

    record: dict[str, Any]
    stale: str | None
    invalid: bool = False

    def fit(self) -> model.CalibrationFit:
        return model.CalibrationFit(tuple(self.record["features"]), dict(self.record["coefficients"]))

    def summary(self) -> dict[str, Any]:
        r = self.record
        networks, noise = r.get("networks"), r.get("op_noise")
        return {
            "created_at": r.get("created_at"),
            "model": r.get("model"),
            "n_networks": len(networks) if isinstance(networks, list) else None,
            "loo": r.get("loo"),
            "coefficients": r.get("coefficients"),
            "op_weights": noise.get("weights") if isinstance(noise, dict) else None,
            "stale": self.stale is not None and not self.invalid,
            "stale_reason": None if self.invalid else self.stale,
            "invalid": self.invalid,
            "invalid_reason": self.stale if self.invalid else None,
        }


def lookup(lut: Lut, mset: MeasurementSet, space: str, quantity: str = "latency") -> Found | None:
    """The ``quantity`` calibration stored for ``space`` and ``mset``, checked against the LUT's rows."""
    key = _key(space, mset)
    for rec in lut.calibrations:
        if all(rec.get(k) == v for k, v in key.items()) and _quantity(rec) == quantity:
            bad = problems(rec)
            if bad:
                more = (
                    f" (and {len(bad) - 1} more; `chamlab lut validate` lists them)" if len(bad) > 1 else ""
                )
                why = f"the stored record is invalid: {bad[0]}{more}; run `chamlab calibrate` again"
                return Found(rec, why, invalid=True)
            p50 = values_of(lut, mset, quantity)
            keys = rec.get("rows", {}).get("op_keys", [])
            missing = [k for k in keys if k not in p50]
            if missing:
                return Found(rec, f"the LUT no longer holds {len(missing)} op(s) it was fitted on")
            if model.rows_digest({k: p50[k] for k in keys}) != rec.get("rows", {}).get("digest"):
                return Found(
                    rec,
                    "LUT rows it was fitted on changed since (re-profiled); run `chamlab calibrate` again",
                )
            return Found(rec, None)
    return None


def store(path: Path, record: Mapping[str, Any]) -> Lut:
    """Put ``record`` into the LUT file's ``chamlab.calibrations`` (replacing the record of the same
    space, measurement set and quantity), re-reading the file under its lock."""
    path = Path(path)
    check_writable(path, what="LUT")
    keys = ("space", "device", "backend", "dtype", "threads", "batch")

    def same(c: Mapping[str, Any]) -> bool:
        return all(c.get(k) == record.get(k) for k in keys) and _quantity(c) == _quantity(record)

    with sibling_lock(path, what=f"LUT {path}").hold():
        lut = Lut.read(path)
        kept = [c for c in lut.calibrations if not same(c)]
        new = Lut(lut.table, lut.provenance, [*kept, dict(record)])
        new.write(path)
    return new


def build_record(
    space: SearchSpace,
    mset: MeasurementSet,
    p50_ms: Mapping[str, float],
    archs: list[Arch],
    measured_ms: list[float],
    *,
    seed: int | None = None,
    measure: Mapping[str, Any] | None = None,
    quantity: str = "latency",
    trusted: Collection[str] = (),
    op_noise: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The stored calibration of ``space`` on ``mset``: the fit of the measured p50 of ``archs`` on
    their LUT features, with the networks, residuals, LOO errors and the digest of the rows used.
    With ``quantity`` ``energy``, ``p50_ms`` holds the ops' energies and ``measured_ms`` the
    networks' measured energies (mJ per inference, above idle). ``trusted``: names of networks that
    keep full weight in the fit (``adapt``'s measured winners, :mod:`~chamlab.host.workflows.refine`).
    ``op_noise`` (latency only; :func:`recheck_ops`): the features sum the op values shrunk towards the
    op-level model with its ``weights``, and predictions from this record do the same."""
    if op_noise is not None and quantity != "latency":
        raise ValueError("op_noise applies to latency calibrations only")
    features, unit = QUANTITIES[quantity]
    summed = shrunk_p50(p50_ms, op_noise["weights"]) if op_noise else p50_ms
    points = [
        model.CalibrationPoint(space.format(a), lut_features(space, a, summed, mset.dtype, quantity), y)
        for a, y in zip(archs, measured_ms, strict=True)
    ]
    used = sorted({op.key for a in archs for op in needed_ops(space.ops(a), mset.dtype)})
    return {
        **_key(space.name, mset),
        "quantity": quantity,
        **model.fit_report(points, features, unit=unit, trusted=trusted),
        "rows": {"digest": model.rows_digest({k: p50_ms[k] for k in used}), "op_keys": used},
        "op_noise": dict(op_noise) if op_noise else None,
        "seed": seed,
        "measure": dict(measure) if measure is not None else None,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tool_version": tool_version(),
    }


def apply(
    found: Found | None, features: Mapping[str, float], unit: str = "ms"
) -> tuple[float | None, str | None]:
    """``(calibrated value, None)``, or ``(None, why not)`` without a usable calibration."""
    if found is None:
        return None, "no calibration for this space and measurement set"
    if found.stale is not None:
        return None, f"calibration {'not applied' if found.invalid else 'is stale'}: {found.stale}"
    value = found.fit().predict(features)
    if not np.isfinite(value) or value <= 0:
        return None, f"calibration gives {value:.4g} {unit} here (outside what it was fitted on)"
    return value, None
