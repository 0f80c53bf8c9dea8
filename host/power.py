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
