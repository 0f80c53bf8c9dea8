"""Shared helpers of the benchmarks: environment record and result writing."""

from __future__ import annotations

import datetime as dt
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


def environment() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

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
        "torch": version("torch"),
        "executorch": version("executorch"),
        "chamlab": version("chamlab"),
        "commit": commit,
        "load_avg_at_start": _STARTED[1],
        "load_avg_at_end": os.getloadavg(),
    }


def write_result(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        path, json.dumps({"benchmark": name, "environment": environment(), **payload}, indent=1) + "\n"
    )
    return path
