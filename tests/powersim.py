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
