from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chamlab.core.errors import LutError, OutputPathError, WriteError
from chamlab.host.lut import ROW_KEY, SCHEMA, Lut, MeasurementSet, make_row, stats_from_samples
from chamlab.operators import OPS, ConvBNAct, InvertedResidual, PoolLinear

SPECS = [
    ConvBNAct(3, 32, 3, 1, 32, 32),
    InvertedResidual(32, 64, 3, 2, 3, 32, 32),
    PoolLinear(1280, 10, 4, 4),
]


def _rows(device: str = "d", threads: int = 1, scale: float = 1.0) -> list[dict]:
    rows = []
    for i, spec in enumerate(SPECS):
        samples = list(scale * (i + 1) * np.linspace(0.9, 1.1, 11))
        rows.append(
            make_row(
                spec.key,
                device=device,
                backend="xnnpack",
                dtype="fp32",
                threads=threads,
                samples_ms=samples,
                run_id="run-x",
                unstable=False,
                robust_cv=0.01,
                measured_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            )
        )
    return rows


def test_round_trip_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "lut.parquet"
    Lut.empty().upsert(_rows(), {"run_id": "run-x"}).write(path)
    lut = Lut.read(path)
    assert len(lut) == 3 and lut.provenance == [{"run_id": "run-x"}]
    assert lut.combinations() == [("d", "xnnpack", "fp32", 1)]
    p50 = lut.p50_by_key(MeasurementSet("d", "xnnpack", "fp32", 1))
    assert p50[SPECS[1].key] == pytest.approx(2.0)
    row = lut.select(MeasurementSet("d", "xnnpack", "fp32", 1))[SPECS[1].key]
    assert row["op_params"]["expand"] == 3 and row["op_params"]["num_classes"] is None
    assert row["input_shape"] == [1, 32, 32, 32] and row["n_samples"] == 11
    meta = pq.read_schema(path).metadata
    assert meta[b"chamlab.kind"] == b"latency-lut" and meta[b"chamlab.schema_version"] == b"1"


def test_schema_covers_every_registered_op_field() -> None:
    struct = SCHEMA.field("op_params").type
    assert {struct.field(i).name for i in range(struct.num_fields)} == set(OPS.field_types())


def test_readable_by_other_tools(tmp_path: Path) -> None:
    import duckdb
    import pandas as pd
    import polars as pl

    path = tmp_path / "lut.parquet"
    Lut.empty().upsert(_rows()).write(path)
    assert len(pd.read_parquet(path)) == 3
    assert pl.read_parquet(path)["p50_ms"].sum() == pytest.approx(6.0)
    con = duckdb.connect()
    got = con.execute(
        f"select op_params.cin, p50_ms from read_parquet('{path}') where op_type = 'pool_linear'"
    )
    assert got.fetchall() == [(1280, pytest.approx(3.0))]


def test_upsert_replaces_rows_with_the_same_key_only() -> None:
    lut = Lut.empty().upsert(_rows(threads=1)).upsert(_rows(threads=2))
    assert len(lut) == 6
    lut = lut.upsert(_rows(threads=2, scale=10.0))
    assert len(lut) == 6
    assert lut.p50_by_key(MeasurementSet("d", "xnnpack", "fp32", 2))[SPECS[0].key] == pytest.approx(10.0)
    assert lut.p50_by_key(MeasurementSet("d", "xnnpack", "fp32", 1))[SPECS[0].key] == pytest.approx(1.0)
    keys = [tuple(r[k] for k in ROW_KEY) for r in lut.table.to_pylist()]
    assert len(set(keys)) == len(keys)


def test_stats_are_derived_from_samples() -> None:
    s = stats_from_samples([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["p50_ms"] == 3.0 and s["p10_ms"] == pytest.approx(1.4) and s["mean_ms"] == 22.0
    for bad in ([], [1.0, float("nan")], [-1.0]):
        with pytest.raises(ValueError):
            stats_from_samples(bad)


def test_foreign_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    with pytest.raises(LutError, match="not a chamlab LUT"):
        Lut.read(path)


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lut.parquet"
    Lut.empty().upsert(_rows()).write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LutError, match="not a readable Parquet file"):
        Lut.read(path)
    path.write_bytes(b"hello")
    with pytest.raises(LutError, match="not a readable Parquet file"):
        Lut.read(path)


def test_other_schema_version_and_bad_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "lut.parquet"
    table = Lut.empty().upsert(_rows()).table
    meta = {b"chamlab.kind": b"latency-lut", b"chamlab.schema_version": b"99"}
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(LutError, match="schema version 99, newer than this chamlab reads"):
        Lut.read(path)
    meta[b"chamlab.schema_version"] = b"1"
    bad = table.set_column(table.schema.get_field_index("p50_ms"), "p50_ms", pa.array([1.0, -2.0, 3.0]))
    pq.write_table(bad.replace_schema_metadata(meta), path)
    with pytest.raises(LutError, match="p50_ms must be a positive number"):
        Lut.read(path)
    pq.write_table(table.drop_columns(["samples_ms"]).replace_schema_metadata(meta), path)
    with pytest.raises(LutError, match="lacks column"):
        Lut.read(path)


def test_missing_file_hints_at_profile(tmp_path: Path) -> None:
    with pytest.raises(LutError, match="does not exist") as info:
        Lut.read(tmp_path / "none.parquet")
    assert "chamlab profile" in (info.value.hint or "")


def test_failed_write_keeps_the_previous_lut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lut.parquet"
    Lut.empty().upsert(_rows()).write(path)
    before = path.read_bytes()

    def broken(table: pa.Table, where: Path, **kw: object) -> None:
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(WriteError, match=f"cannot write {path}: disk full"):
        Lut.empty().upsert(_rows(scale=5.0)).write(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lut.parquet"]


def test_unwritable_destination(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="does not exist"):
        Lut.empty().write(tmp_path / "no" / "lut.parquet")
