"""``profile``: measure every operator a space needs on a device and add them to a LUT.

Enumerate the ops a space needs, skip those the LUT already holds for this measurement set, export
the rest (cached, in parallel), measure them on the target through the pipeline, and add the rows to
the LUT under its file lock. Re-running resumes: only missing ops are measured, and an interrupted run
continues in its run directory on the target. The run directory is removed only after the LUT write
succeeded, so a failed write (a full disk) loses nothing.

int8 (``--dtype int8``): the ops are exported quantized by the run's recipe, whose id goes into each
row (``quant_recipe``); the plan adds one :class:`~chamlab.operators.QuantEdge` probe per distinct
boundary shape between consecutive ops; an op the quantizer left in fp32 or outside the XNNPACK
delegate is stored with ``delegated = false`` and the offending kernels in ``breakdown``, and listed
in :attr:`ProfileReport.not_delegated` (the CLI warns). A LUT whose rows of this measurement set come
from another recipe is refused before any work: two recipes never mix in one set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import socket
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from chamlab.chamnet.spaces.base import Arch, SearchSpace
from chamlab.core.errors import InputError, WriteError
from chamlab.core.files import check_writable
from chamlab.core.store import tool_version
from chamlab.host.devices.transports.base import Transport
from chamlab.host.luts.lut import Lut, add_rows, make_row
from chamlab.host.measurement import power_traces as power
from chamlab.host.measurement.pipeline import (
    Measured,
    NullProgress,
    Progress,
    RunSpec,
    claim_device,
    run_items,
)
from chamlab.operators import INVOCATION_PROBE, OpSpec, boundary_probes
from chamlab.operators.export import ExportItem

#: spaces with at most this many archs are profiled exhaustively when no --arch/--sample is given
EXHAUSTIVE_LIMIT = 100_000


def default_archs(space: SearchSpace) -> tuple[list[Arch], str]:
    """Every arch of a small space, else its reference archs; and a sentence saying which."""
    if space.size <= EXHAUSTIVE_LIMIT:
        return list(space.enumerate()), f"all {space.size:,} archs of {space.name}"
    refs = list(space.references.values())
    return refs, f"the {len(refs)} reference archs of {space.name} ({', '.join(space.references)})"


def plan_ops(space: SearchSpace, archs: Iterable[Arch], dtype: str = "fp32") -> list[OpSpec]:
    """The distinct ops of ``archs`` plus the :data:`INVOCATION_PROBE` (and, for int8, the
    quant_edge probe of every boundary between consecutive ops), sorted by key."""
    ops: dict[str, OpSpec] = {INVOCATION_PROBE.key: INVOCATION_PROBE}
    for arch in archs:
        arch_ops = space.ops(arch)
        for op in [*arch_ops, *(boundary_probes(arch_ops) if dtype == "int8" else [])]:
            ops.setdefault(op.key, op)
    return [ops[k] for k in sorted(ops)]


def check_recipe_mix(lut: Lut, spec: RunSpec, path: Path) -> None:
    """Refuse to add rows of ``spec``'s recipe to a measurement set holding another recipe's rows."""
    rows = lut.select(spec.measurement_set)
    other = sorted({str(r.get("quant_recipe")) for r in rows.values()} - {str(spec.quant_recipe)})
    if other:
        raise InputError(
            f"LUT {path} holds {spec.measurement_set.describe()} rows of quantization recipe "
            f"{', '.join(other)}; this run uses {spec.quant_recipe}, and two recipes never mix in one set",
            hint="profile into another LUT (--out PATH), or keep the recipe the LUT has (--quant-recipe)",
        )


@dataclasses.dataclass
class ProfileReport:
    lut_path: Path
    planned: int
    already: int
    measured: list[str] = dataclasses.field(default_factory=list)
    unstable: list[str] = dataclasses.field(default_factory=list)
    not_delegated: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (op key, what)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    export_s: float = 0.0
    measure_s: float = 0.0
    exported: int = 0
    run_id: str | None = None
    power_trace: Path | None = None
    power_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "lut": str(self.lut_path),
            "planned_ops": self.planned,
            "already_in_lut": self.already,
            "measured_ops": len(self.measured),
            "unstable_ops": self.unstable,
            "not_delegated_ops": [{"op_key": k, "problem": e} for k, e in self.not_delegated],
            "failed_ops": [{"op_key": k, "error": e} for k, e in self.failed],
            "exported_ops": self.exported,
            "export_s": round(self.export_s, 3),
            "measure_s": round(self.measure_s, 3),
            "run_id": self.run_id,
            "power_trace": str(self.power_trace) if self.power_trace else None,
            "power_error": self.power_error,
        }


def lut_row(spec: RunSpec, m: Measured, run_id: str | None) -> dict[str, Any]:
    """The LUT row of one measured op (raw samples plus the device state the runner recorded)."""
    r = m.result
    measured_at = r.get("ended_at")
    energy = power.energy_columns(r.get("energy"))
    if energy["charging"] is None and r.get("charging") is not None:
        energy["charging"] = bool(r["charging"])  # the driver's battery status (executor_runner runs)
    # whether the whole op ran inside the backend's delegate: known from the per-op Inspector
    # breakdown (--breakdown) and, for int8, from the export's quantization report; else null
    events, delegated = breakdown_and_delegation(m)
    return make_row(
        m.item.name,
        device=spec.target,
        backend=spec.backend.value,
        dtype=spec.dtype.value,
        threads=spec.threads,
        batch=spec.batch,
        samples_ms=m.samples_ms,
        run_id=run_id,
        measured_at=dt.datetime.fromisoformat(measured_at) if measured_at else dt.datetime.now(dt.UTC),
        robust_cv=r.get("robust_cv"),
        unstable=r.get("unstable"),
        runtime_version=r.get("runtime_version"),
        device_fingerprint=r.get("fingerprint"),
        affinity=r.get("affinity"),
        governor=r.get("governor"),
        temp_before_c=r.get("temp_before_c"),
        temp_after_c=r.get("temp_after_c"),
        battery_pct=r.get("battery_pct"),
        **heat_columns(r),
        breakdown=events,
        delegated=delegated,
        quant_recipe=spec.quant_recipe,
        **energy,
    )


def heat_columns(result: dict[str, Any]) -> dict[str, Any]:
    """The row's window columns from the result's attempts (one per measurement window): how many
    there were, how many were throttled (null when no window's frequency was checked), whether the
    kept one was, the hottest reading of each window (its zone's maximum while sampled, else the
    hotter of before/after; null when none was read) and the seconds waited for the zone to cool."""
    attempts = [a for a in result.get("attempts") or [] if isinstance(a, dict)]
    checked = [a["throttled"] for a in attempts if isinstance(a.get("throttled"), bool)]
    temps: list[float | None] = []
    for a in attempts:
        if isinstance(a.get("temp_max_c"), (int, float)):
            temps.append(float(a["temp_max_c"]))
            continue
        known = [
            float(t) for t in (a.get("temp_before_c"), a.get("temp_after_c")) if isinstance(t, (int, float))
        ]
        temps.append(max(known, default=None))
    waits = [float(a["cool_wait_s"]) for a in attempts if isinstance(a.get("cool_wait_s"), (int, float))]
    kept = result.get("throttled")
    return {
        "windows": len(attempts) or None,
        "throttled": kept if isinstance(kept, bool) else None,
        "throttled_windows": sum(checked) if checked else None,
        "window_temps_c": temps if any(t is not None for t in temps) else None,
        "cool_wait_s": round(sum(waits), 2) if waits else None,
    }


def breakdown_and_delegation(m: Measured) -> tuple[list[dict[str, Any]] | None, bool | None]:
    """The row's ``breakdown`` and ``delegated``. fp32: from the ETDump breakdown (null without
    one). int8: also from the export's quantization report, so it is always known; the kernels the
    quantizer left in fp32 (``fp32:<op>``) or outside the delegate are added to the breakdown with
    ``delegated = false`` when the ETDump did not already list them."""
    events = list(m.events) if m.events else None
    report = m.artifact.quant_report
    if report is None:
        return events, all(e["delegated"] for e in events) if events else None
    extra = report.breakdown()
    if events:
        seen = {e["event"] for e in events}
        extra = [e for e in extra if e["event"] not in seen]
    merged = [*(events or []), *extra] or None
    delegated = report.delegated and all(e["delegated"] for e in events or [])
    return merged, delegated


def provenance(
    spec: RunSpec,
    space: SearchSpace,
    run_id: str | None,
    rows: int,
    command: str,
    archs: Sequence[Arch] | None = None,
) -> dict[str, Any]:
    """The provenance entry of a run that added ``rows`` rows; ``archs``: the networks the user named
    (``--arch``/``--sample``), recorded as the space's string forms so that ``calibrate`` can measure
    networks whose ops the LUT holds (the default archs are the space's references, known anyway)."""
    return {
        "run_id": run_id,
        "device": spec.target,
        "backend": spec.backend.value,
        "dtype": spec.dtype.value,
        "threads": spec.threads,
        "batch": spec.batch,
        "quant_recipe": spec.quant_recipe,
        "space": space.name,
        "rows": rows,
        "tool_version": tool_version(),
        "host": socket.gethostname(),
        "user": _user(),
        "command": command or " ".join(sys.argv),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        **({"archs": [space.format(a) for a in archs]} if archs else {}),
    }


def profile(
    spec: RunSpec,
    space: SearchSpace,
    archs: Sequence[Arch] | None,
    *,
    out: Path,
    force: bool = False,
    breakdown: bool = False,
    workers: int | None = None,
    transport: Transport | None = None,
    progress: Progress | None = None,
    command: str = "",
    no_wait: bool = False,
    run_tag: str = "",
    ops: Sequence[OpSpec] | None = None,
) -> ProfileReport:
    """Profile the ops of ``archs`` (None: :func:`default_archs`) on ``spec`` into the LUT ``out``.

    ``run_tag`` becomes part of the run id on the target (see :func:`~.pipeline.run_items`).
    ``ops``: measure exactly these ops instead (``archs`` is then ignored; ``profile --adaptive``)."""
    progress = progress or NullProgress()
    out = Path(out)
    check_writable(out, what="LUT")
    check_recipe_mix(Lut.read_or_empty(out), spec, out)  # a corrupt or foreign file stops here, untouched
    named = list(archs) if archs is not None and ops is None else None  # recorded in the provenance
    if ops is None:
        if archs is None:
            archs, which = default_archs(space)
            progress.note(f"profiling the ops of {which}")
        ops = plan_ops(space, archs, spec.dtype.value)
    with claim_device(spec, no_wait=no_wait, progress=progress, what=command or f"profile {space.name}"):
        # re-read under the device lock: a run we waited for may have measured some of our ops
        current = Lut.read_or_empty(out)
        check_recipe_mix(current, spec, out)
        have = set() if force else set(current.p50_by_key(spec.measurement_set))
        todo = [op for op in ops if op.key not in have]
        report = ProfileReport(out, len(ops), len(ops) - len(todo))
        if not todo:
            return report
        run = run_items(
            spec,
            [ExportItem.for_op(op, spec.batch) for op in todo],
            breakdown=breakdown,
            fresh=force,
            workers=workers,
            transport=transport,
            progress=progress,
            no_wait=no_wait,
            run_tag=run_tag,
        )
        report.failed, report.run_id = list(run.failed), run.run_id
        report.exported, report.export_s, report.measure_s = run.exported, run.export_s, run.measure_s
        rows, traces = [], []
        for m in run.measured.values():
            try:
                row = lut_row(spec, m, run.run_id)
            except ValueError as exc:
                report.failed.append((m.item.name, str(exc)))
                continue
            rows.append(row)
            energy = m.result.get("energy")
            if energy and energy.get("error"):
                report.power_error = energy["error"]
            traces += power.trace_rows(
                energy, run_id=run.run_id, op_key=m.item.name, batch=spec.batch, device=spec.target
            )
            report.measured.append(m.item.name)
            problem = m.artifact.quant_report.problem() if m.artifact.quant_report else None
            if row["delegated"] is False:
                report.not_delegated.append(
                    (m.item.name, problem or "ETDump shows kernels outside the delegate")
                )
            if row["unstable"]:
                report.unstable.append(m.item.name)
        if rows:
            try:
                add_rows(out, rows, provenance(spec, space, run.run_id, len(rows), command, named))
                if traces:
                    report.power_trace = power.trace_path(out)
                    power.add_trace_rows(report.power_trace, traces)
            except WriteError as exc:
                where = run.remote_dir or "the run directory"
                exc.hint = (
                    f"the {len(rows)} measurement(s) are kept in {where} on {spec.target}: re-run the same "
                    "command once the problem is fixed, and only the write is repeated"
                )
                raise
        run.finish()
    return report


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
