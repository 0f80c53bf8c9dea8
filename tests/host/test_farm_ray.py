"""``chamlab farm run --executor ray`` on real Ray clusters on this machine (no local_mode: Ray
removed it). A two-node ``ray.cluster_utils.Cluster`` (started once for the module) checks the
pinning, against real emulated devices (a loopback sshd and an adb peer), and the loss of a Ray
worker mid-run; the console script checks the private one-node cluster it starts itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray  # the optional [ray] extra: the Makefile's dev install includes it
from conftest import chamlab, wait_for
from farm_devices import ARCH, FAST_MEASURE, device_table, stand_in, stand_in_farm
from peers import AdbPeer, Sshd

from chamlab.core.files import cache_root
from chamlab.core.locks import FileLock
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.workflows.farm import run_farm

pytestmark = pytest.mark.usefixtures("ray_turn_module")  # one Ray cluster at a time under `make unit`

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def test_cli_ray_executor_starts_its_own_cluster(tmp_path: Path) -> None:
    """Runs before the two-node cluster exists (module order): no cluster to connect to by accident."""
    devices, _ = stand_in_farm(tmp_path, ["solo"], sleep_s=0.01, tags={"solo": ["nightly"]})
    with devices.open("a") as fh:
        fh.write("\n" + device_table("other", tags=["elsewhere"]))
    args = ["farm", "run", "--devices", devices, "--space", "macro-cifar10", "--arch", ARCH,
            "--out", tmp_path / "farm", "--executor", "ray", "--json"]  # fmt: skip
    res = chamlab(*args, "--only", "lab9", env={"RAY_USAGE_STATS_ENABLED": "0"})
    assert res.returncode == 2 and "no device" in res.stderr  # bad input: no cluster started
    res = chamlab(*args, "--only", "nightly", env={"RAY_USAGE_STATS_ENABLED": "0"})
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert list(rep["devices"]) == ["solo"] and rep["devices"]["solo"]["status"] == "ok"
    assert rep["devices"]["solo"]["ray_node_id"] and rep["devices"]["solo"]["measured_ops"] == 7


@pytest.fixture(scope="module")
def two_nodes(ray_turn_module: None) -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"device:ray-a": 1, "device:ray-c": 1},
            "include_dashboard": False,
        },
    )
    try:
        second = cluster.add_node(num_cpus=1, resources={"lab-b-pixel": 1})
        cluster.wait_for_nodes()
        yield cluster, cluster.head_node.node_id, second.node_id
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_each_device_runs_on_the_node_that_has_it(
    tmp_path: Path, two_nodes: Any, sshd: Sshd, adb_peer: AdbPeer
) -> None:
    """ray-a is behind a loopback sshd (the head declares device:ray-a), ray-b behind an adb peer (the
    second node declares lab-b-pixel, named by ray_resource); both run stand-in runners (their own
    samples: 1 and 2 ms)."""
    cluster, head_id, second_id = two_nodes
    tables = []
    for i, (name, table) in enumerate(
        [("ray-a", sshd.devices_toml("ray-a")), ("ray-b", adb_peer.devices_toml("ray-b"))]
    ):
        script, _ = stand_in(tmp_path / "stand-ins", name, float(i + 1), 0.01)
        python = next(ln for ln in table.splitlines() if ln.startswith("python = "))
        tables.append(table.replace(python, f'python = "{script}"') + FAST_MEASURE.format(name=name))
    devices = tmp_path / "devices.toml"
    text = "\n".join(tables) + "\n" + device_table("ray-nowhere")
    devices.write_text(text.replace("[devices.ray-b]\n", '[devices.ray-b]\nray_resource = "lab-b-pixel"\n'))
    rep = run_farm(
        parse_devices_file(devices), "macro-cifar10", out=tmp_path / "farm", archs=[ARCH],
        executor="ray", address=cluster.address,
        now=dt.datetime(2026, 11, 20, 1, tzinfo=dt.UTC),
    )  # fmt: skip
    a, b, nowhere = (rep.devices[n] for n in ("ray-a", "ray-b", "ray-nowhere"))
    assert a["status"] == "ok" and a["ray_node_id"] == head_id and a["measured_ops"] == 7
    assert b["status"] == "ok" and b["ray_node_id"] == second_id and b["measured_ops"] == 7
    assert nowhere["status"] == "failed" and "declares the resource 'device:ray-nowhere'" in nowhere["error"]
    assert rep.exit_code == 1 and rep.executor == "ray"
    assert not ray.is_initialized()  # run_farm disconnected what it connected
    for name, value in (("ray-a", 1.0), ("ray-b", 2.0)):
        rows = pq.read_table(rep.run_dir / f"{name}.parquet", columns=["device", "samples_ms"]).to_pylist()
        assert len(rows) == 7 and all(r["device"] == name and set(r["samples_ms"]) == {value} for r in rows)


def _local_driver(device: str) -> int | None:
    """The pid of ``device``'s local driver (the process-group leader the local transport starts)."""
    needle = f"/runs/{device}/run-farm-".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
                pgrp = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
            except (OSError, ValueError):
                continue
            if needle in cmd and b"driver.sh" in cmd and pgrp == int(proc.name):
                return int(proc.name)
    return None


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")))


def test_a_dead_ray_worker_fails_its_device_only_and_resumes_next_run(tmp_path: Path, two_nodes: Any) -> None:
    """ray-v's Ray worker (on the second node) is SIGKILLed once its run directory holds a result
    line, while ray-a and ray-c (on the head) are still measuring: ray-v is failed, the others
    finish, the farm lock is released, and the next run resumes ray-v (only its missing ops)."""
    cluster, _, second_id = two_nodes
    devices, _ = stand_in_farm(tmp_path, ["ray-a", "ray-c", "ray-v"], sleep_s=0.4)
    slow = tmp_path / "stand-ins" / "ray-v-python"  # ray-v: 0.6 s per op, so the kill lands mid-run
    slow.write_text(slow.read_text().replace("time.sleep(0.4)", "time.sleep(0.6)"))
    devices.write_text(
        devices.read_text().replace("[devices.ray-v]\n", '[devices.ray-v]\nray_resource = "lab-b-pixel"\n')
    )
    reg, out = parse_devices_file(devices), tmp_path / "farm"
    calls = tmp_path / "stand-ins" / "ray-v.calls"
    killed: list[str] = []

    others_at_kill: dict[str, int] = {}

    def done_ops(device: str = "ray-v") -> set[str]:
        found = list((cache_root() / "runs" / device).glob("run-farm-*/results.jsonl"))
        lines = found[0].read_text().splitlines() if found else []
        return {json.loads(ln)["op_key"] for ln in lines if ln.endswith("}") and '"rc":0,' in ln}

    def killer() -> None:
        wait_for(lambda: done_ops() and _local_driver("ray-v"), "ray-v's 1st result line", timeout_s=120)
        driver = _local_driver("ray-v")
        assert driver is not None
        worker = _parent(driver)  # the local transport's driver is a child of the Ray worker
        killed.append(Path(f"/proc/{worker}/cmdline").read_bytes().decode(errors="replace"))
        os.kill(worker, signal.SIGKILL)
        others_at_kill.update({n: len(done_ops(n)) for n in ("ray-a", "ray-c")})

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        first = run_farm(
            reg, "macro-cifar10", out=out, archs=[ARCH], executor="ray", address=cluster.address,
            now=dt.datetime(2026, 11, 21, 1, tzinfo=dt.UTC),
        )  # fmt: skip
    finally:
        thread.join()
    assert killed and "ray" in killed[0].lower(), killed  # it was the Ray worker we killed
    assert max(others_at_kill.values()) < 7, others_at_kill  # the others were mid-run, and finished
    v = first.devices["ray-v"]
    assert v["status"] == "failed" and v["error"].startswith("Ray task failed"), v
    assert v["lut"] is None and v["measured_ops"] == 0
    assert all(
        first.devices[n]["status"] == "ok" and first.devices[n]["measured_ops"] == 7
        for n in ("ray-a", "ray-c")
    )
    assert first.exit_code == 1
    summary = json.loads((first.run_dir / "summary.json").read_text())
    assert summary["devices"]["ray-v"]["status"] == "failed" and summary["exit_code"] == 1
    lock = FileLock(out / ".farm.lock", what="test")
    lock.acquire(wait=False)  # released, though a worker died under the run
    lock.release()

    # the orphaned driver ends when the dead worker's end of its stdin closes; then ray-v resumes
    wait_for(lambda: _local_driver("ray-v") is None, "ray-v's driver to end", timeout_s=30)
    done, before = done_ops(), len(calls.read_text().splitlines())
    second = run_farm(
        reg, "macro-cifar10", out=out, archs=[ARCH], executor="ray", address=cluster.address,
        now=dt.datetime(2026, 11, 21, 2, tzinfo=dt.UTC),
    )  # fmt: skip
    assert second.exit_code == 0, second.devices["ray-v"]
    again = second.devices["ray-v"]
    assert again["measured_ops"] == 7 and again["ray_node_id"] == second_id
    assert len(calls.read_text().splitlines()) - before == 7 - len(done) < 7  # only the missing ones
    rows = pq.read_table(second.run_dir / "ray-v.parquet", columns=["device", "samples_ms"]).to_pylist()
    assert len(rows) == 7 and all(r["device"] == "ray-v" and set(r["samples_ms"]) == {3.0} for r in rows)
