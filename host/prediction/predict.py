"""``predict``: MACs, parameters and the LUT-predicted latency of one architecture.

Finding the LUT (an explicit path, or the default ``luts/<target>.parquet``), choosing its measurement
set and assembling the op-by-op prediction live here, so that ``measure``, ``adapt`` and farm runs
predict exactly as ``chamlab predict`` does. A prediction applies the LUT's calibration for its space
and measurement set when one is stored and fresh (:mod:`chamlab.host.prediction.calibrate`; ``raw`` never
does), and with ``interpolate`` fills ops the LUT lacks from the op-level model
(:mod:`chamlab.chamnet.predictors.op_model`).

Energy (:func:`predict_energy`): the sum of the ops' LUT energies above idle, corrected and calibrated
the same way (:mod:`chamlab.chamnet.predictors.energy`); where the LUT's measurement set holds no
energy (the device had no power reader) it refuses with :class:`~chamlab.core.errors.NoEnergyError`
naming the fix. :func:`predict` adds it to its report (``energy="auto"``: when the rows have it).
int8 measurement sets: the prediction also subtracts the boundary quantize/dequantize pairs
(:class:`~chamlab.operators.QuantEdge` probes, see chamnet/predictors/latency.py); a set whose rows
come from two quantization recipes is refused (:func:`check_recipe`), and ops whose rows say
``delegated = false`` are listed in :attr:`LatencyPrediction.not_delegated_ops` (the CLI warns).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chamlab.chamnet.predictors import energy as energy_model
from chamlab.chamnet.predictors.calibration import feature_values
from chamlab.chamnet.predictors.energy import EnergyPrediction
from chamlab.chamnet.predictors.latency import LatencyPrediction, LutLatencyPredictor
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import InputError, LutError, MissingLutEntriesError, NoEnergyError
from chamlab.host.luts.lut import Lut, MeasurementSet
from chamlab.host.prediction import records as calibration
from chamlab.host.prediction.op_values import op_model, shrunk_p50
from chamlab.host.prediction.records import DTYPE_BYTES
from chamlab.operators import OpSpec

LUT_DIR = Path("luts")


def default_lut_path(target: str) -> Path:
    """Where ``profile`` writes and ``predict``/``measure`` look by default: ``luts/<target>.parquet``."""
    return LUT_DIR / f"{target}.parquet"


def find_lut(
    lut_path: Path | None, target: str | None, *, space: str | None = None, required: bool = True
) -> tuple[Lut, Path] | None:
    """The LUT to predict from: ``lut_path`` if given, else the default file of ``target``.

    ``lut_path`` may be a farm folder (``chamlab farm run --out DIR``): ``DIR/latest/<target>.parquet``.

    Without either, None. A missing default file is a :class:`LutError` naming the file looked for
    and the ``profile`` command that makes it (or None when not ``required``).
    """
    if lut_path is not None:
        lut_path = Path(lut_path)
        if lut_path.is_dir():  # a farm folder (its latest run) or a run folder: <target>.parquet in it
            run = lut_path / "latest" if (lut_path / "latest").is_dir() else lut_path
            if target is None:
                raise InputError(
                    f"--lut {lut_path} is a folder: pass --target NAME to pick NAME.parquet in it"
                )
            lut_path = run / f"{target}.parquet"
        return Lut.read(lut_path), lut_path
    if target is None:
        return None
    path = default_lut_path(target)
    if not path.exists():
        if not required:
            return None
        cmd = ["chamlab", "profile", "--target", target, "--space", space or "SPACE"]
        raise LutError(
            f"no LUT for target {target}: looked for {path} (the default --out of profile)",
            hint=f"make it with `{shlex.join(cmd)}`, or pass --lut PATH",
        )
    return Lut.read(path), path


def default_dtype(target: str, devices: Path | None = None) -> str | None:
    """The ``dtype`` devices.toml gives ``target`` (what ``--dtype`` defaults to), or None when the
    target is not in the registry (or the registry cannot be read): then any dtype the LUT holds."""
    from chamlab.core.errors import ChamlabError
    from chamlab.host.devices.config import load_registry

    try:
        return load_registry(devices).get(target).dtype.value
    except ChamlabError:
        return None


def profile_hint(space: SearchSpace, arch_text: str, mset: MeasurementSet, path: Path) -> str:
    """The exact ``chamlab profile`` command that fills the LUT entries ``arch`` lacks."""
    from chamlab.host.measurement.profiling import EXHAUSTIVE_LIMIT

    cmd = ["chamlab", "profile", "--target", mset.device, "--space", space.name]
    cmd += ["--threads", str(mset.threads)]
    if mset.dtype != "fp32":
        cmd += ["--dtype", mset.dtype]
    if mset.batch != 1:
        cmd += ["--batch", str(mset.batch)]
    cmd += ["--out", str(path)]
    if space.size > EXHAUSTIVE_LIMIT:  # a large space is not profiled exhaustively: name the arch
        cmd += ["--arch", arch_text]
    return f"fill them with `{shlex.join(cmd)}`"


def check_recipe(lut: Lut, mset: MeasurementSet, path: Path) -> str | None:
    """The one quantization recipe of an int8 measurement set (None for fp32); rows of two recipes
    in one set are a :class:`LutError` (they would mix two different programs in one sum)."""
    if mset.dtype != "int8":
        return None
    recipes = sorted({str(r.get("quant_recipe")) for r in lut.select(mset).values()})
    if len(recipes) > 1:
        raise LutError(
            f"LUT {path}: the int8 rows of {mset.describe()} come from {len(recipes)} quantization recipes "
            f"({', '.join(recipes)}); one prediction must use one recipe",
            hint="re-profile into a separate LUT per recipe (`chamlab profile --quant-recipe ID --out PATH`)",
        )
    return recipes[0] if recipes else None


def not_delegated_ops(lut: Lut, mset: MeasurementSet, keys: set[str]) -> tuple[str, ...]:
    """Op keys among ``keys`` whose rows in ``mset`` say ``delegated = false``."""
    rows = lut.select(mset)
    return tuple(sorted(k for k in keys if k in rows and rows[k].get("delegated") is False))


class QuantityModel:
    """Predictions of one quantity of many archs from one LUT measurement set: ``quantity``
    ``latency`` (ms, :class:`LatencyPrediction`) or ``energy`` (mJ above idle,
    :class:`EnergyPrediction`). The LUT rows, the op-level model (``interpolate``: ops the LUT
    lacks) and the calibration are looked up once (what :func:`predict_latency` and
    :func:`predict_energy` do per call); the prediction is the rows' sum, invocation-corrected and
    calibrated (unless ``raw``).

    Latency also subtracts an int8 set's boundary quantize/dequantize pairs, flags ops not delegated
    and sums a calibration's shrunk op values (``op_noise``); energy raises :class:`NoEnergyError`
    where the set holds none (the device had no power reader)."""

    #: the quantity when none is given (:class:`LatencyModel`, :class:`EnergyModel`)
    default_quantity = "latency"

    def __init__(
        self,
        space: SearchSpace,
        lut: Lut,
        path: Path,
        mset: MeasurementSet,
        *,
        quantity: str | None = None,
        raw: bool = False,
        interpolate: bool = False,
    ) -> None:
        quantity = quantity or self.default_quantity
        if quantity not in ("latency", "energy"):
            raise ValueError(f"quantity must be latency or energy, not {quantity!r}")
        self.quantity = quantity
        self.space, self.path, self.mset, self.raw = space, Path(path), mset, raw
        if quantity == "energy":
            why = energy_refusal(lut, path, mset)
            if why is not None:
                raise NoEnergyError(why, hint=no_energy_hint(mset.device))
            self.values = lut.energy_by_key(mset)
            self.readers = sorted(lut.power_readers(mset))
        else:
            check_recipe(lut, mset, path)
            self.values = lut.p50_by_key(mset)
            rows = lut.select(mset)
            self._not_delegated = {k for k, r in rows.items() if r.get("delegated") is False}
        self.fill: Callable[[OpSpec], float | None] | None = None
        if interpolate:
            model = op_model(lut, mset, quantity)
            filled: dict[str, float | None] = {}  # ops recur across archs: predict each once

            def fill(op: OpSpec) -> float | None:
                if op.key not in filled:
                    filled[op.key] = model.predict(op) if model.can_predict(op) else None
                return filled[op.key]

            self.fill = fill
        set_of = f"{mset.device}, {mset.dtype}, {mset.threads} thread(s), batch {mset.batch}"
        if quantity == "latency":
            self.predictor = LutLatencyPredictor(
                self.values,
                correct_overhead=not raw,
                what=f"LUT {path} ({set_of})",
                fill=self.fill,
                quant_edges=mset.dtype == "int8",
            )
        self.found = None if raw else calibration.lookup(lut, mset, space.name, quantity)
        self._summary = self.found.summary() if self.found else None
        # a latency calibration fitted on shrunk op values (`op_noise`, calibrate's recheck) sums them too
        self._shift: dict[str, float] = {}
        fresh = self.found if self.calibrated and quantity == "latency" else None
        weights = (fresh.record.get("op_noise") or {}).get("weights") if fresh is not None else None
        if weights:
            shrunk = shrunk_p50(self.values, weights)
            self._shift = {k: shrunk[k] - v for k, v in self.values.items() if shrunk[k] != v}

    @property
    def energies(self) -> dict[str, float]:
        """The energy rows (mJ above idle per execution) by op key (energy models)."""
        return self.values

    @property
    def calibrated(self) -> bool:
        """Whether predictions apply a (fresh) calibration."""
        return not self.raw and self.found is not None and self.found.stale is None

    def predict(self, arch: Arch) -> Any:
        """The prediction of ``arch`` (:class:`LatencyPrediction` or :class:`EnergyPrediction`);
        missing ops name the fix (or come from the op-level model)."""
        ops = self.space.ops(arch)
        try:
            if self.quantity == "latency":
                return self._latency(ops)
            return self._energy(ops)
        except MissingLutEntriesError as exc:
            exc.hint = profile_hint(self.space, self.space.format(arch), self.mset, self.path) + (
                " on the device with its power reader (add --force for ops measured without it)"
                if self.quantity == "energy"
                else ""
            )
            raise

    def _latency(self, ops: Any) -> LatencyPrediction:
        pred = self.predictor.predict(ops)
        bad = tuple(sorted({op.key for op in ops} & self._not_delegated))
        if bad:
            pred = dataclasses.replace(pred, not_delegated_ops=bad)
        if self.raw:
            return pred
        shift = sum(self._shift.get(op.key, 0.0) for op in ops) if self._shift else 0.0
        value, why = calibration.apply(self.found, _calibration_features(pred, ops, self.mset, shift))
        if value is None:
            return dataclasses.replace(pred, calibration=self._summary, calibration_note=why)
        return dataclasses.replace(
            pred,
            latency_ms=value,
            calibrated=True,
            uncalibrated_ms=pred.latency_ms,
            calibration=self._summary,
        )

    def _energy(self, ops: Any) -> EnergyPrediction:
        mset = self.mset
        pred = energy_model.predict_energy(
            self.values,
            ops,
            readers=self.readers,
            correct_overhead=not self.raw,
            what=f"LUT {self.path} (energy, {mset.device}, {mset.threads} thread(s), batch {mset.batch})",
            fill=self.fill,
        )
        if self.raw:
            return pred
        features = feature_values(pred.lut_sum_mj, len(ops), _weight_mib(ops, mset), "mj")
        value, note = calibration.apply(self.found, features, "mJ")
        if value is None:
            return dataclasses.replace(pred, calibration=self._summary, calibration_note=note)
        return dataclasses.replace(
            pred, energy_mj=value, calibrated=True, uncalibrated_mj=pred.energy_mj, calibration=self._summary
        )


class LatencyModel(QuantityModel):
    """A :class:`QuantityModel` of latency (ms)."""

    default_quantity = "latency"

    def predict(self, arch: Arch) -> LatencyPrediction:
        return super().predict(arch)


def predict_latency(
    space: SearchSpace,
    arch: Arch,
    lut: Lut,
    path: Path,
    mset: MeasurementSet,
    *,
    raw: bool = False,
    interpolate: bool = False,
) -> LatencyPrediction:
    """The LUT prediction of ``arch`` from one measurement set; missing ops name the fix (or, with
    ``interpolate``, come from the op-level model). Calibrated when the LUT holds a fresh
    calibration of this space and set, unless ``raw``."""
    return LatencyModel(space, lut, path, mset, raw=raw, interpolate=interpolate).predict(arch)


def _calibration_features(
    pred: LatencyPrediction, ops: Any, mset: MeasurementSet, shift_ms: float = 0.0
) -> dict[str, float]:
    # int8: the sum less the boundary quantize/dequantize pairs; shift_ms: shrunk less measured op values
    total = pred.lut_sum_ms + shift_ms - (pred.quant_edge_ms or 0.0)
    return feature_values(total, len(ops), _weight_mib(ops, mset))


class CachedPrediction:
    """``arch -> predicted value`` from a :class:`LatencyModel` (``field`` ``latency_ms``) or an
    :class:`EnergyModel` (``energy_mj``), each arch predicted once: what a search calls thousands of
    times. :attr:`interpolated` counts, per arch predicted, the ops the op-level model filled."""

    def __init__(self, model: QuantityModel, field: str | None = None) -> None:
        self.model = model
        self.field = field or ("energy_mj" if model.quantity == "energy" else "latency_ms")
        self.cache: dict[Arch, float] = {}
        self.interpolated: dict[Arch, int] = {}

    def __call__(self, arch: Arch) -> float:
        if arch not in self.cache:
            pred = self.model.predict(arch)
            self.cache[arch] = float(getattr(pred, self.field))
            self.interpolated[arch] = pred.interpolated_ops
        return self.cache[arch]


def latency_model(
    space: SearchSpace,
    lut: Lut,
    path: Path,
    mset: MeasurementSet,
    *,
    raw: bool = False,
    interpolate: bool = False,
) -> CachedPrediction:
    """``arch -> predict_latency(space, arch, lut, path, mset, raw=raw).latency_ms``, with the LUT's
    rows and calibration looked up once and each arch predicted once (a search asks for thousands)."""
    return CachedPrediction(LatencyModel(space, lut, path, mset, raw=raw, interpolate=interpolate))


def choose_measurement_set(
    lut: Lut,
    path: Path,
    *,
    target: str | None = None,
    backend: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    batch: int | None = None,
    devices: Path | None = None,
) -> MeasurementSet:
    """The measurement set ``predict``, ``search`` and ``adapt`` predict from: the one matching the
    fields given, where an unset ``dtype`` is the target's devices.toml dtype (:func:`default_dtype`)
    and, when that still leaves several sets, an unset ``threads`` is the target's devices.toml
    threads (a LUT holding 1- and 2-thread rows of a device answers for its default, as a run on it
    would measure). A target not in devices.toml takes no defaults. Errors as :meth:`Lut.choose`."""
    if dtype is None and target is not None:
        dtype = default_dtype(target, devices)

    def choose(threads: int | None) -> MeasurementSet:
        return lut.choose(path, device=target, backend=backend, dtype=dtype, threads=threads, batch=batch)

    try:
        return choose(threads)
    except LutError:
        raise
    except InputError:
        if threads is not None or target is None or (default := _default_threads(target, devices)) is None:
            raise
        return choose(default)


def _default_threads(target: str, devices: Path | None) -> int | None:
    from chamlab.core.errors import ChamlabError
    from chamlab.host.devices.config import load_registry

    try:
        return int(load_registry(devices).get(target).threads)
    except ChamlabError:
        return None


def _weight_mib(ops: Any, mset: MeasurementSet) -> float:

    return float(sum(op.params for op in ops) * DTYPE_BYTES.get(mset.dtype, 4) / 2**20)


def energy_refusal(lut: Lut, path: Path, mset: MeasurementSet) -> str | None:
    """Why ``mset`` of the LUT cannot predict energy (None: it can)."""
    if lut.energy_by_key(mset):
        return None
    return (
        f"LUT {path} holds no energy for {mset.device} ({mset.threads} thread(s), batch {mset.batch}): "
        f"{mset.device} had no power reader when it was profiled"
    )


def no_energy_hint(device: str) -> str:
    """The devices.toml fix for a device (or LUT) without energy measurements."""
    return (
        f"set power_reader (battery, rapl or nvml) in [devices.{device}] of devices.toml on a device that "
        "has one, and re-profile with `chamlab profile --force`"
    )


class EnergyModel(QuantityModel):
    """A :class:`QuantityModel` of energy per inference (mJ above idle); :class:`NoEnergyError`
    where the set holds no energy (the device had no power reader)."""

    default_quantity = "energy"

    def predict(self, arch: Arch) -> EnergyPrediction:
        return super().predict(arch)


def predict_energy(
    space: SearchSpace,
    arch: Arch,
    lut: Lut,
    path: Path,
    mset: MeasurementSet,
    *,
    raw: bool = False,
    interpolate: bool = False,
) -> EnergyPrediction:
    """Energy per inference (mJ above idle) of ``arch`` from the LUT energies of ``mset``: the sum,
    invocation-corrected and calibrated (unless ``raw``) like :func:`predict_latency`.

    Raises :class:`NoEnergyError` where the set holds no energy, and :class:`MissingLutEntriesError`
    for ops without energy (unless ``interpolate`` fills them from the op-level model of energies)."""
    return EnergyModel(space, lut, path, mset, raw=raw, interpolate=interpolate).predict(arch)


@dataclasses.dataclass(frozen=True)
class PredictionReport:
    space: str
    arch: str
    input_shape: tuple[int, ...]
    macs: int
    params: int
    prediction: LatencyPrediction | None
    lut_path: Path | None
    measurement_set: MeasurementSet | None
    energy: EnergyPrediction | None = None
    energy_note: str | None = None  # why there is no energy prediction (with a LUT)

    @property
    def latency_ms(self) -> float | None:
        return self.prediction.latency_ms if self.prediction else None

    @property
    def energy_mj(self) -> float | None:
        return self.energy.energy_mj if self.energy else None

    def to_json(self) -> dict[str, Any]:
        p, m = self.prediction, self.measurement_set
        return {
            "space": self.space,
            "arch": self.arch,
            "input_shape": list(self.input_shape),
            "macs": self.macs,
            "params": self.params,
            "latency_ms": p.latency_ms if p else None,
            "lut_sum_ms": p.lut_sum_ms if p else None,
            "invocation_overhead_ms": p.invocation_overhead_ms if p else None,
            "quant_edge_ms": p.quant_edge_ms if p else None,
            "not_delegated_ops": list(p.not_delegated_ops) if p else [],
            "calibrated": p.calibrated if p else False,
            "uncalibrated_ms": p.uncalibrated_ms if p else None,
            "calibration": dict(p.calibration) if p and p.calibration else None,
            "calibration_note": p.calibration_note if p else None,
            "interpolated_ops": p.interpolated_ops if p else 0,
            "energy_mj": self.energy_mj,
            "energy": self.energy.to_json() if self.energy else None,
            "energy_note": self.energy_note,
            "lut": None
            if m is None
            else {
                "path": str(self.lut_path),
                "target": m.device,
                "backend": m.backend,
                "dtype": m.dtype,
                "threads": m.threads,
                "batch": m.batch,
            },
            "ops": None
            if p is None
            else [
                {
                    "op_key": c.op.key,
                    "op_type": c.op.op_type,
                    "count": c.count,
                    "p50_ms": c.p50_ms,
                    "total_ms": c.total_ms,
                    "macs": c.op.macs,
                    "interpolated": c.interpolated,
                }
                for c in p.ops
            ],
        }


def predict(
    space: SearchSpace,
    arch: Arch,
    *,
    lut: Lut | None = None,
    lut_path: Path | None = None,
    target: str | None = None,
    backend: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    batch: int | None = None,
    raw: bool = False,
    interpolate: bool = False,
    energy: str = "auto",
    devices: Path | None = None,
) -> PredictionReport:
    """Counts of ``arch``, plus its LUT prediction when a LUT is given (``lut`` read from
    ``lut_path``); the measurement set is chosen by target/backend/dtype/threads/batch, with the
    target's devices.toml (``devices``) defaults where they are unset (:func:`choose_measurement_set`).

    ``energy``: ``"auto"`` adds the energy prediction when the set holds energy rows (else
    ``energy_note`` says why not), ``"require"`` refuses (:class:`NoEnergyError`) without them,
    ``"off"`` skips it."""
    if energy not in ("auto", "require", "off"):
        raise ValueError(f"energy must be auto, require or off, not {energy!r}")
    prediction = mset = energy_pred = None
    energy_note = None
    if lut is not None:
        path = Path(lut_path) if lut_path is not None else Path("<memory>")
        mset = choose_measurement_set(
            lut, path, target=target, backend=backend, dtype=dtype, threads=threads, batch=batch,
            devices=devices,
        )  # fmt: skip
        prediction = predict_latency(space, arch, lut, path, mset, raw=raw, interpolate=interpolate)
        if energy == "require":
            energy_pred = predict_energy(space, arch, lut, path, mset, raw=raw, interpolate=interpolate)
        elif energy == "auto" and lut.energy_by_key(mset):
            try:
                energy_pred = predict_energy(space, arch, lut, path, mset, raw=raw, interpolate=interpolate)
            except MissingLutEntriesError as exc:  # latency stands; say why energy does not
                energy_note = str(exc)
        elif energy == "auto":
            energy_note = energy_refusal(lut, path, mset)
    elif energy == "require":
        raise NoEnergyError(
            "an energy prediction needs a LUT measured with a power reader",
            hint="pass --lut PATH, or --target NAME to use luts/NAME.parquet",
        )
    shape = space.input_shape(arch)
    n = mset.batch if mset is not None else batch or 1
    return PredictionReport(
        space.name,
        space.format(arch),
        (n, *shape[1:]),
        space.macs(arch),
        space.params(arch),
        prediction,
        Path(lut_path) if lut is not None and lut_path is not None else None,
        mset,
        energy_pred,
        energy_note,
    )
