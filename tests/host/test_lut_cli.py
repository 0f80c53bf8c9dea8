"""`chamlab lut merge|validate|show|diff`: exit codes, --json keys, messages naming the file.

Most calls go through Typer's in-process runner (fast); one runs the installed console script."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import chamlab
from lut_factory import OPS_POOL, row, run_lut, write
from typer.testing import CliRunner

from chamlab.host.cli import app


def cli(*args: str | Path) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    a = write(tmp_path / "a.parquet", run_lut("run-a", 0, 1.0))
    b = write(tmp_path / "b.parquet", run_lut("run-b", 3, 1.2, ops=OPS_POOL[1:3]))
    return a, b


def test_merge_json_and_policies(two: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    code, stdout, stderr = cli("lut", "merge", *two, "-o", out, "--json")
    assert code == 0, stderr
    j = json.loads(stdout)
    assert (j["rows_in"], j["rows_out"], j["conflicts"], j["policy"], j["runs"]) == (6, 4, 2, "newest", 2)
    assert j["out"] == str(out) and j["carried_meta"] == ["chamlab.provenance"]
    code, _, stderr = cli("lut", "merge", *two, "-o", tmp_path / "p.parquet", "--policy", "pooled")
    assert code == 0 and "2 conflicting row key(s), policy pooled" in stderr
    assert max(pq.read_table(tmp_path / "p.parquet")["n_samples"].to_pylist()) == 18
    code, _, stderr = cli("lut", "merge", *two, "-o", tmp_path / "f.parquet", "--policy", "fail")
    assert code == 2 and "measured by different runs" in stderr and "--policy newest" in stderr
    assert not (tmp_path / "f.parquet").exists()
    code, _, stderr = cli("lut", "merge", *two, "-o", tmp_path / "x.parquet", "--policy", "mean")
    assert code == 2 and "--policy 'mean' is unknown" in stderr


def test_merge_bad_inputs_exit_2_naming_the_file(two: tuple[Path, Path], tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(two[0].read_bytes()[:-100])
    v9 = tmp_path / "v9.parquet"
    meta = {b"chamlab.kind": b"latency-lut", b"chamlab.schema_version": b"9"}
    pq.write_table(pq.read_table(two[0]).replace_schema_metadata(meta), v9)
    out = tmp_path / "out.parquet"
    for bad in (foreign, corrupt, tmp_path / "missing.parquet", v9):
        code, stdout, stderr = cli("lut", "merge", two[0], bad, "-o", out, "--json")
        assert code == 2 and str(bad) in stderr, (bad, stderr)
        error = json.loads(stdout)  # --json: the error as one JSON object on stdout
        assert error["exit_code"] == 2 and str(bad) in error["error"]
        assert not out.exists()
    code, _, stderr = cli("lut", "merge", *two, "-o", tmp_path / "no" / "m.parquet")
    assert code == 2 and "directory" in stderr and "does not exist" in stderr
    code, _, stderr = cli("lut", "merge", *two, "-o", tmp_path)
    assert code == 2 and "is a directory" in stderr


def test_validate_exit_codes_and_json(two: tuple[Path, Path], tmp_path: Path) -> None:
    code, stdout, _ = cli("lut", "validate", two[0])
    assert code == 0 and "valid (schema v3, 4 rows)" in stdout
    rows = run_lut("run-a", 0, 1.0)
    rows[0]["p50_ms"] = float("nan")
    rows[1]["op_key"] = "conv_bn_act:cin=oops"
    from chamlab.host.luts.lut import SCHEMA

    bad = tmp_path / "bad.parquet"
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(
        table.replace_schema_metadata({b"chamlab.kind": b"latency-lut", b"chamlab.schema_version": b"2"}), bad
    )
    code, stdout, _ = cli("lut", "validate", bad, "--json")
    j = json.loads(stdout)
    assert code == 2 and j["valid"] is False and j["rows"] == 4 and len(j["problems"]) >= 2
    code, _, stderr = cli("lut", "validate", bad)
    assert code == 2 and "problem(s)" in stderr and "unknown op key 'conv_bn_act:cin=oops'" in stderr
    code, stdout, _ = cli("lut", "validate", tmp_path / "missing.parquet", "--json")
    assert code == 2 and "does not exist" in json.loads(stdout)["problems"][0]


def test_show_table_and_json(two: tuple[Path, Path]) -> None:
    code, stdout, _ = cli("lut", "show", two[0], "--op-type", "pool_linear")
    assert code == 0 and "1 of 1 matching rows" in stdout and "pool_linear:cin=1280" in stdout
    code, stdout, _ = cli(
        "lut", "show", two[0], "--json", "--limit", "2", "--target", "pixel", "--threads", "1"
    )
    j = json.loads(stdout)
    assert code == 0 and j["total_rows"] == 4 and j["matched_rows"] == 4 and len(j["rows"]) == 2
    assert {"op_key", "p50_ms", "n_samples", "run_id", "measured_at"} <= set(j["rows"][0])
    code, _, stderr = cli("lut", "show", two[0].with_name("nope.parquet"))
    assert code == 2 and "does not exist" in stderr


def test_show_gives_the_quant_recipe_and_delegation_of_int8_rows(tmp_path: Path) -> None:
    fp32 = row(OPS_POOL[0], [1.0, 1.1, 1.2])
    ok = row(OPS_POOL[0], [0.5, 0.6], dtype="int8", quant_recipe="xnnpack-int8-pc-v1", delegated=True)
    left = row(OPS_POOL[1], [0.7, 0.8], dtype="int8", quant_recipe="xnnpack-int8-pc-v1", delegated=False)
    path = write(tmp_path / "q.parquet", [fp32, ok, left])
    code, stdout, _ = cli("lut", "show", path, "--json")
    assert code == 0
    got = {(r["op_key"], r["dtype"]): (r["quant_recipe"], r["delegated"]) for r in json.loads(stdout)["rows"]}
    assert got == {
        (OPS_POOL[0], "fp32"): (None, None),
        (OPS_POOL[0], "int8"): ("xnnpack-int8-pc-v1", True),
        (OPS_POOL[1], "int8"): ("xnnpack-int8-pc-v1", False),
    }
    code, stdout, _ = cli("lut", "show", path)
    rows = [ln for ln in stdout.splitlines() if "pixel/xnnpack/" in ln]
    assert code == 0 and len(rows) == 3
    assert sum("xnnpack-int8-pc-v1" in ln for ln in rows) == 2  # the fp32 row has no recipe
    assert [ln for ln in rows if " NO" in ln] == [ln for ln in rows if "cin=16" in ln and "int8" in ln]
    assert sum(" yes" in ln for ln in rows) == 1


def test_diff_json_and_plot(two: tuple[Path, Path], tmp_path: Path) -> None:
    code, stdout, _ = cli("lut", "diff", *two, "--json", "--plot", tmp_path / "d.png")
    j = json.loads(stdout)
    assert code == 0 and j["summary"]["common_ops"] == 2 and j["summary"]["only_in_old"] == 2
    assert {"op_key", "old_p50_ms", "new_p50_ms", "drift_pct"} <= set(j["ops"][0])
    assert (tmp_path / "d.png").stat().st_size > 1000
    code, stdout, _ = cli("lut", "diff", *two)
    assert code == 0 and "2 common ops: median drift" in stdout and "largest drifts" in stdout
    code, _, stderr = cli("lut", "diff", two[0], tmp_path / "missing.parquet")
    assert code == 2 and "missing.parquet does not exist" in stderr


def test_console_script_merges(tmp_path: Path) -> None:
    a = write(tmp_path / "a.parquet", [row(OPS_POOL[0], [1.0, 1.2])])
    b = write(tmp_path / "b.parquet", [row(OPS_POOL[1], [2.0], run_id="run-b")])
    res = chamlab("lut", "merge", a, b, "-o", tmp_path / "m.parquet", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rows_out"] == 2
    assert "merge" in chamlab("lut", "--help").stdout
