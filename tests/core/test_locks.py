"""FileLock: exclusive across processes, says who holds it, never stale after a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chamlab.core.errors import DeviceBusyError
from chamlab.core.locks import FileLock, sibling_lock

HOLD = """
import sys, time
from pathlib import Path
from chamlab.core.locks import FileLock
lock = FileLock(Path(sys.argv[1]), what="test")
lock.acquire(description="the child process")
print("held", flush=True)
sys.stdin.read()  # hold until the parent closes our stdin (or kills us)
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_second_holder_is_refused_or_waits_and_is_told_who(tmp_path: Path) -> None:
    path = tmp_path / "dev.lock"
    child = _holder(path)
    try:
        lock = FileLock(path, what="device d")
        with pytest.raises(DeviceBusyError, match="device d is busy: held by the child process"):
            lock.acquire(wait=False)
        told: list[str] = []
        clock = iter(range(100))
        waiting = FileLock(path, what="device d", clock=lambda: float(next(clock)), sleep=lambda s: None)
        with pytest.raises(DeviceBusyError, match="still busy after 3 s"):
            waiting.acquire(on_wait=told.append, timeout_s=3)
        assert told == ["the child process"]  # told once, not on every poll
    finally:
        child.kill()
        child.communicate()  # waits, and closes its pipes
    # the kernel released the dead child's lock: nothing is ever stale
    lock = FileLock(path, what="device d")
    lock.acquire(wait=False, description="me")
    assert lock.held and lock.holder() == "me"
    lock.release()
    assert not lock.held and lock.holder() == ""


def test_sibling_lock_sits_beside_the_file(tmp_path: Path) -> None:
    lock = sibling_lock(tmp_path / "lut.parquet", what="LUT")
    with lock.hold():
        assert (tmp_path / ".lut.parquet.lock").exists()
