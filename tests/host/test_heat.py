"""Temperature-gated measurement end to end on the host: devices.toml's heat keys, the wait and the
frequency check against a simulated thermal zone and cpufreq tree driven in real time
(tests/heatsim.py), throttled windows re-measured like unstable ones, and the LUT row's window
columns. executor_runner devices: the driver does it, around tests/agent/standin_executor_runner.py
(real ETDumps), and the simulated device heats while it executes. Shim devices: the real shim does it
in-process (agent/heat.py) around the real ExecuTorch runtime. Nothing here is a claim about real
hardware: this machine has no thermal zone and no cpufreq tree."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from heatsim import ThermalSim

from chamlab.agent.measure import MeasurePolicy
from chamlab.core.errors import ConfigError
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.devices.transports import LocalConfig
from chamlab.host.measurement.pipeline import resolve_run, run_items
from chamlab.host.measurement.profiling import lut_row
from chamlab.operators import ConvBNAct
from chamlab.operators.export import ExportItem

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "host"))
from test_executor_runner import fake_binary  # noqa: E402

ITEM = ExportItem.for_op(ConvBNAct(32, 64, 3, 1, 32, 32))  # ~ms per execution


def test_heat_keys_are_validated(tmp_path: Path) -> None:
    toml = tmp_path / "devices.toml"
    head = f'[devices.phone]\nrunner = "executor_runner"\nrunner_path = "{toml}"\n'
    toml.write_text(head + 'cool_below_c = 42.5\nthermal_zone = "cpu-thermal"\nmin_freq_khz = "max"\n')
    dev = parse_devices_file(toml).get("phone")
    assert dev.heat_env() == {
        "COOL_BELOW_MC": 42500,
        "THERMAL_ZONE": "cpu-thermal",
        "COOL_WAIT_MAX_CS": 30000,
        "MIN_FREQ_KHZ": "max",
        "FREQ_CPUS": "",
    }
    toml.write_text(head + 'min_freq_khz = 1800000\naffinity = "4-5,7"\n')
    dev = parse_devices_file(toml).get("phone")
    assert dev.heat_env()["FREQ_CPUS"] == "4 5 7" and dev.heat_env()["COOL_BELOW_MC"] == 0
    assert LocalConfig(name="x").heat_env() == {}
    for body, message in (
        ('min_freq_khz = "top"', "min_freq_khz"),
        ("min_freq_khz = -5", "min_freq_khz"),
        ("cool_below_c = -1", "cool_below_c"),
        ('thermal_zone = "../x"', "thermal_zone"),
        ("cool_wait_max_s = 0", "cool_wait_max_s"),
    ):
        toml.write_text(head + body + "\n")
        with pytest.raises(ConfigError, match=message):
            parse_devices_file(toml)
    # the shim takes them as flags (agent/heat.py); torch-cuda times a GPU, which cpufreq does not see
    toml.write_text('[devices.box]\npython = "/usr/bin/python3"\ncool_below_c = 40\nmin_freq_khz = 1800000\n')
    box = parse_devices_file(toml).get("box")
    assert box.heat_flags() == [
        "--cool_below_c",
        "40.0",
        "--cool_wait_max_s",
        "300.0",
        "--min_freq_khz",
        "1800000",
    ]
    toml.write_text('[devices.gpu]\npython = "/usr/bin/python3"\nrunner = "torch-cuda"\ncool_below_c = 40\n')
    with pytest.raises(ConfigError, match="the torch-cuda runner times a GPU"):
        parse_devices_file(toml)


def _device(tmp_path: Path, sim: ThermalSim, policy: MeasurePolicy, **heat: object) -> LocalConfig:
    return LocalConfig(
        name="phone",
        runner="executor_runner",
        runner_path=str(fake_binary(tmp_path / "bin", str(sorted(heat.items())))),
        workdir=str(tmp_path / "target"),
        measure=policy,
        cpufreq_root=str(sim.cpufreq_root),
        thermal_root=str(sim.thermal_root),
        **heat,  # type: ignore[arg-type]
    )


class Events:
    """A progress sink that remembers notes and sets an event on the first one matching ``on``
    (``note``: a note starts with it; ``advance``: an op was measured)."""

    def __init__(self, on: str) -> None:
        self.on, self.notes, self.seen = on, [], threading.Event()

    def start(self, phase: str, total: int) -> None: ...

    def advance(self, phase: str, label: str = "") -> None:
        if self.on == "advance" and phase == "measure":
            self.seen.set()

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.on != "advance" and text.startswith(self.on):
            self.seen.set()


def _sim(tmp_path: Path, start_c: float, events: Events) -> ThermalSim:
    # hot from earlier work (throttling from 60 C); it holds start_c until the event, then cools
    # towards 25 C with a 2 s time constant; executing heats it by 20 C per 1000 executions
    return ThermalSim(
        tmp_path / "sys",
        tmp_path / "busy",
        start_c=start_c,
        tau_s=2.0,
        heat_c_per_kexec=20.0,
        start_when=events.seen.is_set,
    )


def test_a_throttled_window_is_measured_again_and_the_row_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAMLAB_STANDIN_BUSY", str(tmp_path / "busy"))
    # no gate: only the frequency check; the re-measure comes after cooldown_s (slept for real, so
    # the simulated zone cools meanwhile)
    policy = MeasurePolicy(
        num_executions=5, warmup_runs=0, warmup_ms=0, min_time_ms=0, retries=2, max_cv=10.0, cooldown_s=4.0
    )
    events = Events("advance")
    with _sim(tmp_path, 90.0, events) as sim:  # 90 C until the first window was recorded
        spec = resolve_run(_device(tmp_path, sim, policy, min_freq_khz="max"))
        run = run_items(spec, [ITEM], progress=events)
    assert not run.failed, run.failed
    result = run.measured[ITEM].result
    first, second = result["attempts"]  # throttled, then cool: no third window
    assert first["throttled"] is True and first["temp_max_c"] >= 60.0
    assert any(r.startswith("throttled: a CPU ran under its minimum frequency") for r in first["reasons"])
    assert second["throttled"] is False and second["reasons"] == [] and not result["unstable"]
    assert result["throttled"] is False and result["heat"]["low_samples"] == 0
    assert [a for _, a, _ in run.rounds] == [1]
    row = lut_row(spec, run.measured[ITEM], run.run_id)
    assert row["windows"] == 2 and row["throttled_windows"] == 1 and row["throttled"] is False
    assert row["window_temps_c"][0] >= 60.0 > row["window_temps_c"][1]
    assert row["cool_wait_s"] is None and row["unstable"] is False
    run.finish()


def test_the_gate_waits_for_the_zone_and_the_window_is_not_throttled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAMLAB_STANDIN_BUSY", str(tmp_path / "busy"))
    policy = MeasurePolicy(
        num_executions=5, warmup_runs=0, warmup_ms=0, min_time_ms=0, retries=2, max_cv=10.0, cooldown_s=0.0
    )
    events = Events(f"{ITEM.name}: waiting for the zone to cool below 45 C")
    with _sim(tmp_path, 75.0, events) as sim:  # 75 C until the driver says it waits
        spec = resolve_run(
            _device(tmp_path, sim, policy, cool_below_c=45.0, thermal_zone="cpu-thermal", min_freq_khz="max")
        )
        run = run_items(spec, [ITEM], progress=events)
    assert not run.failed, run.failed
    result = run.measured[ITEM].result
    [window] = result["attempts"]
    assert window["throttled"] is False and window["cool_wait_s"] > 0 and window["temp_before_c"] < 45.0
    assert result["heat"]["start_mc"] < 45000 and result["heat"]["cool_timed_out"] is False
    assert events.seen.is_set() and "(it reads 75.0 C; at most 300 s)" in events.notes[0]
    row = lut_row(spec, run.measured[ITEM], run.run_id)
    assert row["windows"] == 1 and row["throttled_windows"] == 0 and row["throttled"] is False
    assert row["cool_wait_s"] > 0 and row["window_temps_c"][0] < 60.0
    run.finish()


# -- the shim (agent/heat.py): the same gate and check, in-process around the real runtime ---------------
def _shim(tmp_path: Path, sim: ThermalSim, policy: MeasurePolicy, **heat: object) -> LocalConfig:
    return LocalConfig(
        name="box",
        workdir=str(tmp_path / "target"),
        measure=policy,
        cpufreq_root=str(sim.cpufreq_root),
        thermal_root=str(sim.thermal_root),
        **heat,  # type: ignore[arg-type]
    )


def test_the_shim_waits_for_the_zone_and_checks_the_frequency(tmp_path: Path) -> None:
    policy = MeasurePolicy(
        num_executions=5, warmup_runs=0, warmup_ms=0, min_time_ms=200, retries=2, max_cv=10.0, max_drift=10.0,
        cooldown_s=0.0,
    )  # fmt: skip
    events = Events(f"{ITEM.name}: waiting for the zone to cool below 45 C")
    with _sim(tmp_path, 75.0, events) as sim:  # 75 C (throttled) until the shim says it waits
        spec = resolve_run(_shim(tmp_path, sim, policy, cool_below_c=45.0, thermal_zone="cpu-thermal",
                                 min_freq_khz="max"))  # fmt: skip
        run = run_items(spec, [ITEM], progress=events)
    assert not run.failed, run.failed
    result = run.measured[ITEM].result
    assert result["runner"] == "chamlab-shim"
    [window] = result["attempts"]  # noise cannot make it unstable (max_cv, max_drift): one window
    assert window["throttled"] is False and window["cool_wait_s"] > 0 and window["temp_max_c"] < 45.0
    assert result["throttled"] is False and result["heat"]["start_mc"] < 45000
    assert result["heat"]["samples"] >= 2 and result["heat"]["low_samples"] == 0
    assert events.seen.is_set() and "(it reads 75.0 C; at most 300 s)" in events.notes[0]
    row = lut_row(spec, run.measured[ITEM], run.run_id)
    assert row["windows"] == 1 and row["throttled_windows"] == 0 and row["throttled"] is False
    assert row["cool_wait_s"] > 0 and row["window_temps_c"][0] < 45.0
    run.finish()


def test_the_shim_measures_a_throttled_window_again_and_labels_it(tmp_path: Path) -> None:
    # held at 90 C (over the 60 C trip: every CPU throttled) for the whole run: each window is
    # throttled, re-measured after cooldown_s up to `retries` times, and the row says so
    policy = MeasurePolicy(
        num_executions=5, warmup_runs=0, warmup_ms=0, min_time_ms=200, retries=1, max_cv=10.0, max_drift=10.0,
        cooldown_s=0.1,
    )  # fmt: skip
    with _sim(tmp_path, 90.0, Events("never")) as sim:
        spec = resolve_run(_shim(tmp_path, sim, policy, min_freq_khz="max"))
        run = run_items(spec, [ITEM])
    assert not run.failed, run.failed
    result = run.measured[ITEM].result
    assert [a["throttled"] for a in result["attempts"]] == [True, True]
    assert all(r.startswith("throttled: a CPU ran under its minimum frequency") for a in result["attempts"]
               for r in a["reasons"])  # fmt: skip
    assert result["unstable"] and result["throttled"] is True and result["heat"]["min_freq_khz"] == 1_200_000
    row = lut_row(spec, run.measured[ITEM], run.run_id)
    assert row["windows"] == 2 and row["throttled_windows"] == 2 and row["throttled"] is True
    assert row["unstable"] is True and row["window_temps_c"][0] >= 89.0 and row["cool_wait_s"] is None
    run.finish()


def test_the_shim_fails_an_op_whose_zone_cannot_be_read(tmp_path: Path) -> None:
    policy = MeasurePolicy(num_executions=3, warmup_runs=0, warmup_ms=0, min_time_ms=0, retries=0)
    with _sim(tmp_path, 30.0, Events("never")) as sim:
        spec = resolve_run(_shim(tmp_path, sim, policy, cool_below_c=45.0, thermal_zone="gpu-thermal"))
        run = run_items(spec, [ITEM])
    assert run.failed and "no thermal zone gpu-thermal with a readable temp" in str(run.failed), run.failed
    run.finish()
