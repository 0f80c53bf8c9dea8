"""Energy through the whole pipeline: `chamlab profile` on a device whose devices.toml names a power
reader, with the RAPL tree prepared and advanced in real time by the test (this machine has no
energy counter; see tests/agent/test_power.py for the accuracy check against an injected model)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FAST_DEVICES, profile_macro
from powersim import RealTimeRapl

from chamlab.core.errors import DataFileError
from chamlab.host import power
from chamlab.host.lut import Lut

WATTS = 9.0


def test_profile_fills_energy_columns_and_writes_the_power_trace(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    devices = tmp_path / "devices.toml"
    keys = f'power_reader = "rapl"\npower_root = "{root}"\npower_window_s = 0.25\n'
    devices.write_text(FAST_DEVICES.replace("threads = 1\n", "threads = 1\n" + keys))
    lut = tmp_path / "lut.parquet"
    with RealTimeRapl(root, WATTS):
        res = profile_macro(lut, devices, "--arch", "all-identity", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["power_error"] is None and report["power_trace"] == str(power.trace_path(lut))
    rows = Lut.read(lut).table.to_pylist()
    assert len(rows) == 7
    for r in rows:
        assert r["power_reader"] == "rapl" and r["charging"] is None
        assert r["idle_power_w"] == pytest.approx(WATTS, rel=0.25)  # real time, shared machine
        assert abs(r["avg_power_w"]) < 0.25 * WATTS  # the feeder draws the same when the op runs
    trace = power.read_trace(power.trace_path(lut))
    assert set(trace["op_key"].to_pylist()) == {r["op_key"] for r in rows}
    assert set(trace["phase"].to_pylist()) == {"idle", "active"}
    assert set(trace["run_id"].to_pylist()) == {rows[0]["run_id"]} and set(trace["batch"].to_pylist()) == {1}
    meta = pq.read_schema(power.trace_path(lut)).metadata
    assert meta[b"chamlab.kind"] == b"power-trace" and meta[b"chamlab.schema_version"] == b"1"


def test_a_device_without_the_reader_says_so_and_still_profiles(tmp_path: Path) -> None:
    devices = tmp_path / "devices.toml"
    keys = f'power_reader = "rapl"\npower_root = "{tmp_path}"\n'
    devices.write_text(FAST_DEVICES.replace("threads = 1\n", "threads = 1\n" + keys))
    lut = tmp_path / "lut.parquet"
    res = profile_macro(lut, devices, "--arch", "all-identity")
    assert res.returncode == 0, res.stderr
    assert "no energy measured: no RAPL reader: no intel-rapl:N/energy_uj under" in res.stderr
    assert {r["energy_mj"] for r in Lut.read(lut).table.to_pylist()} == {None}
    assert not power.trace_path(lut).exists()


def test_trace_rows_replace_the_same_op_and_a_lut_is_not_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.power.parquet"
    energy = {"reader": "rapl", "trace": [["idle", 0.1, 2.0], ["active", 0.2, 5.0]]}
    power.add_trace_rows(path, power.trace_rows(energy, run_id="r", op_key="a", batch=1, device="d"))
    power.add_trace_rows(path, power.trace_rows(energy, run_id="r", op_key="b", batch=1, device="d"))
    power.add_trace_rows(path, power.trace_rows(energy, run_id="r", op_key="a", batch=1, device="d"))
    assert power.read_trace(path).num_rows == 4
    Lut.empty().write(tmp_path / "lut.parquet")
    with pytest.raises(DataFileError, match="not a chamlab power trace"):
        power.read_trace(tmp_path / "lut.parquet")
