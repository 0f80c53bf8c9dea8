"""The executor_runner path end to end on the host: the runner binary pushed once and cached on the
target by sha256, samples read from REAL ETDumps, stability judged on the host with bounded re-queues,
device state and the delegate breakdown in the LUT row; over the local transport and the real adb
server (tests/adb_peer.py stands in for the phone's adbd).

The "binary" is a shell script that runs tests/agent/standin_executor_runner.py (the C++ runner's
flags, real ETDumps through the ExecuTorch Python runtime): no NDK here to build the real one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import chamlab
from peers import AdbPeer
from powersim import BusyRapl

from chamlab.agent.measure import MeasurePolicy
from chamlab.core.errors import ConfigError
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.devices.session import DeviceSession
from chamlab.host.devices.transports import LocalConfig, LocalTransport
from chamlab.host.measurement.pipeline import resolve_run, run_items
from chamlab.host.measurement.profiling import lut_row
from chamlab.operators import ConvBNAct
from chamlab.operators.export import ExportItem

TESTS = Path(__file__).resolve().parents[1]
STANDIN = TESTS / "agent" / "standin_executor_runner.py"
sys.path.insert(0, str(TESTS / "agent"))
from test_driver_executor_runner import sysfs_tree  # noqa: E402


def fake_binary(folder: Path, tag: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "executor_runner"
    path.write_text(f'#!/bin/sh\n# stand-in executor_runner {tag}\nexec {sys.executable} {STANDIN} "$@"\n')
    return path


def test_runner_path_is_required_and_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    toml = tmp_path / "devices.toml"
    toml.write_text('[devices.phone]\ntransport = "local"\nrunner = "executor_runner"\n')
    with pytest.raises(ConfigError, match="needs runner_path"):
        parse_devices_file(toml)
    toml.write_text(
        f'[devices.phone]\nrunner = "executor_runner"\nrunner_path = "{toml}"\npower_reader = "nvml"\n'
    )
    with pytest.raises(ConfigError, match="power_reader nvml needs python"):
        parse_devices_file(toml)
    toml.write_text('[devices.phone]\ntransport = "local"\nrunner = "exe"\n')
    with pytest.raises(ConfigError, match='must be "shim", "torch-cuda"'):
        parse_devices_file(toml)
    dev = LocalConfig(name="p", runner="executor_runner", runner_path=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"runner_path .* cannot be read"):
        DeviceSession(dev, LocalTransport("p"), threads=1).runner_sha256()


def test_unstable_ops_are_requeued_and_the_row_records_state_and_delegation(tmp_path: Path) -> None:
    sysfs = sysfs_tree(tmp_path / "sys", status="Charging")
    # max_cv this small makes every attempt unstable: the op is re-measured exactly `retries` times
    policy = MeasurePolicy(
        num_executions=4, warmup_runs=1, warmup_ms=0, min_time_ms=0, retries=1, max_cv=1e-9
    )
    device = LocalConfig(
        name="phone",
        runner="executor_runner",
        runner_path=str(fake_binary(tmp_path / "host-bin")),
        workdir=str(tmp_path / "target"),
        measure=policy,
        cpufreq_root=str(sysfs / "cpu"),
        thermal_root=str(sysfs / "thermal"),
        power_supply_root=str(sysfs / "power_supply"),
    )
    spec = resolve_run(device)
    slept: list[float] = []
    item = ExportItem.for_op(ConvBNAct(8, 8, 3, 1, 8, 8))
    run = run_items(spec, [item], breakdown=True, sleep=slept.append)
    assert not run.failed, run.failed
    m = run.measured[item]
    assert len(m.samples_ms) == 4  # the in-process warm-up execution was dropped
    assert slept == [policy.cooldown_s] and [a for _, a, _ in run.rounds] == [1]
    assert len(m.result["attempts"]) == 2 and m.result["unstable"]  # bounded: 1 + retries attempts
    row = lut_row(spec, m, run.run_id)
    assert row["unstable"] and row["n_samples"] == 4
    assert row["governor"] == "schedutil" and row["temp_before_c"] == 45.5 and row["battery_pct"] == 77
    assert row["charging"] is True  # the battery's status said Charging
    assert row["runtime_version"].startswith("executor_runner sha256:")
    assert row["delegated"] is True and row["breakdown"]  # conv in XNNPACK, from the Inspector breakdown
    # the binary sits in its sha256 slot on the target, and every run reuses it
    session = run.session
    assert session is not None
    cached = Path(session.remote_runner())
    assert cached.parent.name == session.runner_sha256() and cached.is_file()
    assert session.ensure_runner() is False
    run.finish()
    assert not list((tmp_path / "target").glob("run-*"))  # every round's directory is removed


def test_without_breakdown_delegated_is_unknown(tmp_path: Path) -> None:
    policy = MeasurePolicy(num_executions=3, warmup_runs=0, warmup_ms=0, min_time_ms=0, retries=0)
    device = LocalConfig(
        name="phone",
        runner="executor_runner",
        runner_path=str(fake_binary(tmp_path / "bin", "v2")),
        workdir=str(tmp_path / "target"),
        measure=policy,
    )
    spec = resolve_run(device)
    item = ExportItem.for_op(ConvBNAct(8, 8, 3, 1, 8, 8))
    run = run_items(spec, [item])
    row = lut_row(spec, run.measured[item], run.run_id)
    assert row["delegated"] is None and row["breakdown"] is None and row["n_samples"] == 3


def test_profile_through_the_adb_server_with_a_pushed_runner(tmp_path: Path, adb_peer: AdbPeer) -> None:
    binary = fake_binary(tmp_path / "host-bin", "adb")
    devices = tmp_path / "devices.toml"
    toml = adb_peer.devices_toml("phone", runner='"executor_runner"', runner_path=f'"{binary}"')
    # no warm-up call here (warmup_runs = 0): the per-op cost is one runner start, not two
    devices.write_text(toml + "[devices.phone.measure]\nnum_executions = 5\nwarmup_runs = 0\nretries = 0\n")
    out = tmp_path / "phone.parquet"
    args = ("profile", "--serial", adb_peer.serial, "-s", "macro-cifar10", "-a", "all-identity")
    res = chamlab(*args, "--out", out, "--devices", devices, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["measured_ops"] == report["planned_ops"] > 1 and not report["failed_ops"]
    table = pq.read_table(out).to_pylist()
    assert all(
        r["n_samples"] == 5 and r["runtime_version"].startswith("executor_runner sha256:") for r in table
    )
    slots = list((adb_peer.sandbox / "chamlab" / "runners").glob("*/executor_runner"))
    assert len(slots) == 1  # pushed once, under its sha256


@pytest.mark.serial  # its energy figure needs the CPUs to itself: runs after the parallel part
def test_power_round_measures_the_energy_above_idle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline check against a known power model, not a claim about hardware: the simulated RAPL
    counter runs at 3 W, plus 12 W while the stand-in executes the op."""
    busy = tmp_path / "busy"
    monkeypatch.setenv("CHAMLAB_STANDIN_BUSY", str(busy))
    policy = MeasurePolicy(num_executions=5, warmup_runs=1, warmup_ms=0, min_time_ms=0, retries=0)
    with BusyRapl(tmp_path / "powercap", busy, idle_w=3.0, extra_w=12.0):
        device = LocalConfig(
            name="phone",
            runner="executor_runner",
            runner_path=str(fake_binary(tmp_path / "bin", "power")),
            workdir=str(tmp_path / "target"),
            measure=policy,
            power_reader="rapl",
            power_root=str(tmp_path / "powercap"),
            power_window_s=2.5,  # >= 2 sampler readings after settling, also at load 15
            power_settle_s=4.0,  # covers the stand-in's start-up (python and torch: seconds, not ms)
        )
        spec = resolve_run(device)
        item = ExportItem.for_op(ConvBNAct(32, 64, 3, 1, 32, 32))  # ~ms per execution
        run = run_items(spec, [item])
    assert not run.failed, run.failed
    m = run.measured[item]
    energy = m.result["energy"]
    assert "error" not in energy, energy
    assert energy["reader"] == "rapl" and energy["idle_power_w"] == pytest.approx(3.0, rel=0.1)
    assert energy["avg_power_w"] == pytest.approx(12.0, rel=0.15)
    assert energy["energy_mj"] == pytest.approx(energy["avg_power_w"] * m.result["mean_ms"])
    row = lut_row(spec, m, run.run_id)
    assert row["power_reader"] == "rapl" and row["energy_mj"] == energy["energy_mj"]
    assert {p for p, _, _ in energy["trace"]} == {"idle", "active"}
    run.finish()
    assert not list((tmp_path / "target").glob("run-*"))
