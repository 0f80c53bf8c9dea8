"""The ``ssh`` transport: a Linux box reached with paramiko (commands on a channel, files over SFTP).

devices.toml keys (besides the common ones): ``host``, ``port`` (22), ``user``, ``identity_file``,
``known_hosts`` (default ``~/.ssh/known_hosts``), ``python`` (the target's python for the shim
runner), ``workdir`` (default ``~/.cache/chamlab/runs`` on the target), ``connect_timeout_s``.

``~/.ssh/config`` is honoured for HostName, User, Port and IdentityFile (keys set in devices.toml
win); ProxyJump and ProxyCommand are refused. Host keys are always verified against
``known_hosts``: an unknown or changed key is refused with its fingerprint and the command that
trusts it (``chamlab devices trust NAME``, see :func:`trust_host_key`). Every command is one argv
list quoted with :func:`shlex.join`; nothing from devices.toml or the command line is ever pasted
into a shell string unquoted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import posixpath
import shlex
import socket
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from chamlab.core.errors import ConfigError, TransportError
from chamlab.core.files import atomic_path, atomic_write_text

from .base import TRANSPORTS, DeviceConfig, RunResult, Transport

if TYPE_CHECKING:
    import paramiko

_CHUNK = 1 << 15
DEFAULT_WORKDIR = ".cache/chamlab/runs"  # relative to the login's home on the target


@TRANSPORTS.register("ssh")
class SshConfig(DeviceConfig):
    """A machine reached over ssh (see the module docstring for the keys)."""

    transport: Literal["ssh"] = "ssh"
    host: str = Field(description="host name or address (or a Host alias of ~/.ssh/config)")
    port: int | None = Field(None, ge=1, le=65535, description="default: ~/.ssh/config, else 22")
    user: str = Field("", description="login name (default: ~/.ssh/config, else the local user)")
    identity_file: str = Field("", description="private key file (default: ~/.ssh/config, else ssh-agent)")
    known_hosts: str = Field("", description="known_hosts file (default ~/.ssh/known_hosts)")
    connect_timeout_s: float = Field(10.0, gt=0)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v or v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError("must be a host name or address (no spaces, not starting with '-')")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        if v and not v.startswith("/"):
            raise ValueError("must be an absolute path on the target (unset: ~/.cache/chamlab/runs)")
        return v

    def known_hosts_path(self) -> Path:
        return Path(os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts"))

    def resolved(self) -> dict[str, Any]:
        """hostname, port, user and identity file after ``~/.ssh/config`` (devices.toml wins)."""
        import paramiko

        found: dict[str, Any] = {}
        cfg_path = Path(os.path.expanduser("~/.ssh/config"))
        if cfg_path.is_file():
            try:
                found = dict(paramiko.SSHConfig.from_path(str(cfg_path)).lookup(self.host))
            except Exception as exc:  # paramiko raises several types for a malformed file
                raise ConfigError(f"{cfg_path}: cannot be parsed for host {self.host!r}: {exc}") from exc
            for key in ("proxyjump", "proxycommand"):
                if key in found:
                    raise ConfigError(
                        f"device {self.name}: {cfg_path} sets {key} for {self.host!r}, which chamlab "
                        "does not support",
                        hint="give the target's reachable address as `host` in devices.toml, or run "
                        "chamlab on the jump host",
                    )
        idents = found.get("identityfile") or []
        return {
            "hostname": found.get("hostname", self.host),
            "port": self.port or int(found.get("port", 22)),
            "user": self.user or found.get("user") or _local_user(),
            "identity_file": os.path.expanduser(self.identity_file or (idents[0] if idents else "")),
        }

    def open(self) -> Transport:
        return SshTransport(self)


def _local_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "root"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form: ``SHA256:<base64 without padding>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


def fetch_host_key(cfg: SshConfig) -> tuple[str, paramiko.PKey]:
    """The server's host key (no authentication, nothing trusted); returns (known_hosts name, key)."""
    import paramiko

    r = cfg.resolved()
    try:
        sock = socket.create_connection((r["hostname"], r["port"]), timeout=cfg.connect_timeout_s)
    except OSError as exc:
        raise _connect_error(cfg, r, exc) from exc
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=cfg.connect_timeout_s)
        key = t.get_remote_server_key()
    except (paramiko.SSHException, OSError) as exc:
        raise TransportError(
            f"{cfg.name}: ssh handshake with {r['hostname']}:{r['port']} failed: {exc}"
        ) from exc
    finally:
        t.close()
    return known_hosts_name(r["hostname"], r["port"]), key


def trust_host_key(cfg: SshConfig, name: str, key: paramiko.PKey) -> Path:
    """Write ``key`` for ``name`` into the device's known_hosts (atomically), replacing older keys of
    that name; returns the file."""
    path = cfg.known_hosts_path()
    lines = path.read_text().splitlines() if path.is_file() else []
    kept = [ln for ln in lines if not _line_names(ln, name)]
    kept.append(f"{name} {key.get_name()} {key.get_base64()}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_text(path, "\n".join(kept) + "\n")
    return path


def _line_names(line: str, name: str) -> bool:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return False
    hosts = fields[1] if fields[0].startswith("@") and len(fields) > 1 else fields[0]
    return name in hosts.split(",")


class _Deadline:
    def __init__(self, target: str, what: str, timeout_s: float) -> None:
        self.target, self.what, self.timeout_s = target, what, timeout_s
        self.end = time.monotonic() + timeout_s

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TransportError(f"{self.target}: {self.what} did not finish within {self.timeout_s:.0f} s")
        return left


class SshTransport:
    """Connects on first use and again after :meth:`close` or a dropped link."""

    shares_host_cpu = False

    def __init__(self, cfg: SshConfig) -> None:
        self.cfg = cfg
        self.target = cfg.name
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None

    # -- connection ----------------------------------------------------------------------------------
    def _connect(self) -> paramiko.SSHClient:
        import paramiko

        if self._client is not None:
            t = self._client.get_transport()
            if t is not None and t.is_active():
                return self._client
            self.close()
        cfg = self.cfg
        r = cfg.resolved()
        name = known_hosts_name(r["hostname"], r["port"])
        client = paramiko.SSHClient()
        kh = cfg.known_hosts_path()
        if kh.is_file():
            try:
                client.load_host_keys(str(kh))
            except (OSError, paramiko.SSHException) as exc:
                raise ConfigError(f"device {cfg.name}: cannot read known_hosts {kh}: {exc}") from exc
        client.set_missing_host_key_policy(_RefuseUnknown(cfg.name, name, kh))
        try:
            client.connect(
                r["hostname"],
                port=r["port"],
                username=r["user"],
                key_filename=r["identity_file"] or None,
                look_for_keys=not r["identity_file"],
                allow_agent=not r["identity_file"],
                timeout=cfg.connect_timeout_s,
                banner_timeout=cfg.connect_timeout_s,
                auth_timeout=cfg.connect_timeout_s,
            )
        except TransportError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise TransportError(
                f"{cfg.name}: the host key of {name} CHANGED: it now offers {exc.key.get_name()} "
                f"{fingerprint(exc.key)}, {kh} has {fingerprint(exc.expected_key)}; refusing to connect",
                hint=f"if the target was really reinstalled, run `chamlab devices trust {cfg.name}`",
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TransportError(
                f"{cfg.name}: ssh login as {r['user']!r} on {name} was refused: {exc}",
                hint="check `user` and `identity_file` in devices.toml (or ~/.ssh/config)",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise _connect_error(cfg, r, exc) from None
        self._client = client
        return client

    def _channel_timeout(self) -> float:
        return self.cfg.connect_timeout_s

    def _sftp_client(self, deadline: _Deadline) -> paramiko.SFTPClient:
        if self._sftp is None or self._sftp.sock.closed:
            client = self._connect()
            try:
                self._sftp = client.open_sftp()
            except Exception as exc:
                raise TransportError(f"{self.target}: cannot open SFTP: {exc}") from None
        self._sftp.get_channel().settimeout(min(deadline.left(), 30.0))
        return self._sftp

    def home(self) -> str:
        if self._home is None:
            sftp = self._sftp_client(_Deadline(self.target, "finding the home directory", 30))
            self._home = sftp.normalize(".")
        return self._home

    def default_workdir(self) -> str:
        return posixpath.join(self.home(), DEFAULT_WORKDIR)

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- files ------------------------------------------------------------------------------------------
    def _mkdirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        cur = "/" if path.startswith("/") else ""
        for p in parts:
            cur = posixpath.join(cur, p) if cur else p
            try:
                st = sftp.stat(cur)
                if not stat.S_ISDIR(st.st_mode or 0):
                    raise TransportError(f"{self.target}: {cur} exists and is not a directory")
            except FileNotFoundError:
                sftp.mkdir(cur)

    def _put(self, sftp: paramiko.SFTPClient, src: Path, dest: str, deadline: _Deadline) -> None:
        with open(src, "rb") as fin, sftp.open(dest, "wb") as fout:
            fout.set_pipelined(True)
            while chunk := fin.read(_CHUNK):
                fout.write(chunk)
                deadline.left()
        sftp.chmod(dest, os.stat(src).st_mode & 0o777)

    def push(self, local: Path, remote: str, *, timeout_s: float) -> None:
        deadline = _Deadline(self.target, f"pushing {local} to {remote}", timeout_s)
        src = Path(local)
        try:
            sftp = self._sftp_client(deadline)
            if src.is_dir():
                for folder, _, files in os.walk(src):
                    rel = Path(folder).relative_to(src).as_posix()
                    dest = remote if rel == "." else posixpath.join(remote, rel)
                    self._mkdirs(sftp, dest)
                    for name in files:
                        self._put(sftp, Path(folder) / name, posixpath.join(dest, name), deadline)
            else:
                self._mkdirs(sftp, posixpath.dirname(remote))
                self._put(sftp, src, remote, deadline)
        except TransportError:
            raise
        except (OSError, EOFError, Exception) as exc:
            self.close()
            raise TransportError(f"{self.target}: cannot push {local} to {remote}: {exc!r}") from None

    def pull(self, remote: str, local: Path, *, timeout_s: float) -> None:
        deadline = _Deadline(self.target, f"pulling {remote}", timeout_s)
        try:
            sftp = self._sftp_client(deadline)
            with sftp.open(remote, "rb") as fin, atomic_path(Path(local)) as tmp, open(tmp, "wb") as fout:
                fin.prefetch()
                while chunk := fin.read(_CHUNK):
                    fout.write(chunk)
                    deadline.left()
        except TransportError:
            raise
        except FileNotFoundError:
            raise TransportError(f"{self.target}: cannot pull {remote}: no such file") from None
        except (OSError, EOFError, Exception) as exc:
            self.close()
            raise TransportError(f"{self.target}: cannot pull {remote}: {exc!r}") from None

    # -- commands -----------------------------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float,
        on_line: Callable[[str], None] | None = None,
        hold_stdin: bool = False,
    ) -> RunResult:
        command = shlex.join(argv)
        what = f"{shlex.join(argv[:3])} ..." if len(argv) > 3 else command
        deadline = _Deadline(self.target, what, timeout_s)
        client = self._connect()
        transport = client.get_transport()
        if transport is None:
            raise TransportError(f"{self.target}: the ssh connection is gone")
        try:
            chan = transport.open_session(timeout=min(deadline.left(), self.cfg.connect_timeout_s))
            chan.set_combine_stderr(True)
            chan.exec_command(command)
            if not hold_stdin:
                chan.shutdown_write()
        except Exception as exc:
            self.close()
            raise TransportError(f"{self.target}: cannot start {what}: {exc!r}") from None
        out: list[str] = []
        pending = b""
        try:
            chan.settimeout(0.5)
            while True:
                try:
                    data = chan.recv(_CHUNK)
                except TimeoutError:
                    deadline.left()
                    if not transport.is_active():
                        break
                    continue
                if not data:
                    break
                pending += data
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    out.append(line + "\n")
                    if on_line:
                        on_line(line)
            if pending:
                out.append(pending.decode("utf-8", "replace"))
            while not chan.exit_status_ready():  # EOF came first; the exit status follows
                if not transport.is_active() or chan.closed:
                    break
                deadline.left()
                time.sleep(0.01)
            if not chan.exit_status_ready():
                self.close()
                raise TransportError(
                    f"{self.target}: the ssh connection dropped while running {what}",
                    hint="re-run the same command to resume; finished ops are kept",
                )
            rc = chan.recv_exit_status()
            if rc == -1 and not transport.is_active():  # paramiko's "closed without a status"
                self.close()
                raise TransportError(
                    f"{self.target}: the ssh connection dropped while running {what}",
                    hint="re-run the same command to resume; finished ops are kept",
                )
        except TransportError:
            chan.close()  # closes the command's stdin: the driver ends itself and its runner
            raise
        except (OSError, EOFError) as exc:
            self.close()
            raise TransportError(
                f"{self.target}: the ssh connection dropped while running {what}: {exc!r}"
            ) from None
        finally:
            chan.close()
        return RunResult(rc, "".join(out))


def _connect_error(cfg: SshConfig, r: Mapping[str, Any], exc: BaseException) -> TransportError:
    """The failure of an ssh connection in our words: refused, unreachable, no answer in time, or a
    login that had no way to authenticate (paramiko says ``No authentication methods available``
    when it has no key, agent or password to offer; that is no timeout)."""
    import paramiko

    where = f"{r['hostname']} port {r['port']}"
    check = "check `host` and `port` in devices.toml (or ~/.ssh/config), and that sshd runs there"
    if isinstance(exc, paramiko.SSHException) and "authentication" in str(exc).lower():
        return TransportError(
            f"{cfg.name}: ssh login as {r['user']!r} on {where} failed: no key to authenticate with ({exc})",
            hint="set `identity_file` (and `user`) in devices.toml or ~/.ssh/config, or load the key "
            "into ssh-agent",
        )
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        causes = list(exc.errors.values())
        if causes and all(isinstance(c, ConnectionRefusedError) for c in causes):
            return TransportError(
                f"{cfg.name}: cannot connect to {where}: connection refused (nothing listens there)",
                hint=check,
            )
        why = "; ".join(sorted({c.strerror or str(c) for c in causes})) or "unreachable"
        return TransportError(f"{cfg.name}: cannot connect to {where}: {why}", hint=check)
    if isinstance(exc, TimeoutError):
        return TransportError(
            f"{cfg.name}: cannot connect to {where}: no answer within {cfg.connect_timeout_s:.0f} s",
            hint=check + " (or raise connect_timeout_s)",
        )
    if isinstance(exc, OSError):
        return TransportError(f"{cfg.name}: cannot connect to {where}: {exc.strerror or exc}", hint=check)
    return TransportError(f"{cfg.name}: ssh connection to {where} failed: {exc or type(exc).__name__}")


class _RefuseUnknown:
    """paramiko's missing-host-key policy: refuse, naming the fingerprint and the trust command."""

    def __init__(self, device: str, name: str, known_hosts: Path) -> None:
        self.device, self.name, self.known_hosts = device, name, known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        raise TransportError(
            f"{self.device}: the host key of {self.name} ({key.get_name()} {fingerprint(key)}) is not in "
            f"{self.known_hosts}; refusing to connect",
            hint=f"check the fingerprint, then run `chamlab devices trust {self.device}`",
        )
