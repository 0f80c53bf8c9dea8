from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chamlab.core.errors import InputError, LutError, OutputPathError, WriteError
from chamlab.host.luts.lut import (
    ROW_KEY,
    SCHEMA,
    V2_ADDED,
    V3_ADDED,
    Lut,
    MeasurementSet,
    make_row,
    stats_from_samples,
)
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
    assert lut.combinations() == [("d", "xnnpack", "fp32", 1, 1)]
    p50 = lut.p50_by_key(MeasurementSet("d", "xnnpack", "fp32", 1))
    assert p50[SPECS[1].key] == pytest.approx(2.0)
    row = lut.select(MeasurementSet("d", "xnnpack", "fp32", 1))[SPECS[1].key]
    assert row["op_params"]["expand"] == 3 and row["op_params"]["num_classes"] is None
    assert row["input_shape"] == [1, 32, 32, 32] and row["n_samples"] == 11
    meta = pq.read_schema(path).metadata
    assert meta[b"chamlab.kind"] == b"latency-lut" and meta[b"chamlab.schema_version"] == b"3"


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
    meta[b"chamlab.schema_version"] = b"2"
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


# -- schema v2 ---------------------------------------------------------------------------------------
#: the v1 schema exactly as chamlab 9f1cb91 wrote it (a fixture: v2 dropped nothing, it added columns)
V1_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in V2_ADDED and f.name not in V3_ADDED])


def _write_v1(path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k in V1_SCHEMA.names} for r in _rows()]
    for r in rows:  # v1 rows carried the batch-1 input shape and no batch column
        assert r["input_shape"][0] == 1
    table = pa.Table.from_pylist(rows, schema=V1_SCHEMA)
    meta = {
        b"chamlab.kind": b"latency-lut",
        b"chamlab.schema_version": b"1",
        b"chamlab.tool_version": b"0.1.0",
        b"chamlab.provenance": b'[{"run_id": "run-v1"}]',
    }
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_a_v1_lut_reads_as_v2_with_batch_1_and_writes_as_v2(tmp_path: Path) -> None:
    path = tmp_path / "v1.parquet"
    _write_v1(path)
    assert "batch" not in pq.read_schema(path).names
    lut = Lut.read(path)
    assert lut.table.schema.equals(SCHEMA) and lut.provenance == [{"run_id": "run-v1"}]
    assert lut.combinations() == [MeasurementSet("d", "xnnpack", "fp32", 1, 1)]
    rows = lut.table.to_pylist()
    assert {r["batch"] for r in rows} == {1}
    for name in ("idle_power_w", "quant_recipe", "delegated", "charging", "power_reader"):
        assert {r[name] for r in rows} == {None}
    assert lut.p50_by_key(MeasurementSet("d", "xnnpack", "fp32", 1, 1))[SPECS[1].key] == pytest.approx(2.0)
    # batch-4 rows of the same ops sit beside the upgraded rows, and the write is v2
    four = [
        make_row(
            r["op_key"],
            device="d",
            backend="xnnpack",
            dtype="fp32",
            threads=1,
            batch=4,
            samples_ms=[4.0, 4.1],
        )
        for r in rows
    ]
    lut.upsert(four).write(path)
    assert pq.read_schema(path).metadata[b"chamlab.schema_version"] == b"3"
    again = Lut.read(path)
    assert len(again) == 6 and [m.batch for m in again.combinations()] == [1, 4]
    assert again.select(MeasurementSet("d", "xnnpack", "fp32", 1, 4))[SPECS[0].key]["input_shape"] == [
        4,
        3,
        32,
        32,
    ]


def test_choose_by_batch(tmp_path: Path) -> None:
    rows = _rows() + [
        make_row(s.key, device="d", backend="xnnpack", dtype="fp32", threads=1, batch=8, samples_ms=[9.0])
        for s in SPECS
    ]
    lut = Lut.empty().upsert(rows)
    assert lut.choose("x", batch=8).batch == 8 and lut.choose("x", batch=1).batch == 1
    with pytest.raises(InputError, match=r"several measurement sets .*batch=1.*batch=8"):
        lut.choose("x")
    with pytest.raises(LutError, match=r"no rows for .*batch=2; it holds"):
        lut.choose("x", batch=2)
