"""Shared helpers of the benchmarks: environment record and result writing."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from chamlab.core.files import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
# Taken when a benchmark imports this module (its start), not when it writes its result.
_STARTED = (dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), os.getloadavg())


def _cpu_model() -> str | None:
    """The CPU's model name and its widest vector extension (``/proc/cpuinfo``; None elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    vector = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), None)
    return f"{model} ({vector})" if vector else model


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


#: the libraries a GP search's trajectory depends on the floating-point results of (docs/search.md)
_GP_STACK = ("botorch", "gpytorch", "linear_operator", "numpy", "scipy")


def environment() -> dict[str, Any]:

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                check=False,
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    return {
        "when": _STARTED[0],
        "ended": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "torch": _version("torch"),
        "executorch": _version("executorch"),
        "libraries": {d: _version(d) for d in _GP_STACK},
        "chamlab": _version("chamlab"),
        "commit": commit,
        "load_avg_at_start": _STARTED[1],
        "load_avg_at_end": os.getloadavg(),
    }


def platform_tag() -> str:
    """One line naming what a GP search's floating-point trajectory depends on: the CPU and the
    versions of torch and the GP stack. Two runs of one seed agree only under one tag. (No git call:
    the search benchmarks take it when imported.)"""
    libs = "; ".join(f"{d} {_version(d)}" for d in ("torch", "botorch", "gpytorch", "numpy", "scipy"))
    return f"{_cpu_model()}; {libs}"


def platform_id(tag: str) -> str:
    """A short id of a :func:`platform_tag`: what each run of a benchmark records, the results file
    mapping it back to the tag (``platforms``)."""
    return hashlib.sha256(tag.encode()).hexdigest()[:8]


def write_result(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        path, json.dumps({"benchmark": name, "environment": environment(), **payload}, indent=1) + "\n"
    )
    return path
