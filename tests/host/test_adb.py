"""The adb transport through the REAL adb server (its own port) to tests/adb_peer.py, which stands in
for a phone's adbd (no phone is attached to this machine). The shim runner on the "device" is this
machine's .venv python, so the real ExecuTorch runner measures there. Faults are injected on observed
events (the n-th op result), never after a sleep."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import chamlab
from peers import AdbPeer, AdbServer, fast

from chamlab.core.errors import TransportError
from chamlab.host import api
from chamlab.host.devices.check import probe
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.devices.session import DeviceSession, RunInterrupted, Task
from chamlab.host.devices.transports.adb import (
    AdbConfig,
    DeviceAbsentError,
    DeviceOfflineError,
    DeviceUnauthorizedError,
)
from chamlab.operators.export import ArtifactCache, ExportItem, export_all


def _devices(tmp_path: Path, peer: AdbPeer, name: str = "peer", **extra: str) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text(fast(peer.devices_toml(name, **extra), name))
    return path


def test_profile_by_serial_writes_the_local_lut_schema(
    tmp_path: Path, adb_peer: AdbPeer, profiled_lut: tuple[Path, dict]
) -> None:
    devices = _devices(tmp_path, adb_peer)
    out = tmp_path / "peer.parquet"
    res = chamlab(
        "profile", "--serial", adb_peer.serial, "--space", "macro-cifar10", "--arch", "all-identity",
        "--out", out, "--devices", devices, "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["measured_ops"] == report["planned_ops"] > 1 and not report["failed_ops"]
    table, local = pq.read_table(out), pq.read_table(profiled_lut[0])
    assert table.schema.remove_metadata() == local.schema.remove_metadata()
    assert set(table.column("device").to_pylist()) == {"peer"}
    assert not any((adb_peer.sandbox / "chamlab").glob("run-*"))  # removed once stored

    check = chamlab("devices", "--check", "--json", "--serial", adb_peer.serial, "--devices", devices)
    assert check.returncode == 0, check.stderr
    facts = json.loads(check.stdout)["devices"][0]["check"]
    assert facts["reachable"] and facts["model"] == "ChamlabPeer" and facts["soc"] == "PEER1"
    assert facts["runtime_version"].startswith("executorch")


def test_serial_resolution(tmp_path: Path, adb_peer: AdbPeer) -> None:
    devices = _devices(tmp_path, adb_peer)
    devices.write_text(devices.read_text() + '\n[devices.other]\ntransport = "local"\n')
    common = ("--space", "macro-cifar10", "--arch", "all-identity", "--devices", devices)
    clash = chamlab("profile", "--serial", adb_peer.serial, "--target", "other", *common)
    assert clash.returncode == 2 and "disagree" in clash.stderr
    other = chamlab("profile", "--serial", "R58M-other", "--target", "peer", *common)
    assert other.returncode == 2 and "disagree" in other.stderr
    # an unlisted device: a warning with its defaults, then an error naming the key to set
    unlisted = chamlab(
        "profile", *common, "--serial", adb_peer.serial.replace("127", "128"),
        env={"ADB_SERVER_SOCKET": f"tcp:{adb_peer.server.address}"},
    )  # fmt: skip
    assert unlisted.returncode == 2
    assert "adb-128.0.0.1-" in unlisted.stderr and f"adb_server={adb_peer.server.address}" in unlisted.stderr
    assert "python" in unlisted.stderr and "[devices.adb-128.0.0.1-" in unlisted.stderr
    listed = chamlab("devices", "--json", "--serial", "ZX1G22", "--devices", devices)
    assert listed.returncode == 0 and json.loads(listed.stdout)["devices"][0]["name"] == "adb-zx1g22"


def test_absent_offline_and_unauthorized_are_distinct(
    tmp_path: Path, adb_server: AdbServer, adb_peer: AdbPeer
) -> None:
    server = adb_server.address
    with pytest.raises(DeviceAbsentError, match="no device nope-1"):
        AdbConfig(name="a", serial="nope-1", adb_server=server).open().run(["true"], timeout_s=10)
    locked = AdbPeer(adb_server, tmp_path / "locked", unauthorized=True)
    try:
        with pytest.raises(DeviceUnauthorizedError, match="has not authorized"):
            AdbConfig(name="u", serial=locked.serial, adb_server=server).open().run(["true"], timeout_s=10)
    finally:
        locked.stop()
    cfg = AdbConfig(name="p", serial=adb_peer.serial, adb_server=server, call_timeout_s=5)
    assert cfg.open().run(["true"], timeout_s=10).rc == 0
    adb_peer.kill()  # the phone died: the server keeps it offline, or forgets it
    with pytest.raises((DeviceOfflineError, DeviceAbsentError)):
        cfg.open().run(["true"], timeout_s=10)
    adb_peer.start()  # back: the same serial works again (the transport re-connects TCP devices)
    assert cfg.open().run(["echo", "back"], timeout_s=10).output == "back\n"
    with pytest.raises(TransportError, match=r"no adb server answers at 127\.0\.0\.1:1"):
        AdbConfig(name="x", serial="s", adb_server="127.0.0.1:1").open().run(["true"], timeout_s=5)


def test_hung_device_calls_hit_their_deadline(tmp_path: Path, adb_peer: AdbPeer) -> None:
    cfg = AdbConfig(name="p", serial=adb_peer.serial, adb_server=adb_peer.server.address, call_timeout_s=2)
    transport = cfg.open()
    assert transport.run(["true"], timeout_s=5).rc == 0
    (tmp_path / "f").write_bytes(b"x" * 1000)
    adb_peer.freeze()  # SIGSTOP: the device keeps its link open and answers nothing
    try:
        for call in (
            lambda: transport.run(["true"], timeout_s=3),
            lambda: transport.push(tmp_path / "f", str(adb_peer.sandbox / "f"), timeout_s=3),
            lambda: transport.pull(str(adb_peer.sandbox / "bin" / "getprop"), tmp_path / "g", timeout_s=3),
        ):
            t0 = time.monotonic()
            with pytest.raises(TransportError):
                call()
            assert time.monotonic() - t0 < 12
        t0 = time.monotonic()
        rec = probe(cfg, timeout_s=2)  # `chamlab devices --check`: one deadline per device
        assert not rec["reachable"] and rec["error"] and time.monotonic() - t0 < 4
    finally:
        adb_peer.thaw()
    assert not (tmp_path / "g").exists()  # nothing half-written


class _KillAt:
    def __init__(self, peer: AdbPeer, n: int) -> None:
        self.peer, self.n, self.seen = peer, n, 0

    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, label: str = "") -> None:
        if phase == "measure":
            self.seen += 1
            if self.seen == self.n:
                self.peer.kill()

    def note(self, text: str) -> None:
        pass


def test_peer_killed_mid_run_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path, adb_peer: AdbPeer
) -> None:
    spec = api.resolve_run(parse_devices_file(_devices(tmp_path, adb_peer)).get("peer"))
    sp = api.SPACES.get("macro-cifar10")
    arch = [sp.resolve("all-identity")]
    out = tmp_path / "lut.parquet"
    with pytest.raises(RunInterrupted) as info:
        api.profile(spec, sp, arch, out=out, progress=_KillAt(adb_peer, 2))
    assert info.value.done >= 2 and info.value.missing >= 1
    assert not out.exists() or pq.read_table(out).num_rows == 0
    # the driver on the "device" ends when its stream closes: the device lock goes away
    lock = adb_peer.sandbox / "chamlab" / ".chamlab-device.lock"
    end = time.monotonic() + 20
    while lock.exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert not lock.exists()
    adb_peer.start()
    report = api.profile(spec, sp, arch, out=out)
    assert report.ok and len(report.measured) == report.planned
    keys = pq.read_table(out).column("op_key").to_pylist()
    assert len(keys) == len(set(keys)) == report.planned


def test_corrupt_results_file_is_remeasured_not_trusted(tmp_path: Path, adb_peer: AdbPeer) -> None:
    device = parse_devices_file(_devices(tmp_path, adb_peer)).get("peer")
    items = [ExportItem.for_op(op) for op in api.plan_ops(api.SPACES.get("macro-cifar10"), [])]
    arts, failures = export_all(items, "xnnpack", cache=ArtifactCache())
    assert not failures
    tasks = [Task(i.name, arts[i]) for i in items]
    session = DeviceSession(device, device.open(), threads=1)
    first = session.run(tasks)
    assert all(o.ok for o in first)
    results = Path(session.remote_dir(tasks)) / "results.jsonl"
    line = results.read_bytes().splitlines()[0]
    results.write_bytes(line[: len(line) // 2] + b"\n\xff\xfe\x00garbage\n")  # cut short, then junk
    seen: list[int] = []
    again = session.run(tasks, on_op=lambda key, rc: seen.append(rc))
    assert seen == [0] and all(o.ok for o in again)  # measured again, since its line never counts
    session.finish(tasks)
