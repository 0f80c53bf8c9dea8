"""The device-side driver contract (agent/driver.sh) under /bin/sh.

The runner is a scripted stand-in here (a shell script that writes a canned result or fails on
demand), so every outcome can be forced; the real runner goes through the same driver in
tests/host/test_session.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest
from conftest import wait_for

RUNNER = r"""#!/bin/sh
# stand-in runner: --model_path decides the outcome
model=""; result=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model_path) model="$2"; shift 2;;
    --result_path) result="$2"; shift 2;;
    *) shift;;
  esac
done
echo "$model" >> calls.log
case "$model" in
  *fail*) echo "boom on $model" >&2; exit 3;;
  *silent*) exit 0;;
  *block*) echo $$ > runner.pid; while [ ! -f release ]; do sleep 0.05; done;;
esac
printf '{"samples_ms":[1.0,2.0],"model":"%s"}' "$model" > "$result"
"""


def _rundir(tmp_path: Path, tasks: list[tuple[str, str]], name: str = "run", **env: object) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "driver.sh").write_text(resources.files("chamlab.agent").joinpath("driver.sh").read_text())
    (run / "runner.sh").write_text(RUNNER)
    values = {"THREADS": 1, "NUM_EXECUTIONS": 5, "RUNNER_KIND": "shim", "ETDUMP": 0, "OP_TIMEOUT_S": 60}
    values |= {"COOLDOWN_S": 0, **env}
    (run / "driver.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    (run / "tasks.tsv").write_text(
        "".join(f"d{i}\t{key}\tartifacts/{art}\n" for i, (key, art) in enumerate(tasks))
    )
    return run


def _drive(run: Path) -> list[str]:
    res = subprocess.run(
        ["sh", str(run / "driver.sh")], capture_output=True, text=True, timeout=60, check=True
    )
    return res.stdout.splitlines()


def _results(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def test_each_op_appends_one_line_and_progress(tmp_path: Path) -> None:
    run = _rundir(tmp_path, [("op:a=1", "a.pte"), ("op:b=2", "b.pte")])
    out = _drive(run)
    assert out == [
        "chamlab-driver op 1 2 0 op:a=1",
        "chamlab-driver op 2 2 0 op:b=2",
        "chamlab-driver done 2 0",
    ]
    lines = _results(run)
    assert [(r["rc"], r["op_key"], r["digest"]) for r in lines] == [(0, "op:a=1", "d0"), (0, "op:b=2", "d1")]
    assert lines[0]["result"] == {"samples_ms": [1.0, 2.0], "model": "artifacts/a.pte"}
    assert lines[0]["log"] == "out/d0.log" and lines[0]["etdump"] is None
    assert [r["end"] for r in lines] == ["0:op:a=1", "0:op:b=2"]


def test_rerunning_a_finished_run_is_a_no_op(tmp_path: Path) -> None:
    run = _rundir(tmp_path, [("op:a=1", "a.pte"), ("op:b=2", "b.pte")])
    _drive(run)
    out = _drive(run)
    assert out[:2] == ["chamlab-driver skip 1 2 op:a=1", "chamlab-driver skip 2 2 op:b=2"]
    assert len(_results(run)) == 2
    assert (run / "calls.log").read_text().count("\n") == 2


def test_failures_are_recorded_and_retried_on_rerun(tmp_path: Path) -> None:
    run = _rundir(tmp_path, [("op:a=1", "a.pte"), ("op:f=1", "fail.pte"), ("op:s=1", "silent.pte")])
    out = _drive(run)
    assert out[-1] == "chamlab-driver done 3 2"
    rcs = {r["op_key"]: r["rc"] for r in _results(run)}
    assert rcs == {"op:a=1": 0, "op:f=1": 3, "op:s=1": 65}  # 65: exit 0 but no result
    assert "boom on artifacts/fail.pte" in (run / "out" / "d1.log").read_text()
    out = _drive(run)  # the failed ones run again, the good one is skipped
    assert out[0].startswith("chamlab-driver skip 1 3") and out[1].startswith("chamlab-driver op 2 3 3")
    assert len(_results(run)) == 5


def test_a_line_cut_short_does_not_count_as_done(tmp_path: Path) -> None:
    run = _rundir(tmp_path, [("op:a=1", "a.pte"), ("op:ab=1", "ab.pte")])
    (run / "results.jsonl").write_text(
        '{"rc":0,"op_key":"op:a=1","digest":"d0","log":"x","etdump":null,"resu'
    )
    out = _drive(run)
    assert out[0] == "chamlab-driver op 1 2 0 op:a=1"  # measured again, not skipped
    _drive(run)
    # a key that is a prefix of another key does not mark the longer one done (and vice versa)
    assert (run / "calls.log").read_text().splitlines() == ["artifacts/a.pte", "artifacts/ab.pte"]


#: Android runs mksh (and toybox); busybox sh and dash are the other small shells. .ci/run installs them
#: all, so none is skipped: a missing shell is a failure.
SHELLS = {"dash": ["dash"], "bash": ["bash"], "mksh": ["mksh"], "busybox": ["busybox", "sh"]}


@pytest.mark.parametrize("shell", SHELLS)
def test_driver_is_posix_sh(tmp_path: Path, shell: str) -> None:
    argv = SHELLS[shell]
    assert shutil.which(argv[0]), (
        f"{argv[0]} is not installed (make test installs it: scripts/system-packages.sh)"
    )
    run = _rundir(tmp_path, [("op:a=1", "a.pte"), ("op:f=1", "fail.pte")], LOCK_DIR=tmp_path / "lock")
    res = subprocess.run(
        [*argv, str(run / "driver.sh")], capture_output=True, text=True, timeout=60, check=True
    )
    assert res.stdout.splitlines()[-1] == "chamlab-driver done 2 1"
    assert [r["rc"] for r in _results(run)] == [0, 3]
    assert not (tmp_path / "lock").exists()  # released on exit


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _start(run: Path, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["sh", str(run / "driver.sh")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )  # type: ignore[call-overload]


def test_device_lock_makes_a_second_driver_wait_or_fail(tmp_path: Path) -> None:
    lock = tmp_path / "device.lock"
    first = _rundir(tmp_path, [("op:b=1", "block.pte")], "first", LOCK_DIR=lock)
    a = _start(first, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: (first / "runner.pid").exists(), "the first runner to start", 30)
        owner = (lock / "owner").read_text().split()
        assert owner[0] == str(a.pid)
        busy = _rundir(tmp_path, [("op:a=1", "a.pte")], "busy", LOCK_DIR=lock, NO_WAIT=1)
        res = subprocess.run(["sh", str(busy / "driver.sh")], capture_output=True, text=True, timeout=30)
        assert res.returncode == 75 and res.stdout.startswith(f"chamlab-driver busy {a.pid} ")
        assert not (busy / "calls.log").exists()  # nothing ran
        queued = _rundir(tmp_path, [("op:a=1", "a.pte")], "queued", LOCK_DIR=lock)
        c = _start(queued, stdin=subprocess.DEVNULL)
        assert c.stdout is not None
        assert c.stdout.readline().startswith(f"chamlab-driver wait {a.pid} ")
        assert not (queued / "calls.log").exists()  # still waiting: never two runners at once
        (first / "release").touch()
        assert a.wait(30) == 0 and c.wait(30) == 0
        assert c.stdout.read().splitlines()[-1] == "chamlab-driver done 1 0"
    finally:
        (first / "release").touch()
        a.kill()
    assert not lock.exists()


def test_stale_lock_of_a_dead_driver_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "device.lock"
    lock.mkdir()
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    (lock / "owner").write_text(f"{dead} {boot}\n")
    run = _rundir(tmp_path, [("op:a=1", "a.pte")], LOCK_DIR=lock)
    out = _drive(run)
    assert out[0] == f"chamlab-driver stale-lock {dead} {boot}" and out[-1] == "chamlab-driver done 1 0"


def test_driver_ends_itself_and_its_runner_when_stdin_closes(tmp_path: Path) -> None:
    """The hang-up rule: the host's pipe (or ssh channel, adb stream) closing ends everything."""
    lock = tmp_path / "device.lock"
    run = _rundir(tmp_path, [("op:b=1", "block.pte"), ("op:a=1", "a.pte")], LOCK_DIR=lock, WATCH_STDIN=1)
    proc = _start(run, stdin=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: (run / "runner.pid").exists(), "the runner to start", 30)
        runner = int((run / "runner.pid").read_text())
        assert _alive(runner)
        assert proc.stdin is not None
        proc.stdin.close()  # the host went away
        assert proc.wait(30) == 143
        wait_for(lambda: not _alive(runner), "the runner to end", 30)
    finally:
        proc.kill()
    assert not lock.exists()
    assert (run / "calls.log").read_text().splitlines() == ["artifacts/block.pte"]  # stopped, not skipped
    assert _results(run) == []


def test_per_op_deadline_kills_the_runner_and_goes_on(tmp_path: Path) -> None:
    run = _rundir(tmp_path, [("op:b=1", "block.pte"), ("op:a=1", "a.pte")], OP_TIMEOUT_S=1)
    out = _drive(run)
    assert out == [
        "chamlab-driver op 1 2 124 op:b=1",
        "chamlab-driver op 2 2 0 op:a=1",
        "chamlab-driver done 2 1",
    ]
    assert not _alive(int((run / "runner.pid").read_text()))
    assert "killed after the per-op deadline of 1 s" in (run / "out" / "d0.log").read_text()
