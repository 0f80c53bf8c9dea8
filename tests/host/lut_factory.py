"""Synthetic LUTs for the `lut` lifecycle tests: real rows (make_row), real Parquet, no ExecuTorch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from chamlab.host.luts.lifecycle import LutFile, write_lut_file
from chamlab.host.luts.lut import Lut, make_row
from chamlab.operators import ConvBNAct, InvertedResidual, PoolLinear

OPS_POOL = [
    ConvBNAct(3, 16, 3, 1, 32, 32).key,
    ConvBNAct(16, 32, 3, 2, 32, 32).key,
    InvertedResidual(32, 32, 3, 1, 6, 16, 16).key,
    PoolLinear(1280, 10, 4, 4).key,
]
FP_PIXEL = "lab-host-1|Qualcomm Technologies, Inc SM8450|Linux 5.10.101-android12 aarch64"


def day(n: int) -> dt.datetime:
    return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=n)


def row(
    op_key: str,
    samples: Iterable[float],
    *,
    run_id: str | None = "run-a",
    when: int = 0,
    device: str = "pixel",
    threads: int = 1,
    fingerprint: str | None = FP_PIXEL,
    dtype: str = "fp32",
    **extra: Any,
) -> dict[str, Any]:
    return make_row(
        op_key,
        device=device,
        backend="xnnpack",
        dtype=dtype,
        threads=threads,
        samples_ms=list(samples),
        run_id=run_id,
        measured_at=day(when),
        device_fingerprint=fingerprint,
        robust_cv=0.01,
        unstable=False,
        **extra,
    )


def lut_file(
    rows: Iterable[Mapping[str, Any]], meta: Mapping[str, Any] | None = None, path: Path | None = None
) -> LutFile:
    rows = list(rows)
    runs = sorted({r["run_id"] for r in rows if r["run_id"]})
    prov = [{"run_id": r, "created_at": f"2026-01-{i + 1:02d}T00:00:00+00:00"} for i, r in enumerate(runs)]
    lut = Lut.empty().upsert(rows)
    lut.provenance = prov
    return LutFile(lut, {"chamlab.provenance": prov, **(meta or {})}, path)


def write(path: Path, rows: Iterable[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> Path:
    write_lut_file(path, lut_file(rows, meta, path))
    return path


def run_lut(
    run_id: str, when: int, scale: float, *, ops: list[str] | None = None, seed: int = 0
) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        row(k, scale * (i + 1) * rng.uniform(0.95, 1.05, 9), run_id=run_id, when=when)
        for i, k in enumerate(ops or OPS_POOL)
    ]
