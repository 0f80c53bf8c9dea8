"""The device-side driver contract (agent/driver.sh) under /bin/sh.

The runner is a scripted stand-in here (a shell script that writes a canned result or fails on
demand), so every outcome can be forced; the real runner goes through the same driver in
tests/host/test_session.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

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
  *hang*) sleep 30;;
esac
printf '{"samples_ms":[1.0,2.0],"model":"%s"}' "$model" > "$result"
"""


def _rundir(tmp_path: Path, tasks: list[tuple[str, str]], timeout_s: int = 60) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "driver.sh").write_text(resources.files("chamlab.agent").joinpath("driver.sh").read_text())
    (run / "runner.sh").write_text(RUNNER)
    (run / "driver.env").write_text(
        f"THREADS=1\nNUM_EXECUTIONS=5\nRUNNER_KIND=shim\nETDUMP=0\nOP_TIMEOUT_S={timeout_s}\nCOOLDOWN_S=0\n"
    )
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


def test_per_op_deadline_kills_the_runner(tmp_path: Path) -> None:
    run = _rundir(tmp_path, [("op:h=1", "hang.pte"), ("op:a=1", "a.pte")], timeout_s=1)
    out = _drive(run)
    assert out == [
        "chamlab-driver op 1 2 124 op:h=1",
        "chamlab-driver op 2 2 0 op:a=1",
        "chamlab-driver done 2 1",
    ]
    assert "per-op deadline of 1 s" in (run / "out" / "d0.log").read_text()


SHELLS = [sh for sh in ("sh", "dash", "bash") if shutil.which(sh)]


@pytest.mark.parametrize("shell", SHELLS)
def test_driver_is_posix_sh(tmp_path: Path, shell: str) -> None:
    run = _rundir(tmp_path, [("op:a=1", "a.pte"), ("op:f=1", "fail.pte")])
    res = subprocess.run(
        [shell, str(run / "driver.sh")], capture_output=True, text=True, timeout=60, check=True
    )
    assert res.stdout.splitlines()[-1] == "chamlab-driver done 2 1"
    assert [r["rc"] for r in _results(run)] == [0, 3]
