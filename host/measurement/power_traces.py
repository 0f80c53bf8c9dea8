"""Power traces on the host: the ``power-trace`` table kind, and the LUT's energy columns.

A runner started with a power reader (devices.toml ``power_reader``; see :mod:`chamlab.agent.power`)
returns an ``energy`` record per op: the idle draw, the draw while the op repeats, the energy of one
execution above idle, whether the device was charging, and the raw samples (``trace``). The host puts
the numbers in the op's LUT row (:func:`energy_columns`) and the raw samples in a power-trace table
beside the LUT (:func:`trace_path`: ``<lut stem>.power.parquet``), one row per sample:

==========  =========  ======================================================================
column      type       meaning
==========  =========  ======================================================================
run_id      string     the profiling run (the LUT rows' ``run_id``)
op_key      string     the op (the LUT row's ``op_key``)
batch       int32      the batch size it ran at
device      string     the target
reader      string     ``battery``, ``rapl`` or ``nvml``
phase       string     ``idle`` or ``active`` (the op repeating)
t_s         float64    seconds since the op's energy measurement began (the target's monotonic clock)
power_w     float64    power in watts (an energy counter's delta over the interval ending at ``t_s``)
==========  =========  ======================================================================

The file goes through the store (``chamlab.kind`` = ``power-trace``, version 1) and is extended
under its own lock, like the LUT: re-measuring an op replaces its samples of the same run.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from chamlab.core.errors import DataFileError
from chamlab.core.locks import sibling_lock
from chamlab.core.store import KINDS, read_table, write_table

TRACE_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("op_key", pa.string(), nullable=False),
        pa.field("batch", pa.int32()),
        pa.field("device", pa.string()),
        pa.field("reader", pa.string()),
        pa.field("phase", pa.string()),
        pa.field("t_s", pa.float64()),
        pa.field("power_w", pa.float64()),
    ]
)

TRACE_KIND = KINDS.register(
    "power-trace",
    version=1,
    schema=TRACE_SCHEMA,
    what="power trace",
    make_hint="it is written beside the LUT by `chamlab profile` on a device with power_reader set",
    error=DataFileError,
)


def trace_path(lut_path: Path) -> Path:
    """Where the power trace of the LUT ``lut_path`` lives: ``<dir>/<stem>.power.parquet``."""
    lut_path = Path(lut_path)
    return lut_path.with_name(f"{lut_path.stem}.power.parquet")


def energy_columns(energy: Mapping[str, Any] | None) -> dict[str, Any]:
    """The LUT columns filled from a runner's ``energy`` record (all None without one, or when the
    reader reported an error)."""
    if not energy or energy.get("error"):
        return {
            "idle_power_w": None,
            "energy_mj": None,
            "avg_power_w": None,
            "power_reader": None,
            "charging": None,
        }
    return {
        "idle_power_w": float(energy["idle_power_w"]),
        "energy_mj": float(energy["energy_mj"]),
        "avg_power_w": float(energy["avg_power_w"]),
        "power_reader": str(energy["reader"]),
        "charging": energy.get("charging"),
    }


def trace_rows(
    energy: Mapping[str, Any] | None, *, run_id: str | None, op_key: str, batch: int, device: str
) -> list[dict[str, Any]]:
    """Power-trace rows from one ``energy`` record (none without samples)."""
    if not energy or energy.get("error"):
        return []
    return [
        {
            "run_id": run_id,
            "op_key": op_key,
            "batch": batch,
            "device": device,
            "reader": energy["reader"],
            "phase": phase,
            "t_s": float(t),
            "power_w": float(p),
        }
        for phase, t, p in energy.get("trace") or []
    ]


def read_trace(path: Path) -> pa.Table:
    return read_table(Path(path), TRACE_KIND).table


def add_trace_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add ``rows`` to the trace at ``path`` (created if missing) under its lock; samples of the same
    (run, op, batch) already there are replaced."""
    if not rows:
        return
    path = Path(path)
    new = pa.Table.from_pylist([dict(r) for r in rows], schema=TRACE_SCHEMA)
    with sibling_lock(path, what=f"power trace {path}").hold():
        if path.exists():
            old = read_trace(path)
            keys = {
                (r["run_id"], r["op_key"], r["batch"])
                for r in new.select(["run_id", "op_key", "batch"]).to_pylist()
            }
            keep = [
                (r["run_id"], r["op_key"], r["batch"]) not in keys
                for r in old.select(["run_id", "op_key", "batch"]).to_pylist()
            ]
            new = pa.concat_tables([old.filter(pa.array(keep, type=pa.bool_())), new])
        write_table(path, TRACE_KIND, new)


def op_trace(table: pa.Table, op_key: str) -> pa.Table:
    """The samples of one op."""
    return table.filter(pc.equal(table["op_key"], op_key))


def energy_from_driver_samples(
    text: str, *, settle_s: float, mean_ms: float, executions: int, current_sign: str = "auto"
) -> dict[str, Any]:
    """The ``energy`` record of one op from the driver's power samples (executor_runner power round,
    see agent/driver.sh), in the shim's shape (:func:`chamlab.agent.power.measure_energy`).

    Idle power is averaged over the idle window, active power over the runner's call, each after
    ``settle_s`` (the fuel gauge's averaging and the runner's start-up); the op's energy per execution
    above idle is ``(active - idle) W x mean_ms`` (the op's mean latency from the latency round), since
    the runner executes the op back to back. Raises ``ValueError`` naming what is wrong.
    """
    reader, status, ranges = "", None, []
    rows: list[tuple[str, float, list[int]]] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "reader":
            reader = parts[1] if len(parts) > 1 else ""
        elif parts[0] == "status":
            status = parts[1] if len(parts) > 1 else None
        elif parts[0] == "ranges":
            ranges = [int(x) for x in parts[1:]]
        elif parts[0] in ("idle", "active", "end") and len(parts) >= 3:
            try:
                rows.append((parts[0], int(parts[1]) / 100.0, [int(x) for x in parts[2:]]))
            except ValueError:
                continue  # a sample cut short by a read racing a write
    if reader not in ("battery", "rapl"):
        raise ValueError(f"power samples name no known reader ({reader!r})")
    points: list[tuple[str, float, float]] = []  # (phase, t_s, cumulative J) or (phase, t_s, W)
    if reader == "rapl":
        if not ranges:
            raise ValueError("rapl samples without max_energy_range_uj")
        last: list[int] | None = None
        total_uj = 0
        for phase, t, values in rows:
            if len(values) != len(ranges):
                continue
            if last is not None:
                for i, (now, before) in enumerate(zip(values, last, strict=True)):
                    total_uj += now - before if now >= before else now - before + ranges[i]
            last = values
            points.append((phase, t, total_uj * 1e-6))
    else:
        for phase, t, values in rows:
            if len(values) != 2:
                continue
            current_ua, voltage_uv = values
            if current_sign == "discharge_positive":
                current_ua = max(current_ua, 0)
            elif current_sign == "discharge_negative":
                current_ua = max(-current_ua, 0)
            else:
                current_ua = abs(current_ua)
            points.append((phase, t, current_ua * 1e-6 * voltage_uv * 1e-6))
    if not points:
        raise ValueError("no power samples")
    origin = points[0][1]

    def window(phases: tuple[str, ...]) -> tuple[float, float, list[tuple[float, float]]]:
        sel = [(t, v) for ph, t, v in points if ph in phases]
        if not sel:
            raise ValueError(f"no {'/'.join(phases)} samples")
        t0 = sel[0][0] + settle_s
        sel = [(t, v) for t, v in sel if t >= t0]
        if len(sel) < 2 or sel[-1][0] <= sel[0][0]:
            raise ValueError(
                f"the {phases[0]} window is shorter than its settling time of {settle_s:g} s: "
                "raise power_window_s"
            )
        duration = sel[-1][0] - sel[0][0]
        if reader == "rapl":
            power_w = (sel[-1][1] - sel[0][1]) / duration
            trace = [
                (tb - origin, (eb - ea) / (tb - ta) if tb > ta else 0.0)
                for (ta, ea), (tb, eb) in itertools.pairwise(sel)
            ]
        else:
            energy = sum(0.5 * (pa + pb) * (tb - ta) for (ta, pa), (tb, pb) in itertools.pairwise(sel))
            power_w = energy / duration
            trace = [(t - origin, p) for t, p in sel]
        return power_w, duration, trace

    idle_w, _, idle_trace = window(("idle",))
    active_w, active_s, active_trace = window(("active", "end"))
    return {
        "reader": reader,
        "idle_power_w": idle_w,
        "active_power_w": active_w,
        "avg_power_w": active_w - idle_w,
        "energy_mj": (active_w - idle_w) * mean_ms,
        "executions": executions,
        "window_s": active_s,
        "charging": None if status is None else status in ("Charging", "Full"),
        "trace": [["idle", round(t, 6), p] for t, p in idle_trace]
        + [["active", round(t, 6), p] for t, p in active_trace],
    }
