"""Simulated energy counters for the power tests (this machine has none: no RAPL, no battery, no NVML)."""

from __future__ import annotations

import threading
import time
from pathlib import Path


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


class CpuPowerModelRapl:
    """A prepared RAPL tree driven by a known power model of a CPU device:

        power_w = idle_w + watts_per_core * (CPU seconds per second of this tree's runners)

    The counter advances every ~2 ms by ``idle_w`` times the wall time plus ``watts_per_core`` times
    the CPU time (``/proc/PID/task/*/schedstat``, ns) the matching processes used since the last
    update: the shim runners reading this tree (their command line holds ``--power_root ROOT``; other
    people's runners on this shared machine do not). So an op's energy above idle is
    ``watts_per_core`` times its CPU time: at one thread, about its latency. The other processes of this
    shared machine draw nothing, so the injected model is known exactly (:meth:`energy_mj`)."""

    def __init__(self, root: Path, idle_w: float, watts_per_core: float) -> None:
        self.root, self.idle_w, self.watts_per_core = root, idle_w, watts_per_core
        self.match = f"--power_root\0{root}\0"
        d = root / "intel-rapl:0"
        d.mkdir(parents=True)
        self.range_uj = 262143328850
        (d / "max_energy_range_uj").write_text(f"{self.range_uj}\n")
        self._file = d / "energy_uj"
        self._t0 = time.monotonic()
        self._cpu_ns: dict[int, int] = {}  # last schedstat total per matching pid
        self._active_j = 0.0
        self._last_scan = 0.0
        self._write()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def energy_mj(self, cpu_ms: float) -> float:
        """The injected model's energy above idle (mJ) of ``cpu_ms`` of runner CPU time."""
        return self.watts_per_core * cpu_ms

    def _scan(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in self._cpu_ns:
                continue
            try:
                if self.match.encode() in (entry / "cmdline").read_bytes():
                    self._cpu_ns[int(entry.name)] = self._cpu_of(int(entry.name)) or 0
            except OSError:
                continue

    @staticmethod
    def _cpu_of(pid: int) -> int | None:
        total = 0
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return total

    def _write(self) -> None:
        now = time.monotonic()
        if now - self._last_scan > 0.05:
            self._scan()
            self._last_scan = now
        for pid, last in list(self._cpu_ns.items()):
            cpu = self._cpu_of(pid)
            if cpu is None:  # exited: its CPU time since the last update is lost (a few ms at most)
                del self._cpu_ns[pid]
                continue
            self._active_j += max(cpu - last, 0) * 1e-9 * self.watts_per_core
            self._cpu_ns[pid] = cpu
        uj = int(((now - self._t0) * self.idle_w + self._active_j) * 1e6) % self.range_uj
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(f"{uj}\n")
        tmp.replace(self._file)

    def _loop(self) -> None:
        while not self._stop.wait(0.002):
            self._write()

    def __enter__(self) -> CpuPowerModelRapl:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
