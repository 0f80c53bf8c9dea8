"""``chamlab devices --check``: is each device reachable, and what is it (model, SoC/CPU, cores,
governor, runtime version)? Each probe runs under its own deadline; probes run side by side.

The commands sent are constants (no value from devices.toml or the command line is pasted into
them); the target's ``python`` is one argv element.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Sequence
from typing import Any

from chamlab.core.errors import ChamlabError
from chamlab.host.devices.transports.base import DeviceConfig

#: the keys of one device's facts (docs/cli.md, `chamlab devices --check --json`)
FACT_KEYS = ("model", "soc", "cpu", "cores", "governor", "kernel", "runtime_version")

_FACTS_SCRIPT = r"""
p() { command -v getprop >/dev/null 2>&1 && getprop "$1" 2>/dev/null; }
echo "model=$(p ro.product.model)"
echo "dmi=$(cat /sys/devices/virtual/dmi/id/product_name 2>/dev/null)"
echo "soc=$(p ro.soc.model)"
echo "platform=$(p ro.board.platform)"
cpu=$(grep -m1 -E '^(model name|Hardware|Processor|cpu model)' /proc/cpuinfo 2>/dev/null)
echo "cpu=${cpu#*:}"
echo "cores=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null)"
echo "governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null)"
echo "kernel=$(uname -sr 2>/dev/null)"
echo "hostname=$(uname -n 2>/dev/null)"
"""
_RUNTIME_SCRIPT = (
    "import importlib.metadata as m\n"
    "try:\n    print('executorch', m.version('executorch'))\n"
    "except m.PackageNotFoundError:\n    print('executorch missing')\n"
)


def _facts(device: DeviceConfig, timeout_s: float) -> dict[str, Any]:
    transport = device.open()
    try:
        res = transport.run(["sh", "-c", _FACTS_SCRIPT], timeout_s=timeout_s)
        raw: dict[str, str] = {}
        for line in res.output.splitlines():
            key, sep, val = line.partition("=")
            if sep:
                raw[key.strip()] = val.strip()
        cores = raw.get("cores", "")
        facts: dict[str, Any] = {
            "model": raw.get("model") or raw.get("dmi") or raw.get("hostname") or None,
            "soc": raw.get("soc") or raw.get("platform") or None,
            "cpu": raw.get("cpu") or None,
            "cores": int(cores) if cores.isdigit() else None,
            "governor": raw.get("governor") or None,
            "kernel": raw.get("kernel") or None,
            "runtime_version": None,
        }
        python = device.runner_python()
        if device.runner_kind == "shim" and python:
            rt = transport.run([python, "-c", _RUNTIME_SCRIPT], timeout_s=timeout_s)
            text = rt.output.strip().splitlines()
            facts["runtime_version"] = (
                text[-1] if rt.rc == 0 and text else f"python {python} failed (exit {rt.rc})"
            )
        elif device.runner_kind == "torch-cuda" and python:
            rt = transport.run(
                [python, "-c", "import torch; print('torch', torch.__version__)"], timeout_s=timeout_s
            )
            text = rt.output.strip().splitlines()
            facts["runtime_version"] = (
                text[-1] if rt.rc == 0 and text else f"python {python} failed (exit {rt.rc})"
            )
        elif device.runner_kind == "executor_runner":
            facts["runtime_version"] = f"executor_runner {device.runner_path or device.runner}"
        return facts
    finally:
        transport.close()


def probe(device: DeviceConfig, timeout_s: float) -> dict[str, Any]:
    """One device's reachability and facts, within ``timeout_s`` (never raises)."""
    t0 = time.monotonic()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["facts"] = _facts(device, timeout_s)
        except ChamlabError as exc:
            box["error"] = exc.message + (f" ({exc.hint})" if exc.hint else "")
        except Exception as exc:  # a probe reports; it never takes the listing down
            box["error"] = f"{type(exc).__name__}: {exc}"

    t = threading.Thread(target=work, daemon=True, name=f"probe {device.name}")
    t.start()
    t.join(timeout_s)
    rec: dict[str, Any] = {"name": device.name, "transport": device.transport, "reachable": False}
    rec.update(dict.fromkeys(FACT_KEYS))
    if t.is_alive():
        rec["error"] = f"no answer within {timeout_s:g} s"
    elif "error" in box:
        rec["error"] = box["error"]
    else:
        rec.update(box["facts"], reachable=True, error=None)
    rec["probe_s"] = round(time.monotonic() - t0, 3)
    return rec


def probe_all(devices: Sequence[DeviceConfig], timeout_s: float) -> list[dict[str, Any]]:
    """:func:`probe` every device side by side; the whole call takes at most about ``timeout_s``."""
    if not devices:
        return []
    with cf.ThreadPoolExecutor(max_workers=min(16, len(devices))) as pool:
        return list(pool.map(lambda d: probe(d, timeout_s), devices))
