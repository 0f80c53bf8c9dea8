"""Power readers on prepared sysfs trees, driven by a simulated device with a known power model.

No energy counter exists on this machine (no /sys/class/powercap, an empty /sys/class/power_supply,
no NVML), so the device is simulated: a clock that the measurement's own sleeps and op calls advance,
and counters written into real files in step with an injected power model (idle draw plus an op's
extra draw while it runs). The readers and :func:`measure_energy` are the shipped code; the check is
that what they measure comes back within +/-10% of what was injected (a pipeline check, not a claim
about real hardware).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from powersim import RealTimeRapl

from chamlab.agent import power

IDLE_W = 2.0
OP_EXTRA_W = 3.5
OP_S = 0.02  # one execution: 20 ms at IDLE_W + OP_EXTRA_W -> 70 mJ above idle


class SimDevice:
    """A device whose energy counters move in step with the injected power model.

    ``rapl``: two packages, counters starting close to ``max_energy_range_uj`` so that they wrap;
    ``battery``: a fuel gauge that updates once a second with the average power of the past second,
    reporting ``current_now`` with the given sign while discharging.
    """

    def __init__(
        self, root: Path, kind: str, *, discharge_sign: int = -1, voltage_uv: int = 3_850_000
    ) -> None:
        self.root, self.kind, self.t = root, kind, 1000.0
        self.energy_j = 0.0
        self.sign, self.voltage_uv = discharge_sign, voltage_uv
        self._second_start_j, self._second = 0.0, math.floor(self.t)
        if kind == "rapl":
            self.max_uj = [2**32, 262_143_328_850]
            self.start_uj = [2**32 - 3_000_000, 262_143_328_850 - 1_000_000]  # wrap after ~3 J and ~1 J
            for i in (0, 1):
                d = root / f"intel-rapl:{i}"
                d.mkdir(parents=True)
                (d / "name").write_text(f"package-{i}\n")
                (d / "max_energy_range_uj").write_text(f"{self.max_uj[i]}\n")
                sub = d / f"intel-rapl:{i}:0"  # a sub-domain (core): must not be counted twice
                sub.mkdir()
                (sub / "energy_uj").write_text("0\n")
                (sub / "max_energy_range_uj").write_text("1000\n")
            self.wraps = [0, 0]
        else:
            usb = root / "usb"
            usb.mkdir(parents=True)
            (usb / "type").write_text("USB\n")
            bat = root / "battery"
            bat.mkdir()
            (bat / "type").write_text("Battery\n")
            (bat / "status").write_text("Discharging\n")
            (bat / "voltage_now").write_text(f"{voltage_uv}\n")
        self._write(IDLE_W)

    def _write(self, gauge_w: float) -> None:
        if self.kind == "rapl":
            total_uj = self.energy_j * 1e6
            for i, share in enumerate((0.75, 0.25)):
                raw = self.start_uj[i] + int(total_uj * share)
                self.wraps[i] = raw // self.max_uj[i]
                (self.root / f"intel-rapl:{i}" / "energy_uj").write_text(f"{raw % self.max_uj[i]}\n")
        else:
            current_ua = round(gauge_w / (self.voltage_uv * 1e-6) * 1e6)
            (self.root / "battery" / "current_now").write_text(f"{self.sign * current_ua}\n")

    def advance(self, dt: float, watts: float) -> None:
        end = self.t + dt
        while self.t < end:
            step_end = min(end, self._second + 1.0)
            self.energy_j += watts * (step_end - self.t)
            self.t = step_end
            if self.t >= self._second + 1.0:  # the gauge's once-a-second update
                avg_w = self.energy_j - self._second_start_j
                self._second, self._second_start_j = self._second + 1, self.energy_j
                if self.kind == "battery":
                    self._write(avg_w)
        if self.kind == "rapl":
            self._write(0.0)

    def clock(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.advance(dt, IDLE_W)

    def op(self) -> None:
        self.advance(OP_S, IDLE_W + OP_EXTRA_W)


def _check(result: dict, reader: str) -> None:
    assert result["reader"] == reader
    assert result["idle_power_w"] == pytest.approx(IDLE_W, rel=0.10)
    assert result["avg_power_w"] == pytest.approx(OP_EXTRA_W, rel=0.10)
    assert result["energy_mj"] == pytest.approx(OP_EXTRA_W * OP_S * 1e3, rel=0.10)
    phases = {row[0] for row in result["trace"]}
    assert phases == {"idle", "active"} and all(len(row) == 3 for row in result["trace"])


def test_rapl_energy_above_idle_with_wrap_around(tmp_path: Path) -> None:
    dev = SimDevice(tmp_path, "rapl")
    reader = power.open_reader("rapl", str(tmp_path))
    assert [Path(d).name for d in reader.domains] == ["intel-rapl:0", "intel-rapl:1"]
    result = power.measure_energy(reader, dev.op, window_s=2.0, clock=dev.clock, sleep=dev.sleep)
    assert dev.wraps == [1, 1], "the test must make both counters wrap"
    _check(result, "rapl")
    assert result["executions"] >= 2.0 / OP_S and result["window_s"] >= 2.0
    assert result["charging"] is None


@pytest.mark.parametrize("sign", [-1, +1], ids=["kernel-abi-negative", "driver-positive"])
def test_battery_fuel_gauge_either_sign_convention(tmp_path: Path, sign: int) -> None:
    dev = SimDevice(tmp_path, "battery", discharge_sign=sign)
    reader = power.open_reader("battery", str(tmp_path))
    assert Path(reader.folder).name == "battery"  # the USB supply is skipped
    result = power.measure_energy(reader, dev.op, clock=dev.clock, sleep=dev.sleep)
    assert result["window_s"] >= power.BatteryReader.min_window_s  # a 1 Hz gauge needs seconds
    _check(result, "battery")
    assert result["charging"] is False


def test_battery_charging_is_recorded_and_a_forced_sign_counts_charge_as_zero(tmp_path: Path) -> None:
    dev = SimDevice(tmp_path, "battery", discharge_sign=-1)
    (tmp_path / "battery" / "status").write_text("Charging\n")
    assert power.open_reader("battery", str(tmp_path)).charging() is True
    (tmp_path / "battery" / "current_now").write_text("500000\n")  # +0.5 A: into the battery
    forced = power.open_reader("battery", str(tmp_path), current_sign="discharge_negative")
    assert forced.read() == 0.0
    assert power.open_reader("battery", str(tmp_path)).read() == pytest.approx(0.5 * dev.voltage_uv * 1e-6)


def test_a_window_too_short_for_the_gauge_misses_the_injected_energy(tmp_path: Path) -> None:
    """Why windows are long and settled: without settling, a 1 Hz gauge reads the op's first second
    at the idle level, so the measurement falls far outside +/-10%."""
    dev = SimDevice(tmp_path, "battery")
    reader = power.open_reader("battery", str(tmp_path))
    reader.settle_s, reader.min_window_s = 0.0, 1.5
    result = power.measure_energy(reader, dev.op, clock=dev.clock, sleep=dev.sleep)
    assert abs(result["energy_mj"] / (OP_EXTRA_W * OP_S * 1e3) - 1) > 0.10


def test_absent_readers_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(power.NoPowerReader, match=r"no RAPL reader: no intel-rapl:N/energy_uj under"):
        power.open_reader("rapl", str(tmp_path))
    with pytest.raises(power.NoPowerReader, match="no battery reader: no supply of type Battery"):
        power.open_reader("battery", str(tmp_path))
    with pytest.raises(power.NoPowerReader, match="no NVML reader: "):
        power.open_reader("nvml", "0")  # no pynvml, or no NVIDIA driver/GPU on this machine
    with pytest.raises(ValueError, match="unknown power reader 'joulescope'"):
        power.open_reader("joulescope")


# -- the runner's hook, run for real ------------------------------------------------------------------
def test_runner_reports_energy_through_its_power_hook(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from chamlab.operators import InvertedResidual
    from chamlab.operators.export import ArtifactCache, ExportItem, export_all

    arts, failures = export_all(
        [ExportItem.for_op(InvertedResidual(16, 16, 3, 1, 3, 8, 8))], "xnnpack", cache=ArtifactCache()
    )
    assert not failures
    pte = next(iter(arts.values())).pte_path
    fast = ["--num_executions", "5", "--warmup_runs", "1", "--warmup_ms", "0", "--min_time_ms", "1"]

    runner = [sys.executable, "-m", "chamlab.agent.runner", "--model_path", str(pte), "--cpu_threads", "1"]

    def run(*power_flags: str) -> dict:
        out = tmp_path / "r.json"
        res = subprocess.run(
            [*runner, "--result_path", str(out), *fast, "--retries", "0", *power_flags],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        return json.loads(out.read_text())

    with RealTimeRapl(tmp_path / "powercap", 12.0):
        r = run(
            "--power_reader", "rapl", "--power_root", str(tmp_path / "powercap"), "--power_window_s", "0.3"
        )
    e = r["energy"]
    assert e["reader"] == "rapl" and "error" not in e
    assert e["idle_power_w"] == pytest.approx(12.0, rel=0.25)  # real time on a shared machine: 25 %
    assert e["active_power_w"] == pytest.approx(12.0, rel=0.25)
    assert e["window_s"] >= 0.3 and e["executions"] >= 1
    assert abs(e["energy_mj"]) < 0.25 * 12.0 * e["window_s"] / e["executions"] * 1e3
    assert {row[0] for row in e["trace"]} == {"idle", "active"}
    # an absent reader is a result, not a failure: the latency stands
    r = run("--power_reader", "nvml")
    assert r["energy"]["reader"] == "nvml" and r["energy"]["error"].startswith("no NVML reader")
    assert r["n_samples"] >= 5
    assert run()["energy"] is None
