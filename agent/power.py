"""Power readers and the energy measurement of one op, above idle (stdlib only: runs on targets).

Three readers, each with a configurable root so that tests (and unusual layouts) can point them at
prepared trees:

* ``battery``: Android/Linux fuel gauge under ``power_supply`` (default ``/sys/class/power_supply``):
  the first supply whose ``type`` is ``Battery`` (or the one named by ``supply``); power is
  ``|current_now| * voltage_now`` (µA, µV). **Sign conventions vary**: the kernel ABI says negative
  while discharging, yet many phone drivers report discharge as positive. The reader therefore
  uses the magnitude, and records the supply's ``status`` (``Charging``/``Full`` mean a charger is
  feeding the device, so the battery current is *not* the device's draw: the result says
  ``charging: true`` and the host stores it in the LUT row). ``current_sign`` forces a convention
  when a driver is known (``"discharge_positive"``/``"discharge_negative"``): a reading of the other
  sign then means current *into* the battery and is counted as 0 W drawn from it.
  Fuel gauges update about once a second and report an average: windows are several seconds long
  and start only after a settling period (:attr:`PowerReader.settle_s`).
* ``rapl``: Linux powercap under ``powercap`` (default ``/sys/class/powercap``): the sum of the
  top-level package domains ``intel-rapl:N/energy_uj`` (AMD exposes the same names). The counter wraps
  at ``max_energy_range_uj``: the reader adds the range back whenever a reading goes down. Reading
  ``energy_uj`` needs root on kernels patched for CVE-2020-8694 (a clear error otherwise).
* ``nvml``: NVIDIA's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since driver
  load) through ``pynvml``, imported only when this reader is asked for; ``root`` is the GPU index.

A reader that cannot work here raises :class:`NoPowerReader` with what is missing; the runner turns
that into ``{"error": ...}`` in its result (the latency is still measured).

:func:`measure_energy` measures the idle draw, then repeats the op until a window long enough for
the reader is filled, in the same run; the op's energy is the active energy minus idle power times
the active time, divided by the executions. The clock and sleep are injectable (tests drive a
simulated device whose counters move in step with a known power model).
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

READERS = ("battery", "rapl", "nvml")
DEFAULT_ROOTS = {"battery": "/sys/class/power_supply", "rapl": "/sys/class/powercap", "nvml": "0"}


class NoPowerReader(RuntimeError):
    """This reader cannot measure on this device; the message says what is missing."""


def _read_int(path: str) -> int:
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip())
    except PermissionError:
        raise NoPowerReader(f"{path}: permission denied (energy counters may need root)") from None
    except (OSError, ValueError) as exc:
        raise NoPowerReader(f"{path}: cannot read an integer ({exc})") from None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


class PowerReader(Protocol):
    name: str
    #: "energy": read() is a cumulative counter in joules; "power": read() is instantaneous watts
    kind: str
    #: the shortest useful measurement window, and how long to let the reading settle first
    min_window_s: float
    settle_s: float
    sample_interval_s: float

    def read(self) -> float: ...

    def charging(self) -> bool | None: ...


class BatteryReader:
    name = "battery"
    kind = "power"
    min_window_s = 5.0
    settle_s = 2.0
    sample_interval_s = 0.1

    def __init__(self, root: str | None = None, supply: str | None = None, current_sign: str = "auto"):
        root = root or DEFAULT_ROOTS["battery"]
        if current_sign not in ("auto", "discharge_positive", "discharge_negative"):
            raise ValueError(
                f"current_sign must be auto, discharge_positive or discharge_negative, not {current_sign!r}"
            )
        self.current_sign = current_sign
        if supply:
            folder = os.path.join(root, supply)
        else:
            found = [
                d
                for d in sorted(glob.glob(os.path.join(root, "*")))
                if _read_text(os.path.join(d, "type")) == "Battery"
            ]
            if not found:
                raise NoPowerReader(f"no battery reader: no supply of type Battery under {root}")
            folder = found[0]
        for name in ("current_now", "voltage_now"):
            if not os.path.exists(os.path.join(folder, name)):
                raise NoPowerReader(f"no battery reader: {os.path.join(folder, name)} does not exist")
        self.folder = folder

    def read(self) -> float:
        current_ua = _read_int(os.path.join(self.folder, "current_now"))
        voltage_uv = _read_int(os.path.join(self.folder, "voltage_now"))
        if self.current_sign == "discharge_positive":
            current_ua = max(current_ua, 0)
        elif self.current_sign == "discharge_negative":
            current_ua = max(-current_ua, 0)
        else:
            current_ua = abs(current_ua)
        return current_ua * 1e-6 * voltage_uv * 1e-6

    def charging(self) -> bool | None:
        status = _read_text(os.path.join(self.folder, "status"))
        if status is None:
            return None
        return status in ("Charging", "Full")


_PACKAGE = re.compile(r"^intel-rapl:\d+$")


class RaplReader:
    name = "rapl"
    kind = "energy"
    min_window_s = 0.25  # RAPL updates about every millisecond
    settle_s = 0.0
    sample_interval_s = 0.05

    def __init__(self, root: str | None = None) -> None:
        root = root or DEFAULT_ROOTS["rapl"]
        domains = [
            d
            for d in sorted(glob.glob(os.path.join(root, "intel-rapl:*")))
            if _PACKAGE.match(os.path.basename(d))
        ]
        domains = [d for d in domains if os.path.exists(os.path.join(d, "energy_uj"))]
        if not domains:
            raise NoPowerReader(f"no RAPL reader: no intel-rapl:N/energy_uj under {root}")
        self.domains = domains
        self.ranges_uj = [_read_int(os.path.join(d, "max_energy_range_uj")) for d in domains]
        self._last = [_read_int(os.path.join(d, "energy_uj")) for d in domains]
        self._total_uj = 0

    def read(self) -> float:
        for i, d in enumerate(self.domains):
            now = _read_int(os.path.join(d, "energy_uj"))
            delta = now - self._last[i]
            if delta < 0:  # the counter wrapped at max_energy_range_uj
                delta += self.ranges_uj[i]
            self._total_uj += delta
            self._last[i] = now
        return self._total_uj * 1e-6

    def charging(self) -> bool | None:
        return None


class NvmlReader:
    name = "nvml"
    kind = "energy"
    min_window_s = 0.5
    settle_s = 0.1
    sample_interval_s = 0.05

    def __init__(self, root: str | None = None) -> None:
        try:
            import pynvml
        except ImportError:
            raise NoPowerReader(
                "no NVML reader: the Python package pynvml (nvidia-ml-py) is not installed"
            ) from None
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(int(root or DEFAULT_ROOTS["nvml"]))
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception as exc:  # NVMLError_* (no driver, no device, not supported) or a bad index
            raise NoPowerReader(f"no NVML reader: {type(exc).__name__}: {exc}") from None
        self._nvml = pynvml

    def read(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) * 1e-3

    def charging(self) -> bool | None:
        return None


def open_reader(name: str, root: str | None = None, **options: Any) -> PowerReader:
    """The reader ``name`` (one of :data:`READERS`) at ``root``; :class:`NoPowerReader` if absent."""
    if name == "battery":
        return BatteryReader(root, **options)
    if name == "rapl":
        return RaplReader(root)
    if name == "nvml":
        return NvmlReader(root)
    raise ValueError(f"unknown power reader {name!r}; choose one of {', '.join(READERS)}")


@dataclasses.dataclass
class Window:
    phase: str
    energy_j: float
    duration_s: float
    executions: int
    trace: list[tuple[float, float]]  # (t_s from the measurement's start, power_w)

    @property
    def power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0


def _window(
    reader: PowerReader,
    step: Callable[[], object],
    phase: str,
    window_s: float,
    clock: Callable[[], float],
    origin: float,
) -> Window:
    t0 = clock()
    points = [(t0, reader.read())]
    n = 0
    while True:
        step()
        n += 1
        now = clock()
        done = now - t0 >= window_s
        if done or now - points[-1][0] >= reader.sample_interval_s:
            points.append((now, reader.read()))
        if done:
            break
    trace: list[tuple[float, float]] = []
    if reader.kind == "energy":
        energy = points[-1][1] - points[0][1]
        for (ta, ea), (tb, eb) in itertools.pairwise(points):
            trace.append((tb - origin, (eb - ea) / (tb - ta) if tb > ta else 0.0))
    else:
        energy = 0.0
        for (ta, pa), (tb, pb) in itertools.pairwise(points):
            energy += 0.5 * (pa + pb) * (tb - ta)
        trace = [(t - origin, p) for t, p in points]
    return Window(phase, energy, points[-1][0] - t0, n, trace)


def measure_energy(
    reader: PowerReader,
    run_once: Callable[[], object],
    *,
    window_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Idle draw, then the op repeated over a window (at least ``reader.min_window_s``), both after
    the reader's settling time; returns the JSON-ready energy record of one execution, above idle.

    Keys: ``reader``, ``idle_power_w`` (device draw while idle), ``active_power_w`` (total draw while
    running), ``avg_power_w`` (above idle), ``energy_mj`` (per execution, above idle),
    ``executions``, ``window_s``, ``charging`` and ``trace``: ``[phase, t_s, power_w]`` rows.
    """
    window_s = max(window_s or 0.0, reader.min_window_s)
    origin = clock()
    pause = lambda: sleep(reader.sample_interval_s)  # noqa: E731
    _settle(pause, reader.settle_s, clock)
    idle = _window(reader, pause, "idle", window_s, clock, origin)
    _settle(run_once, reader.settle_s, clock)
    active = _window(reader, run_once, "active", window_s, clock, origin)
    above_j = active.energy_j - idle.power_w * active.duration_s
    return {
        "reader": reader.name,
        "idle_power_w": idle.power_w,
        "active_power_w": active.power_w,
        "avg_power_w": active.power_w - idle.power_w,
        "energy_mj": 1e3 * above_j / active.executions,
        "executions": active.executions,
        "window_s": active.duration_s,
        "charging": reader.charging(),
        "trace": [[w.phase, round(t, 6), p] for w in (idle, active) for t, p in w.trace],
    }


def _settle(step: Callable[[], object], seconds: float, clock: Callable[[], float]) -> None:
    end = clock() + seconds
    while clock() < end:
        step()


# -- the runner's hook (kept here so that the runner changes by three lines) ---------------------------
def add_arguments(parser: Any) -> None:
    """The shim runner's power flags (an ``argparse.ArgumentParser``)."""
    parser.add_argument(
        "--power_reader", choices=READERS, default=None, help="also measure energy above idle"
    )
    parser.add_argument("--power_root", default=None, help="sysfs root of the reader, or the NVML GPU index")
    parser.add_argument(
        "--power_window_s", type=float, default=0.0, help="window per phase (0: reader minimum)"
    )
    parser.add_argument(
        "--battery_current_sign",
        choices=("auto", "discharge_positive", "discharge_negative"),
        default="auto",
        help="sign convention of the fuel gauge's current_now (auto: use the magnitude)",
    )


def energy_for_runner(args: Any, run_once: Callable[[], object]) -> dict[str, Any]:
    """The runner result's ``energy`` record, or ``{"reader": ..., "error": ...}`` when the reader
    is absent here (failures as data: the latency measurement stands)."""
    options = {"current_sign": args.battery_current_sign} if args.power_reader == "battery" else {}
    try:
        reader = open_reader(args.power_reader, args.power_root, **options)
        return measure_energy(reader, run_once, window_s=args.power_window_s)
    except NoPowerReader as exc:
        return {"reader": args.power_reader, "error": str(exc)}
