"""Real remote peers on this machine for the transport tests and benchmarks.

* :class:`Sshd`: the Debian OpenSSH server in the foreground (``-D -e``) on a free 127.0.0.1 port, with
  its own sshd_config, host key, user key and authorized_keys in a temporary folder (no system config
  touched; ``/run/sshd`` is created if missing, which sshd requires), its log in that folder.
* :class:`AdbServer`: the real ``adb`` server on its own port (``adb -P PORT``), killed at the end.
* :class:`AdbPeer`: ``tests/adb_peer.py`` (the stand-in for a phone's adbd) in its own process,
  reached with ``adb connect 127.0.0.1:PORT``; it can be killed, frozen (SIGSTOP) and restarted on
  the same port, so the device keeps its serial.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}: {path.read_text(errors='replace')}")
        time.sleep(0.02)
    raise RuntimeError(f"{text!r} never appeared in {path}")


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            out.append(k)
            todo.append(k)
    return out


class Sshd:
    def __init__(self, folder: Path) -> None:
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = folder / "host_ed25519"
        self.user_key = folder / "id_ed25519"
        self.known_hosts = folder / "known_hosts"
        self.log = folder / "sshd.log"
        for key in (self.host_key, self.user_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                check=True,
                capture_output=True,
            )
        (folder / "authorized_keys").write_text(self.user_key.with_suffix(".pub").read_text())
        self.trust()
        self.config = folder / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {folder}/sshd.pid\n"
            f"AuthorizedKeysFile {folder}/authorized_keys\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "Subsystem sftp internal-sftp\nLogLevel VERBOSE\nMaxStartups 50\nMaxSessions 50\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    def trust(self) -> None:
        pub = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")

    def start(self) -> None:
        self.log.write_text("")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        _wait_for(self.log, "Server listening", self.proc)

    def regenerate_host_key(self) -> None:
        """A reinstalled target: a new host key (sshd restarted); known_hosts still has the old one."""
        self.stop()
        for p in (self.host_key, self.host_key.with_suffix(".pub")):
            p.unlink()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)],
            check=True,
            capture_output=True,
        )
        self.start()

    def devices_toml(self, name: str = "box", **extra: str) -> str:
        lines = [
            f"[devices.{name}]",
            'transport = "ssh"',
            'host = "127.0.0.1"',
            f"port = {self.port}",
            'user = "root"',
            f'identity_file = "{self.user_key}"',
            f'known_hosts = "{self.known_hosts}"',
            f'python = "{sys.executable}"',
            f'workdir = "{self.dir / "remote-runs"}"',
            *(f"{k} = {v}" for k, v in extra.items()),
        ]
        return "\n".join(lines) + "\n"

    def kill_sessions(self) -> int:
        """SIGKILL every sshd process serving a connection (the listener stays): links drop."""
        assert self.proc is not None
        n = 0
        for pid in _descendants(self.proc.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd"):
                    os.kill(pid, signal.SIGKILL)
                    n += 1
            except OSError:
                pass
        return n

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill_sessions()
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class AdbServer:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = folder / "adb-server.log"
        self.address = f"127.0.0.1:{self.port}"
        # adb keeps its keys and a per-port file in ~/.android: give this server its own folder
        self.env = {**os.environ, "ANDROID_USER_HOME": str(folder), "ANDROID_SDK_HOME": str(folder)}
        with open(self.log, "ab") as log:
            # the server in the foreground (`nodaemon`): it is ours to kill, and it holds no inherited pipe
            self.proc = subprocess.Popen(
                ["adb", "-P", str(self.port), "nodaemon", "server"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
            )
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"adb server exited: {self.log.read_text()}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the adb server never listened")

    def adb(self, *args: str) -> str:
        res = subprocess.run(
            ["adb", "-P", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=self.env,
        )
        return res.stdout + res.stderr

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class AdbPeer:
    def __init__(self, server: AdbServer, folder: Path, *, unauthorized: bool = False) -> None:
        self.server = server
        self.unauthorized = unauthorized
        folder.mkdir(parents=True, exist_ok=True)
        self.sandbox = folder / "data-local-tmp"
        self.log = folder / "adb-peer.log"
        self.port = free_port()
        self.serial = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.kill()  # never leave a peer behind
            raise

    def start(self) -> None:
        self.log.write_text("")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(TESTS / "adb_peer.py"),
                    "--sandbox",
                    str(self.sandbox),
                    "--port",
                    str(self.port),
                    *(["--unauthorized"] if self.unauthorized else []),
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        _wait_for(self.log, "listening", self.proc)
        self.server.adb("disconnect", self.serial)  # a restarted peer: forget the dead link at once
        out = self.server.adb("connect", self.serial)
        if "connected" not in out and not self.unauthorized:
            raise RuntimeError(f"adb connect {self.serial}: {out}")
        end = time.monotonic() + 10
        wants = ("unauthorized", "authorizing") if self.unauthorized else ("device",)
        while not any(f"{self.serial}\t{w}" in self.server.adb("devices") for w in wants):
            if time.monotonic() > end:
                raise RuntimeError(f"{self.serial} never became ready: {self.server.adb('devices')}")
            time.sleep(0.05)

    def devices_toml(self, name: str = "peer", **extra: str) -> str:
        lines = [
            f"[devices.{name}]",
            'transport = "adb"',
            f'serial = "{self.serial}"',
            f'adb_server = "{self.server.address}"',
            f'python = "{sys.executable}"',
            f'workdir = "{self.sandbox / "chamlab"}"',
            *(f"{k} = {v}" for k, v in extra.items()),
        ]
        return "\n".join(lines) + "\n"

    def kill(self) -> None:
        """SIGKILL the peer (a phone that died or a cable pulled): its link to the server drops."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                os.kill(self.proc.pid, signal.SIGCONT)
        self.kill()
        self.server.adb("disconnect", self.serial)


FAST_MEASURE = """
[devices.{name}.measure]
num_executions = 5
warmup_runs = 1
warmup_ms = 0
min_time_ms = 10
retries = 0
"""


def fast(toml: str, name: str) -> str:
    """A peer's devices.toml table plus the fast measurement policy of the tests."""
    return toml + FAST_MEASURE.format(name=name)
