"""The real shim in batch mode through DeviceSession: one process, every op, ETDumps included."""

from __future__ import annotations

from pathlib import Path

from chamlab.agent.measure import MeasurePolicy
from chamlab.host.devices.session import DeviceSession, Task
from chamlab.host.devices.transports import LocalConfig, open_transport
from chamlab.host.measurement import etdump
from chamlab.operators import ConvBNAct, PoolLinear
from chamlab.operators.export import ArtifactCache, ExportItem, export_all

FAST = MeasurePolicy(num_executions=5, warmup_runs=1, warmup_ms=0, min_time_ms=5, retries=0)


def test_one_shim_process_measures_every_op_with_etdumps(tmp_path: Path) -> None:
    specs = [ConvBNAct(8, 8, 1, 1, 4, 4), PoolLinear(64, 10, 2, 2)]
    arts, failures = export_all([ExportItem.for_op(s) for s in specs], "xnnpack", cache=ArtifactCache())
    assert not failures
    tasks = [Task(item.name, art) for item, art in arts.items()]
    device = LocalConfig(name="t", workdir=str(tmp_path / "runs"), measure=FAST)  # type: ignore[arg-type]
    session = DeviceSession(device, open_transport(device), threads=1, etdump=True)
    seen: list[tuple[str, int]] = []
    outcomes = session.run(tasks, on_op=lambda key, rc: seen.append((key, rc)))
    assert seen == [(t.key, 0) for t in tasks]
    rundir = tmp_path / "runs" / session.run_id(tasks)
    assert "BATCH=1\n" in (rundir / "driver.env").read_text()
    assert not list((rundir / "out").glob("*.json"))  # no per-op result files: the shim wrote the lines
    for o, t in zip(outcomes, tasks, strict=True):
        assert (
            o.ok
            and o.result is not None
            and o.result["model_path"] == f"artifacts/{t.artifact.pte_path.name}"
        )
        assert o.result["n_samples"] >= 5 and o.etdump is not None
        assert etdump.parse(o.etdump, t.artifact.etrecord_path)["execute_ms"]
    session.finish(tasks)
