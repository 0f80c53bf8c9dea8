"""Parquet look-up tables (LUTs) of operator measurements, schema v3.

One row per (``op_key``, ``device``, ``backend``, ``dtype``, ``threads``, ``batch``): the *row key*.
Raw samples are stored (``samples_ms``) and the statistics are derived from them on the host (numpy's linear
percentiles). Columns, in order, are :data:`SCHEMA`; the op's arguments are a struct ``op_params``
whose fields are the union of every registered op spec's fields (null where a spec lacks one).

The file goes through the store (:mod:`chamlab.core.store`): ``chamlab.kind`` = ``latency-lut``,
``chamlab.schema_version`` = ``2``, plus ``chamlab.provenance``: a JSON list, one object per run that
added rows (run id, device, tool version, host, time, command), and, once ``chamlab calibrate`` ran,
``chamlab.calibrations``: a JSON list of calibrations (docs/lut-format.md). Writes are atomic
(temporary file + rename); :func:`add_rows` re-reads and merges under a file lock, so concurrent
writers never lose, duplicate or corrupt a row. The files are plain Parquet, readable by pandas,
pyarrow, DuckDB and Polars.

A *measurement set* is one (device, backend, dtype, threads, batch): the row key without the op key.
A prediction always uses exactly one set (:meth:`Lut.choose`).

Schema history: v1 had no ``batch``, ``idle_power_w``, ``quant_recipe`` nor ``delegated``; a v1 file
reads as v2 through the store's upgrader (:func:`_upgrade_v1`: ``batch`` = 1, the others null). v2 had
no ``windows``, ``throttled``, ``throttled_windows``, ``window_temps_c`` nor ``cool_wait_s``
(:func:`_upgrade_v2`: null). Older files are upgraded one step at a time on read; every write is v3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chamlab.core.errors import InputError, LutError
from chamlab.core.files import check_writable
from chamlab.core.locks import sibling_lock
from chamlab.core.store import KINDS, read_table, write_table
from chamlab.operators import OPS

ROW_KEY = ("op_key", "device", "backend", "dtype", "threads", "batch")

_PARAM_FIELDS = [
    pa.field(name, pa.int64() if typ is int else pa.string())
    for name, typ in sorted(OPS.field_types().items())
]
OP_PARAMS_TYPE = pa.struct(_PARAM_FIELDS)
BREAKDOWN_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("event", pa.string()),
            pa.field("p50_ms", pa.float64()),
            pa.field("delegated", pa.bool_()),
        ]
    )
)

SCHEMA = pa.schema(
    [
        pa.field("op_key", pa.string(), nullable=False),
        pa.field("op_type", pa.string(), nullable=False),
        pa.field("op_params", OP_PARAMS_TYPE),
        pa.field("input_shape", pa.list_(pa.int64())),
        pa.field("device", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("threads", pa.int32(), nullable=False),
        pa.field("batch", pa.int32(), nullable=False),
        pa.field("p10_ms", pa.float64()),
        pa.field("p50_ms", pa.float64()),
        pa.field("p90_ms", pa.float64()),
        pa.field("mean_ms", pa.float64()),
        pa.field("std_ms", pa.float64()),
        pa.field("n_samples", pa.int32()),
        pa.field("samples_ms", pa.list_(pa.float64())),
        pa.field("robust_cv", pa.float64()),
        pa.field("unstable", pa.bool_()),
        pa.field("idle_power_w", pa.float64()),
        pa.field("energy_mj", pa.float64()),
        pa.field("avg_power_w", pa.float64()),
        pa.field("power_reader", pa.string()),
        pa.field("charging", pa.bool_()),
        pa.field("quant_recipe", pa.string()),
        pa.field("delegated", pa.bool_()),
        pa.field("breakdown", BREAKDOWN_TYPE),
        pa.field("run_id", pa.string()),
        pa.field("measured_at", pa.timestamp("us", tz="UTC")),
        pa.field("runtime_version", pa.string()),
        pa.field("device_fingerprint", pa.string()),
        pa.field("affinity", pa.string()),
        pa.field("governor", pa.string()),
        pa.field("temp_before_c", pa.float64()),
        pa.field("temp_after_c", pa.float64()),
        pa.field("battery_pct", pa.float64()),
        pa.field("windows", pa.int32()),
        pa.field("throttled", pa.bool_()),
        pa.field("throttled_windows", pa.int32()),
        pa.field("window_temps_c", pa.list_(pa.float64())),
        pa.field("cool_wait_s", pa.float64()),
    ]
)


KIND = KINDS.register(
    "latency-lut",
    version=3,
    schema=SCHEMA,
    what="LUT",
    make_hint="create it with `chamlab profile --target NAME --space SPACE --out PATH`",
    error=LutError,
)


#: columns v2 added to v1, with the value a v1 row gets (``batch`` joins the row key)
V2_ADDED = {
    "batch": 1,
    "idle_power_w": None,
    "power_reader": None,
    "charging": None,
    "quant_recipe": None,
    "delegated": None,
}


@KIND.upgrader(1)
def _upgrade_v1(table: pa.Table, meta: dict[str, str]) -> tuple[pa.Table, dict[str, str]]:
    """v1 -> v2: every v1 row was measured at batch 1; the new columns are unknown (null)."""
    for name, fill in V2_ADDED.items():
        if name in table.column_names:
            continue
        typ = SCHEMA.field(name).type
        table = table.append_column(name, pa.array([fill] * table.num_rows, type=typ))
    return table, meta


#: columns v3 added to v2 (the heat of the measurement windows, docs/lut-format.md): null in a v2 row
V3_ADDED = ("windows", "throttled", "throttled_windows", "window_temps_c", "cool_wait_s")


@KIND.upgrader(2)
def _upgrade_v2(table: pa.Table, meta: dict[str, str]) -> tuple[pa.Table, dict[str, str]]:
    """v2 -> v3: how many windows an op took and their heat were not recorded (null)."""
    for name in V3_ADDED:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, type=SCHEMA.field(name).type))
    return table, meta


def provenance_problems(provenance: Any) -> list[str]:
    """Problems of ``chamlab.provenance``: a JSON list of objects, one per run that added rows, each
    naming its ``run_id`` (a string); one line per bad entry (empty: fine)."""
    if not isinstance(provenance, list):
        return ["metadata chamlab.provenance is not a JSON list"]
    out = []
    for i, entry in enumerate(provenance):
        if not isinstance(entry, dict):
            out.append(f"provenance entry {i + 1} is {entry!r}, not an object describing a run")
        elif not isinstance(entry.get("run_id"), str) or not entry["run_id"]:
            out.append(f"provenance entry {i + 1} has no run_id (got {entry.get('run_id')!r})")
    return out


class MeasurementSet(NamedTuple):
    """One (device, backend, dtype, threads, batch) of a LUT: the rows one prediction may use."""

    device: str
    backend: str
    dtype: str
    threads: int
    batch: int = 1

    def describe(self) -> str:
        return (
            f"target={self.device} backend={self.backend} dtype={self.dtype} threads={self.threads} "
            f"batch={self.batch}"
        )


def stats_from_samples(samples_ms: Sequence[float]) -> dict[str, float]:
    """p10/p50/p90 (linear interpolation), mean and population std of the raw samples, in ms."""
    a = np.asarray(samples_ms, dtype=float)
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("samples must be a non-empty list of finite, non-negative milliseconds")
    p10, p50, p90 = np.percentile(a, [10, 50, 90])
    return {
        "p10_ms": float(p10),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std()),
    }


def make_row(
    op_key: str,
    *,
    device: str,
    backend: str,
    dtype: str,
    threads: int,
    samples_ms: Sequence[float],
    batch: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    """A LUT row from raw samples; ``extra`` fills the optional columns (unknown names are errors).
    ``input_shape`` is the op's shape at ``batch``."""
    spec = OPS.from_key(op_key)
    row: dict[str, Any] = {name: None for name in SCHEMA.names}
    params: dict[str, Any] = {f.name: None for f in _PARAM_FIELDS}
    params.update(spec.params_dict())
    row.update(
        op_key=op_key,
        op_type=spec.op_type,
        op_params=params,
        input_shape=[int(batch), *spec.input_shape[1:]],
        device=device,
        backend=backend,
        dtype=dtype,
        threads=int(threads),
        batch=int(batch),
        samples_ms=[float(x) for x in samples_ms],
        n_samples=len(samples_ms),
        **stats_from_samples(samples_ms),
    )
    unknown = set(extra) - set(SCHEMA.names)
    if unknown:
        raise ValueError(f"unknown LUT columns: {', '.join(sorted(unknown))}")
    row.update(extra)
    return row


class Lut:
    """An immutable LUT in memory: a pyarrow table in :data:`SCHEMA` plus provenance."""

    def __init__(
        self,
        table: pa.Table,
        provenance: list[dict[str, Any]] | None = None,
        calibrations: list[dict[str, Any]] | None = None,
    ) -> None:
        self.table = table
        self.provenance = list(provenance or [])
        self.calibrations = list(calibrations or [])  # chamlab.host.prediction.calibrate's records

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> Lut:
        return cls(SCHEMA.empty_table())

    @classmethod
    def read(cls, path: Path) -> Lut:
        """Read and check a LUT file; every failure is a :class:`LutError` naming the file."""
        stored = read_table(Path(path), KIND)
        provenance = stored.meta_json("chamlab.provenance", [])
        bad = provenance_problems(provenance)
        if bad:
            raise LutError(
                f"LUT {path}: {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
                hint=f"`chamlab lut validate {path}` lists the problems",
            )
        calibrations = stored.meta_json("chamlab.calibrations", [])
        if not isinstance(calibrations, list) or not all(isinstance(c, dict) for c in calibrations):
            raise LutError(f"LUT {path}: metadata chamlab.calibrations is not a JSON list of objects")
        lut = cls(stored.table, provenance, calibrations)
        problems = lut.problems()
        if problems:
            raise LutError(
                f"LUT {path} failed validation: {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            )
        return lut

    @classmethod
    def read_or_empty(cls, path: Path) -> Lut:
        return cls.read(path) if Path(path).exists() else cls.empty()

    # -- checks -----------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Value checks: unique row keys, known op keys, positive finite p50, samples match n_samples."""
        out: list[str] = []
        rows = self.table.select([*ROW_KEY, "p50_ms", "n_samples", "samples_ms"]).to_pylist()
        seen: set[tuple[Any, ...]] = set()
        for row in rows:
            key = tuple(row[k] for k in ROW_KEY)
            if key in seen:
                out.append(f"duplicate row key {key}")
            seen.add(key)
            try:
                OPS.from_key(row["op_key"])
            except Exception as exc:
                out.append(f"op_key {row['op_key']!r}: {exc}")
            p50 = row["p50_ms"]
            if p50 is None or not np.isfinite(p50) or p50 <= 0:
                out.append(f"{row['op_key']}: p50_ms must be a positive number, got {p50!r}")
            if row["samples_ms"] is not None and len(row["samples_ms"]) != row["n_samples"]:
                out.append(
                    f"{row['op_key']}: n_samples {row['n_samples']} != {len(row['samples_ms'])} samples"
                )
        return out

    # -- queries ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    def combinations(self) -> list[MeasurementSet]:
        """Distinct measurement sets, sorted."""
        cols = self.table.select(list(MeasurementSet._fields)).to_pylist()
        return sorted({MeasurementSet(**c) for c in cols})

    def choose(
        self,
        path: Path | str,
        *,
        device: str | None = None,
        backend: str | None = None,
        dtype: str | None = None,
        threads: int | None = None,
        batch: int | None = None,
    ) -> MeasurementSet:
        """The one measurement set matching the given fields (None: any). No match is a
        :class:`LutError` listing what the LUT holds; several are an :class:`InputError` asking for
        a choice."""
        wanted = {"device": device, "backend": backend, "dtype": dtype, "threads": threads, "batch": batch}
        combos = self.combinations()
        matching = [c for c in combos if all(v is None or getattr(c, k) == v for k, v in wanted.items())]
        listed = "; ".join(c.describe() for c in combos) or "nothing"
        if not matching:
            asked = " ".join(
                f"{'target' if k == 'device' else k}={v if v is not None else '*'}" for k, v in wanted.items()
            )
            raise LutError(
                f"LUT {path} has no rows for {asked}; it holds: {listed}",
                hint="profile them with "
                "`chamlab profile --target NAME --space SPACE --threads N --batch N"
                + (f" --dtype {dtype}" if dtype not in (None, "fp32") else "")
                + f" --out {path}`",
            )
        if len(matching) > 1:
            raise InputError(
                f"LUT {path} holds several measurement sets ({listed}); choose one with "
                "--target/--backend/--dtype/--threads/--batch"
            )
        return matching[0]

    def _mask(self, mset: MeasurementSet) -> pa.ChunkedArray:
        t = self.table
        return pc.and_(
            pc.and_(pc.equal(t["device"], mset.device), pc.equal(t["backend"], mset.backend)),
            pc.and_(
                pc.and_(pc.equal(t["dtype"], mset.dtype), pc.equal(t["threads"], mset.threads)),
                pc.equal(t["batch"], mset.batch),
            ),
        )

    def select(self, mset: MeasurementSet) -> dict[str, dict[str, Any]]:
        """Rows of one measurement set by op key."""
        sub = self.table.filter(self._mask(mset))
        return {r["op_key"]: r for r in sub.to_pylist()}

    def p50_by_key(self, mset: MeasurementSet) -> dict[str, float]:
        sub = self.table.filter(self._mask(mset)).select(["op_key", "p50_ms"])
        return dict(zip(sub["op_key"].to_pylist(), sub["p50_ms"].to_pylist(), strict=True))

    def energy_by_key(self, mset: MeasurementSet) -> dict[str, float]:
        """Energy per execution above idle (mJ) by op key: the rows of ``mset`` measured with a power
        reader (rows without one are left out; an empty dict: no energy in this set)."""
        sub = self.table.filter(self._mask(mset)).select(["op_key", "energy_mj"])
        return {
            k: float(v)
            for k, v in zip(sub["op_key"].to_pylist(), sub["energy_mj"].to_pylist(), strict=True)
            if v is not None
        }

    def power_readers(self, mset: MeasurementSet) -> set[str]:
        """The power readers that measured rows of ``mset`` (empty: no energy rows)."""
        sub = self.table.filter(self._mask(mset))["power_reader"].to_pylist()
        return {r for r in sub if r}

    # -- updates ----------------------------------------------------------------------------------------
    def upsert(self, rows: Iterable[Mapping[str, Any]], provenance: Mapping[str, Any] | None = None) -> Lut:
        """A new LUT with ``rows`` added; a row whose row key exists replaces the old one."""
        new = pa.Table.from_pylist([dict(r) for r in rows], schema=SCHEMA)
        if new.num_rows == 0:
            return self
        new_keys = {tuple(r[k] for k in ROW_KEY) for r in new.select(list(ROW_KEY)).to_pylist()}
        old_keys = self.table.select(list(ROW_KEY)).to_pylist()
        keep = pa.array([tuple(r[k] for k in ROW_KEY) not in new_keys for r in old_keys], type=pa.bool_())
        merged = pa.concat_tables([self.table.filter(keep), new]).combine_chunks()
        merged = merged.sort_by(
            [(k, "ascending") for k in ("device", "backend", "dtype", "threads", "batch", "op_key")]
        )
        prov = [*self.provenance, dict(provenance)] if provenance else list(self.provenance)
        return Lut(merged, prov, self.calibrations)

    def write(self, path: Path) -> None:
        """Write atomically to ``path`` (temp file in the same directory, then rename)."""
        path = Path(path)
        check_writable(path, what="LUT")
        meta: dict[str, Any] = {"chamlab.provenance": self.provenance}
        if self.calibrations:
            meta["chamlab.calibrations"] = self.calibrations
        write_table(path, KIND, self.table, meta)


def add_rows(
    path: Path, rows: Sequence[Mapping[str, Any]], provenance: Mapping[str, Any] | None = None
) -> Lut:
    """Add ``rows`` to the LUT file at ``path`` (created if missing) and return the new LUT.

    Read-modify-write happens under the file's lock (``.<name>.lock`` beside it): the file is re-read
    *inside* the lock, so rows another process wrote meanwhile are kept, never lost or duplicated.
    """
    path = Path(path)
    check_writable(path, what="LUT")
    with sibling_lock(path, what=f"LUT {path}").hold():
        lut = Lut.read_or_empty(path).upsert(rows, provenance)
        lut.write(path)
    return lut
