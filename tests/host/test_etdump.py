"""ETDump parsing on the host (real ETDumps written by the runner shim)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chamlab.core.errors import MeasurementError
from chamlab.host.measurement import etdump
from chamlab.operators import ConvBNAct, InvertedResidual
from chamlab.operators.export import Artifact, ArtifactCache, ExportItem, export_all

SPECS = [ConvBNAct(8, 8, 3, 1, 8, 8), InvertedResidual(8, 8, 3, 1, 2, 8, 8)]


@pytest.fixture(scope="module")
def artifacts() -> list[Artifact]:
    arts, failures = export_all([ExportItem.for_op(s) for s in SPECS], "xnnpack", cache=ArtifactCache())
    assert not failures
    return [arts[ExportItem.for_op(s)] for s in SPECS]


def _etdump(art: Artifact, out: Path, executions: int) -> None:
    subprocess.run(
        [
            *(sys.executable, "-m", "chamlab.agent.runner", "--model_path", str(art.pte_path)),
            *("--num_executions", "3", "--warmup_runs", "0", "--warmup_ms", "0", "--min_time_ms", "0"),
            *("--retries", "0", "--etdump_path", str(out), "--etdump_executions", str(executions)),
            *("--result_path", str(out.with_suffix(".json"))),
        ],
        check=True,
        capture_output=True,
    )


def test_samples_and_events(artifacts: list[Artifact], tmp_path: Path) -> None:
    path = tmp_path / "a.etdp"
    _etdump(artifacts[1], path, 4)
    parsed = etdump.parse(path, artifacts[1].etrecord_path)
    assert len(parsed["execute_ms"]) == 4 and all(ms > 0 for ms in parsed["execute_ms"])
    names = [e["event"] for e in parsed["events"]]
    assert sum("Convolution" in n for n in names) >= 1 and any(e["delegated"] for e in parsed["events"])
    assert all(e["p50_ms"] >= 0 and isinstance(e["delegated"], bool) for e in parsed["events"])


def test_the_same_path_with_new_content_is_parsed_anew(artifacts: list[Artifact], tmp_path: Path) -> None:
    """Resumed runs reuse run directories: a path says nothing about what the file holds now."""
    path = tmp_path / "reused.etdp"
    _etdump(artifacts[0], path, 2)
    first = etdump.parse(path, artifacts[0].etrecord_path)
    other = tmp_path / "other.etdp"
    _etdump(artifacts[1], other, 5)
    shutil.copyfile(other, path)
    second = etdump.parse(path, artifacts[1].etrecord_path)
    assert len(first["execute_ms"]) == 2 and len(second["execute_ms"]) == 5


def test_garbage_is_a_measurement_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.etdp"
    bad.write_bytes(b"not an etdump")
    with pytest.raises(MeasurementError, match=f"cannot parse ETDump {bad}"):
        etdump.parse(bad, None)
