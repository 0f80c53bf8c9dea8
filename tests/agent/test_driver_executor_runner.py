"""The driver's executor_runner path under Android's shell (mksh), busybox sh and dash.

The runner is tests/agent/standin_executor_runner.py: it takes the C++ runner's flags and writes a
REAL ETDump through the ExecuTorch Python runtime (no NDK here to build the real binary). The device
state comes from prepared sysfs trees (the driver's roots are configurable).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from chamlab.host.measurement import etdump
from chamlab.operators import ConvBNAct
from chamlab.operators.export import Artifact, ArtifactCache, ExportItem, export_all

STANDIN = Path(__file__).with_name("standin_executor_runner.py")
SHELLS = {"mksh": ["mksh"], "busybox": ["busybox", "sh"], "dash": ["dash"]}


@pytest.fixture(scope="module")
def artifact() -> Artifact:
    item = ExportItem.for_op(ConvBNAct(8, 8, 3, 1, 8, 8))
    arts, failures = export_all([item], "xnnpack", cache=ArtifactCache())
    assert not failures
    return arts[item]


def sysfs_tree(
    root: Path, *, temps_mc: tuple[int, ...] = (41000, 45500), status: str = "Discharging"
) -> Path:
    """A prepared sysfs: two CPUs (schedutil), thermal zones, one battery at 77 %."""
    for cpu, freq in (("cpu0", 1804800), ("cpu1", 710400)):
        d = root / "cpu" / cpu / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text("schedutil\n")
        (d / "scaling_cur_freq").write_text(f"{freq}\n")
    for i, t in enumerate(temps_mc):
        d = root / "thermal" / f"thermal_zone{i}"
        d.mkdir(parents=True)
        (d / "temp").write_text(f"{t}\n")
    bat = root / "power_supply" / "battery"
    bat.mkdir(parents=True)
    (bat / "type").write_text("Battery\n")
    (bat / "capacity").write_text("77\n")
    (bat / "status").write_text(f"{status}\n")
    (root / "power_supply" / "usb").mkdir()
    (root / "power_supply" / "usb" / "type").write_text("USB\n")
    return root


def rundir(tmp_path: Path, artifact: Artifact, tasks: list[tuple[str, str]], **env: object) -> Path:
    run = tmp_path / "run"
    (run / "artifacts").mkdir(parents=True)
    shutil.copyfile(artifact.pte_path, run / "artifacts" / "op.pte")
    (run / "driver.sh").write_text(resources.files("chamlab.agent").joinpath("driver.sh").read_text())
    (run / "runner.sh").write_text(f'#!/bin/sh\nexec {sys.executable} {STANDIN} "$@"\n')
    sysfs = sysfs_tree(tmp_path / "sys")
    values = {"THREADS": 1, "NUM_EXECUTIONS": 3, "RUNNER_KIND": "executor_runner", "ETDUMP": 1}
    values |= {"OP_TIMEOUT_S": 120, "COOLDOWN_S": 0, "WARMUP_RUNS": 2, "CPUFREQ_ROOT": sysfs / "cpu"}
    values |= {"THERMAL_ROOT": sysfs / "thermal", "POWER_SUPPLY_ROOT": sysfs / "power_supply", **env}
    (run / "driver.env").write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))
    (run / "tasks.tsv").write_text("".join(f"d{i}\t{key}\t{art}\n" for i, (key, art) in enumerate(tasks)))
    return run


@pytest.mark.parametrize("shell", SHELLS)
def test_executor_runner_path_under_small_shells(shell: str, tmp_path: Path, artifact: Artifact) -> None:
    argv = SHELLS[shell]
    assert shutil.which(argv[0]), (
        f"{argv[0]} is not installed (make test installs it: scripts/system-packages.sh)"
    )
    tasks = [("op:ok=1", "artifacts/op.pte")]
    if shell == "mksh":  # Android's shell also gets a failing op (the cheaper shells only the good path)
        tasks.append(("op:gone=1", "artifacts/missing.pte"))
    run = rundir(tmp_path, artifact, tasks)
    res = subprocess.run([*argv, str(run / "driver.sh")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == f"chamlab-driver done {len(tasks)} {len(tasks) - 1}"
    lines = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    ok = lines[0]
    assert (
        ok["rc"] == 0 and ok["result"] is None and ok["etdump"] == "out/d0.etdp" and ok["end"] == "0:op:ok=1"
    )
    # the throw-away warm-up call ran first (2 executions, its ETDump deleted), then 3 + 2 executions
    log = (run / "out" / "d0.log").read_text()
    assert log.index("warm-up call, 2 execution(s)") < log.index("executed successfully 2 time(s)")
    assert log.index("executed successfully 2 time(s)") < log.index("executed successfully 5 time(s)")
    assert not (run / "out" / "d0.warmup.etdp").exists()
    parsed = etdump.parse(run / ok["etdump"], artifact.etrecord_path)
    assert len(parsed["execute_ms"]) == 5 and all(ms > 0 for ms in parsed["execute_ms"])
    # the device state the driver read from the prepared sysfs, before and after
    for side in ("before", "after"):
        assert ok["state"][side] == {
            "governor": {"cpu0": "schedutil", "cpu1": "schedutil"},
            "freq_khz": {"cpu0": 1804800, "cpu1": 710400},
            "temp_mc": {"thermal_zone0": 41000, "thermal_zone1": 45500},
            "battery_pct": 77,
            "charging": False,
        }
    assert ok["state"]["fingerprint"]
    if shell == "mksh":
        gone = lines[1]
        assert gone["rc"] != 0 and gone["etdump"] is None and gone["end"].endswith(":op:gone=1")


def test_missing_sysfs_reads_as_nulls_and_a_runner_without_etdump_did_not_measure(
    tmp_path: Path, artifact: Artifact
) -> None:
    run = rundir(tmp_path, artifact, [("op:ok=1", "artifacts/op.pte")], WARMUP_RUNS=0)
    for key in ("CPUFREQ_ROOT", "THERMAL_ROOT", "POWER_SUPPLY_ROOT"):
        text = (run / "driver.env").read_text()
        (run / "driver.env").write_text(text.replace(f"{key}='", f"{key}='{tmp_path}/absent"))
    (run / "runner.sh").write_text("#!/bin/sh\necho 'I executor_runner: built without the event tracer'\n")
    res = subprocess.run(["mksh", str(run / "driver.sh")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "chamlab-driver done 1 1"
    line = json.loads((run / "results.jsonl").read_text())
    assert line["rc"] == 65 and line["etdump"] is None  # exit 0 without an ETDump: not measured
    assert line["state"]["before"] == {
        "governor": {},
        "freq_khz": {},
        "temp_mc": {},
        "battery_pct": None,
        "charging": None,
    }
