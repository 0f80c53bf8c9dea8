"""The cuda and qnn backends from the command line: what the pipeline refuses, and how it says so
(the cuda path itself: tests/host/test_cuda_backend.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import chamlab


def test_cuda_is_refused_before_any_work_and_qnn_names_the_missing_sdk(
    tmp_path: Path, fast_devices: Path
) -> None:
    args = [
        "profile",
        "-t",
        "test-cpu",
        "-s",
        "macro-cifar10",
        "-a",
        "all-identity",
        "--devices",
        fast_devices,
    ]
    res = chamlab(*args, "--backend", "cuda", cwd=tmp_path)
    assert res.returncode == 2 and "backend cuda needs the torch-cuda runner" in " ".join(res.stderr.split())
    assert 'runner = "torch-cuda"' in " ".join(res.stderr.split())
    env = {"QNN_SDK_ROOT": ""}
    res = chamlab(*args, "--backend", "qnn", "-o", tmp_path / "lut.parquet", cwd=tmp_path, env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "cannot export for backend qnn: QNN_SDK_ROOT is not set" in " ".join(res.stderr.split())
    assert not (tmp_path / "lut.parquet").exists()
