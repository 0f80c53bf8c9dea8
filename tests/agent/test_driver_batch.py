"""The driver's batch mode (BATCH=1): one shim process measures the task list, the driver restarts it.

The shim here is the real ``chamlab.agent.runner`` batch loop (its result lines, progress lines,
in-flight marker, per-op logs and deadline watchdog) with a scripted measurement in place of the
ExecuTorch runtime, so crashes, hangs and failures can be forced: the artifact's name decides.
tests/host/test_session.py runs the same driver with the real runtime.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

STANDIN = r"""
import os, signal, sys, time
from chamlab.agent import runner

def fake(args, model, etdump_path):
    with open("calls.log", "a") as fh:
        fh.write(model + "\n")
    if "crash" in model:
        os.kill(os.getpid(), signal.SIGKILL)
    if "hang" in model:
        with open("hanging.pid", "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(120)
    if "fail" in model:
        raise RuntimeError(f"boom on {model}")
    print(f"measuring {model}")  # the op's own output goes to its log
    return {"samples_ms": [1.0, 2.0], "model": model}

with open("starts.log", "a") as fh:
    fh.write("start\n")
sys.exit(runner.main(sys.argv[1:], measure_one=fake))
"""


def _rundir(
    tmp_path: Path, tasks: list[tuple[str, str]], *, runner: str | None = None, timeout_s: int = 60
) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "driver.sh").write_text(resources.files("chamlab.agent").joinpath("driver.sh").read_text())
    (run / "standin.py").write_text(STANDIN)
    default = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} standin.py "$@"\n'
    (run / "runner.sh").write_text(runner or default)
    (run / "driver.env").write_text(
        "THREADS=1\nNUM_EXECUTIONS=5\nRUNNER_KIND=shim\nETDUMP=0\n"
        f"OP_TIMEOUT_S={timeout_s}\nCOOLDOWN_S=0\nBATCH=1\n"
    )
    (run / "tasks.tsv").write_text(
        "".join(f"d{i}\t{key}\tartifacts/{art}\n" for i, (key, art) in enumerate(tasks))
    )
    return run


def _drive(run: Path, shell: str = "sh") -> list[str]:
    res = subprocess.run(
        [*shell.split(), str(run / "driver.sh")], capture_output=True, text=True, timeout=120, check=True
    )
    return res.stdout.splitlines()


def _results(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


SHELLS = [sh for sh in ("sh", "dash", "bash", "mksh") if shutil.which(sh)]
SHELLS += ["busybox sh"] if shutil.which("busybox") else []


@pytest.mark.parametrize("shell", SHELLS)
def test_one_process_measures_all_and_survives_a_crash(tmp_path: Path, shell: str) -> None:
    run = _rundir(
        tmp_path,
        [("op:a=1", "a.pte"), ("op:c=1", "crash.pte"), ("op:f=1", "fail.pte"), ("op:b=2", "b.pte")],
    )
    out = _drive(run, shell)
    assert out == [
        "chamlab-driver op 1 4 0 op:a=1",
        "chamlab-driver op 2 4 137 op:c=1",  # recorded by the driver: the shim died (SIGKILL)
        "chamlab-driver op 3 4 1 op:f=1",
        "chamlab-driver op 4 4 0 op:b=2",
        "chamlab-driver done 4 2",
    ]
    lines = _results(run)
    assert [(r["rc"], r["op_key"], r["digest"], r["end"]) for r in lines] == [
        (0, "op:a=1", "d0", "0:op:a=1"),
        (137, "op:c=1", "d1", "137:op:c=1"),
        (1, "op:f=1", "d2", "1:op:f=1"),
        (0, "op:b=2", "d3", "0:op:b=2"),
    ]
    assert lines[0]["result"] == {"samples_ms": [1.0, 2.0], "model": "artifacts/a.pte"}
    assert lines[0]["log"] == "out/d0.log" and lines[0]["etdump"] is None
    assert "measuring artifacts/a.pte" in (run / "out" / "d0.log").read_text()
    assert "died (exit 137)" in (run / "out" / "d1.log").read_text()
    assert "boom on artifacts/fail.pte" in (run / "out" / "d2.log").read_text()
    assert (run / "starts.log").read_text().count("start") == 2  # one restart, after the crash
    assert not (run / "out" / "inflight").exists()
    # every line is written whole: the same bytes the driver's per-op mode writes
    assert all(
        ln.endswith(f'"end":"{r["end"]}"}}')
        for ln, r in zip((run / "results.jsonl").read_text().splitlines(), lines, strict=True)
    )

    out = _drive(run, shell)  # resume: the good ops are skipped, the failed ones tried again
    assert out[0] == "chamlab-driver skip 1 4 op:a=1" and out[3] == "chamlab-driver skip 4 4 op:b=2"
    assert out[-1] == "chamlab-driver done 4 2"
    assert (run / "calls.log").read_text().splitlines() == [
        "artifacts/a.pte",
        "artifacts/crash.pte",
        "artifacts/fail.pte",
        "artifacts/b.pte",
        "artifacts/crash.pte",
        "artifacts/fail.pte",
    ]


def test_per_op_deadline_is_enforced_inside_the_shim(tmp_path: Path) -> None:
    run = _rundir(tmp_path, [("op:h=1", "hang.pte"), ("op:a=1", "a.pte")], timeout_s=1)
    out = _drive(run)
    assert out == [
        "chamlab-driver op 1 2 124 op:h=1",
        "chamlab-driver op 2 2 0 op:a=1",
        "chamlab-driver done 2 1",
    ]
    assert [r["rc"] for r in _results(run)] == [124, 0]
    assert "per-op deadline of 1 s" in (run / "out" / "d0.log").read_text()
    assert (run / "starts.log").read_text().count("start") == 2


def test_a_shim_that_cannot_start_fails_every_op_once(tmp_path: Path) -> None:
    runner = '#!/bin/sh\necho start >> starts.log\necho "python: not found" >&2\nexit 9\n'
    run = _rundir(tmp_path, [("op:a=1", "a.pte"), ("op:b=1", "b.pte")], runner=runner)
    out = _drive(run)
    assert out == [
        "chamlab-driver op 1 2 9 op:a=1",
        "chamlab-driver op 2 2 9 op:b=1",
        "chamlab-driver done 2 2",
    ]
    assert [(r["rc"], r["log"]) for r in _results(run)] == [(9, "out/shim.log"), (9, "out/shim.log")]
    assert "python: not found" in (run / "out" / "shim.log").read_text()
    assert (run / "starts.log").read_text().count("start") == 1  # no restart loop


def test_a_line_cut_short_is_measured_again(tmp_path: Path) -> None:
    run = _rundir(tmp_path, [("op:a=1", "a.pte"), ("op:ab=1", "ab.pte")])
    (run / "results.jsonl").write_text(
        '{"rc":0,"op_key":"op:a=1","digest":"d0","log":"x","etdump":null,"resu'
    )
    out = _drive(run)
    assert out[:2] == ["chamlab-driver op 1 2 0 op:a=1", "chamlab-driver op 2 2 0 op:ab=1"]
    lines = (run / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3 and lines[0].endswith('"resu')  # the cut line was ended, not extended
    assert [json.loads(ln)["op_key"] for ln in lines[1:]] == ["op:a=1", "op:ab=1"]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie waiting for its reaper is dead


def test_hang_up_ends_the_driver_and_the_shim(tmp_path: Path) -> None:
    """WATCH_STDIN: when the host's pipe closes, the driver ends itself and the shim mid-op."""
    run = _rundir(tmp_path, [("op:a=1", "a.pte"), ("op:h=1", "hang.pte")])
    with (run / "driver.env").open("a") as fh:
        fh.write("WATCH_STDIN=1\n")
    proc = subprocess.Popen(
        ["sh", str(run / "driver.sh")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == "chamlab-driver op 1 2 0 op:a=1\n"
    pid_file = run / "hanging.pid"
    for _ in range(300):  # the shim writes its pid as the hanging op starts
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    shim = int(pid_file.read_text())
    assert _alive(shim)
    proc.stdin.close()
    assert proc.wait(timeout=30) != 0
    for _ in range(100):
        if not _alive(shim):
            break
        time.sleep(0.1)
    assert not _alive(shim)
    assert [r["op_key"] for r in _results(run)] == ["op:a=1"]  # the op in flight is not recorded
