"""Emulated farm devices for the farm tests: ``local`` devices with distinct names.

A *stand-in* device runs everything real (the farm, the local transport, the POSIX driver and its
device lock, staging, results, the LUT write, the agent's batch loop) except the measurement: its
shim ``python`` is a script that runs ``chamlab.agent.runner.main`` with an injected measurement that
sleeps and returns samples equal to the device's own value (read from a file at each op, so a test
can change it between nights).
That makes rows crossed between devices visible, drift deterministic, and 8 devices affordable on
this 2-core machine (the real runner spends ~1.5 s importing torch per op). A *real* device uses
the real shim (``python -m chamlab.agent.runner``) with the tests' fast measurement policy.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: the smallest macro-cifar10 arch: 7 ops (with the invocation probe)
ARCH = "00000000"

STAND_IN = """#!{python}
# stand-in for `python -m chamlab.agent.runner ...` (see tests/host/farm_devices.py): the agent's own
# batch loop (--tasks: the driver starts one shim per run), staged on PYTHONPATH by runner.sh, with
# the measurement replaced: sleep, then the device's value. One process, like the real runner, so the
# driver's SIGKILL leaves nothing behind.
import pathlib, sys, time
from chamlab.agent import probe, runner


def measure_one(args, model_path, etdump_path):
    with open("{calls_file}", "a") as log:  # one line per op measured (tests count re-measures)
        log.write(str(model_path) + "\\n")
    time.sleep({sleep_s})
    text = pathlib.Path("{value_file}").read_text().strip()
    value = float(text)  # a bad value fails the op, as a runtime error would
    fingerprint = probe.fingerprint()  # the agent's own probe: this machine's
    return {{"samples_ms": [value] * 5, "robust_cv": 0.0, "unstable": False, "fingerprint": fingerprint}}


argv = sys.argv[1:]
if argv[:2] == ["-m", "chamlab.agent.runner"]:
    argv = argv[2:]
sys.exit(runner.main(argv, measure_one=measure_one))
"""

FAST_MEASURE = """
[devices.{name}.measure]
num_executions = 5
warmup_runs = 1
warmup_ms = 0
min_time_ms = 10
retries = 0
"""


def stand_in(folder: Path, name: str, value_ms: float, sleep_s: float = 0.2) -> tuple[Path, Path]:
    """Write the stand-in runner of ``name``; returns (script, value file). It appends a line to
    ``folder/<name>.calls`` for each op it measures."""
    folder.mkdir(parents=True, exist_ok=True)
    value_file = folder / f"{name}.value"
    value_file.write_text(f"{value_ms}\n")
    script = folder / f"{name}-python"
    script.write_text(
        STAND_IN.format(
            python=sys.executable, sleep_s=sleep_s, value_file=value_file, calls_file=folder / f"{name}.calls"
        )
    )
    script.chmod(0o755)
    return script, value_file


def device_table(
    name: str, *, python: Path | None = None, tags: list[str] | None = None, **extra: str
) -> str:
    lines = [f"[devices.{name}]", 'transport = "local"', "threads = 1"]
    if python is not None:
        lines.append(f'python = "{python}"')
    if tags:
        lines.append("tags = [" + ", ".join(f'"{t}"' for t in tags) + "]")
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    return "\n".join(lines) + "\n" + FAST_MEASURE.format(name=name)


def stand_in_farm(
    folder: Path, names: list[str], *, sleep_s: float = 0.2, tags: dict[str, list[str]] | None = None
) -> tuple[Path, dict[str, Path]]:
    """devices.toml with one stand-in device per name (value i+1 ms for the i-th); and the value files."""
    tables, values = [], {}
    for i, name in enumerate(names):
        script, values[name] = stand_in(folder / "stand-ins", name, float(i + 1), sleep_s)
        tables.append(device_table(name, python=script, tags=(tags or {}).get(name, [])))
    path = folder / "devices.toml"
    path.write_text("\n".join(tables))
    return path, values
