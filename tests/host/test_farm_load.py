"""Load and faults: a farm of 8 devices over REAL loopback transports, one killed mid-run.

Four devices sit behind their own OpenSSH servers on 127.0.0.1 and four behind device-side adb peers
(tests/adb_peer.py) reached through the real adb server (tests/peers.py). Everything is real (the farm,
paramiko / adbutils, staging, the POSIX driver and its device lock, the agent's batch loop, Parquet)
except the measurement: each device's ``python`` is a stand-in runner (tests/host/farm_devices.py)
whose samples all equal that device's own value, so a row that crossed devices would show. The victim
is killed the way a phone or a host dies (its sshd or adb peer SIGKILLed) when its run directory holds
its 2nd result line: an observed event, not a sleep.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import wait_for
from farm_devices import ARCH, FAST_MEASURE, stand_in
from peers import AdbPeer, AdbServer, Sshd

from chamlab.agent import probe
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.workflows.farm import run_farm

DAY = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.UTC)
N_OPS = 7  # ARCH's ops, with the invocation probe


class Farm:
    """4 sshd devices (ssh-0..3) and 4 adb peers (adb-0..3); device i's samples are i+1 ms."""

    def __init__(self, folder: Path, server: AdbServer, victim: str) -> None:
        self.folder = folder
        self.sshds: dict[str, Sshd] = {}
        self.peers: dict[str, AdbPeer] = {}
        self.workdirs: dict[str, Path] = {}
        self.values: dict[str, float] = {}
        tables = []
        try:
            for i in range(4):
                name = f"ssh-{i}"
                self.sshds[name] = Sshd(folder / name)
                tables.append((name, self.sshds[name].devices_toml(name)))
                self.workdirs[name] = self.sshds[name].dir / "remote-runs"
            for i in range(4):
                name = f"adb-{i}"
                self.peers[name] = AdbPeer(server, folder / name)
                tables.append((name, self.peers[name].devices_toml(name)))
                self.workdirs[name] = self.peers[name].sandbox / "chamlab"
        except BaseException:
            self.stop()
            raise
        text = []
        for i, (name, table) in enumerate(tables):
            self.values[name] = float(i + 1)
            # the victim's ops are slower, so the kill lands mid-run even on a loaded machine
            script, _ = stand_in(folder / "stand-ins", name, float(i + 1), 0.6 if name == victim else 0.2)
            python = next(ln for ln in table.splitlines() if ln.startswith("python = "))
            text.append(table.replace(python, f'python = "{script}"') + FAST_MEASURE.format(name=name))
        self.devices = folder / "devices.toml"
        self.devices.write_text("\n".join(text))

    def results(self, name: str) -> list[dict]:
        found = list(self.workdirs[name].glob("run-farm-*/results.jsonl"))
        if not found:
            return []
        return [json.loads(ln) for ln in found[0].read_text().splitlines() if ln.endswith("}")]

    def calls(self, name: str) -> int:
        """How many ops the device's stand-in runner has measured so far."""
        log = self.folder / "stand-ins" / f"{name}.calls"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def kill(self, name: str) -> None:
        """The device dies: its sshd (listener and sessions) or its adb peer, SIGKILLed."""
        if name in self.sshds:
            self.sshds[name].stop()
        else:
            self.peers[name].kill()

    def revive(self, name: str) -> None:
        """The device is back: the same port, host key and serial."""
        if name in self.sshds:
            self.sshds[name].start()
        else:
            self.peers[name].start()

    def stop(self) -> None:
        for sshd in self.sshds.values():
            sshd.stop()
        for peer in self.peers.values():
            peer.stop()


@pytest.fixture
def farm_of(adb_server: AdbServer, tmp_path: Path) -> Iterator[Callable[[str], Farm]]:
    made: list[Farm] = []

    def make(victim: str) -> Farm:
        made.append(Farm(tmp_path, adb_server, victim))
        return made[-1]

    try:
        yield make
    finally:
        for f in made:
            f.stop()


def _rows(path: Path) -> list[dict]:
    cols = ["device", "op_key", "samples_ms", "run_id", "device_fingerprint"]
    return pq.read_table(path, columns=cols).to_pylist()


@pytest.mark.parametrize("victim", ["adb-1", "ssh-2"])
def test_eight_loopback_devices_one_killed_mid_run_resumes_next_run(
    tmp_path: Path, farm_of: Callable[[str], Farm], victim: str
) -> None:
    farm = farm_of(victim)
    reg, out = parse_devices_file(farm.devices), tmp_path / "farm"
    before_kill: dict[str, list[float]] = {}

    def killer() -> None:
        wait_for(lambda: len(farm.results(victim)) >= 2, f"{victim}'s 2nd result line", timeout_s=120)
        farm.kill(victim)
        before_kill.update({r["op_key"]: r["result"]["samples_ms"] for r in farm.results(victim)})

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        first = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=DAY)
    finally:
        thread.join()
    summary = json.loads((out / "2026-11-22" / "summary.json").read_text())
    assert summary["exit_code"] == first.exit_code == 1
    dead = summary["devices"][victim]
    assert dead["status"] in ("failed", "partial") and dead["error"], dead
    assert "the run stopped with" in dead["error"] and "re-run the same command" in dead["error"]
    assert dead["lut"] is None  # nothing stored: the measurements wait on the target
    others = [n for n in farm.values if n != victim]
    assert all(summary["devices"][n]["status"] == "ok" for n in others), summary["devices"]
    assert all(summary["devices"][n]["measured_ops"] == N_OPS for n in others)
    assert 2 <= len(before_kill) < N_OPS

    # the driver on the dead device ended when its link dropped, releasing the device lock
    lock = farm.workdirs[victim] / ".chamlab-device.lock"
    wait_for(lambda: not lock.exists(), f"{victim}'s device lock to be released", timeout_s=30)
    done = {r["op_key"] for r in farm.results(victim) if r.get("rc") == 0}
    calls = farm.calls(victim)
    farm.revive(victim)
    second = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=DAY + dt.timedelta(minutes=5))
    assert second.exit_code == 0, second.devices[victim]
    back = second.devices[victim]
    assert back["status"] == "ok" and back["measured_ops"] == N_OPS
    assert all(second.devices[n]["measured_ops"] == 0 for n in others)  # stored last run: nothing to do
    assert farm.calls(victim) - calls == N_OPS - len(done) > 0  # only the ops missing at the kill ran
    assert not list(farm.workdirs[victim].glob("run-farm-*"))  # the run directory is gone once stored

    here = probe.fingerprint()
    keys: set[str] | None = None
    for name, value in farm.values.items():
        lut = out / "2026-11-22" / f"{name}.parquet"
        rows = _rows(lut)
        run_id = second.devices[name]["run_id"] if name == victim else first.devices[name]["run_id"]
        assert len(rows) == N_OPS and {r["device"] for r in rows} == {name}
        assert {v for r in rows for v in r["samples_ms"]} == {value}  # this device's own samples
        assert {r["run_id"] for r in rows} == {run_id} and run_id.startswith("run-farm-2026-11-22-")
        # all 8 "devices" are this machine: their fingerprints are equal, and none is missing
        assert {r["device_fingerprint"] for r in rows} == {here}
        prov = json.loads(pq.read_schema(lut).metadata[b"chamlab.provenance"])
        assert {p["device"] for p in prov} == {name} and {p["run_id"] for p in prov} == {run_id}
        keys = keys or {r["op_key"] for r in rows}
        assert {r["op_key"] for r in rows} == keys
    rows_by_key = {r["op_key"]: r for r in _rows(out / "2026-11-22" / f"{victim}.parquet")}
    for key, samples in before_kill.items():
        assert rows_by_key[key]["samples_ms"] == samples  # measured before the kill, kept, not re-run
    run_ids = {
        second.devices[n]["run_id"] if n == victim else first.devices[n]["run_id"] for n in farm.values
    }
    assert len(run_ids) == 8  # one run (and run directory) per device
