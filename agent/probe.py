"""Device state that biases timing, read from sysfs with configurable roots (stdlib only).

Every root can be pointed at a prepared tree (tests do; so can users with unusual layouts):

* ``cpufreq_root`` (default ``/sys/devices/system/cpu``): ``cpu*/cpufreq/scaling_governor``;
* ``thermal_root`` (default ``/sys/class/thermal``): ``thermal_zone*/temp`` in milli-degrees C;
* ``power_supply_root`` (default ``/sys/class/power_supply``): ``*/type`` == Battery, ``*/capacity``.

A value that cannot be read is ``None``, never a guess.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import platform
import socket


@dataclasses.dataclass(frozen=True)
class SysfsRoots:
    cpufreq_root: str = "/sys/devices/system/cpu"
    thermal_root: str = "/sys/class/thermal"
    power_supply_root: str = "/sys/class/power_supply"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def format_cpu_list(cpus: set[int] | frozenset[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``"0-2,5"`` (the kernel's cpulist format)."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def affinity() -> str | None:
    try:
        return format_cpu_list(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def governor(roots: SysfsRoots) -> str | None:
    """The scaling governor(s) of the CPUs, e.g. ``"schedutil"`` or ``"performance,powersave"``."""
    values = sorted(
        {
            v
            for p in glob.glob(os.path.join(roots.cpufreq_root, "cpu[0-9]*", "cpufreq", "scaling_governor"))
            if (v := _read(p))
        }
    )
    return ",".join(values) or None


def temperature_c(roots: SysfsRoots) -> float | None:
    """The hottest thermal zone in degrees C (sysfs reports milli-degrees)."""
    temps = []
    for p in glob.glob(os.path.join(roots.thermal_root, "thermal_zone*", "temp")):
        raw = _read(p)
        try:
            temps.append(int(raw) / 1000.0 if raw is not None else None)
        except ValueError:
            continue
    valid = [t for t in temps if t is not None]
    return max(valid) if valid else None


def battery_pct(roots: SysfsRoots) -> float | None:
    for supply in sorted(glob.glob(os.path.join(roots.power_supply_root, "*"))):
        if (_read(os.path.join(supply, "type")) or "").lower() == "battery":
            raw = _read(os.path.join(supply, "capacity"))
            try:
                return float(raw) if raw is not None else None
            except ValueError:
                return None
    return None


def cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Processor"):
            return value.strip()
    return platform.processor() or None


def fingerprint() -> str:
    """A readable identity of the machine and OS: ``host|cpu model|system release machine``."""
    return "|".join(
        [
            socket.gethostname(),
            cpu_model() or "unknown-cpu",
            f"{platform.system()} {platform.release()} {platform.machine()}",
        ]
    )
