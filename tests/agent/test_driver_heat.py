"""Temperature-gated measurement in the driver (agent/driver.sh, per-op mode) under sh, dash, mksh and
busybox sh, against a simulated thermal zone and cpufreq tree that a thread drives in real time
(tests/heatsim.py; this machine has neither). The runner is a shell stand-in that holds the simulated
device busy for a moment and writes a (dummy) ETDump; the host side, with real ETDumps, is
tests/host/test_heat.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
from heatsim import ThermalSim

SHELLS = {"sh": ["sh"], "dash": ["dash"], "mksh": ["mksh"], "busybox": ["busybox", "sh"]}

RUNNER = """#!/bin/sh
# stand-in executor_runner: keeps the simulated device busy for 0.3 s, then writes its "ETDump"
etd=""
while [ $# -gt 0 ]; do
  case "$1" in --etdump_path) etd="$2"; shift 2;; *) shift;; esac
done
: > {busy}
sleep 0.3
rm -f {busy}
echo etdump > "$etd"
"""


def _rundir(tmp_path: Path, sim: ThermalSim, n_ops: int = 1, **env: object) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "driver.sh").write_text(resources.files("chamlab.agent").joinpath("driver.sh").read_text())
    (run / "runner.sh").write_text(RUNNER.format(busy=sim.busy))
    values = {"THREADS": 1, "NUM_EXECUTIONS": 3, "RUNNER_KIND": "executor_runner", "ETDUMP": 1}
    values |= {"OP_TIMEOUT_S": 60, "COOLDOWN_S": 0, "WARMUP_RUNS": 0, "LOCK_DIR": tmp_path / "lock"}
    values |= {"CPUFREQ_ROOT": sim.cpufreq_root, "THERMAL_ROOT": sim.thermal_root, **env}
    (run / "driver.env").write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))
    (run / "tasks.tsv").write_text("".join(f"d{i}\top:k={i}\tartifacts/op.pte\n" for i in range(n_ops)))
    return run


def _drive(
    argv: list[str], run: Path, on_line: Callable[[str], None] = lambda _: None
) -> tuple[list[str], list[dict]]:
    """Run the driver to its end; ``on_line`` sees each progress line as it comes."""
    with subprocess.Popen(
        [*argv, str(run / "driver.sh")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        out = []
        for line in proc.stdout:
            out.append(line.rstrip("\n"))
            on_line(out[-1])
        assert proc.wait(120) == 0, proc.stderr.read()
    lines = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    return out, lines


def _sim(tmp_path: Path, **kw: object) -> ThermalSim:
    # hot before the run (70 C, above the 60 C trip point); it cools from the moment the driver
    # takes its lock (or `start_when`), towards 25 C with a 2 s time constant; running heats it by 5 C/s
    args: dict = {"start_c": 70.0, "tau_s": 2.0, "heat_c_per_s": 5.0, "start_when": tmp_path / "lock"}
    return ThermalSim(tmp_path / "sys", tmp_path / "busy", **(args | kw))


def _has_data(path: Path) -> Callable[[], bool]:
    return lambda: path.exists() and path.stat().st_size > 0


@pytest.mark.parametrize("shell", SHELLS)
def test_a_hot_window_is_marked_and_the_gate_waits_until_the_zone_is_cool(shell: str, tmp_path: Path) -> None:
    argv = SHELLS[shell]
    assert shutil.which(argv[0]), f"{argv[0]} is not installed (scripts/system-packages.sh installs it)"
    # without the gate: the window starts hot, the CPUs sit under their recorded maximum
    # (the zone holds 70 C until the window's first sample is written)
    with _sim(tmp_path / "a", start_when=_has_data(tmp_path / "a" / "run" / "out" / "d0.heat")) as sim:
        run = _rundir(tmp_path / "a", sim, MIN_FREQ_KHZ="max")
        out, [line] = _drive(argv, run)
    assert line["rc"] == 0 and out[-1] == "chamlab-driver done 1 0"
    heat = line["state"]["heat"]
    assert heat["cool_below_mc"] == 0 and heat["cool_wait_cs"] == 0 and heat["cool_timed_out"] is False
    assert heat["start_mc"] >= 60000 and heat["temp_max_mc"] >= 60000
    assert heat["samples"] >= 1 and heat["low_samples"] >= 1 and heat["min_freq_khz"] == 1_200_000
    assert not any(x.startswith("chamlab-driver cool") for x in out)
    # with the gate at 45 C: the driver waits (and says so) until the zone reads below it, then the
    # window runs at the maximum frequency (the zone holds 70 C until the driver says it waits)
    waiting = threading.Event()
    with _sim(tmp_path / "b", start_when=waiting.is_set) as sim:
        run = _rundir(tmp_path / "b", sim, n_ops=2, MIN_FREQ_KHZ="max", COOL_BELOW_MC=45000)
        out, lines = _drive(argv, run, lambda line: line.startswith("chamlab-driver cool") and waiting.set())
    assert out[-1] == "chamlab-driver done 2 0"
    cool = out[0].split()
    assert cool[:4] == ["chamlab-driver", "cool", "1", "2"] and cool[5] == "op:k=0" and int(cool[4]) >= 45000
    for line in lines:
        heat = line["state"]["heat"]
        assert line["rc"] == 0 and heat["cool_below_mc"] == 45000 and heat["cool_timed_out"] is False
        assert heat["start_mc"] < 45000 and heat["temp_max_mc"] < 60000
        assert heat["samples"] >= 1 and heat["low_samples"] == 0 and heat["min_freq_khz"] == 2_000_000
    assert lines[0]["state"]["heat"]["cool_wait_cs"] > 0  # it did wait for the first op
    # the state before the window shows the cooled zone, as the heat record does
    assert lines[0]["state"]["before"]["temp_mc"]["thermal_zone0"] < 45000


def test_zone_by_type_cpus_checked_the_bound_and_a_missing_zone(tmp_path: Path) -> None:
    # zone 1 ("modem") is stuck at 80 C; only zone 0 ("cpu-thermal") matters when it is named
    stuck = {"modem": 80000}
    with _sim(tmp_path / "a", extra_zones=stuck, start_c=50.0) as sim:
        run = _rundir(
            tmp_path / "a",
            sim,
            COOL_BELOW_MC=45000,
            THERMAL_ZONE="cpu-thermal",
            MIN_FREQ_KHZ=1_500_000,
            FREQ_CPUS="1",
        )
        slow = sim.cpufreq_root / "cpu5" / "cpufreq"  # a slow CPU, not checked (FREQ_CPUS)
        slow.mkdir(parents=True)
        (slow / "scaling_cur_freq").write_text("300000\n")
        _, [line] = _drive(["mksh"], run)
    heat = line["state"]["heat"]
    assert line["rc"] == 0 and heat["start_mc"] < 45000 and heat["temp_max_mc"] < 60000
    assert heat["low_samples"] == 0 and heat["min_freq_khz"] == 2_000_000
    # the hottest zone (the default) never cools: the wait is bounded, and the op is measured anyway
    with _sim(tmp_path / "b", extra_zones=stuck) as sim:
        run = _rundir(tmp_path / "b", sim, COOL_BELOW_MC=45000, COOL_WAIT_MAX_CS=30)
        out, [line] = _drive(["mksh"], run)
    heat = line["state"]["heat"]
    assert line["rc"] == 0 and heat["cool_timed_out"] is True and heat["start_mc"] == 80000
    assert heat["cool_wait_cs"] >= 30 and heat["temp_min_mc"] == 80000
    assert "measuring anyway" in (tmp_path / "b" / "run" / "out" / "d0.log").read_text()
    # a zone that does not exist, or no frequency to check: the op fails with the reason in its log
    for name, env in (
        ("c", {"COOL_BELOW_MC": 45000, "THERMAL_ZONE": "gpu-thermal"}),
        ("d", {"MIN_FREQ_KHZ": "max", "FREQ_CPUS": "7"}),
    ):
        with _sim(tmp_path / name) as sim:
            run = _rundir(tmp_path / name, sim, **env)
            out, [line] = _drive(["dash"], run)
        assert line["rc"] == 69 and out[-1] == "chamlab-driver done 1 1" and line["state"]["heat"] is None
        log = (run / "out" / "d0.log").read_text()
        assert ("no thermal zone gpu-thermal" if name == "c" else "no readable scaling_cur_freq") in log


def test_without_heat_settings_the_driver_records_no_heat(tmp_path: Path) -> None:
    with _sim(tmp_path) as sim:
        run = _rundir(tmp_path, sim)
        _, [line] = _drive(["dash"], run)
    assert line["rc"] == 0 and line["state"]["heat"] is None and not (run / "out" / "d0.heat").exists()
