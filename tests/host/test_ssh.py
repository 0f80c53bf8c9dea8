"""The ssh transport against a real OpenSSH server on 127.0.0.1 (tests/peers.py: per-test host and user
keys, its own sshd_config, foreground, killed at teardown). The shim runner on the "remote" side is
this machine's .venv python, so the real ExecuTorch runner measures there."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import chamlab
from peers import Sshd, fast

from chamlab.core.errors import ConfigError, TransportError
from chamlab.host import api
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.devices.session import RunInterrupted
from chamlab.host.devices.transports.ssh import SshConfig

CHAMLAB = [str(Path(sys.executable).parent / "chamlab")]


def _devices(tmp_path: Path, sshd: Sshd, name: str = "box", **extra: str) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text(fast(sshd.devices_toml(name, **extra), name))
    return path


def _profile(devices: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    res = chamlab(
        "profile", "--target", "box", "--space", "macro-cifar10", "--arch", "all-identity",
        "--out", out, "--devices", devices, *extra,
    )  # fmt: skip
    return res.returncode, res.stdout, res.stderr


def test_profile_over_ssh_writes_the_local_lut_schema(
    tmp_path: Path, sshd: Sshd, profiled_lut: tuple[Path, dict]
) -> None:
    devices = _devices(tmp_path, sshd)
    rc, stdout, stderr = _profile(devices, tmp_path / "box.parquet", "--json")
    assert rc == 0, stderr
    report = json.loads(stdout)
    assert report["measured_ops"] == report["planned_ops"] > 1 and not report["failed_ops"]
    remote_t, local_t = pq.read_table(tmp_path / "box.parquet"), pq.read_table(profiled_lut[0])
    assert remote_t.schema.remove_metadata() == local_t.schema.remove_metadata()
    assert set(remote_t.column("device").to_pylist()) == {"box"}
    assert set(remote_t.column("op_key").to_pylist()) <= set(local_t.column("op_key").to_pylist())
    # the run directory is gone once the LUT holds the rows; a re-run measures nothing
    assert not any((sshd.dir / "remote-runs").glob("run-*"))
    rc, stdout, _ = _profile(devices, tmp_path / "box.parquet", "--json")
    assert rc == 0 and json.loads(stdout)["measured_ops"] == 0


def test_unknown_and_changed_host_keys_are_refused_until_trusted(tmp_path: Path, sshd: Sshd) -> None:
    devices = _devices(tmp_path, sshd)
    sshd.known_hosts.write_text("")
    res = chamlab("devices", "--check", "--devices", devices, "--timeout", "20")
    assert res.returncode == 1
    assert "SHA256:" in res.stderr and "chamlab devices trust box" in res.stderr
    # the suggested command names the devices file in use (before: without it, it found no `box`)
    assert f"`chamlab devices trust box --devices {devices}`" in res.stderr
    assert "not in" in res.stderr

    trusted = chamlab("devices", "trust", "box", "--yes", "--devices", devices)
    assert trusted.returncode == 0, trusted.stderr
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in sshd.known_hosts.read_text()
    ok = chamlab("devices", "--check", "--json", "--devices", devices)
    assert ok.returncode == 0, ok.stderr
    check = json.loads(ok.stdout)["devices"][0]["check"]
    assert check["reachable"] and check["cores"] >= 1 and check["runtime_version"].startswith("executorch")

    sshd.regenerate_host_key()  # the target was "reinstalled"
    changed = chamlab("devices", "--check", "--devices", devices)
    assert changed.returncode == 1 and "CHANGED" in changed.stderr and "devices trust box" in changed.stderr
    refused = subprocess.run(
        [*CHAMLAB, "devices", "trust", "box", "--devices", str(devices)],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "SHA256:" in refused.stderr
    assert chamlab("devices", "trust", "box", "-y", "--devices", devices).returncode == 0
    assert chamlab("devices", "--check", "--devices", devices).returncode == 0
    assert len(sshd.known_hosts.read_text().splitlines()) == 1  # the old key was replaced


def test_ssh_config_is_honoured_and_proxyjump_refused(
    tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (home / ".ssh" / "config").write_text(
        f"Host bench-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n"
        f"  IdentityFile {sshd.user_key}\n\nHost jumpy\n  HostName 127.0.0.1\n  ProxyJump bench-box\n"
    )
    cfg = SshConfig(name="b", host="bench-box", known_hosts=str(sshd.known_hosts))
    transport = cfg.open()
    res = transport.run(["printf", "%s", "it works"], timeout_s=20)
    assert (res.rc, res.output) == (0, "it works")
    transport.close()  # reusable after close: it reconnects
    assert transport.run(["sh", "-c", "exit 3"], timeout_s=20).rc == 3
    transport.close()
    with pytest.raises(ConfigError, match="proxyjump"):
        SshConfig(name="j", host="jumpy", known_hosts=str(sshd.known_hosts)).open().run(["true"], timeout_s=5)


def test_command_deadline_and_unreachable_host(tmp_path: Path, sshd: Sshd) -> None:
    cfg = parse_devices_file(_devices(tmp_path, sshd)).get("box")
    transport = cfg.open()
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="did not finish within 1 s"):
        transport.run(["sleep", "30"], timeout_s=1)
    assert time.monotonic() - t0 < 5
    assert transport.run(["true"], timeout_s=10).rc == 0  # the same transport goes on
    transport.close()
    sshd.stop()
    with pytest.raises(TransportError, match="cannot connect"):
        cfg.open().run(["true"], timeout_s=5)


class _KillAt:
    """Progress that kills the sshd session children when the n-th op result arrives."""

    def __init__(self, sshd: Sshd, n: int) -> None:
        self.sshd, self.n, self.seen, self.killed = sshd, n, 0, 0

    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, label: str = "") -> None:
        if phase == "measure":
            self.seen += 1
            if self.seen == self.n:
                self.killed = self.sshd.kill_sessions()

    def note(self, text: str) -> None:
        pass


def test_dropped_ssh_link_mid_run_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path, sshd: Sshd
) -> None:
    devices = _devices(tmp_path, sshd)
    spec = api.resolve_run(parse_devices_file(devices).get("box"))
    sp = api.SPACES.get("macro-cifar10")
    arch = [sp.resolve("all-identity")]
    out = tmp_path / "lut.parquet"
    killer = _KillAt(sshd, 2)
    with pytest.raises(RunInterrupted) as info:
        api.profile(spec, sp, arch, out=out, progress=killer)
    assert killer.killed >= 1
    err = info.value
    assert err.done >= 2 and err.missing >= 1 and err.done + err.failed + err.missing == err.total
    assert "re-run the same command" in (err.hint or "")
    # the driver on the target ends when its connection closes: it releases the device lock
    lock = sshd.dir / "remote-runs" / ".chamlab-device.lock"
    end = time.monotonic() + 20
    while lock.exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert not lock.exists()
    report = api.profile(spec, sp, arch, out=out)
    assert report.ok and report.already == 0
    assert len(report.measured) == report.planned  # the resumed run skipped the ops done before
    keys = pq.read_table(out).column("op_key").to_pylist()
    assert sorted(keys) == sorted(set(keys)) and len(keys) == report.planned


def test_connection_failures_are_said_in_our_words(
    tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a refused port leaked paramiko's "[Errno None] Unable to connect to port N on
    127.0.0.1", and a login with no key to offer was "cannot connect ... within 3 s: No
    authentication methods available", as if it had timed out."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    text = _devices(tmp_path, sshd).read_text().replace(f"port = {sshd.port}", f"port = {free}")
    (tmp_path / "refused.toml").write_text(text)
    with pytest.raises(TransportError) as info:
        parse_devices_file(tmp_path / "refused.toml").get("box").open().run(["true"], timeout_s=5)
    msg = info.value.message
    assert f"cannot connect to 127.0.0.1 port {free}: connection refused" in msg and "Errno" not in msg
    assert "port" in (info.value.hint or "")
    # no identity_file, no key in ~/.ssh, no agent: an authentication failure, with the fix
    text = _devices(tmp_path, sshd).read_text().replace(f'identity_file = "{sshd.user_key}"', "")
    (tmp_path / "nokey.toml").write_text(text)
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(TransportError) as info:
        parse_devices_file(tmp_path / "nokey.toml").get("box").open().run(["true"], timeout_s=5)
    msg = info.value.message
    assert "ssh login as 'root'" in msg and "no key to authenticate with" in msg and "within" not in msg
    assert "identity_file" in (info.value.hint or "")
