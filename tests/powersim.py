"""Simulated energy counters for the power tests (this machine has none: no RAPL, no battery, no NVML)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any


class RealTimeRapl:
    """A prepared RAPL tree whose counter a thread advances at ``watts`` in real time (the counter is
    a function of the monotonic clock, so a stalled writer only delays an update). It cannot tell
    idle from active: the op's energy above idle must come out near zero, the idle draw near ``watts``."""

    def __init__(self, root: Path, watts: float) -> None:
        self.root, self.watts = root, watts
        d = root / "intel-rapl:0"
        d.mkdir(parents=True)
        (d / "max_energy_range_uj").write_text("262143328850\n")
        self._file = d / "energy_uj"
        self._t0 = time.monotonic()
        self._write()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _write(self) -> None:
        uj = int((time.monotonic() - self._t0) * self.watts * 1e6) % 262143328850
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(f"{uj}\n")
        tmp.replace(self._file)  # a reader never sees a half-written number

    def _loop(self) -> None:
        while not self._stop.wait(0.002):
            self._write()

    def __enter__(self) -> RealTimeRapl:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class BusyRapl:
    """A prepared RAPL tree whose counter a thread integrates in real time at ``idle_w``, plus
    ``extra_w`` while the file ``busy`` exists (the stand-in executor_runner creates it around its
    executions): a known power model for the executor_runner power round. The counter starts near
    its wrap-around point, so the host's wrap handling is exercised too."""

    RANGE_UJ = 262143328850

    def __init__(self, root: Path, busy: Path, idle_w: float, extra_w: float) -> None:
        self.root, self.busy, self.idle_w, self.extra_w = root, busy, idle_w, extra_w
        d = root / "intel-rapl:0"
        d.mkdir(parents=True)
        (d / "max_energy_range_uj").write_text(f"{self.RANGE_UJ}\n")
        sub = root / "intel-rapl:0:0"  # a sub-domain: must not be counted twice
        sub.mkdir()
        (sub / "energy_uj").write_text("0\n")
        self._file = d / "energy_uj"
        self._uj = float(self.RANGE_UJ - 3_000_000)  # wraps after 3 J
        self._last = time.monotonic()
        self._write()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _write(self) -> None:
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(f"{int(self._uj) % self.RANGE_UJ}\n")
        tmp.replace(self._file)

    def _loop(self) -> None:
        while not self._stop.wait(0.002):
            now = time.monotonic()
            watts = self.idle_w + (self.extra_w if self.busy.exists() else 0.0)
            self._uj += watts * (now - self._last) * 1e6
            self._last = now
            self._write()

    def __enter__(self) -> BusyRapl:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CpuPowerModelRapl:
    """A prepared RAPL tree driven by a known power model of a CPU device:

        power_w = idle_w + watts_per_core * (CPU seconds per second of this tree's runners)

    The counter advances every ~2 ms by ``idle_w`` times the wall time plus ``watts_per_core`` times
    the CPU time (``/proc/PID/task/*/schedstat``, ns) the matching processes used since the last
    update: the shim runners reading this tree (their command line holds ``--power_root ROOT``; other
    people's runners on this shared machine do not). So an op's energy above idle is
    ``watts_per_core`` times its CPU time (:meth:`energy_mj`).

    The writer is a separate process at raised priority where allowed (root may lower its nice
    value): a real counter never lags, and a writer starved by a loaded machine would shift energy
    between the reader's windows."""

    def __init__(self, root: Path, idle_w: float, watts_per_core: float) -> None:
        self.root, self.idle_w, self.watts_per_core = root, idle_w, watts_per_core
        d = root / "intel-rapl:0"
        d.mkdir(parents=True)
        (d / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
        self._file = d / "energy_uj"
        self._file.write_text("0\n")
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._ready = ctx.Event()
        self._proc = ctx.Process(
            target=_cpu_model_writer,
            args=(str(self._file), str(root), idle_w, watts_per_core, self._stop, self._ready),
            daemon=True,
        )

    def energy_mj(self, cpu_ms: float) -> float:
        """The injected model's energy above idle (mJ) of ``cpu_ms`` of runner CPU time."""
        return self.watts_per_core * cpu_ms

    def __enter__(self) -> CpuPowerModelRapl:
        self._proc.start()
        if not self._ready.wait(60):
            self._proc.kill()
            raise RuntimeError("the simulated RAPL writer did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


RANGE_UJ = 262143328850


def _cpu_of(pid: int) -> int | None:
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def _cpu_model_writer(
    path: str, root: str, idle_w: float, watts_per_core: float, stop: Any, ready: Any
) -> None:
    with contextlib.suppress(OSError):  # allowed for root; elsewhere it runs at normal priority
        os.nice(-15)
    match = f"--power_root\0{root}\0".encode()
    file = Path(path)
    cpu_ns: dict[int, int] = {}
    active_j = 0.0
    t0 = last_scan = time.monotonic()
    ready.set()
    while not stop.wait(0.002):
        now = time.monotonic()
        if now - last_scan > 0.05:
            last_scan = now
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) in cpu_ns:
                    continue
                try:
                    if match in (entry / "cmdline").read_bytes():
                        cpu_ns[int(entry.name)] = _cpu_of(int(entry.name)) or 0
                except OSError:
                    continue
        for pid, before in list(cpu_ns.items()):
            cpu = _cpu_of(pid)
            if cpu is None:  # exited: its CPU time since the last update is lost (2 ms at most)
                del cpu_ns[pid]
                continue
            active_j += max(cpu - before, 0) * 1e-9 * watts_per_core
            cpu_ns[pid] = cpu
        uj = int(((now - t0) * idle_w + active_j) * 1e6) % RANGE_UJ
        tmp = file.with_suffix(".tmp")
        tmp.write_text(f"{uj}\n")
        tmp.replace(file)  # a reader never sees a half-written number
