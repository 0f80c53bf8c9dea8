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
