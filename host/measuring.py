"""``measure``: export whole networks, measure them on a device, compare with the LUT prediction.

It runs the same pipeline as ``profile`` (one session, the device lock, results parsed once) with one
artifact per network instead of per op.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import LutError, MeasurementError, MissingLutEntriesError
from chamlab.operators.export import ExportItem

from .lut import stats_from_samples
from .pipeline import NullProgress, Progress, RunSpec, claim_device, run_items
from .prediction import find_lut, predict_latency
from .transports.base import Transport


@dataclasses.dataclass(frozen=True)
class NetworkMeasurement:
    name: str
    stats: dict[str, float]
    samples_ms: tuple[float, ...]
    unstable: bool
    unstable_reasons: tuple[str, ...]
    artifact: Path
    export_s: float | None
    breakdown: tuple[dict[str, Any], ...] | None

    @property
    def p50_ms(self) -> float:
        return self.stats["p50_ms"]

    @property
    def n_samples(self) -> int:
        return len(self.samples_ms)


def network_item(space: SearchSpace, arch: Arch, batch: int = 1) -> ExportItem:
    """The export item of a whole network (named ``net:<space>:<arch>``) at ``batch``."""
    return ExportItem.for_network(f"net:{space.name}:{space.format(arch)}", space.ops(arch), batch)


def measure_networks(
    spec: RunSpec,
    space: SearchSpace,
    archs: Sequence[Arch],
    *,
    breakdown: bool = False,
    workers: int | None = None,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
) -> list[NetworkMeasurement]:
    """Export each arch as one program and measure them in one session on ``spec``'s device.

    Raises :class:`MeasurementError` naming the first network that failed (after all ran); the run
    directory is then kept, so re-running resumes.
    """
    progress = progress or NullProgress()
    items = [network_item(space, a, spec.batch) for a in archs]
    with claim_device(spec, no_wait=no_wait, progress=progress, what=f"measure {space.name}"):
        run = run_items(
            spec,
            items,
            breakdown=breakdown,
            workers=workers,
            transport=transport,
            progress=progress,
            no_wait=no_wait,
        )
        if run.failed:
            name, error = run.failed[0]
            raise MeasurementError(f"measuring {name} on {spec.target} failed: {error}")
        run.finish()
    results = []
    for item in items:
        m = run.measured[item]
        results.append(
            NetworkMeasurement(
                item.name,
                stats_from_samples(m.samples_ms),
                tuple(m.samples_ms),
                bool(m.result.get("unstable")),
                tuple(m.result.get("unstable_reasons") or ()),
                m.artifact.pte_path,
                m.artifact.export_s,
                tuple(m.events) if m.events is not None else None,
            )
        )
    return results


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
            "threads": self.spec.threads,
            "batch": self.spec.batch,
            "macs": self.macs,
            "params": self.params,
            "measured_p50_ms": m.stats["p50_ms"],
            "measured_p10_ms": m.stats["p10_ms"],
            "measured_p90_ms": m.stats["p90_ms"],
            "measured_mean_ms": m.stats["mean_ms"],
            "n_samples": m.n_samples,
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
            mset = lut.choose(
                path,
                device=spec.target,
                backend=spec.backend.value,
                dtype=spec.dtype.value,
                threads=spec.threads,
                batch=spec.batch,
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


@dataclasses.dataclass(frozen=True)
class ProgramMeasurement:
    """One program measured in ``len(runs)`` separate runs (each its own runner process on the target)."""

    name: str
    runs: tuple[NetworkMeasurement, ...]
    runtime_version: str | None
    fingerprint: str | None

    @property
    def p50_ms(self) -> float:
        """The median of the runs' p50s."""
        return float(statistics.median(r.p50_ms for r in self.runs))

    @property
    def unstable(self) -> bool:
        return any(r.unstable for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "p50_ms": self.p50_ms,
            "runs_p50_ms": [r.p50_ms for r in self.runs],
            "n_samples": [r.n_samples for r in self.runs],
            "unstable": self.unstable,
            "runtime_version": self.runtime_version,
            "fingerprint": self.fingerprint,
        }


def measure_program(
    spec: RunSpec,
    name: str,
    pte: Path,
    etrecord: Path,
    *,
    runs: int = 3,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
) -> ProgramMeasurement:
    """Measure the program file ``pte`` (an exported network, e.g. ``adapt``'s ``model.pte``) on
    ``spec``'s device in ``runs`` separate runs through the same session, driver and runner as
    :func:`measure_networks`; each run starts afresh (nothing resumed from the previous one).

    ``name`` is the task key on the target (``net:<space>:<arch>`` style). Raises
    :class:`MeasurementError` when a run fails.
    """
    import hashlib

    from chamlab.operators.export import Artifact, ExportItem

    from .pipeline import _parse
    from .session import DeviceSession, Task

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    progress = progress or NullProgress()
    pte, etrecord = Path(pte), Path(etrecord)
    digest = hashlib.sha256(pte.read_bytes()).hexdigest()[:24]
    artifact = Artifact(
        ExportItem(name, (), spec.batch), spec.backend.value, spec.dtype.value, pte, etrecord, digest, None
    )
    task = Task(name, artifact)
    measured: list[NetworkMeasurement] = []
    result: dict[str, Any] = {}
    with claim_device(spec, no_wait=no_wait, progress=progress, what=f"measure {name}"):
        owns = transport is None
        transport = transport or spec.device.open()
        try:
            session = DeviceSession(
                spec.device,
                transport,
                threads=spec.threads,
                no_wait=no_wait,
                on_wait=lambda owner: progress.note(
                    f"device {spec.target} is busy (driver {owner}); waiting"
                ),
            )
            progress.start("measure", runs)
            for i in range(runs):
                [outcome] = session.run([task], fresh=True)
                if not outcome.ok:
                    raise MeasurementError(
                        f"measuring {name} on {spec.target} failed (run {i + 1} of {runs}): {outcome.error}"
                    )
                samples, _ = _parse(outcome, False)
                result = outcome.result or {}
                measured.append(
                    NetworkMeasurement(
                        name,
                        stats_from_samples(samples),
                        tuple(samples),
                        bool(result.get("unstable")),
                        tuple(result.get("unstable_reasons") or ()),
                        pte,
                        None,
                        None,
                    )
                )
                session.finish([task])
                progress.advance("measure", f"run {i + 1}: p50 {measured[-1].p50_ms:.4f} ms")
        finally:
            if owns:
                transport.close()
    return ProgramMeasurement(name, tuple(measured), result.get("runtime_version"), result.get("fingerprint"))
