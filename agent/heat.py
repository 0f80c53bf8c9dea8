"""Temperature-gated measurement in the python runners (standard library only; this runs on the target).

The same rules as ``agent/driver.sh`` applies around each ``executor_runner`` call, for the runners
that measure in-process (the shim, torch-cuda), window by window (:func:`chamlab.agent.measure.measure`
calls :meth:`HeatCheck.wait_cool` before each attempt and samples during its timed window):

* **gate**: before a window, wait until the gated zone reads below ``cool_below_c`` (polling every
  0.1 s, for at most ``cool_wait_max_s``; then measure anyway). The zone is ``thermal_zone`` (a
  ``thermal_zoneN`` directory name or a zone's ``type``), or the hottest zone when it is empty.
* **frequency check**: while the window runs, a thread samples the zone and each checked CPU's
  ``scaling_cur_freq`` every 0.1 s; a sample is *low* when a CPU reads under ``min_freq_khz`` (a
  number, or ``max``: that CPU's ``cpuinfo_max_freq``). A window with a low sample is throttled.
  The checked CPUs are ``cpus`` (the device's ``affinity``), or every CPU when empty.

:meth:`HeatCheck.record` is the window's heat record, the same keys as the driver's (``cool_below_mc``,
``cool_wait_cs``, ``cool_timed_out``, ``start_mc``, ``samples``, ``low_samples``, ``min_freq_khz``,
``temp_min_mc``, ``temp_max_mc``). A zone or CPU that cannot be read is a :class:`HeatError` (the
op fails with the reason), never a silent pass.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

POLL_S = 0.1


class HeatError(RuntimeError):
    """The configured zone or CPUs cannot be read."""


def _int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("heat (devices.toml cool_below_c, thermal_zone, cool_wait_max_s, min_freq_khz)")
    g.add_argument("--cool_below_c", type=float, default=0.0, help="wait before each window until the zone "
                   "reads below this (C); 0: no wait")  # fmt: skip
    g.add_argument(
        "--thermal_zone", default="", help="the gated zone: thermal_zoneN or its type (default: hottest)"
    )
    g.add_argument(
        "--cool_wait_max_s", type=float, default=300.0, help="longest wait for the zone to cool (s)"
    )
    g.add_argument("--min_freq_khz", default="", help='a window whose CPUs read under this (kHz, or "max") '
                   "is throttled; empty: no check")  # fmt: skip
    g.add_argument("--freq_cpus", default="", help="the checked CPUs, e.g. 4,5,6,7 (default: every CPU)")


def from_namespace(args: argparse.Namespace) -> HeatCheck | None:
    """The check ``args`` ask for, or None when neither a gate nor a frequency check is set."""
    if not args.cool_below_c and not args.min_freq_khz:
        return None
    cpus = tuple(int(c) for c in args.freq_cpus.split(",") if c.strip())
    return HeatCheck(
        thermal_root=args.thermal_root,
        cpufreq_root=args.cpufreq_root,
        cool_below_c=float(args.cool_below_c),
        zone=args.thermal_zone,
        wait_max_s=float(args.cool_wait_max_s),
        min_freq_khz=str(args.min_freq_khz),
        cpus=cpus,
    )


class HeatCheck:
    """The gate and the frequency check of one device (module docstring); resolves its zones and CPUs
    at once, so a bad setting fails the first op."""

    def __init__(
        self,
        *,
        thermal_root: str,
        cpufreq_root: str,
        cool_below_c: float = 0.0,
        zone: str = "",
        wait_max_s: float = 300.0,
        min_freq_khz: str = "",
        cpus: tuple[int, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cool_below_mc = round(cool_below_c * 1000)
        self.wait_max_s = wait_max_s
        self._clock, self._sleep = clock, sleep
        self.zones = self._zones(thermal_root, zone)
        if not self.zones and self.cool_below_mc:
            raise HeatError(
                f"no thermal zone {zone or 'thermal_zone*'} with a readable temp under {thermal_root} "
                "(cool_below_c needs one)"
            )
        self.freq: list[tuple[str, int]] = (
            self._cpus(cpufreq_root, min_freq_khz, cpus) if min_freq_khz else []
        )
        self._last: dict[str, Any] = {}

    @staticmethod
    def _zones(root: str, zone: str) -> list[str]:
        out = []
        for d in sorted(glob.glob(os.path.join(root, "thermal_zone*"))):
            if _int(os.path.join(d, "temp")) is None:
                continue
            if zone and os.path.basename(d) != zone:
                try:
                    with open(os.path.join(d, "type"), encoding="ascii") as fh:
                        if fh.read().strip() != zone:
                            continue
                except OSError:
                    continue
            out.append(os.path.join(d, "temp"))
        return out

    @staticmethod
    def _cpus(root: str, min_freq_khz: str, cpus: tuple[int, ...]) -> list[tuple[str, int]]:
        out = []
        for d in sorted(glob.glob(os.path.join(root, "cpu[0-9]*", "cpufreq"))):
            cur = os.path.join(d, "scaling_cur_freq")
            if _int(cur) is None:
                continue
            if cpus and int(os.path.basename(os.path.dirname(d))[3:]) not in cpus:
                continue
            if min_freq_khz == "max":
                top = _int(os.path.join(d, "cpuinfo_max_freq"))
                if top is None:
                    raise HeatError(
                        f'{d}/cpuinfo_max_freq cannot be read (min_freq_khz = "max" needs it; give a number)'
                    )
                out.append((cur, top))
            else:
                out.append((cur, int(min_freq_khz)))
        if not out:
            which = ",".join(map(str, cpus)) or "any"
            raise HeatError(
                f"no readable scaling_cur_freq for CPU(s) {which} under {root} (min_freq_khz needs them)"
            )
        return out

    def zone_mc(self) -> int | None:
        """The hottest gated zone (millidegrees), None when none reads."""
        temps = [t for t in (_int(z) for z in self.zones) if t is not None]
        return max(temps) if temps else None

    def _sample(self) -> tuple[int | None, bool, int | None]:
        """(zone mC, a checked CPU is under its threshold, the lowest frequency read)."""
        low, lowest = False, None
        for cur, threshold in self.freq:
            f = _int(cur)
            if f is None:
                continue
            low = low or f < threshold
            lowest = f if lowest is None else min(lowest, f)
        return self.zone_mc(), low, lowest

    def wait_cool(self, on_wait: Callable[[int], None] | None = None) -> None:
        """Wait (bounded) until the zone reads below ``cool_below_c``; ``on_wait(mC)`` once when it
        has to. Starts the next window's record."""
        t0 = self._clock()
        start, timed_out, told = self.zone_mc(), False, False
        while self.cool_below_mc and start is not None and start >= self.cool_below_mc:
            if self._clock() - t0 >= self.wait_max_s:
                timed_out = True
                break
            if not told and on_wait is not None:
                on_wait(start)
                told = True
            self._sleep(POLL_S)
            start = self.zone_mc()
        self._last = {
            "cool_below_mc": self.cool_below_mc,
            "cool_wait_cs": round((self._clock() - t0) * 100),
            "cool_timed_out": timed_out,
            "start_mc": start,
        }

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        """Sample the zone and the CPUs every 0.1 s while the block runs (the timed window)."""
        samples: list[tuple[int | None, bool, int | None]] = [self._sample()]
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(POLL_S):
                samples.append(self._sample())

        sampler = threading.Thread(target=run, name="chamlab-heat", daemon=True)
        sampler.start()
        try:
            yield
        finally:
            stop.set()
            sampler.join()
            samples.append(self._sample())
            temps = [t for t, _, _ in samples if t is not None]
            freqs = [f for _, _, f in samples if f is not None]
            self._last = {
                **self._last,  # wait_cool's part (measure() calls it before every window)
                "samples": len(samples),
                "low_samples": sum(1 for _, low, _ in samples if low) if self.freq else 0,
                "min_freq_khz": min(freqs) if freqs else None,
                "temp_min_mc": min(temps) if temps else None,
                "temp_max_mc": max(temps) if temps else None,
            }

    def record(self) -> dict[str, Any]:
        """The heat record of the window just measured (the driver's keys)."""
        return dict(self._last)

    def throttled(self) -> str | None:
        """Why the window just measured counts as throttled, None when it does not (or was not checked)."""
        return throttled_reason(self._last) if self.freq else None


def throttled_reason(record: dict[str, Any] | None) -> str | None:
    """Why a window with this heat record (the driver's keys, or :meth:`HeatCheck.record`) counts as
    throttled: a checked CPU read under its minimum in some sample; None when none did."""
    if not record or not isinstance(record.get("low_samples"), int) or record["low_samples"] <= 0:
        return None
    top = record.get("temp_max_mc")
    top_c = float(top) / 1000.0 if isinstance(top, (int, float)) and not isinstance(top, bool) else None
    return (
        f"a CPU ran under its minimum frequency in {record['low_samples']} of {record.get('samples')} "
        f"samples (lowest {record.get('min_freq_khz')} kHz, zone up to {top_c} C)"
    )
