"""DeviceSession over the local transport: the real driver, the real shim, real artifacts."""

from __future__ import annotations

import json
import posixpath
import shutil
from pathlib import Path

import pytest

from chamlab.agent.measure import MeasurePolicy
from chamlab.core.errors import InputError, TransportError
from chamlab.host.devices.session import DeviceSession, Task, cpu_mask
from chamlab.host.devices.transports import DeviceConfig, LocalConfig, LocalTransport, open_transport
from chamlab.operators import ConvBNAct, PoolLinear
from chamlab.operators.export import ArtifactCache, ExportItem, export_all

FAST = MeasurePolicy(num_executions=5, warmup_runs=1, warmup_ms=0, min_time_ms=5, retries=0)
SPECS = [ConvBNAct(8, 8, 1, 1, 4, 4), PoolLinear(64, 10, 2, 2)]


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    arts, failures = export_all([ExportItem.for_op(s) for s in SPECS], "xnnpack", cache=ArtifactCache())
    assert not failures
    return [Task(item.name, art) for item, art in arts.items()]


def _device(tmp_path: Path, **kw: object) -> DeviceConfig:
    return LocalConfig(name="t", workdir=str(tmp_path / "runs"), measure=FAST, **kw)  # type: ignore[arg-type]


def test_runs_tasks_and_cleans_up(tasks: list[Task], tmp_path: Path) -> None:
    device = _device(tmp_path)
    session = DeviceSession(device, open_transport(device), threads=1)
    seen: list[tuple[str, int]] = []
    outcomes = session.run(tasks, on_op=lambda key, rc: seen.append((key, rc)))
    assert [o.task.key for o in outcomes] == [t.key for t in tasks]
    assert all(o.ok and o.result and len(o.result["samples_ms"]) >= 5 for o in outcomes)
    assert sorted(seen) == sorted((t.key, 0) for t in tasks)
    rundir = tmp_path / "runs" / session.run_id(tasks)
    assert (rundir / "results.jsonl").is_file()  # kept until the caller has stored the results
    session.finish(tasks)
    assert not rundir.exists()
    assert not (tmp_path / "runs" / ".chamlab-device.lock").exists()  # the driver released its lock


def test_interrupted_run_resumes_where_it_stopped(tasks: list[Task], tmp_path: Path) -> None:
    """A failed op keeps the run directory; the same run again measures only what is missing."""
    device = _device(tmp_path)
    session = DeviceSession(device, open_transport(device), threads=1)
    broken = tasks[1].artifact.pte_path
    good = broken.read_bytes()
    try:
        broken.write_bytes(b"corrupted on the way")
        first = session.run(tasks)
    finally:
        broken.write_bytes(good)
    assert first[0].ok and not first[1].ok
    assert "runner exit 1" in (first[1].error or "")
    rundir = tmp_path / "runs" / session.run_id(tasks)
    assert (rundir / "results.jsonl").is_file()
    with (rundir / "results.jsonl").open("a") as fh:
        # a line cut short by power loss: it must not count as done on the target nor on the host
        fh.write('{"rc":0,"op_key":"' + tasks[1].key + '","digest":"x","log":"x","etdump":null,"result":{"sa')
    seen: list[tuple[str, int]] = []
    second = session.run(tasks, on_op=lambda key, rc: seen.append((key, rc)))
    assert all(o.ok for o in second)
    assert seen == [(tasks[0].key, -1), (tasks[1].key, 0)]  # -1: skipped, already measured
    assert second[0].result == first[0].result


def test_staged_run_directory(tasks: list[Task], tmp_path: Path) -> None:
    device = _device(tmp_path, affinity="0", python="/opt/my python/bin/python3")
    session = DeviceSession(device, LocalTransport("t"), threads=2, etdump=True)
    session.stage(tasks, tmp_path / "stage")
    stage = tmp_path / "stage"
    runner = (stage / "runner.sh").read_text()
    exe = "exec taskset 1 '/opt/my python/bin/python3' -m chamlab.agent.runner"
    assert f"{exe} --num_executions 5 --warmup_runs 1" in runner
    env = (stage / "driver.env").read_text()
    assert "THREADS=2\n" in env and "ETDUMP=1\n" in env and "RUNNER_KIND=shim\n" in env
    assert f"LOCK_DIR={tmp_path / 'runs' / '.chamlab-device.lock'}\n" in env and "WATCH_STDIN=1\n" in env
    lines = (stage / "tasks.tsv").read_text().splitlines()
    assert [ln.split("\t")[1] for ln in lines] == [t.key for t in tasks]
    assert all((stage / ln.split("\t")[2]).is_file() for ln in lines)
    assert (stage / "lib" / "chamlab" / "agent" / "runner.py").is_file()


def test_executor_runner_devices_always_take_etdumps(tmp_path: Path) -> None:
    device = _device(tmp_path, runner="/data/local/tmp/executor_runner")
    session = DeviceSession(device, LocalTransport("t"), threads=1)
    assert session.etdump and device.runner_kind == "executor_runner"
    assert "exec /data/local/tmp/executor_runner" in session._runner_script()


def test_unsafe_task_keys_are_refused(tasks: list[Task], tmp_path: Path) -> None:
    device = _device(tmp_path)
    bad = Task('op"; rm -rf /', tasks[0].artifact)
    with pytest.raises(InputError, match="cannot carry"):
        DeviceSession(device, LocalTransport("t"), threads=1).stage([bad], tmp_path / "stage")


def test_driver_that_dies_is_a_transport_error(
    tasks: list[Task], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = _device(tmp_path)
    transport = LocalTransport("t")
    session = DeviceSession(device, transport, threads=1)
    real_push = transport.push

    def push_then_break(local: Path, remote: str, *, timeout_s: float) -> None:
        real_push(local, remote, timeout_s=timeout_s)
        (Path(remote) / "driver.env").write_text("exit 9\n")

    monkeypatch.setattr(transport, "push", push_then_break)
    with pytest.raises(TransportError, match="stopped early") as info:
        session.run(tasks)
    assert "re-run" in (info.value.hint or "")


def test_local_transport_timeout_kills_the_process_group(tmp_path: Path) -> None:
    t = LocalTransport("t")
    with pytest.raises(TransportError, match="did not finish within 1 s"):
        t.run(["sh", "-c", "sleep 30 & sleep 30"], timeout_s=1)
    res = t.run(["sh", "-c", "echo a; echo b >&2; exit 4"], timeout_s=10)
    assert res.rc == 4 and res.output.split() == ["a", "b"]
    with pytest.raises(TransportError, match="cannot pull"):
        t.pull(str(tmp_path / "missing"), tmp_path / "x", timeout_s=5)


def test_cpu_mask() -> None:
    assert cpu_mask("0") == "1" and cpu_mask("0-2,5") == "27" and cpu_mask("4-7") == "f0"


def test_results_parser_keeps_success_over_later_failure(tasks: list[Task], tmp_path: Path) -> None:
    device = _device(tmp_path)
    session = DeviceSession(device, LocalTransport("t"), threads=1)
    path = tmp_path / "results.jsonl"
    ok = {
        "rc": 0,
        "op_key": tasks[0].key,
        "digest": "d",
        "log": "l",
        "etdump": None,
        "result": {"samples_ms": [1]},
    }
    path.write_text(json.dumps(ok) + "\n" + json.dumps({**ok, "rc": 3, "result": None}) + "\nnot json\n")
    [first, second] = session._parse_results(
        path, {t.key: t for t in tasks}, posixpath.join(str(tmp_path)), tmp_path
    )
    assert first.ok and first.result == {"samples_ms": [1]}
    assert not second.ok and "no result" in (second.error or "")
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


def test_fresh_run_discards_a_previous_partial_run(tasks: list[Task], tmp_path: Path) -> None:
    device = _device(tmp_path)
    session = DeviceSession(device, open_transport(device), threads=1)
    rundir = tmp_path / "runs" / session.run_id(tasks[:1])
    rundir.mkdir(parents=True)
    stale = {
        "rc": 0,
        "op_key": tasks[0].key,
        "digest": tasks[0].digest,
        "log": "x",
        "etdump": None,
        "result": {"samples_ms": [999.0]},
        "end": f"0:{tasks[0].key}",
    }
    (rundir / "results.jsonl").write_text(json.dumps(stale, separators=(",", ":")) + "\n")
    resumed = DeviceSession(device, open_transport(device), threads=1).run(tasks[:1])
    assert resumed[0].result == {"samples_ms": [999.0]}  # resume trusts what the target recorded
    fresh = session.run(tasks[:1], fresh=True)
    assert fresh[0].result is not None and fresh[0].result["samples_ms"] != [999.0]


def test_local_transport_honours_deadlines_on_copies(tmp_path: Path) -> None:
    t = LocalTransport("t")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (3 << 20))  # three chunks: the deadline is checked between them
    with pytest.raises(TransportError, match="did not finish within 0 s"):
        t.push(big, str(tmp_path / "copy.bin"), timeout_s=0)
    with pytest.raises(TransportError, match="did not finish within 0 s"):
        t.pull(str(big), tmp_path / "pulled.bin", timeout_s=0)
    assert not (tmp_path / "pulled.bin").exists()  # atomic: nothing half-written
    t.pull(str(big), tmp_path / "pulled.bin", timeout_s=60)
    assert (tmp_path / "pulled.bin").read_bytes() == big.read_bytes()


def test_remote_shim_without_python_names_the_key(tmp_path: Path) -> None:
    from chamlab.core.errors import ConfigError

    # every transport but local inherits this default: no python unless devices.toml sets one
    device = DeviceConfig(name="phone", transport="remote", workdir=str(tmp_path))
    session = DeviceSession(device, LocalTransport("phone"), threads=1)
    with pytest.raises(ConfigError, match=r'set python = "/path/to/python3" in \[devices.phone\]'):
        session.stage([], tmp_path / "stage")
