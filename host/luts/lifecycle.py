"""The LUT lifecycle across files: merge, validate, show and diff (``chamlab lut ...``).

Everything here works on whole columns (pyarrow compute, numpy), not Python loops over rows
(``bench/lut_merge.py`` times ten 10k-row LUTs; figures in docs/benchmarks.md). The rules (merge
policy, which metadata is carried, which fingerprint fields identify a device) are in
docs/lut-format.md.

* :func:`read_lut_file`: a LUT plus all its ``chamlab.*`` metadata, upgraded by the store.
* :func:`merge_luts` / :func:`merge_files`: union with a conflict policy (:class:`Policy`);
  associative and idempotent (tests/host/test_lut_merge.py checks it with hypothesis).
* :func:`check_table` / :func:`validate_file`: every problem of a LUT, listed.
* :func:`show_rows`: filtered rows for a readable table.
* :func:`diff_luts`: per-op drift of p50 between two LUTs, with a summary and an optional plot.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chamlab.chamnet.predictors.calibration import record_problems
from chamlab.core.errors import ChamlabError, InputError, LutError
from chamlab.core.files import check_writable
from chamlab.core.locks import sibling_lock
from chamlab.core.store import read_table, write_table
from chamlab.host.luts.lut import KIND, ROW_KEY, Lut, MeasurementSet, provenance_problems
from chamlab.operators import OPS
from chamlab.operators.base import Backend, Dtype

PROVENANCE_KEY = "chamlab.provenance"
CALIBRATIONS_KEY = "chamlab.calibrations"
#: Columns that tell two measurements of one row key apart (equal on all of them: the same measurement).
MEASUREMENT_ID = ("run_id", "measured_at", "n_samples", "p50_ms", "mean_ms", "std_ms")
#: The order that decides "newest": later ``measured_at`` first (null last), then the larger run id,
#: then the stats (only to make the order total, so that merging is associative).
_NEWEST_ORDER = [
    ("measured_at", "descending"),
    ("run_id", "descending"),
    ("p50_ms", "descending"),
    ("mean_ms", "descending"),
    ("std_ms", "descending"),
    ("n_samples", "descending"),
]
POOLED_SEP = "+"


class Policy(enum.StrEnum):
    """What to do with one row key measured by different runs."""

    NEWEST = "newest"  # the row with the latest measured_at wins (default)
    POOLED = "pooled"  # samples of every run concatenated, statistics re-derived
    FAIL = "fail"  # refuse to merge (exit 2) and list the conflicts


# -- reading --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LutFile:
    """A LUT read from disk with its metadata: ``meta`` holds every ``chamlab.*`` key other than
    kind/version/tool version (JSON-decoded where it is JSON), ``read_version`` the file's version."""

    lut: Lut
    meta: dict[str, Any]
    path: Path | None = None
    read_version: int = KIND.version
    label: str | None = None  # how messages name it when it has no path (a merge in progress)

    def name(self, index: int) -> str:
        return self.label or (str(self.path) if self.path else f"input {index + 1}")


def _decode_meta(raw: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, text in raw.items():
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def read_lut_file(path: Path, *, check: bool = True) -> LutFile:
    """Read a LUT through the store (older schema versions are upgraded on read). ``check``: raise a
    :class:`LutError` naming the file on the first value problem (:func:`check_table`) or provenance
    entry that is not a run object (merging would drop it). Calibration records are checked by
    :func:`validate_file` and where they are applied, not here: a merge carries them as they are."""
    path = Path(path)
    stored = read_table(path, KIND)
    meta = _decode_meta(stored.meta)
    provenance = meta.get(PROVENANCE_KEY, [])
    if not isinstance(provenance, list):
        raise LutError(f"LUT {path}: metadata {PROVENANCE_KEY} is not a JSON list")
    meta[PROVENANCE_KEY] = provenance
    lut = Lut(stored.table, provenance)
    if check:
        problems = provenance_problems(provenance) + check_table(stored.table)
        if problems:
            more = f" (and {len(problems) - 1} more; `chamlab lut validate {path}` lists them)"
            raise LutError(
                f"LUT {path} failed validation: {problems[0]}" + (more if len(problems) > 1 else "")
            )
    return LutFile(lut, meta, path, stored.read_version)


def write_lut_file(path: Path, lf: LutFile) -> None:
    """Write atomically with every carried metadata key (provenance included)."""
    check_writable(path, what="LUT")
    meta = {**lf.meta, PROVENANCE_KEY: lf.lut.provenance}
    write_table(Path(path), KIND, lf.lut.table, meta)


# -- device identity ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """The agent's ``host|cpu model|system release machine``, parsed.

    Identity (the same physical kind of device): ``cpu_model`` (the SoC on a phone: /proc/cpuinfo's
    ``Hardware``/``model name``), ``system`` and ``machine``. Provenance only: ``host`` (renamed
    machines stay the same device) and ``release`` (the same phone after an OS update is the same
    device)."""

    host: str
    cpu_model: str
    system: str
    release: str
    machine: str

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        parts = text.split("|")
        if len(parts) < 3:
            return cls("", text.strip(), "", "", "")
        host, cpu, osinfo = parts[0], "|".join(parts[1:-1]), parts[-1].split()
        system = osinfo[0] if osinfo else ""
        machine = osinfo[-1] if len(osinfo) > 1 else ""
        release = " ".join(osinfo[1:-1])
        return cls(host.strip(), cpu.strip(), system, release, machine)

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.cpu_model, self.system, self.machine)

    def describe_identity(self) -> str:
        return f"{self.cpu_model or '?'} ({self.system or '?'} {self.machine or '?'})"


def device_identities(table: pa.Table) -> dict[str, dict[tuple[str, str, str], Fingerprint]]:
    """Per device name: the distinct fingerprint identities its rows carry (null fingerprints skipped)."""
    pairs = table.select(["device", "device_fingerprint"]).group_by(["device", "device_fingerprint"])
    out: dict[str, dict[tuple[str, str, str], Fingerprint]] = {}
    for row in pairs.aggregate([]).to_pylist():
        if row["device_fingerprint"] is None:
            continue
        fp = Fingerprint.parse(row["device_fingerprint"])
        out.setdefault(row["device"], {}).setdefault(fp.identity, fp)
    return out


# -- checks -----------------------------------------------------------------------------------------------
_RANGES: dict[str, tuple[float, float]] = {
    "p10_ms": (0.0, math.inf),
    "p90_ms": (0.0, math.inf),
    "mean_ms": (0.0, math.inf),
    "std_ms": (0.0, math.inf),
    "robust_cv": (0.0, math.inf),
    "energy_mj": (0.0, math.inf),
    "avg_power_w": (0.0, math.inf),
    "temp_before_c": (-50.0, 150.0),
    "temp_after_c": (-50.0, 150.0),
    "battery_pct": (0.0, 100.0),
    "cool_wait_s": (0.0, math.inf),
}
_MAX_LISTED = 5


def _listed(keys: Sequence[Any]) -> str:
    shown = ", ".join(str(k) for k in keys[:_MAX_LISTED])
    return shown + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _where(mask: pa.ChunkedArray | pa.Array, table: pa.Table) -> list[str]:
    """op keys (with threads/device) of the rows where ``mask`` is true."""
    sub = table.filter(pc.fill_null(mask, False)).select(["op_key", "device", "threads"])
    return [f"{r['op_key']} [{r['device']}, {r['threads']} thr]" for r in sub.to_pylist()]


def _list_stats(samples: pa.ChunkedArray | pa.Array) -> dict[str, np.ndarray]:
    """p10/p50/p90 (numpy's linear percentiles) and mean of every list, vectorised; NaN for empty/null.
    ``sorted``: the flattened values, sorted within each list (NaN last)."""
    arr = samples.combine_chunks() if isinstance(samples, pa.ChunkedArray) else samples
    n_rows = len(arr)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(float)
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
    if n_rows and lengths.min() == lengths.max() > 0:
        # the usual case, one sample count: sort the rows of a matrix
        srt = np.sort(values.reshape(n_rows, int(lengths[0])), axis=1).ravel()
    else:  # ragged lists: the same order (by row, then value; NaN last)
        srt = values[np.lexsort((values, parents))]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n_rows else np.zeros(0, np.int64)
    out: dict[str, np.ndarray] = {"sorted": srt}
    ok = lengths > 0
    for name, q in (("p10_ms", 0.1), ("p50_ms", 0.5), ("p90_ms", 0.9)):
        pos = q * (lengths - 1).clip(min=0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, (lengths - 1).clip(min=0))
        frac = pos - lo
        a = np.where(ok, srt[(starts + lo).clip(max=max(len(srt) - 1, 0))] if len(srt) else 0.0, np.nan)
        b = np.where(ok, srt[(starts + hi).clip(max=max(len(srt) - 1, 0))] if len(srt) else 0.0, np.nan)
        out[name] = a + (b - a) * frac
    sums = np.bincount(parents, weights=srt, minlength=n_rows) if len(values) else np.zeros(n_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean_ms"] = np.where(ok, sums / np.maximum(lengths, 1), np.nan)
    return out


@functools.lru_cache(maxsize=200_000)
def _parse_op_key(key: str) -> tuple[str, str | None]:
    """``(op_type, None)`` or ``("", error)``: cached, since merged LUTs repeat the same keys."""
    try:
        return OPS.from_key(key).op_type, None
    except (ChamlabError, ValueError, KeyError) as exc:
        return "", str(exc)


def _recipe_problems(table: pa.Table) -> list[str]:
    """int8 rows need a quantization recipe and one per measurement set; fp32 rows have none."""
    out: list[str] = []
    sets: dict[tuple[Any, ...], set[str]] = {}
    cols = table.select(["op_key", "device", "backend", "dtype", "threads", "batch", "quant_recipe"])
    for r in cols.to_pylist():
        if r["dtype"] == "int8":
            if not r["quant_recipe"]:
                out.append(f"int8 row {r['op_key']} ({r['device']}) has no quant_recipe")
            else:
                key = (r["device"], r["backend"], r["dtype"], r["threads"], r["batch"])
                sets.setdefault(key, set()).add(r["quant_recipe"])
        elif r["quant_recipe"] is not None:
            out.append(
                f"{r['dtype']} row {r['op_key']} ({r['device']}) has quant_recipe {r['quant_recipe']!r}"
            )
    for key, recipes in sorted(sets.items()):
        if len(recipes) > 1:
            out.append(f"int8 rows of {key} mix quantization recipes {', '.join(sorted(recipes))}")
    return out[: _MAX_LISTED + 1]


def check_table(table: pa.Table) -> list[str]:
    """Every value problem of a LUT table (schema already checked by the store), one line each:
    duplicate row keys, unknown op keys, op_type not matching the key, unknown backend/dtype,
    int8 rows without a quantization recipe (or two recipes in one set), fp32 rows with one,
    NaN/inf or out-of-range numbers, threads < 1, p10 <= p50 <= p90 violated, ``n_samples`` not the
    sample count, samples NaN/negative, statistics that do not follow from the samples."""
    problems: list[str] = []
    if table.num_rows == 0:
        return problems
    # duplicate row keys
    counts = table.group_by(list(ROW_KEY)).aggregate([([], "count_all")])
    dups = counts.filter(pc.greater(counts["count_all"], 1))
    for r in dups.to_pylist()[:_MAX_LISTED]:
        problems.append(
            f"duplicate row key ({r['op_key']}, {r['device']}, {r['backend']}, {r['dtype']}, "
            f"{r['threads']}) appears {r['count_all']} times"
        )
    if dups.num_rows > _MAX_LISTED:
        problems.append(f"... and {dups.num_rows - _MAX_LISTED} more duplicate row keys")
    # op keys: each distinct key parsed once
    keys = pc.unique(table["op_key"]).to_pylist()
    types = table.select(["op_key", "op_type"]).group_by(["op_key", "op_type"]).aggregate([]).to_pylist()
    type_of: dict[str, set[str]] = {}
    for r in types:
        type_of.setdefault(r["op_key"], set()).add(r["op_type"])
    for key in keys:
        op_type, error = _parse_op_key(key)
        if error is not None:
            problems.append(f"unknown op key {key!r}: {error}")
            continue
        wrong = type_of.get(key, set()) - {op_type}
        if wrong:
            problems.append(f"op_key {key!r} is a {op_type} but op_type says {sorted(wrong)}")
    for col, allowed in (("backend", [b.value for b in Backend]), ("dtype", [d.value for d in Dtype])):
        bad = [v for v in pc.unique(table[col]).to_pylist() if v not in allowed]
        if bad:
            problems.append(f"{col} {_listed(bad)} unknown; known: {', '.join(allowed)}")
    problems += _recipe_problems(table)
    # numbers
    p50 = table["p50_ms"]
    bad = _where(pc.invert(pc.fill_null(pc.and_(pc.is_finite(p50), pc.greater(p50, 0.0)), False)), table)
    if bad:
        problems.append(
            f"p50_ms must be a positive finite number (null/NaN/<= 0 in {len(bad)} rows: {_listed(bad)})"
        )
    for col in ("p10_ms", "p50_ms", "p90_ms", *_RANGES):
        arr = table[col]
        nan = _where(pc.invert(pc.is_finite(arr)), table) if col != "p50_ms" else []
        if nan:
            problems.append(f"{col} is NaN or infinite in {len(nan)} rows: {_listed(nan)}")
        if col in _RANGES:
            lo, hi = _RANGES[col]
            out_of = _where(pc.or_(pc.less(arr, lo), pc.greater(arr, hi)), table)
            if out_of:
                rng = f"[{lo:g}, {hi:g}]"
                problems.append(f"{col} outside {rng} in {len(out_of)} rows: {_listed(out_of)}")
    windows = pc.fill_null(pc.greater(table["throttled_windows"], table["windows"]), False)
    bad = _where(pc.or_(windows, pc.fill_null(pc.less(table["windows"], 1), False)), table)
    if bad:
        problems.append(
            f"windows must be >= 1 and >= throttled_windows (not so in {len(bad)} rows: {_listed(bad)})"
        )
    order = pc.or_(pc.greater(table["p10_ms"], p50), pc.greater(p50, table["p90_ms"]))
    bad = _where(order, table)
    if bad:
        problems.append(f"p10_ms <= p50_ms <= p90_ms violated in {len(bad)} rows: {_listed(bad)}")
    bad = _where(pc.less(table["threads"], 1), table)
    if bad:
        problems.append(f"threads must be >= 1 in {len(bad)} rows: {_listed(bad)}")
    # samples
    samples = table["samples_ms"]
    lengths = pc.list_value_length(samples)
    bad = _where(pc.not_equal(lengths, table["n_samples"]), table)
    if bad:
        problems.append(f"n_samples differs from the number of samples in {len(bad)} rows: {_listed(bad)}")
    flat = pc.list_flatten(samples.combine_chunks() if isinstance(samples, pa.ChunkedArray) else samples)
    parents = pc.list_parent_indices(samples.combine_chunks()).to_numpy(zero_copy_only=False)
    fvals = flat.to_numpy(zero_copy_only=False).astype(float)
    bad_rows = np.unique(parents[~np.isfinite(fvals) | (fvals < 0)])
    if len(bad_rows):
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[bad_rows] = True
        bad = _where(pa.array(mask), table)
        problems.append(f"samples_ms holds NaN, inf or negative values in {len(bad)} rows: {_listed(bad)}")
    derived = _list_stats(samples)
    has = pc.fill_null(pc.greater(lengths, 0), False).to_numpy(zero_copy_only=False)
    for col in ("p10_ms", "p50_ms", "p90_ms", "mean_ms"):
        stored = pc.fill_null(table[col], math.nan).to_numpy().astype(float)
        with np.errstate(invalid="ignore"):
            off = has & ~np.isclose(stored, derived[col], rtol=1e-6, atol=1e-9, equal_nan=True)
        if off.any():
            bad = _where(pa.array(off), table)
            problems.append(f"{col} does not follow from samples_ms in {len(bad)} rows: {_listed(bad)}")
    # device identity: one device name, one kind of hardware
    for device, ids in sorted(device_identities(table).items()):
        if len(ids) > 1:
            problems.append(
                f"device {device!r} has rows from {len(ids)} different devices (fingerprints "
                + "; ".join(fp.describe_identity() for fp in ids.values())
                + "): give each its own name in devices.toml"
            )
    return problems


def meta_problems(meta: Mapping[str, Any]) -> list[str]:
    """Problems of a LUT's metadata: provenance entries that are not run objects, and calibration
    records that would not be applied (the calibration model's own check,
    :func:`chamlab.chamnet.predictors.calibration.record_problems`; a prediction treats such a record
    as not usable and says why)."""
    out = provenance_problems(meta.get(PROVENANCE_KEY, []))
    calibrations = meta.get(CALIBRATIONS_KEY, [])
    if not isinstance(calibrations, list):
        return [*out, f"metadata {CALIBRATIONS_KEY} is not a JSON list"]
    for i, rec in enumerate(calibrations):
        what = (
            "/".join(str(rec.get(k)) for k in ("space", "device", "dtype", "threads", "quantity") if k in rec)
            if isinstance(rec, dict)
            else "?"
        )
        out += [f"calibration {i + 1} ({what}): {p}" for p in record_problems(rec)]
    return out


@dataclasses.dataclass
class ValidationReport:
    path: Path
    problems: list[str]
    rows: int | None = None
    schema_version: int | None = None

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "valid": self.valid,
            "rows": self.rows,
            "schema_version": self.schema_version,
            "problems": self.problems,
        }


def validate_file(path: Path) -> ValidationReport:
    """Every problem of the LUT at ``path``; a file that cannot be read at all (missing, foreign,
    corrupt, wrong columns or version) is one problem. Never raises for a bad file."""
    try:
        lf = read_lut_file(path, check=False)
    except LutError as exc:
        return ValidationReport(Path(path), [str(exc.message)])
    problems = meta_problems(lf.meta) + check_table(lf.lut.table)
    return ValidationReport(Path(path), problems, len(lf.lut), lf.read_version)


# -- merging ------------------------------------------------------------------------------------------------
def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _merge_list(values: Sequence[list[Any]]) -> list[Any]:
    """Union of list metadata: verbatim duplicates collapse; sorted by (created_at, run_id, JSON)."""
    seen: dict[str, Any] = {}
    for items in values:
        for item in items:
            seen.setdefault(_canonical(item), item)

    def order(item_text: tuple[str, Any]) -> tuple[str, str, str]:
        text, item = item_text
        if isinstance(item, dict):
            return (str(item.get("created_at") or ""), str(item.get("run_id") or ""), text)
        return ("", "", text)

    return [item for _, item in sorted(seen.items(), key=order)]


def _merge_value(key: str, values: Sequence[tuple[Any, str]]) -> Any:
    """Merge one metadata value found in several inputs (``(value, file)`` pairs)."""
    texts = {_canonical(v) for v, _ in values}
    if len(texts) == 1:
        return values[0][0]
    if all(isinstance(v, list) for v, _ in values):
        return _merge_list([v for v, _ in values])
    if all(isinstance(v, dict) for v, _ in values):
        merged: dict[str, Any] = {}
        names = sorted({k for v, _ in values for k in v})
        for name in names:
            found = [(v[name], f) for v, f in values if name in v]
            merged[name] = _merge_entry(f"{key}[{name!r}]", found)
        return merged
    files = sorted({f for _, f in values})
    raise InputError(
        f"metadata {key} differs between {', '.join(files)} and cannot be merged "
        "(only JSON lists and objects merge)",
        hint="merge LUTs that agree on it, or remove the key from one of them",
    )


def _merge_entry(key: str, found: Sequence[tuple[Any, str]]) -> Any:
    """One entry of a metadata object: equal values kept; objects with ``created_at`` (calibrations):
    the latest wins; lists and plain objects merge recursively; anything else is an error."""
    texts = {_canonical(v) for v, _ in found}
    if len(texts) == 1:
        return found[0][0]
    if all(isinstance(v, dict) and "created_at" in v for v, _ in found):
        return max((v for v, _ in found), key=lambda v: (str(v["created_at"]), _canonical(v)))
    return _merge_value(key, found)


def merge_meta(files: Sequence[LutFile]) -> dict[str, Any]:
    """Carried metadata of a merge: every ``chamlab.*`` key of any input (see :func:`_merge_value`)."""
    keys = sorted({k for lf in files for k in lf.meta})
    out: dict[str, Any] = {}
    for key in keys:
        found = [(lf.meta[key], lf.name(i)) for i, lf in enumerate(files) if key in lf.meta]
        if key == PROVENANCE_KEY:
            out[key] = _merge_list([v for v, _ in found])
        else:
            out[key] = _merge_value(key, found)
    return out


@dataclasses.dataclass
class MergeReport:
    out: Path | None
    inputs: list[Path]
    policy: Policy
    rows_in: int
    rows_out: int
    conflicts: int  # row keys measured by more than one distinct measurement
    sets: list[MeasurementSet]
    runs: int
    carried_meta: list[str]
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out) if self.out else None,
            "inputs": [str(p) for p in self.inputs],
            "policy": self.policy.value,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "conflicts": self.conflicts,
            "measurement_sets": [s._asdict() for s in self.sets],
            "runs": self.runs,
            "carried_meta": self.carried_meta,
            "seconds": round(self.seconds, 3),
        }


def _boundaries(srt: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """On a sorted table: True where a row starts a new ``keys`` group (nulls equal nulls)."""
    n = srt.num_rows
    first = np.zeros(n, dtype=bool)
    if n == 0:
        return first
    first[0] = True
    for k in keys:
        col = srt[k].combine_chunks()
        same = pc.fill_null(pc.equal(col[1:], col[:-1]), False).to_numpy(zero_copy_only=False)
        both_null = np.logical_and(
            pc.is_null(col[1:]).to_numpy(zero_copy_only=False),
            pc.is_null(col[:-1]).to_numpy(zero_copy_only=False),
        )
        first[1:] |= ~(same | both_null)
    return first


@dataclasses.dataclass
class _Plan:
    """The rows of a concatenated table sorted by row key, newest first (:data:`_NEWEST_ORDER`),
    computed on the small key columns only: ``order`` (row indices), ``first_key`` (a row key's newest
    row), ``first_meas`` (a distinct measurement's first copy), ``gid`` (row-key group of each)."""

    order: np.ndarray
    first_key: np.ndarray
    first_meas: np.ndarray
    gid: np.ndarray
    measurements: np.ndarray  # distinct measurements per row-key group

    @classmethod
    def of(cls, table: pa.Table) -> _Plan:
        small = table.select(list(dict.fromkeys([*ROW_KEY, *MEASUREMENT_ID])))
        idx = pc.sort_indices(small, sort_keys=[*[(k, "ascending") for k in ROW_KEY], *_NEWEST_ORDER])
        srt = small.take(idx)
        first_key = _boundaries(srt, ROW_KEY)
        first_meas = _boundaries(srt, [*ROW_KEY, *MEASUREMENT_ID])
        gid = np.cumsum(first_key) - 1
        measurements = np.bincount(gid, weights=first_meas).astype(np.int64) if len(gid) else gid
        return cls(idx.to_numpy(), first_key, first_meas, gid, measurements)

    def conflicts(self) -> np.ndarray:
        """Indices (into the table) of one row of each row key holding several measurements."""
        return self.order[self.first_key & (self.measurements[self.gid] > 1)]


def _run_set(run_id: str | None) -> frozenset[str]:
    return frozenset((run_id or "").split(POOLED_SEP)) - {""}


def _pool_keep(table: pa.Table, idx: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Which rows of the conflicting groups (sorted newest first within a group) contribute samples:
    a row whose runs all belong to another row of its group (an earlier merge pooled them) is counted
    there. Rows sharing only part of their runs cannot be pooled (:class:`InputError`). ``idx``: the
    rows (of ``table``), ``gid``: their row-key groups."""
    run_ids = table["run_id"].take(idx)
    simple = (
        run_ids.null_count == 0
        and not pc.any(pc.match_substring(run_ids, POOLED_SEP)).as_py()
        and len({(g, r) for g, r in zip(gid.tolist(), run_ids.to_pylist(), strict=True)}) == len(gid)
    )
    if simple:  # one plain run per row, distinct within each group: every row counts
        return np.ones(len(gid), dtype=bool)
    keep = np.zeros(len(gid), dtype=bool)
    sets = [_run_set(r) for r in run_ids.to_pylist()]
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    for lo, hi in zip(starts, [*starts[1:], len(gid)], strict=True):
        group = sets[lo:hi]
        runs: set[str] = set()
        for n, s in enumerate(group):
            if any((s < t) or (s == t and m < n) for m, t in enumerate(group) if m != n and s):
                continue
            if not s or runs & s:
                r = table.select(list(ROW_KEY)).take([idx[lo]]).to_pylist()[0]
                raise InputError(
                    f"cannot pool {r['op_key']} ({r['device']}, {r['backend']}, {r['dtype']}, {r['threads']} "
                    f"threads): two inputs share run(s) {', '.join(sorted(runs & s)) or '(no run id)'} but "
                    "hold different samples",
                    hint="merge the original per-run LUTs instead, or use --policy newest",
                )
            runs |= s
            keep[lo + n] = True
    return keep


def _pool(table: pa.Table, plan: _Plan) -> pa.Table:
    """Policy ``pooled``: for each conflicting row key, one row whose samples are the samples of every
    contributing run (sorted ascending), statistics re-derived; the other columns from the newest row.
    Vectorised: the samples of all pooled rows are flattened, sorted by (group, value) and cut again."""
    distinct, dgid = plan.order[plan.first_meas], plan.gid[plan.first_meas]
    in_conflict = plan.measurements[dgid] > 1
    cidx, cgid = distinct[in_conflict], dgid[in_conflict]  # row indices, only light columns are taken
    keep = _pool_keep(table, cidx, cgid)
    cidx, cgid = cidx[keep], cgid[keep]
    single = np.bincount(cgid)[cgid] == 1  # only one row left after dropping covered ones
    plain = table.take(np.concatenate([distinct[~in_conflict], cidx[single]]))
    cidx, cgid = cidx[~single], cgid[~single]
    if len(cidx) == 0:
        return plain
    conf = table.select(["samples_ms", "unstable", "run_id"]).take(cidx)
    _, g = np.unique(cgid, return_inverse=True)  # 0..n_groups-1, in sorted (row key) order
    n_groups = int(g.max()) + 1
    samples = conf["samples_ms"].combine_chunks()
    # conf is sorted by row key, so the flattened samples are already grouped: cut them per group
    values = pc.list_flatten(samples).to_numpy(zero_copy_only=False).astype(float)
    vg = g[pc.list_parent_indices(samples).to_numpy(zero_copy_only=False)]
    counts = np.bincount(vg, minlength=n_groups)
    offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
    stats = _list_stats(pa.ListArray.from_arrays(offsets, pa.array(values)))
    values = stats["sorted"]
    pooled_samples = pa.ListArray.from_arrays(offsets, pa.array(values))
    dev = values - stats["mean_ms"][vg]
    std = np.sqrt(np.bincount(vg, weights=dev * dev, minlength=n_groups) / counts)
    med = stats["p50_ms"]
    abs_dev = pa.ListArray.from_arrays(offsets, pa.array(np.abs(values - med[vg])))
    with np.errstate(divide="ignore", invalid="ignore"):
        robust_cv = np.where(med > 0, 1.4826 * _list_stats(abs_dev)["p50_ms"] / med, np.inf)
    unstable = np.bincount(g, weights=pc.fill_null(conf["unstable"], False).to_numpy(zero_copy_only=False),
                           minlength=n_groups) > 0  # fmt: skip
    runs: list[set[str]] = [set() for _ in range(n_groups)]
    for gi, r in zip(g.tolist(), conf["run_id"].to_pylist(), strict=True):
        runs[gi] |= _run_set(r)
    base = table.take(cidx[np.r_[True, g[1:] != g[:-1]]])  # the newest row of each group
    replace = {
        "samples_ms": pooled_samples,
        "n_samples": pa.array(counts.astype(np.int32)),
        "p10_ms": pa.array(stats["p10_ms"]),
        "p50_ms": pa.array(med),
        "p90_ms": pa.array(stats["p90_ms"]),
        "mean_ms": pa.array(stats["mean_ms"]),
        "std_ms": pa.array(std),
        "robust_cv": pa.array(robust_cv),
        "unstable": pa.array(unstable),
        "run_id": pa.array([POOLED_SEP.join(sorted(r)) for r in runs]),
    }
    for name, arr in replace.items():
        i = base.schema.get_field_index(name)
        base = base.set_column(i, base.schema.field(i), arr.cast(base.schema.field(i).type))
    return pa.concat_tables([plain, base])


def merge_luts(files: Sequence[LutFile], policy: Policy = Policy.NEWEST) -> tuple[LutFile, int]:
    """Merge LUTs (already read and checked) under ``policy``; returns the merged LUT and the number
    of conflicting row keys. Raises :class:`InputError` for ``fail`` with conflicts, for one device
    name that holds different hardware, and for metadata that cannot be merged."""
    merged, keys = _merge(files, policy)
    return merged, keys.num_rows


def _merge(files: Sequence[LutFile], policy: Policy) -> tuple[LutFile, pa.Table]:
    """:func:`merge_luts`, returning the conflicting row keys (a table of the :data:`ROW_KEY` columns)."""
    if not files:
        raise InputError("nothing to merge: give at least one LUT")
    _check_identities(files)
    table = pa.concat_tables([lf.lut.table for lf in files])
    plan = _Plan.of(table)
    conflicts = table.select(list(ROW_KEY)).take(plan.conflicts())
    if conflicts.num_rows and policy is Policy.FAIL:
        listed = [
            f"{r['op_key']} ({r['device']}, {r['backend']}, {r['dtype']}, {r['threads']} threads)"
            for r in conflicts.slice(0, _MAX_LISTED).to_pylist()
        ]
        more = f" (+{conflicts.num_rows - _MAX_LISTED} more)" if conflicts.num_rows > _MAX_LISTED else ""
        raise InputError(
            f"{conflicts.num_rows} row key(s) measured by different runs: {', '.join(listed)}{more}",
            hint="choose --policy newest (latest measured_at wins) or --policy pooled (samples combined)",
        )
    table = (
        _pool(table, plan)
        if policy is Policy.POOLED and conflicts.num_rows
        else table.take(plan.order[plan.first_key])
    )
    table = table.sort_by([(k, "ascending") for k in ("device", "backend", "dtype", "threads", "op_key")])
    meta = merge_meta(files)
    return LutFile(Lut(table, meta[PROVENANCE_KEY]), meta), conflicts


def _check_identities(files: Sequence[LutFile]) -> None:
    seen: dict[str, tuple[tuple[str, str, str], Fingerprint, str]] = {}
    for i, lf in enumerate(files):
        name = lf.name(i)
        for device, ids in device_identities(lf.lut.table).items():
            for ident, fp in ids.items():
                if device in seen and seen[device][0] != ident:
                    raise InputError(
                        f"device {device!r} is {seen[device][1].describe_identity()} in {seen[device][2]} "
                        f"but {fp.describe_identity()} in {name}: different hardware under one name",
                        hint="give each device its own name in devices.toml; an OS update alone "
                        "(kernel release) is not a different device",
                    )
                seen.setdefault(device, (ident, fp, name))


def merge_files(
    inputs: Sequence[Path], out: Path | None, policy: Policy = Policy.NEWEST, *, force: bool = False
) -> MergeReport:
    """Read every input (any bad one: :class:`LutError` naming it, nothing written), merge, and write
    ``out`` atomically (None: only report). An existing ``out`` that is not one of the inputs is
    refused (:class:`InputError`, nothing written) unless ``force``: merging into a LUT means naming
    it as an input too."""
    import time

    t0 = time.perf_counter()
    if out is not None:
        check_writable(Path(out), what="merged LUT")
    # All inputs at once: one sort of the key columns. Folding them in one at a time (merging is
    # associative) would hold less memory but costs more time (bench/lut_merge.py measured both).
    # Read-merge-write holds the output's lock, as add_rows does: rows a concurrent `profile` adds
    # to it (when it is an input) are not lost, and a `profile` writing it waits instead of
    # racing the rename.
    into_input = out is not None and Path(out).resolve() in {Path(p).resolve() for p in inputs}
    lock = sibling_lock(Path(out), what=f"merge into LUT {out}") if out is not None else None
    with lock.hold() if lock is not None else nullcontext():
        files = [read_lut_file(Path(p)) for p in inputs]
        merged, conflicts = merge_luts(files, policy)
        if out is not None and not into_input and not force and Path(out).exists():
            raise InputError(
                f"{out} exists and is not one of the inputs: the merge would replace it",
                hint=f"to merge into it, name it as an input too (`chamlab lut merge {out} ... -o {out}`); "
                "to replace it, add --force",
            )
        if out is not None:
            write_lut_file(Path(out), merged)
    return MergeReport(
        out=Path(out) if out is not None else None,
        inputs=[Path(p) for p in inputs],
        policy=policy,
        rows_in=sum(len(lf.lut) for lf in files),
        rows_out=len(merged.lut),
        conflicts=conflicts,
        sets=merged.lut.combinations(),
        runs=len({p.get("run_id") for p in merged.lut.provenance if isinstance(p, dict)}),
        carried_meta=sorted(merged.meta),
        seconds=time.perf_counter() - t0,
    )


# -- show ---------------------------------------------------------------------------------------------------
SHOW_COLUMNS = (
    "op_key", "op_type", "device", "backend", "dtype", "threads", "p10_ms", "p50_ms", "p90_ms",
    "n_samples", "robust_cv", "unstable", "run_id", "measured_at", "quant_recipe", "delegated",
)  # fmt: skip


@dataclasses.dataclass
class ShowResult:
    path: Path
    schema_version: int
    total_rows: int
    matched_rows: int
    rows: list[dict[str, Any]]
    sets: list[MeasurementSet]
    provenance: list[Any]
    meta_keys: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "total_rows": self.total_rows,
            "matched_rows": self.matched_rows,
            "measurement_sets": [s._asdict() for s in self.sets],
            "provenance": self.provenance,
            "meta_keys": self.meta_keys,
            "rows": [
                {**r, "measured_at": r["measured_at"].isoformat() if r["measured_at"] else None}
                for r in self.rows
            ],
        }


def show_rows(
    path: Path,
    *,
    device: str | None = None,
    backend: str | None = None,
    threads: int | None = None,
    op_type: str | None = None,
    limit: int | None = None,
) -> ShowResult:
    """Rows of a LUT matching the filters (None: any), sorted by measurement set and op key."""
    lf = read_lut_file(Path(path), check=False)
    t = lf.lut.table
    mask = pa.array(np.ones(t.num_rows, dtype=bool))
    for col, want in (("device", device), ("backend", backend), ("threads", threads), ("op_type", op_type)):
        if want is not None:
            mask = pc.and_(mask, pc.equal(t[col], want))
    sub = t.filter(mask).sort_by(
        [(k, "ascending") for k in ("device", "backend", "dtype", "threads", "op_key")]
    )
    shown = sub.slice(0, limit) if limit is not None else sub
    return ShowResult(
        path=Path(path),
        schema_version=lf.read_version,
        total_rows=t.num_rows,
        matched_rows=sub.num_rows,
        rows=shown.select(list(SHOW_COLUMNS)).to_pylist(),
        sets=lf.lut.combinations(),
        provenance=lf.lut.provenance,
        meta_keys=sorted(lf.meta),
    )


# -- diff -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DiffReport:
    old: Path
    new: Path
    ops: pa.Table  # ROW_KEY + old_p50_ms, new_p50_ms, drift_pct
    only_old: pa.Table  # ROW_KEY columns
    only_new: pa.Table
    devices: dict[str, dict[str, Any]]
    plot: Path | None = None

    def set_summaries(self) -> list[dict[str, Any]]:
        out = []
        sets = self.ops.select(list(MeasurementSet._fields)).group_by(list(MeasurementSet._fields))
        for s in sorted(MeasurementSet(**r) for r in sets.aggregate([]).to_pylist()):
            mask = pc.and_(
                pc.and_(pc.equal(self.ops["device"], s.device), pc.equal(self.ops["backend"], s.backend)),
                pc.and_(pc.equal(self.ops["dtype"], s.dtype), pc.equal(self.ops["threads"], s.threads)),
            )
            out.append({**s._asdict(), **_drift_summary(self.ops.filter(mask))})
        return out

    def summary(self) -> dict[str, Any]:
        return {
            **_drift_summary(self.ops),
            "only_in_old": self.only_old.num_rows,
            "only_in_new": self.only_new.num_rows,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "old": str(self.old),
            "new": str(self.new),
            "summary": self.summary(),
            "sets": self.set_summaries(),
            "devices": self.devices,
            "ops": self.ops.to_pylist(),
            "only_in_old": self.only_old.to_pylist(),
            "only_in_new": self.only_new.to_pylist(),
            "plot": str(self.plot) if self.plot else None,
        }


def _drift_summary(ops: pa.Table) -> dict[str, Any]:
    d = ops["drift_pct"].to_numpy() if ops.num_rows else np.zeros(0)
    if not len(d):
        return {"common_ops": 0, "median_drift_pct": None, "median_abs_drift_pct": None,
                "max_abs_drift_pct": None, "max_drift_op": None}  # fmt: skip
    worst = int(np.argmax(np.abs(d)))
    return {
        "common_ops": len(d),
        "median_drift_pct": float(np.median(d)),
        "median_abs_drift_pct": float(np.median(np.abs(d))),
        "max_abs_drift_pct": float(np.abs(d)[worst]),
        "max_drift_op": ops["op_key"][worst].as_py(),
    }


def diff_luts(old: Path, new: Path, *, plot: Path | None = None) -> DiffReport:
    """Per-op drift ``100 * (new_p50 - old_p50) / old_p50`` on the row keys both LUTs hold (matched
    per measurement set, devices by name), ops only in one, and fingerprint changes per device."""
    if plot is not None:
        check_writable(Path(plot), what="plot")
    a = read_lut_file(Path(old), check=False).lut.table
    b = read_lut_file(Path(new), check=False).lut.table
    keys = list(ROW_KEY)
    left = a.select([*keys, "p50_ms"]).rename_columns([*keys, "old_p50_ms"])
    right = b.select([*keys, "p50_ms"]).rename_columns([*keys, "new_p50_ms"])
    both = left.join(right, keys, join_type="inner")
    drift = pc.multiply(
        pc.divide(pc.subtract(both["new_p50_ms"], both["old_p50_ms"]), both["old_p50_ms"]), 100.0
    )
    ops = both.append_column("drift_pct", drift).sort_by(
        [(k, "ascending") for k in ("device", "backend", "dtype", "threads", "op_key")]
    )
    only_old = (
        left.join(right.select(keys), keys, join_type="left anti")
        .select(keys)
        .sort_by([(k, "ascending") for k in keys])
    )
    only_new = (
        right.join(left.select(keys), keys, join_type="left anti")
        .select(keys)
        .sort_by([(k, "ascending") for k in keys])
    )
    report = DiffReport(Path(old), Path(new), ops, only_old, only_new, _device_changes(a, b))
    if plot is not None:
        plot_drift(report, Path(plot))
        report.plot = Path(plot)
    return report


def _device_changes(a: pa.Table, b: pa.Table) -> dict[str, dict[str, Any]]:
    ia, ib = device_identities(a), device_identities(b)
    out: dict[str, dict[str, Any]] = {}
    for device in sorted(set(ia) & set(ib)):
        fa, fb = next(iter(ia[device].values())), next(iter(ib[device].values()))
        out[device] = {
            "same_device": set(ia[device]) == set(ib[device]),
            "old_identity": fa.describe_identity(),
            "new_identity": fb.describe_identity(),
            "old_release": fa.release,
            "new_release": fb.release,
        }
    return out


def plot_drift(report: DiffReport, path: Path) -> None:
    """A PNG: drift % per op, one panel row per measurement set (sorted by drift), plus old vs new p50."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from chamlab.core.files import atomic_path

    # a farm diffs <old date>/<device>.parquet against <new date>/<device>.parquet: name them by folder
    old_name, new_name = report.old.name, report.new.name
    if old_name == new_name:
        old_name, new_name = f"{report.old.parent.name}/{old_name}", f"{report.new.parent.name}/{new_name}"
    sets = report.set_summaries() or [{}]
    fig, axes = plt.subplots(len(sets), 2, figsize=(11, 3.2 * len(sets)), squeeze=False)
    for row, s in enumerate(sets):
        ax_d, ax_s = axes[row]
        if not s:
            ax_d.text(0.5, 0.5, "no common ops", ha="center")
            continue
        mask = pc.and_(
            pc.and_(
                pc.equal(report.ops["device"], s["device"]), pc.equal(report.ops["backend"], s["backend"])
            ),
            pc.and_(pc.equal(report.ops["dtype"], s["dtype"]), pc.equal(report.ops["threads"], s["threads"])),
        )
        sub = report.ops.filter(mask)
        d = np.sort(sub["drift_pct"].to_numpy())
        ax_d.bar(np.arange(len(d)), d, color=np.where(d > 0, "tab:red", "tab:blue"), width=1.0)
        ax_d.axhline(0, color="black", linewidth=0.5)
        ax_d.set_title(f"{s['device']} {s['backend']} {s['dtype']} {s['threads']} thr: drift per op")
        ax_d.set_xlabel(f"ops, sorted (median {s['median_drift_pct']:+.1f} %)")
        ax_d.set_ylabel("p50 drift %")
        old, new = sub["old_p50_ms"].to_numpy(), sub["new_p50_ms"].to_numpy()
        ax_s.loglog(old, new, ".", alpha=0.7)
        lim = [min(old.min(), new.min()), max(old.max(), new.max())]
        ax_s.plot(lim, lim, color="gray", linewidth=0.5)
        ax_s.xaxis.set_minor_formatter(NullFormatter())  # a narrow log range otherwise overprints
        ax_s.yaxis.set_minor_formatter(NullFormatter())
        ax_s.set_xlabel(f"old p50 ms ({old_name})")
        ax_s.set_ylabel(f"new p50 ms ({new_name})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
