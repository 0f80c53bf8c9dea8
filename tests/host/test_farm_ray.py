"""``chamlab farm run --executor ray`` on real Ray clusters on this machine (no local_mode: Ray
removed it). A two-node ``ray.cluster_utils.Cluster`` whose nodes declare one device each checks the
pinning; the console script checks the private one-node cluster it starts itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray  # the optional [ray] extra: the Makefile's dev install includes it
from conftest import chamlab
from farm_devices import ARCH, device_table, stand_in_farm

from chamlab.host.config import parse_devices_file
from chamlab.host.farm import run_farm

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
def two_nodes() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"device:ray-a": 1}, "include_dashboard": False},
    )
    try:
        second = cluster.add_node(num_cpus=1, resources={"lab-b-pixel": 1})
        cluster.wait_for_nodes()
        yield cluster, cluster.head_node.node_id, second.node_id
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_each_device_runs_on_the_node_that_has_it(tmp_path: Path, two_nodes: Any) -> None:
    cluster, head_id, second_id = two_nodes
    devices, _ = stand_in_farm(tmp_path, ["ray-a", "ray-b", "ray-nowhere"], sleep_s=0.01)
    text = devices.read_text().replace("[devices.ray-b]\n", '[devices.ray-b]\nray_resource = "lab-b-pixel"\n')
    devices.write_text(text)
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
