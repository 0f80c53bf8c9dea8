"""``profile --backend cuda`` through a device whose runner is ``torch-cuda``, and proof that the
cuda path (export of the ``.pt2`` programs, the host, the driver and the runner) never imports
ExecuTorch: a GPU machine may have torch and no ExecuTorch.

Without a GPU the same path runs with ``torch_device = "cpu"`` (eager, wall clock); the GPU test
(marked ``gpu``) runs it on CUDA with CUDA graphs and is skipped only where no CUDA device exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import chamlab

from chamlab.core.errors import InputError
from chamlab.host.devices.transports import LocalConfig
from chamlab.host.measurement.pipeline import resolve_run

FAST = """
[devices.{name}.measure]
num_executions = 5
warmup_runs = 1
warmup_ms = 0
min_time_ms = 0
retries = 0
"""


def gpu_devices(path: Path, name: str, **keys: str) -> Path:
    lines = [f"[devices.{name}]", 'transport = "local"', 'runner = "torch-cuda"', 'backend = "cuda"']
    lines += [f'{k} = "{v}"' for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n" + FAST.format(name=name))
    return path


def no_executorch_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with an ``executorch`` package that refuses to import (inherited by every child:
    the export workers, the driver's runner)."""
    blocker = tmp_path / "blocker" / "executorch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        'raise ImportError("executorch is made unimportable by test_cuda_backend")\n'
    )
    old = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(blocker.parent) + (os.pathsep + old if old else "")}


def test_profile_backend_cuda_runs_without_executorch(tmp_path: Path) -> None:
    env = no_executorch_env(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import executorch"], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert probe.returncode == 1 and "unimportable" in probe.stderr  # the block works
    devices = gpu_devices(tmp_path / "devices.toml", "gpu", torch_device="cpu", torch_mode="eager")
    out = tmp_path / "gpu.parquet"
    res = chamlab(
        "profile", "-t", "gpu", "-s", "macro-cifar10", "-a", "all-identity", "--batch", "2",
        "--out", out, "--devices", devices, "--json", env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["measured_ops"] == report["planned_ops"] > 1 and not report["failed_ops"]
    rows = pq.read_table(out).to_pylist()
    assert {(r["backend"], r["batch"]) for r in rows} == {("cuda", 2)}
    assert all(r["runtime_version"].startswith("torch ") and r["n_samples"] >= 5 for r in rows)
    assert all(r["delegated"] is None for r in rows)


def test_backend_and_runner_must_match(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="backend cuda needs the torch-cuda runner"):
        resolve_run(LocalConfig(name="cpu"), backend="cuda")
    with pytest.raises(InputError, match=r"runs torch\.export programs only"):
        resolve_run(LocalConfig(name="gpu", runner="torch-cuda"), backend="xnnpack")
    devices = gpu_devices(tmp_path / "devices.toml", "gpu", torch_device="cpu", torch_mode="eager")
    res = chamlab("profile", "-t", "gpu", "-s", "macro-cifar10", "-a", "all-identity", "--breakdown",
                  "--devices", devices, "-o", tmp_path / "x.parquet")  # fmt: skip
    assert res.returncode == 2 and "no ETDump" in res.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_profile_backend_cuda_on_the_gpu_with_cuda_graphs(tmp_path: Path) -> None:
    env = no_executorch_env(tmp_path)
    devices = gpu_devices(tmp_path / "devices.toml", "gpu")
    out = tmp_path / "gpu.parquet"
    res = chamlab(
        "profile", "-t", "gpu", "-s", "macro-cifar10", "-a", "all-identity", "--batch", "16",
        "--out", out, "--devices", devices, "--json", env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = pq.read_table(out).to_pylist()
    assert rows and all(r["backend"] == "cuda" and r["batch"] == 16 and r["p50_ms"] > 0 for r in rows)
    assert all("cuda" in r["runtime_version"] for r in rows)
