"""The runner shim, run for real (its own process, the ExecuTorch runtime, a real .pte)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from chamlab.agent.measure import percentile
from chamlab.host.measurement import etdump
from chamlab.operators import InvertedResidual
from chamlab.operators.export import Artifact, ArtifactCache, ExportItem, export_all

FAST = [
    "--num_executions",
    "7",
    "--warmup_runs",
    "1",
    "--warmup_ms",
    "0",
    "--min_time_ms",
    "1",
    "--retries",
    "0",
]


@pytest.fixture(scope="module")
def artifact() -> Artifact:
    spec = InvertedResidual(16, 16, 3, 1, 3, 8, 8)
    arts, failures = export_all([ExportItem.for_op(spec)], "xnnpack", cache=ArtifactCache())
    assert not failures
    return next(iter(arts.values()))


def _runner(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chamlab.agent.runner", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_runner_measures_and_writes_a_result(artifact: Artifact, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = _runner("--model_path", artifact.pte_path, "--cpu_threads", "1", "--result_path", out, *FAST)
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert r["n_samples"] == len(r["samples_ms"]) >= 7
    assert all(s > 0 for s in r["samples_ms"])
    assert r["p50_ms"] == pytest.approx(percentile(r["samples_ms"], 50))
    assert r["threads"] == 1
    assert r["runtime_version"] == metadata.version("executorch")
    assert r["unstable"] == bool(r["unstable_reasons"])
    assert len(r["attempts"]) == 1 and r["etdump_path"] is None
    assert not list(tmp_path.glob("*.tmp.*"))


def test_etdump_pass_gives_a_per_op_breakdown(artifact: Artifact, tmp_path: Path) -> None:
    etd = tmp_path / "op.etdp"
    res = _runner("--model_path", artifact.pte_path, "--etdump_path", etd, "--etdump_executions", "4", *FAST)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["etdump_path"] == str(etd)
    parsed = etdump.parse(etd, artifact.etrecord_path)
    assert len(parsed["execute_ms"]) == 4
    names = [e["event"] for e in parsed["events"]]
    assert any("Convolution" in n for n in names) and any("GEMM" in n for n in names)
    assert all(e["delegated"] for e in parsed["events"])


def test_runner_failures_are_exit_codes_with_messages(tmp_path: Path) -> None:
    res = _runner("--model_path", tmp_path / "missing.pte")
    assert res.returncode == 1 and "does not exist" in res.stderr
    garbage = tmp_path / "garbage.pte"
    garbage.write_bytes(b"not a program")
    res = _runner("--model_path", garbage, *FAST)
    assert res.returncode == 1 and "runner:" in res.stderr
    res = _runner("--model_path", garbage, "--no_such_flag")
    assert res.returncode == 2
