"""Every process a run starts ends with it: the export pool's workers and multiprocessing's
resource_tracker after a SIGKILL of `chamlab profile`, and a Ctrl-C during the export exits cleanly
(exit 130, no worker traceback, no "leaked semaphore objects" warning from the resource tracker).

Each run gets its own artifact cache, so its ops are not cached and it exports. The signal is sent on
an observed event (the export workers appearing among the run's descendants), never after a sleep."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

BIN = Path(sys.executable).parent
WORKER = "multiprocessing.spawn"  # the pool workers' command line
GONE_WITHIN = 60.0  # seconds: generous, the workers check their parent four times a second


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process; None when gone (a zombie counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # from field 3 (state) on: the name may hold spaces
    return None if fields[0] == "Z" else (int(fields[1]), fields[19])


def descendants(root: int) -> dict[int, str]:
    """pid -> start time of every live descendant of ``root``."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[0], []).append((int(entry), st[1]))
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            out[pid] = start
            todo.append(pid)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def of_run(cache: Path) -> dict[int, str]:
    """pid -> start time of every live process that has the run's private cache in its environment:
    the run's processes wherever they were reparented."""
    mark = f"CHAMLAB_CACHE={cache}".encode()
    out: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in env and (st := _stat(int(entry))) is not None:
            out[int(entry)] = st[1]
    return out


def alive(procs: dict[int, str]) -> dict[int, str]:
    """Those of ``procs`` still running (the same process: pid and start time)."""
    return {pid: cmdline(pid) for pid, start in procs.items() if (st := _stat(pid)) and st[1] == start}


def start_profile(tmp_path: Path, fast_devices: Path, seed: int, stderr: IO[str]) -> subprocess.Popen[str]:
    """`chamlab profile` that exports; ``stderr`` a file, not a pipe (orphans must not keep a test
    waiting for its end)."""
    exe = shutil.which("chamlab", path=str(BIN)) or "chamlab"
    env = {**os.environ, "CHAMLAB_CACHE": str(tmp_path / "cache")}  # nothing cached: it exports
    args = ["profile", "--target", "test-cpu", "--devices", str(fast_devices), "--space", "chamnet-mbv2"]
    args += ["--sample", "2", "--seed", str(seed), "--out", str(tmp_path / "lut.parquet")]
    return subprocess.Popen(
        [exe, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def starting_up(pid: int) -> bool:
    """A worker still starting: its initializer, which sends its stderr to the export log, has not run."""
    try:
        return not os.readlink(f"/proc/{pid}/fd/2").endswith("export.log")
    except OSError:
        return False


def wait_for_workers(proc: subprocess.Popen[str], starting: bool = False) -> dict[int, str]:
    """The run's descendants once its export workers exist (``starting``: and one is still starting)."""
    end = time.monotonic() + 600
    while time.monotonic() < end:
        assert proc.poll() is None, f"chamlab profile ended (exit {proc.returncode}) before exporting"
        found = descendants(proc.pid)
        workers = [pid for pid in found if WORKER in cmdline(pid)]
        if workers and (not starting or any(map(starting_up, workers))):
            return found
        time.sleep(0.005)
    raise AssertionError("no export worker appeared")


def wait_gone(procs: dict[int, str], within: float = GONE_WITHIN) -> dict[int, str]:
    """Those of ``procs`` still running after waiting up to ``within`` seconds for them to end."""
    end = time.monotonic() + within
    while (left := alive(procs)) and time.monotonic() < end:
        time.sleep(0.2)
    return left


def test_sigkill_of_profile_ends_every_process_it_started(tmp_path: Path, fast_devices: Path) -> None:
    procs: dict[int, str] = {}
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = start_profile(tmp_path, fast_devices, 9101, stderr)
    try:
        procs = wait_for_workers(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        procs.update(of_run(tmp_path / "cache"))  # any started since, now reparented
        left = wait_gone(procs)
    finally:
        procs.update(of_run(tmp_path / "cache"))
        for pid in alive(procs):  # a failing run must not leave them behind for the next test
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    assert not left, f"processes outlived the SIGKILLed run: {left}"


def test_ctrl_c_during_export_exits_cleanly(tmp_path: Path, fast_devices: Path) -> None:
    procs: dict[int, str] = {}
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = start_profile(tmp_path, fast_devices, 9102, stderr)
    try:
        procs = wait_for_workers(proc, starting=True)
        # Ctrl-C in a terminal signals the whole group at once; which process acts on it first is up to
        # the scheduler. The worker first (the order that left a KeyboardInterrupt traceback) unless it
        # ignores the signal, as it must; then the whole group.
        workers = [pid for pid in procs if WORKER in cmdline(pid) and starting_up(pid)]
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        wait_gone({pid: procs[pid] for pid in workers}, within=10.0)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
        procs.update(of_run(tmp_path / "cache"))
        left = wait_gone(procs)
    finally:
        procs.update(of_run(tmp_path / "cache"))
        for pid in alive(procs):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    assert not left, f"processes outlived the interrupted run: {left}"
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "interrupted" in stderr
    assert "Traceback" not in stderr and "leaked semaphore" not in stderr, stderr
