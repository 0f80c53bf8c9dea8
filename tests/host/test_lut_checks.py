"""`lut validate`'s checks (every problem listed), `lut show`'s filters and `lut diff`'s drift."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lut_factory import FP_PIXEL, OPS_POOL, row, run_lut, write

from chamlab.host.luts.lifecycle import check_table, diff_luts, show_rows, validate_file
from chamlab.host.luts.lut import SCHEMA


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def test_a_good_lut_has_no_problems(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.parquet", run_lut("run-a", 0, 1.0))
    report = validate_file(path)
    assert report.valid and report.rows == 4 and report.schema_version == 3
    assert report.to_json()["problems"] == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"p50_ms": math.nan}, "p50_ms must be a positive finite number"),
        ({"p50_ms": -1.0}, "p50_ms must be a positive finite number"),
        ({"p90_ms": math.inf}, "p90_ms is NaN or infinite"),
        ({"mean_ms": math.nan}, "mean_ms is NaN or infinite"),
        ({"std_ms": -0.5}, "std_ms outside [0, inf]"),
        ({"battery_pct": 140.0}, "battery_pct outside [0, 100]"),
        ({"temp_after_c": 900.0}, "temp_after_c outside [-50, 150]"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"n_samples": 3}, "n_samples differs from the number of samples"),
        ({"p10_ms": 5.0}, "p10_ms <= p50_ms <= p90_ms violated"),
        ({"samples_ms": [1.0, math.nan, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}, "samples_ms holds NaN"),
        ({"p50_ms": 1.5}, "p50_ms does not follow from samples_ms"),
        ({"backend": "tpu"}, "backend tpu unknown"),
        ({"op_key": "conv_bn_act:cin=3"}, "unknown op key 'conv_bn_act:cin=3'"),
        ({"op_type": "pool_linear"}, "is a conv_bn_act but op_type says ['pool_linear']"),
        ({"device_fingerprint": "h|Apple M2|Darwin 23 arm64"}, "'pixel' has rows from 2 different devices"),
        ({"windows": 1, "throttled_windows": 2}, "windows must be >= 1 and >= throttled_windows"),
        ({"windows": 0}, "windows must be >= 1 and >= throttled_windows"),
        ({"cool_wait_s": -2.0}, "cool_wait_s outside [0, inf]"),
    ],
)
def test_each_bad_value_is_reported(change: dict, expected: str) -> None:
    rows = run_lut("run-a", 0, 1.0)
    rows[0].update(change)
    problems = check_table(_table(rows))
    assert any(expected in p for p in problems), problems
    if "op_key" not in change and "device_fingerprint" not in change and "backend" not in change:
        assert OPS_POOL[0] in " ".join(problems)  # the row is named


def test_duplicates_and_several_problems_are_all_listed(tmp_path: Path) -> None:
    rows = run_lut("run-a", 0, 1.0)
    rows.append(dict(rows[1]))
    rows[2]["p50_ms"] = math.nan
    rows[3]["battery_pct"] = -3.0
    path = tmp_path / "bad.parquet"
    pq.write_table(
        _table(rows).replace_schema_metadata(
            {b"chamlab.kind": b"latency-lut", b"chamlab.schema_version": b"1"}
        ),
        path,
    )
    report = validate_file(path)
    assert not report.valid
    text = "\n".join(report.problems)
    assert "appears 2 times" in text and "p50_ms must be" in text and "battery_pct outside" in text


def test_unreadable_files_are_one_problem(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_text("not parquet")
    for path, msg in (
        (foreign, "not a chamlab LUT"),
        (corrupt, "not a readable Parquet file"),
        (tmp_path / "missing.parquet", "does not exist"),
    ):
        report = validate_file(path)
        assert not report.valid and len(report.problems) == 1 and msg in report.problems[0]


def test_show_filters(tmp_path: Path) -> None:
    rows = run_lut("run-a", 0, 1.0) + [row(k, [2.0, 2.1], threads=2) for k in OPS_POOL]
    path = write(tmp_path / "l.parquet", rows)
    res = show_rows(path, threads=2, op_type="conv_bn_act")
    assert res.total_rows == 8 and res.matched_rows == 2
    assert {r["threads"] for r in res.rows} == {2} and {r["op_type"] for r in res.rows} == {"conv_bn_act"}
    assert show_rows(path, limit=3).to_json()["rows"][0]["measured_at"].startswith("2026-01-01")
    assert len(show_rows(path, limit=3).rows) == 3 and show_rows(path, device="other").matched_rows == 0
    assert len(res.to_json()["measurement_sets"]) == 2


def test_diff_drift_summary_and_plot(tmp_path: Path) -> None:
    old = write(tmp_path / "old.parquet", [row(k, [1.0 * (i + 1)]) for i, k in enumerate(OPS_POOL[:3])])
    updated = FP_PIXEL.replace("5.10.101-android12", "6.1-android14")
    new_rows = [
        row(OPS_POOL[0], [1.1], run_id="run-b", fingerprint=updated),
        row(OPS_POOL[1], [1.0], run_id="run-b", fingerprint=updated),
        row(OPS_POOL[3], [4.0], run_id="run-b", fingerprint=updated),
        row(OPS_POOL[0], [9.0], run_id="run-b", threads=2, fingerprint=updated),  # another set: not matched
    ]
    new = write(tmp_path / "new.parquet", new_rows)
    report = diff_luts(old, new, plot=tmp_path / "drift.png")
    drift = {r["op_key"]: r["drift_pct"] for r in report.ops.to_pylist()}
    assert drift == {OPS_POOL[0]: pytest.approx(10.0), OPS_POOL[1]: pytest.approx(-50.0)}
    s = report.summary()
    assert s["common_ops"] == 2 and s["median_drift_pct"] == pytest.approx(-20.0)
    assert s["max_abs_drift_pct"] == pytest.approx(50.0) and s["max_drift_op"] == OPS_POOL[1]
    assert s["only_in_old"] == 1 and s["only_in_new"] == 2
    dev = report.devices["pixel"]
    assert dev["same_device"] and (dev["old_release"], dev["new_release"]) == (
        "5.10.101-android12",
        "6.1-android14",
    )
    assert (tmp_path / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    j = report.to_json()
    assert j["plot"] == str(tmp_path / "drift.png") and len(j["sets"]) == 1 and len(j["only_in_new"]) == 2
