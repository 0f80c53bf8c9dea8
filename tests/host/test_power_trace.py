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
from chamlab.host.luts.lut import Lut
from chamlab.host.measurement import power_traces as power

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


def test_lut_row_takes_energy_batch_and_delegation_from_the_runner_result(
    tmp_path: Path, fast_devices: Path
) -> None:
    """The row a measured op becomes (no device needed: the runner's result record is given)."""
    from chamlab.host import api
    from chamlab.host.measurement.pipeline import Measured
    from chamlab.host.measurement.profiling import lut_row
    from chamlab.operators import InvertedResidual
    from chamlab.operators.export import Artifact, ExportItem

    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"), threads=1, batch=8)
    op = InvertedResidual(16, 16, 3, 1, 3, 8, 8)
    item = ExportItem.for_op(op, 8)
    art = Artifact(item, "xnnpack", "fp32", tmp_path / "a.pte", tmp_path / "a.etrecord", "k", None)
    energy = {
        "reader": "battery",
        "idle_power_w": 1.5,
        "avg_power_w": 2.0,
        "energy_mj": 0.4,
        "charging": True,
    }
    events = [{"event": "conv", "p50_ms": 0.1, "delegated": True}]
    row = lut_row(spec, Measured(item, art, [1.0, 1.1], {"energy": energy}, events), "run-1")
    assert (row["batch"], row["input_shape"]) == (8, [8, 16, 8, 8])
    assert (row["idle_power_w"], row["avg_power_w"], row["energy_mj"]) == (1.5, 2.0, 0.4)
    assert row["power_reader"] == "battery" and row["charging"] is True and row["delegated"] is True
    events.append({"event": "native_call_add", "p50_ms": 0.01, "delegated": False})
    row = lut_row(spec, Measured(item, art, [1.0], {"energy": {"reader": "rapl", "error": "x"}}, events), "r")
    assert row["delegated"] is False and row["energy_mj"] is None and row["quant_recipe"] is None
    assert lut_row(spec, Measured(item, art, [1.0], {}, None), "r")["delegated"] is None
