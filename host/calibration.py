"""``calibrate``: measure a few whole networks, fit the LUT-to-device calibration, store it in the LUT.

The model and its fit live in :mod:`chamlab.chamnet.predictors.calibration` (numpy only). Here:

* :func:`select_networks` picks ``n`` networks that span the space (seeded): a pool of the space's
  reference archs plus random ones whose ops the LUT holds, spread over (LUT sum, weight bytes,
  depth) by farthest-point selection;
* :func:`calibrate` measures them through the one pipeline (:func:`~chamlab.host.measuring.measure_networks`:
  device lock, resumable run), fits, and stores the record with :func:`store`;
* :func:`store` writes the record into the LUT file's metadata (``chamlab.calibrations``, a JSON
  list; one record per (space, device, backend, dtype, threads), a new one replaces the old) under
  the LUT's sibling lock, re-reading the file inside it like :func:`~chamlab.host.lut.add_rows`;
* :func:`recheck_ops` (``calibrate --recheck K``, default 32) re-measures K of the networks' ops
  in this session: how far op timings moved since the LUT was profiled. Where they moved about as
  much as the op-level model misses (on a 2-vCPU VM at 2 threads), the fit and every prediction
  from it sum op values shrunk towards the model (the record's ``op_noise``); where they reproduce,
  the weights are near 0 and the LUT counts as measured;
* :func:`lookup` finds the record a prediction may use and says whether it is *stale*: the digest of
  the LUT rows it was fitted on (the ops of the networks it saw) no longer matches the LUT, e.g.
  after ``profile --force``. A stale calibration is reported and never applied.

Energy (``quantity`` = ``energy``): where the device has a power reader (devices.toml
``power_reader``), the LUT rows hold each op's energy per execution above idle and the measured
networks their whole-network energy; :func:`calibrate` then fits a second record, the same model on
(LUT energy sum, ops, weight MiB) to the measured mJ, stored and checked for staleness the same way
(its digest covers the ops' energies). Without a reader it says why and fits latency only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chamlab.chamnet.predictors import calibration as model
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import InputError
from chamlab.core.files import check_writable
from chamlab.core.locks import sibling_lock
from chamlab.core.store import tool_version
from chamlab.operators import INVOCATION_PROBE, OpSpec, boundary_probes

from .lut import Lut, MeasurementSet
from .pipeline import NullProgress, Progress, RunSpec
from .transports.base import Transport

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
POOL = 256  # random candidates drawn per calibration (plus the space's references)
#: ops ``calibrate`` re-measures by default (:func:`recheck_ops`), and the fewest it accepts
RECHECK_OPS = 32
MIN_RECHECK = 8
OP_SHRINKAGE = "op-model-shrinkage-v1"
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


def select_networks(
    space: SearchSpace,
    p50_ms: Mapping[str, float],
    dtype: str,
    n: int,
    rng: np.random.Generator,
    *,
    exclude: Collection[Arch] = (),
    candidates: Sequence[Arch] | None = None,
) -> list[Arch]:
    """``n`` archs whose ops ``p50_ms`` holds, spread over (LUT sum, weight bytes, depth); never one
    of ``exclude`` (networks held apart for evaluation). The pool is ``candidates`` when given (e.g.
    the archs just profiled for this), else the space's references plus :data:`POOL` random archs."""
    banned = set(exclude)
    drawn = [*space.references.values(), *space.sample(rng, POOL)] if candidates is None else candidates
    pool = [a for a in dict.fromkeys(drawn) if a not in banned]
    covered = [a for a in pool if all(op.key in p50_ms for op in needed_ops(space.ops(a), dtype))]
    if len(covered) < n:
        raise InputError(
            f"the LUT holds every op of only {len(covered)} of {len(pool)} candidate {space.name} "
            f"networks, fewer than --n {n}",
            hint="profile more archs first (`chamlab profile --sample N`), or lower --n",
        )
    feats = [lut_features(space, a, p50_ms, dtype) for a in covered]
    idx = model.spread_selection([[f["lut_sum_ms"], f["weight_mib"], f["n_ops"]] for f in feats], n, rng)
    return [covered[i] for i in idx]


def _key(space: str, mset: MeasurementSet) -> dict[str, Any]:
    return {"space": space, **mset._asdict()}


def _quantity(record: Mapping[str, Any]) -> str:
    return str(record.get("quantity", "latency"))  # records before energy calibrations were latency


@dataclasses.dataclass(frozen=True)
class Found:
    """The calibration of a (space, measurement set), with ``stale`` set when its rows changed."""

    record: dict[str, Any]
    stale: str | None

    def fit(self) -> model.CalibrationFit:
        return model.CalibrationFit(tuple(self.record["features"]), dict(self.record["coefficients"]))

    def summary(self) -> dict[str, Any]:
        r = self.record
        return {
            "created_at": r.get("created_at"),
            "model": r.get("model"),
            "n_networks": len(r.get("networks", [])),
            "loo": r.get("loo"),
            "coefficients": r.get("coefficients"),
            "op_weights": (r.get("op_noise") or {}).get("weights"),
            "stale": self.stale is not None,
            "stale_reason": self.stale,
        }


def lookup(lut: Lut, mset: MeasurementSet, space: str, quantity: str = "latency") -> Found | None:
    """The ``quantity`` calibration stored for ``space`` and ``mset``, checked against the LUT's rows."""
    key = _key(space, mset)
    for rec in lut.calibrations:
        if all(rec.get(k) == v for k, v in key.items()) and _quantity(rec) == quantity:
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


@dataclasses.dataclass(frozen=True)
class CalibrationReport:
    """The latency calibration stored, and the energy one (or why there is none)."""

    lut_path: Path
    record: dict[str, Any]
    energy_record: dict[str, Any] | None = None
    energy_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "lut": str(self.lut_path),
            **self.record,
            "energy": self.energy_record,
            "energy_note": self.energy_note,
        }


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
    keep full weight in the fit (``adapt``'s measured winners, :mod:`~chamlab.host.refining`).
    ``op_noise`` (latency only; :func:`recheck_ops`): the features sum the op values shrunk towards the
    op-level model with its ``weights``, and predictions from this record do the same."""
    from .prediction import shrunk_p50

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


def calibrate(
    spec: RunSpec,
    space: SearchSpace,
    *,
    lut_path: Path,
    n: int = 10,
    seed: int = 0,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
    repeats: int = 1,
    recheck: int = RECHECK_OPS,
) -> CalibrationReport:
    """Measure ``n`` spread networks of ``space`` on ``spec``, fit and store the calibration.

    ``repeats`` > 1 measures them under the noise protocol (:func:`~.measuring.measure_repeated`:
    separate interleaved sessions, disturbed windows re-measured, the median kept). ``recheck`` > 0
    re-measures that many of the networks' ops (:func:`recheck_ops`) and fits on op values shrunk towards
    the op-level model as far as op timings moved since profiling; 0 fits on the LUT as measured."""
    from .measuring import RepeatPolicy, measure_networks, measure_repeated

    if n < 3:
        raise InputError(f"--n must be at least 3 (a fit plus a leave-one-out check), got {n}")
    if 0 < recheck < MIN_RECHECK:
        raise InputError(
            f"--recheck must be 0 (off) or at least {MIN_RECHECK} ops (a spread from fewer is noise), "
            f"got {recheck}"
        )
    progress = progress or NullProgress()
    lut = Lut.read(lut_path)
    mset = lut.choose(
        lut_path,
        device=spec.target,
        backend=spec.backend.value,
        dtype=spec.dtype.value,
        threads=spec.threads,
        batch=spec.batch,
    )
    from .prediction import check_recipe

    recipe = check_recipe(lut, mset, lut_path)
    if recipe is not None and recipe != spec.quant_recipe:
        raise InputError(
            f"LUT {lut_path} holds int8 rows of quantization recipe {recipe}, this run uses "
            f"{spec.quant_recipe}: "
            "a calibration must measure networks quantized like the ops it calibrates",
            hint=f"pass --quant-recipe {recipe}",
        )
    p50 = lut.p50_by_key(mset)
    archs = select_networks(space, p50, mset.dtype, n, np.random.default_rng(seed))
    progress.note(
        f"calibrating from {len(archs)} {space.name} networks: {', '.join(map(space.format, archs))}"
    )
    protocol = RepeatPolicy(repeats=repeats)
    if repeats > 1:
        rep = measure_repeated(
            spec, space, archs, protocol, transport=transport, progress=progress, no_wait=no_wait
        )
        values = [r.p50_ms for r in rep]
        energies = [(r.energy_mj, r.first.energy) for r in rep]
    else:
        measured = measure_networks(
            spec, space, archs, transport=transport, progress=progress, no_wait=no_wait
        )
        for a, m in zip(archs, measured, strict=True):
            if m.unstable:
                progress.note(f"{space.format(a)}: unstable measurement ({'; '.join(m.unstable_reasons)})")
        values = [m.p50_ms for m in measured]
        energies = [(m.energy_mj, m.energy) for m in measured]
    how = {**spec.policy.to_json(), "protocol": protocol.to_json()}
    op_noise = None
    if recheck:
        try:
            op_noise = recheck_ops(
                spec,
                space,
                lut,
                mset,
                archs,
                recheck,
                np.random.default_rng(seed),
                transport=transport,
                progress=progress,
                no_wait=no_wait,
            )
        except NoRecheck as exc:
            progress.note(f"fitting on the LUT as measured: {exc}")
    record = build_record(space, mset, p50, archs, values, seed=seed, measure=how, op_noise=op_noise)
    store(lut_path, record)
    energy_record, energy_note = None, None
    try:
        energy_record = _energy_record(spec, space, lut, mset, archs, energies, seed, how)
        store(lut_path, energy_record)
    except NoEnergyCalibration as exc:
        energy_note = str(exc)
    return CalibrationReport(Path(lut_path), record, energy_record, energy_note)


class NoRecheck(Exception):
    """Why a calibration run fits on the LUT as measured (the message is shown to the user)."""


def recheck_ops(
    spec: RunSpec,
    space: SearchSpace,
    lut: Lut,
    mset: MeasurementSet,
    archs: Sequence[Arch],
    k: int,
    rng: np.random.Generator,
    *,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
) -> dict[str, Any]:
    """Re-measure ``k`` ops of ``archs`` (seeded) in this session and weigh the op-level model
    against the LUT's measured ops accordingly: the ``op_noise`` of a calibration record.

    The ops are profiled into a scratch LUT (the user's LUT is not touched: its rows stay as
    profiled, and the calibration's digest with them). :func:`~chamlab.chamnet.predictors.op_model.
    session_noise` turns the pairs into one session's noise variance in log p50 (the median change,
    a whole-device shift, is left to the calibration's coefficients);
    :func:`~chamlab.chamnet.predictors.op_model.shrinkage_weights` turns that and the model's
    scatter about the LUT's ops into one weight per op kind of the rechecked ops. Raises
    :class:`NoRecheck` when fewer than :data:`MIN_RECHECK` ops could be compared."""
    from chamlab.chamnet.predictors import op_model as om

    from .prediction import op_model
    from .profiling import profile

    p50 = lut.p50_by_key(mset)
    pool = {o.key: o for a in archs for o in space.ops(a) if o.key in p50 and o.key != INVOCATION_PROBE.key}
    keys = sorted(pool)
    if len(keys) < MIN_RECHECK:
        raise NoRecheck(f"these networks have {len(keys)} distinct ops, fewer than {MIN_RECHECK} to re-check")
    picked = [pool[keys[i]] for i in sorted(rng.choice(len(keys), size=min(k, len(keys)), replace=False))]
    (progress or NullProgress()).note(
        f"re-measuring {len(picked)} of their ops to see how far op timings moved since profiling"
    )
    with tempfile.TemporaryDirectory(prefix="chamlab-recheck-") as tmp:
        scratch = Path(tmp) / "recheck.parquet"
        profile(
            spec,
            space,
            None,
            out=scratch,
            force=True,
            transport=transport,
            progress=progress,
            no_wait=no_wait,
            run_tag="recheck",
            ops=picked,
            command="calibrate (op recheck)",
        )
        again = Lut.read_or_empty(scratch).p50_by_key(mset)
    now = {o.key: again[o.key] for o in picked if o.key in again}
    if len(now) < MIN_RECHECK:
        raise NoRecheck(
            f"only {len(now)} of {len(picked)} re-measured ops came back (fewer than {MIN_RECHECK})"
        )
    noise = om.session_noise({kk: p50[kk] for kk in now}, now)
    kinds = {o.op_type for o in picked}
    scatter = {kind: v for kind, v in op_model(lut, mset).misfit_log_var().items() if kind in kinds}
    return {
        "method": OP_SHRINKAGE,
        **noise,
        "op_keys": sorted(now),
        "misfit_log_var": scatter,
        "weights": om.shrinkage_weights(scatter, noise["log_var"]),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


class NoEnergyCalibration(Exception):
    """Why a calibration run fitted latency only (the message is shown to the user)."""


def _energy_record(
    spec: RunSpec,
    space: SearchSpace,
    lut: Lut,
    mset: MeasurementSet,
    archs: list[Arch],
    measured: list[tuple[float | None, dict[str, Any] | None]],
    seed: int,
    how: dict[str, Any],
) -> dict[str, Any]:
    if not spec.device.power_reader:
        raise NoEnergyCalibration(
            f"device {spec.target} has no power reader (set power_reader in [devices.{spec.target}] "
            "of devices.toml where it has one)"
        )
    energy = lut.energy_by_key(mset)
    lacking = sorted({op.key for a in archs for op in space.ops(a) if op.key not in energy})
    if lacking:
        raise NoEnergyCalibration(
            f"the LUT has no energy for {len(lacking)} op(s) of these networks (e.g. {lacking[0]}): "
            f"re-profile them with the power reader (`chamlab profile --target {spec.target} --force ...`)"
        )
    values = []
    for a, (value, record) in zip(archs, measured, strict=True):
        if value is None:
            why = (record or {}).get("error", "no energy record")
            raise NoEnergyCalibration(f"{space.format(a)}: no energy measured ({why})")
        if not value > 0:
            raise NoEnergyCalibration(
                f"{space.format(a)}: {value:.4g} mJ above idle measured (the reader cannot "
                "tell this network from idle; use a longer power_window_s)"
            )
        values.append(float(value))
    return build_record(space, mset, energy, archs, values, seed=seed, measure=how, quantity="energy")


def apply(
    found: Found | None, features: Mapping[str, float], unit: str = "ms"
) -> tuple[float | None, str | None]:
    """``(calibrated value, None)``, or ``(None, why not)`` without a usable calibration."""
    if found is None:
        return None, "no calibration for this space and measurement set"
    if found.stale is not None:
        return None, f"calibration is stale: {found.stale}"
    value = found.fit().predict(features)
    if not np.isfinite(value) or value <= 0:
        return None, f"calibration gives {value:.4g} {unit} here (outside what it was fitted on)"
    return value, None


__all__ = [
    "QUANTITIES",
    "CalibrationReport",
    "Found",
    "NoEnergyCalibration",
    "NoRecheck",
    "apply",
    "build_record",
    "calibrate",
    "lookup",
    "lut_features",
    "recheck_ops",
    "select_networks",
    "store",
    "values_of",
]
