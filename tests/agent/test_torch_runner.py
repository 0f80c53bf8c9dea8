"""The cuda backend's artifact (a torch.export program) and the torch-cuda runner; qnn's refusal.

This machine has no CUDA device: the GPU test is skipped here (and only where none is present); the
same runner code path runs on the CPU (``--device cpu --mode eager``) so that CI exercises the
loading, the input shapes and the result format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chamlab.core.errors import ExportError
from chamlab.operators import InvertedResidual
from chamlab.operators.export import Artifact, ArtifactCache, ExportItem, export_all
from chamlab.operators.network import build

SPEC = InvertedResidual(16, 16, 3, 1, 3, 8, 8)


def _export(batch: int) -> Artifact:
    arts, failures = export_all([ExportItem.for_op(SPEC, batch)], "cuda", cache=ArtifactCache())
    assert not failures, failures
    return next(iter(arts.values()))


def _runner(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chamlab.agent.torch_runner", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cuda_artifact_is_the_ops_torch_export_program_at_its_batch(tmp_path: Path) -> None:
    art = _export(2)
    assert art.pte_path.suffix == ".pt2" and art.pte_path.is_file() and not art.etrecord_path.exists()
    assert _export(2).export_s is None  # cached
    assert _export(3).cache_key != art.cache_key  # the batch is part of the cache key
    program = torch.export.load(str(art.pte_path))  # our own export (see torch_runner's docstring)
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), build(SPEC)(x), atol=1e-5)


def test_torch_runner_on_the_cpu_code_path(tmp_path: Path) -> None:
    art = _export(2)
    out = tmp_path / "r.json"
    res = _runner(
        "--model_path", art.pte_path, "--device", "cpu", "--mode", "eager", "--num_executions", "5",
        "--min_time_ms", "0", "--warmup_ms", "0", "--retries", "0", "--result_path", out,
    )  # fmt: skip
    r = json.loads(out.read_text())
    assert r["runner"] == "torch-cuda" and r["timer"] == "perf_counter" and r["n_samples"] == 5
    assert r["input_shapes"] == [[2, 16, 8, 8]] and all(s > 0 for s in r["samples_ms"])
    assert r["runtime_version"].startswith("torch ") and len(r["attempts"]) == 1
    res = _runner("--model_path", art.pte_path, "--device", "cpu")  # graph mode needs CUDA
    assert res.returncode == 1 and "--mode graph needs a CUDA device" in res.stderr
    res = _runner("--model_path", tmp_path / "missing.pt2")
    assert res.returncode == 1 and "does not exist" in res.stderr
    res = _runner("--model_path", art.pte_path, "--etdump_path", tmp_path / "x.etdp")
    assert res.returncode == 2 and "no ETDump" in res.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("batch", [1, 16])
def test_torch_runner_times_cuda_graph_replays_and_eager(batch: int, tmp_path: Path) -> None:
    art = _export(batch)
    for mode in ("graph", "eager"):
        out = tmp_path / f"{mode}.json"
        res = _runner(
            "--model_path", art.pte_path, "--mode", mode, "--num_executions", "50", "--min_time_ms", "0",
            "--result_path", out,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        r = json.loads(out.read_text())
        assert r["timer"] == "cuda-event" and r["mode"] == mode and r["n_samples"] == 50
        assert r["input_shapes"] == [[batch, 16, 8, 8]] and all(s > 0 for s in r["samples_ms"])


def test_qnn_export_names_the_missing_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    with pytest.raises(
        ExportError, match=r"backend qnn: QNN_SDK_ROOT is not set .*Qualcomm AI Engine Direct SDK"
    ):
        export_all([ExportItem.for_op(SPEC)], "qnn", cache=ArtifactCache())
    monkeypatch.setenv("QNN_SDK_ROOT", "/opt/qnn")
    with pytest.raises(ExportError, match="chamlab has no QNN lowering yet"):
        export_all([ExportItem.for_op(SPEC)], "qnn", cache=ArtifactCache())
