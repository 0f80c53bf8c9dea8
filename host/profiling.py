"""The jobs behind ``chamlab profile`` and ``chamlab measure`` (the CLI only parses and calls these).

``profile``: enumerate the ops a space needs, skip those the LUT already holds for this (device,
backend, dtype, threads), export the rest (cached, in parallel), measure them on the target through a
:class:`~chamlab.host.session.DeviceSession`, and add the rows to the LUT atomically. Re-running
resumes: only missing ops are measured, and an interrupted run continues in its run directory.

``measure``: export one whole network, measure it the same way, return its statistics.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.operators.errors import MeasurementError
from chamlab.operators.export import ArtifactCache, ExportFailure, ExportItem, export_all
from chamlab.operators.fsutil import check_writable
from chamlab.operators.specs import INVOCATION_PROBE, OpSpec

from . import etdump as etdump_mod
from .config import DeviceConfig
from .lut import Lut, make_row, stats_from_samples, tool_version
from .session import DeviceSession, Outcome, Task
from .transports import open_transport
from .transports.base import Transport

#: spaces with at most this many archs are profiled exhaustively when no --arch/--sample is given
EXHAUSTIVE_LIMIT = 100_000


class Progress(Protocol):
    def start(self, phase: str, total: int) -> None: ...
    def advance(self, phase: str, label: str = "") -> None: ...
    def note(self, text: str) -> None: ...


class NullProgress:
    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, label: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        pass


def default_archs(space: SearchSpace) -> tuple[list[Arch], str]:
    """Every arch of a small space, else its reference archs; and a sentence saying which."""
    if space.size <= EXHAUSTIVE_LIMIT:
        return list(space.enumerate()), f"all {space.size:,} archs of {space.name}"
    refs = list(space.references.values())
    return refs, f"the {len(refs)} reference archs of {space.name} ({', '.join(space.references)})"


def plan_ops(space: SearchSpace, archs: Iterable[Arch]) -> list[OpSpec]:
    """The distinct ops of ``archs`` plus the :data:`INVOCATION_PROBE`, sorted by key."""
    ops: dict[str, OpSpec] = {INVOCATION_PROBE.key: INVOCATION_PROBE}
    for arch in archs:
        for op in space.ops(arch):
            ops.setdefault(op.key, op)
    return [ops[k] for k in sorted(ops)]


@dataclasses.dataclass
class ProfileReport:
    lut_path: Path
    planned: int
    already: int
    measured: list[str] = dataclasses.field(default_factory=list)
    unstable: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    export_s: float = 0.0
    measure_s: float = 0.0
    exported: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "lut": str(self.lut_path),
            "planned_ops": self.planned,
            "already_in_lut": self.already,
            "measured_ops": len(self.measured),
            "unstable_ops": self.unstable,
            "failed_ops": [{"op_key": k, "error": e} for k, e in self.failed],
            "exported_ops": self.exported,
            "export_s": round(self.export_s, 3),
            "measure_s": round(self.measure_s, 3),
        }


def _samples(outcome: Outcome) -> list[float]:
    if outcome.result is not None:
        return [float(x) for x in outcome.result["samples_ms"]]
    if outcome.etdump is not None:
        ms = etdump_mod.parse(outcome.etdump, outcome.task.artifact.etrecord_path)["execute_ms"]
        if ms:
            return ms
    raise MeasurementError(f"{outcome.task.key}: no samples in the runner's result or ETDump")


def _row_extras(outcome: Outcome, run_id: str, breakdown: bool) -> dict[str, Any]:
    r = outcome.result or {}
    measured_at = r.get("ended_at")
    extra: dict[str, Any] = {
        "run_id": run_id,
        "measured_at": dt.datetime.fromisoformat(measured_at) if measured_at else dt.datetime.now(dt.UTC),
        "robust_cv": r.get("robust_cv"),
        "unstable": r.get("unstable"),
        "runtime_version": r.get("runtime_version"),
        "device_fingerprint": r.get("fingerprint"),
        "affinity": r.get("affinity"),
        "governor": r.get("governor"),
        "temp_before_c": r.get("temp_before_c"),
        "temp_after_c": r.get("temp_after_c"),
        "battery_pct": r.get("battery_pct"),
    }
    if breakdown and outcome.etdump is not None:
        extra["breakdown"] = etdump_mod.parse(outcome.etdump, outcome.task.artifact.etrecord_path)["events"]
    return extra


def _export(
    items: Sequence[ExportItem], backend: str, dtype: str, workers: int | None, progress: Progress
) -> tuple[dict[ExportItem, Any], list[ExportFailure], int]:
    progress.start("export", len(items))
    fresh = 0

    def on_done(item: ExportItem, res: object) -> None:
        nonlocal fresh
        fresh += int(getattr(res, "export_s", None) is not None)
        progress.advance("export", item.name)

    artifacts, failures = export_all(
        items, backend, dtype, cache=ArtifactCache(), workers=workers, on_done=on_done
    )
    return artifacts, failures, fresh


def profile(
    device: DeviceConfig,
    space: SearchSpace,
    archs: Sequence[Arch] | None,
    *,
    out: Path,
    threads: int | None = None,
    backend: str | None = None,
    force: bool = False,
    breakdown: bool = False,
    workers: int | None = None,
    transport: Transport | None = None,
    progress: Progress | None = None,
    command: str = "",
) -> ProfileReport:
    progress = progress or NullProgress()
    threads = threads or device.threads
    backend = backend or device.backend
    dtype = device.dtype
    check_writable(out, what="LUT")
    lut = Lut.read_or_empty(out)  # a corrupt or foreign file stops here, before any work, untouched
    if archs is None:
        archs, which = default_archs(space)
        progress.note(f"profiling the ops of {which}")
    ops = plan_ops(space, archs)
    have = set() if force else set(lut.p50_by_key(device.name, backend, dtype, threads))
    todo = [op for op in ops if op.key not in have]
    report = ProfileReport(Path(out), len(ops), len(ops) - len(todo))
    if not todo:
        return report

    t0 = time.perf_counter()
    items = [ExportItem.for_op(op) for op in todo]
    artifacts, failures, report.exported = _export(items, backend, dtype, workers, progress)
    report.failed += [(f.item.name, f"export failed: {f.error}") for f in failures]
    report.export_s = time.perf_counter() - t0

    tasks = [Task(item.name, artifacts[item]) for item in items if item in artifacts]
    transport = transport or open_transport(device)
    session = DeviceSession(device, transport, threads=threads, etdump=breakdown)
    run_id = session.run_id(tasks)
    progress.start("measure", len(tasks))
    t1 = time.perf_counter()
    outcomes = session.run(tasks, on_op=lambda key, rc: progress.advance("measure", key), fresh=force)
    report.measure_s = time.perf_counter() - t1

    rows = []
    for o in outcomes:
        if not o.ok:
            report.failed.append((o.task.key, o.error or f"exit {o.rc}"))
            continue
        try:
            row = make_row(
                o.task.key,
                device=device.name,
                backend=backend,
                dtype=dtype,
                threads=threads,
                samples_ms=_samples(o),
                **_row_extras(o, run_id, breakdown),
            )
        except (MeasurementError, ValueError) as exc:
            report.failed.append((o.task.key, str(exc)))
            continue
        rows.append(row)
        report.measured.append(o.task.key)
        if row["unstable"]:
            report.unstable.append(o.task.key)
    provenance = {
        "run_id": run_id,
        "device": device.name,
        "backend": backend,
        "dtype": dtype,
        "threads": threads,
        "space": space.name,
        "rows": len(rows),
        "tool_version": tool_version(),
        "host": socket.gethostname(),
        "user": _user(),
        "command": command or " ".join(sys.argv),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if rows:
        lut.upsert(rows, provenance).write(out)
    return report


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclasses.dataclass(frozen=True)
class NetworkMeasurement:
    name: str
    stats: dict[str, float]
    n_samples: int
    unstable: bool
    unstable_reasons: tuple[str, ...]
    artifact: Path
    export_s: float | None
    breakdown: tuple[dict[str, Any], ...] | None


def measure_networks(
    device: DeviceConfig,
    space: SearchSpace,
    archs: Sequence[Arch],
    *,
    threads: int | None = None,
    backend: str | None = None,
    breakdown: bool = False,
    workers: int | None = None,
    transport: Transport | None = None,
    progress: Progress | None = None,
) -> list[NetworkMeasurement]:
    """Export each arch as one program and measure them in one session on ``device``.

    Raises :class:`MeasurementError` naming the first network that failed (after all ran).
    """
    progress = progress or NullProgress()
    threads = threads or device.threads
    backend = backend or device.backend
    items = [ExportItem.for_network(f"net:{space.name}:{space.format(a)}", space.ops(a)) for a in archs]
    artifacts, failures, _ = _export(items, backend, device.dtype, workers, progress)
    if failures:
        raise MeasurementError(f"exporting {failures[0].item.name} failed: {failures[0].error}")
    tasks = [Task(item.name, artifacts[item]) for item in dict.fromkeys(items)]
    session = DeviceSession(device, transport or open_transport(device), threads=threads, etdump=breakdown)
    progress.start("measure", len(tasks))
    outcomes = {
        o.task.key: o for o in session.run(tasks, on_op=lambda key, rc: progress.advance("measure", key))
    }
    results = []
    for item in items:
        outcome = outcomes[item.name]
        if not outcome.ok:
            raise MeasurementError(f"measuring {item.name} on {device.name} failed: {outcome.error}")
        samples = _samples(outcome)
        r = outcome.result or {}
        art = outcome.task.artifact
        events = None
        if breakdown and outcome.etdump is not None:
            events = tuple(etdump_mod.parse(outcome.etdump, art.etrecord_path)["events"])
        results.append(
            NetworkMeasurement(
                item.name,
                stats_from_samples(samples),
                len(samples),
                bool(r.get("unstable")),
                tuple(r.get("unstable_reasons") or ()),
                art.pte_path,
                art.export_s,
                events,
            )
        )
    return results


def measure_network(
    device: DeviceConfig, space: SearchSpace, arch: Arch, **kwargs: Any
) -> NetworkMeasurement:
    """:func:`measure_networks` for one arch."""
    return measure_networks(device, space, [arch], **kwargs)[0]
