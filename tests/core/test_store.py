"""The Parquet store: kinds, versions, upgraders, and every way a file can be wrong."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chamlab.core.errors import DataFileError, DuplicateNameError, UnknownNameError
from chamlab.core.store import KINDS, KindRegistry, read_table, write_table

V2 = pa.schema([("name", pa.string()), ("value_ms", pa.float64()), ("batch", pa.int32())])


@pytest.fixture
def kinds() -> KindRegistry:
    return KindRegistry()


def test_round_trip_with_metadata(kinds: KindRegistry, tmp_path: Path) -> None:
    kind = kinds.register("thing", version=2, schema=V2, what="thing file")
    path = tmp_path / "t.parquet"
    write_table(
        path, kind, pa.table({"name": ["a"], "value_ms": [1.5], "batch": [1]}), {"chamlab.note": {"x": 1}}
    )
    stored = read_table(path, kind)
    assert stored.read_version == 2 and stored.table.to_pylist() == [
        {"name": "a", "value_ms": 1.5, "batch": 1}
    ]
    assert stored.meta_json("chamlab.note") == {"x": 1} and stored.meta_json("chamlab.absent", 7) == 7
    meta = pq.read_schema(path).metadata
    assert meta[b"chamlab.kind"] == b"thing" and meta[b"chamlab.schema_version"] == b"2"
    assert b"chamlab.tool_version" in meta


def test_old_versions_are_upgraded_step_by_step_and_written_current(
    kinds: KindRegistry, tmp_path: Path
) -> None:
    kind = kinds.register("thing", version=3, schema=V2, what="thing file")

    @kind.upgrader(1)
    def add_batch(table: pa.Table, meta: dict[str, str]) -> tuple[pa.Table, dict[str, str]]:
        return table.append_column("batch", pa.array([1] * table.num_rows, pa.int32())), meta

    @kind.upgrader(2)
    def rename(table: pa.Table, meta: dict[str, str]) -> tuple[pa.Table, dict[str, str]]:
        return table.rename_columns(["name", "value_ms", "batch"]), {**meta, "chamlab.renamed": "yes"}

    path = tmp_path / "old.parquet"
    v1 = pa.table({"name": ["a", "b"], "ms": [1.0, 2.0]})
    pq.write_table(v1.replace_schema_metadata({"chamlab.kind": "thing", "chamlab.schema_version": "1"}), path)
    stored = read_table(path, kind)
    assert stored.read_version == 1 and stored.meta["chamlab.renamed"] == "yes"
    assert stored.table.column("batch").to_pylist() == [1, 1]
    write_table(path, kind, stored.table)
    assert read_table(path, kind).read_version == 3


def test_a_version_without_an_upgrade_path_says_so(kinds: KindRegistry, tmp_path: Path) -> None:
    kind = kinds.register("thing", version=2, schema=V2, what="thing file", make_hint="make one")
    path = tmp_path / "old.parquet"
    pq.write_table(
        pa.table({"x": [1]}).replace_schema_metadata(
            {"chamlab.kind": "thing", "chamlab.schema_version": "1"}
        ),
        path,
    )
    with pytest.raises(DataFileError, match="schema version 1, which this chamlab cannot upgrade"):
        read_table(path, kind)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"PAR1 nonsense PAR1", "is not a readable Parquet file"),
        ({"chamlab.kind": "other", "chamlab.schema_version": "1"}, "not a chamlab thing file .*'other'"),
        ({}, "not a chamlab thing file"),
        ({"chamlab.kind": "thing", "chamlab.schema_version": "x"}, "is not an integer"),
        (
            {"chamlab.kind": "thing", "chamlab.schema_version": "9"},
            "schema version 9, newer than this chamlab",
        ),
    ],
)
def test_every_wrong_file_is_named(
    kinds: KindRegistry, tmp_path: Path, content: object, message: str
) -> None:
    kind = kinds.register("thing", version=2, schema=V2, what="thing file")
    path = tmp_path / "f.parquet"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        pq.write_table(pa.table({"name": ["a"]}).replace_schema_metadata(content), path)
    with pytest.raises(DataFileError, match=message) as info:
        read_table(path, kind)
    assert str(path) in info.value.message and info.value.exit_code == 2


def test_columns_missing_or_of_the_wrong_type(kinds: KindRegistry, tmp_path: Path) -> None:
    kind = kinds.register("thing", version=1, schema=V2, what="thing file")
    path = tmp_path / "f.parquet"
    meta = {"chamlab.kind": "thing", "chamlab.schema_version": "1"}
    pq.write_table(pa.table({"name": ["a"], "value_ms": [1.0]}).replace_schema_metadata(meta), path)
    with pytest.raises(DataFileError, match="lacks column"):
        read_table(path, kind)
    bad = pa.table({"name": ["a"], "value_ms": ["fast"], "batch": [1]}).replace_schema_metadata(meta)
    pq.write_table(bad, path)
    with pytest.raises(DataFileError, match="columns of the wrong type"):
        read_table(path, kind)


def test_registry_is_loud(kinds: KindRegistry) -> None:
    kind = kinds.register("thing", version=2, schema=None, what="thing file")
    with pytest.raises(DuplicateNameError):
        kinds.register("thing", version=1, schema=None, what="again")
    with pytest.raises(UnknownNameError, match="unknown table kind 'nope'; known: thing"):
        kinds.get("nope")
    with pytest.raises(ValueError, match="cannot upgrade from 2"):
        kind.upgrader(2)
    import chamlab.host.luts.lut  # noqa: F401  (registers latency-lut in the shipped registry)

    assert "latency-lut" not in kinds and "latency-lut" in KINDS  # the shipped registry is separate


def test_write_refuses_foreign_metadata_keys(kinds: KindRegistry, tmp_path: Path) -> None:
    kind = kinds.register("thing", version=1, schema=None, what="thing file")
    with pytest.raises(ValueError, match=r"must start with 'chamlab\.'"):
        write_table(tmp_path / "f.parquet", kind, pa.table({"a": [1]}), {"other": "x"})
    assert not (tmp_path / "f.parquet").exists()
