"""A simulated hot device for the heat tests and bench/heat_gating.py (this machine has no thermal
zone and no cpufreq tree): a prepared sysfs whose thermal zone and CPU frequencies a thread drives in
real time under a known model, as tests/powersim.py does for RAPL counters."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path


def _write(path: Path, value: int | str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    tmp.replace(path)  # a reader never sees a half-written number


class ThermalSim:
    """``<root>/cpu/cpuN/cpufreq`` (``scaling_cur_freq``, ``cpuinfo_max_freq``, ``scaling_governor``)
    and ``<root>/thermal/thermal_zone0`` (``type`` = ``zone_type``, ``temp`` in millidegrees), driven by

        dT/dt = (ambient_c - T) / tau_s + heating

    where heating is ``heat_c_per_s`` while the file ``busy`` exists (the stand-in runners create it
    while they execute) or, when ``busy`` holds ``<pid> <executions done>`` (the stand-in
    executor_runner), ``heat_c_per_kexec`` per 1000 executions: the heat follows the work done, not
    how long a loaded machine took to do it. Integrated every ~5 ms from the monotonic clock, so a
    stalled thread only delays an update. Every CPU runs at ``max_khz`` while ``T < trip_c`` and at
    ``throttled_khz`` from ``trip_c`` on (the kernel's thermal cooling capping the frequency). Until
    ``start_when`` (a path that appears, or a predicate) holds, the zone holds ``start_c``: the device
    was hot before, and the model starts at a point of the run the test chooses (the driver's lock
    appears, the driver says it waits, the first window was recorded), which makes the tests
    independent of how long the machine takes to get there.

    ``extra_zones``: further zones, ``{type: fixed millidegrees}``, numbered after zone 0.
    :attr:`throttled_s` is the time spent throttled, :attr:`executions` the executions counted."""

    def __init__(
        self,
        root: Path,
        busy: Path,
        *,
        start_c: float,
        ambient_c: float = 25.0,
        tau_s: float = 2.0,
        heat_c_per_s: float = 0.0,
        heat_c_per_kexec: float = 0.0,
        trip_c: float = 60.0,
        max_khz: int = 2_000_000,
        throttled_khz: int = 1_200_000,
        cpus: int = 2,
        zone_type: str = "cpu-thermal",
        extra_zones: dict[str, int] | None = None,
        start_when: Path | Callable[[], bool] | None = None,
    ) -> None:
        self.root, self.busy = root, busy
        self.temp_c, self.ambient_c, self.tau_s = float(start_c), ambient_c, tau_s
        self.heat_c_per_s, self.heat_c_per_kexec, self.trip_c = heat_c_per_s, heat_c_per_kexec, trip_c
        self.max_khz, self.throttled_khz = max_khz, throttled_khz
        self.start_when = start_when
        self.throttled_s = 0.0
        self.executions = 0
        #: (monotonic time, throttled) at the start and at every change of the throttled state
        self.transitions: list[tuple[float, bool]] = [(time.monotonic(), self.throttled)]
        self._freq_files = []
        for c in range(cpus):
            d = root / "cpu" / f"cpu{c}" / "cpufreq"
            d.mkdir(parents=True)
            (d / "scaling_governor").write_text("performance\n")
            (d / "cpuinfo_max_freq").write_text(f"{max_khz}\n")
            (d / "cpuinfo_min_freq").write_text(f"{throttled_khz // 2}\n")
            self._freq_files.append(d / "scaling_cur_freq")
        zone = root / "thermal" / "thermal_zone0"
        zone.mkdir(parents=True)
        (zone / "type").write_text(f"{zone_type}\n")
        self._temp_file = zone / "temp"
        for i, (typ, mc) in enumerate((extra_zones or {}).items(), 1):
            z = root / "thermal" / f"thermal_zone{i}"
            z.mkdir()
            (z / "type").write_text(f"{typ}\n")
            (z / "temp").write_text(f"{mc}\n")
        self._last = time.monotonic()
        self._done: tuple[int, int] | None = None  # (pid, executions done) at the last step
        self._write()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def cpufreq_root(self) -> Path:
        return self.root / "cpu"

    @property
    def thermal_root(self) -> Path:
        return self.root / "thermal"

    @property
    def throttled(self) -> bool:
        return self.temp_c >= self.trip_c

    def _write(self) -> None:
        _write(self._temp_file, round(self.temp_c * 1000))
        khz = self.throttled_khz if self.throttled else self.max_khz
        for f in self._freq_files:
            _write(f, khz)

    def _step(self, now: float) -> None:
        dt, self._last = now - self._last, now
        if self.start_when is not None:
            started = self.start_when() if callable(self.start_when) else self.start_when.exists()
            if not started:
                return
        self.start_when = None  # started: the model runs from here on
        heat = self._work(dt)
        if self.throttled:
            self.throttled_s += dt
        was = self.throttled
        cooled = self.ambient_c + (self.temp_c - self.ambient_c) * math.exp(-dt / self.tau_s)
        self.temp_c = cooled + heat
        if self.throttled != was:
            self.transitions.append((now, self.throttled))

    def _work(self, dt: float) -> float:
        """The heat to add since the last step (C): ``heat_c_per_s * dt`` while ``busy`` exists, or,
        when it holds ``<pid> <executions done>``, ``heat_c_per_kexec`` per 1000 new executions."""
        try:
            parts = self.busy.read_text().split()
        except OSError:
            self._done = None
            return 0.0
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            return self.heat_c_per_s * dt
        pid, done = int(parts[0]), int(parts[1])
        last, self._done = self._done, (pid, done)
        new = done - last[1] if last and last[0] == pid else done
        self.executions += new
        return self.heat_c_per_kexec * new / 1000.0

    def throttled_between(self, t0: float, t1: float) -> bool:
        """Whether the simulated CPUs were throttled at any time in ``[t0, t1]`` (monotonic clock)."""
        at_start = False
        for t, throttled in self.transitions:
            if t > t1:
                break
            if t <= t0:
                at_start = throttled
            elif throttled:
                return True
        return at_start

    def _loop(self) -> None:
        while not self._stop.wait(0.005):
            self._step(time.monotonic())
            self._write()

    def __enter__(self) -> ThermalSim:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
