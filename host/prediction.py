"""``predict``: MACs, parameters and the LUT-predicted latency of one architecture.

Finding the LUT (an explicit path, or the default ``luts/<target>.parquet``), choosing its measurement
set and assembling the op-by-op prediction live here, so that ``measure``, ``adapt`` and farm runs
predict exactly as ``chamlab predict`` does. A prediction applies the LUT's calibration for its space
and measurement set when one is stored and fresh (:mod:`chamlab.host.calibration`; ``raw`` never
does), and with ``interpolate`` fills ops the LUT lacks from the op-level model
(:mod:`chamlab.chamnet.predictors.op_model`).
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from pathlib import Path
from typing import Any

from chamlab.chamnet.predictors.latency import LatencyPrediction, LutLatencyPredictor
from chamlab.chamnet.predictors.op_model import OpLatencyModel
from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import InputError, LutError, MissingLutEntriesError
from chamlab.operators import INVOCATION_PROBE, OPS, OpSpec

from .lut import Lut, MeasurementSet

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


def profile_hint(space: SearchSpace, arch_text: str, mset: MeasurementSet, path: Path) -> str:
    """The exact ``chamlab profile`` command that fills the LUT entries ``arch`` lacks."""
    from .profiling import EXHAUSTIVE_LIMIT

    cmd = ["chamlab", "profile", "--target", mset.device, "--space", space.name]
    cmd += ["--threads", str(mset.threads)]
    if mset.batch != 1:
        cmd += ["--batch", str(mset.batch)]
    cmd += ["--out", str(path)]
    if space.size > EXHAUSTIVE_LIMIT:  # a large space is not profiled exhaustively: name the arch
        cmd += ["--arch", arch_text]
    return f"fill them with `{shlex.join(cmd)}`"


@functools.lru_cache(maxsize=8)
def _op_model(p50_items: tuple[tuple[str, float], ...]) -> OpLatencyModel:
    return OpLatencyModel({OPS.from_key(k): v for k, v in p50_items if k != INVOCATION_PROBE.key})


def op_model(lut: Lut, mset: MeasurementSet) -> OpLatencyModel:
    """The op-level model fitted on the ops ``mset`` holds (cached per distinct set of rows)."""
    return _op_model(tuple(sorted(lut.p50_by_key(mset).items())))


class LatencyModel:
    """Predictions of many archs from one LUT measurement set: the LUT rows, the op-level model and
    the calibration are looked up once (what :func:`predict_latency` does per call)."""

    def __init__(
        self,
        space: SearchSpace,
        lut: Lut,
        path: Path,
        mset: MeasurementSet,
        *,
        raw: bool = False,
        interpolate: bool = False,
    ) -> None:
        from . import calibration

        self.space, self.path, self.mset, self.raw = space, Path(path), mset, raw
        fill = None
        if interpolate:
            model = op_model(lut, mset)
            filled: dict[str, float | None] = {}  # ops recur across archs: predict each once

            def fill(op: OpSpec) -> float | None:
                if op.key not in filled:
                    filled[op.key] = model.predict(op) if model.can_predict(op) else None
                return filled[op.key]

        self.predictor = LutLatencyPredictor(
            lut.p50_by_key(mset),
            correct_overhead=not raw,
            what=f"LUT {path} ({mset.device}, {mset.threads} thread(s), batch {mset.batch})",
            fill=fill,
        )
        self.found = None if raw else calibration.lookup(lut, mset, space.name)
        self._summary = self.found.summary() if self.found else None

    @property
    def calibrated(self) -> bool:
        """Whether predictions apply a (fresh) calibration."""
        return not self.raw and self.found is not None and self.found.stale is None

    def predict(self, arch: Arch) -> LatencyPrediction:
        """The prediction of ``arch``; missing ops name the fix (or come from the op-level model)."""
        from . import calibration

        ops = self.space.ops(arch)
        try:
            pred = self.predictor.predict(ops)
        except MissingLutEntriesError as exc:
            exc.hint = profile_hint(self.space, self.space.format(arch), self.mset, self.path)
            raise
        if self.raw:
            return pred
        features = {
            "lut_sum_ms": pred.lut_sum_ms,
            "n_ops": float(len(ops)),
            "weight_mib": float(
                sum(op.params for op in ops) * calibration.DTYPE_BYTES.get(self.mset.dtype, 4) / 2**20
            ),
        }
        value, why = calibration.apply(self.found, features)
        if value is None:
            return dataclasses.replace(pred, calibration=self._summary, calibration_note=why)
        return dataclasses.replace(
            pred,
            latency_ms=value,
            calibrated=True,
            uncalibrated_ms=pred.latency_ms,
            calibration=self._summary,
        )


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

    @property
    def latency_ms(self) -> float | None:
        return self.prediction.latency_ms if self.prediction else None

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
            "calibrated": p.calibrated if p else False,
            "uncalibrated_ms": p.uncalibrated_ms if p else None,
            "calibration": dict(p.calibration) if p and p.calibration else None,
            "calibration_note": p.calibration_note if p else None,
            "interpolated_ops": p.interpolated_ops if p else 0,
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
) -> PredictionReport:
    """Counts of ``arch``, plus its LUT prediction when a LUT is given (``lut`` read from
    ``lut_path``); the measurement set is chosen by target/backend/dtype/threads/batch."""
    prediction = mset = None
    if lut is not None:
        path = Path(lut_path) if lut_path is not None else Path("<memory>")
        mset = lut.choose(path, device=target, backend=backend, dtype=dtype, threads=threads, batch=batch)
        prediction = predict_latency(space, arch, lut, path, mset, raw=raw, interpolate=interpolate)
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
    )
