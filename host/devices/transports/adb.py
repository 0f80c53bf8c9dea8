"""The ``adb`` transport: an Android device (or anything speaking adbd) through an adb server.

devices.toml keys (besides the common ones): ``serial`` (as ``adb devices`` lists it), ``adb_server``
(``HOST:PORT``, default ``127.0.0.1:5037``), ``workdir`` (default ``/data/local/tmp/chamlab``),
``call_timeout_s`` (the deadline of each short device call: state, mkdir, one file).

Commands run through ``shell,v2`` (exit code, end of input) with one argv list quoted by
:func:`shlex.join`; files move with adb's sync protocol (adbutils). A device that is unauthorized,
offline or absent is a distinct error saying what to do. Every device call runs under its own
deadline in a worker thread: a hung device otherwise blocks adbutils for its 600 s socket default, and
sync calls forever. A serial of the form ``host:port`` (a device reached over TCP) is re-connected
(``adb connect``) when the server has lost it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shlex
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, field_validator

from chamlab.core.errors import TransportError
from chamlab.core.files import atomic_path

from .base import TRANSPORTS, DeviceConfig, RunResult, Transport

if TYPE_CHECKING:
    import adbutils

DEFAULT_SERVER = "127.0.0.1:5037"
DEFAULT_WORKDIR = "/data/local/tmp/chamlab"
_TCP_SERIAL = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
T = TypeVar("T")


class DeviceUnauthorizedError(TransportError):
    """The device has not accepted this host's adb key."""


class DeviceOfflineError(TransportError):
    """The adb server knows the device but cannot talk to it."""


class DeviceAbsentError(TransportError):
    """The adb server does not list the device."""


class AdbServerError(TransportError):
    """No adb server answers at the configured address."""


@TRANSPORTS.register("adb")
class AdbConfig(DeviceConfig):
    """A device behind an adb server (see the module docstring for the keys)."""

    transport: Literal["adb"] = "adb"
    serial: str = Field(description="the device's serial as `adb devices` lists it")
    adb_server: str = Field(DEFAULT_SERVER, description="HOST:PORT of the adb server")
    call_timeout_s: float = Field(30.0, gt=0)

    @field_validator("serial")
    @classmethod
    def _serial(cls, v: str) -> str:
        if not v or not v.isprintable() or v.strip() != v:
            raise ValueError("must be the serial `adb devices` lists (printable, no surrounding spaces)")
        return v

    @field_validator("adb_server")
    @classmethod
    def _server(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:5037")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        if v and not v.startswith("/"):
            raise ValueError("must be an absolute path on the device (unset: /data/local/tmp/chamlab)")
        return v

    def server_address(self) -> tuple[str, int]:
        host, _, port = self.adb_server.rpartition(":")
        return host, int(port)

    def open(self) -> Transport:
        return AdbTransport(self)


class AdbTransport:
    """Talks to one device through the adb server; every call reconnects as needed."""

    shares_host_cpu = False

    def __init__(self, cfg: AdbConfig) -> None:
        self.cfg = cfg
        self.target = cfg.name
        self._checked = False

    # -- deadlines and the device -----------------------------------------------------------------------
    def _deadline_call(self, what: str, timeout_s: float, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a worker thread and give up after ``timeout_s`` (a hung device). What an
        abandoned call returns later (a connection, once the device answers) is closed by its thread."""
        box: dict[str, Any] = {}
        abandoned = threading.Event()
        lock = threading.Lock()

        def work() -> None:
            try:
                value = fn()
            except BaseException as exc:  # handed to the caller below
                box["error"] = exc
                return
            with lock:
                if not abandoned.is_set():
                    box["value"] = value
                    return
            close = getattr(value, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()

        t = threading.Thread(target=work, daemon=True, name=f"adb {what}")
        t.start()
        t.join(timeout_s)
        with lock:
            if t.is_alive():
                abandoned.set()
        if abandoned.is_set():
            self._checked = False
            raise TransportError(
                f"{self.target}: {what} got no answer from {self.cfg.serial} within {timeout_s:.0f} s "
                "(the device or its link hangs)",
                hint="replug or reboot the device (`adb reconnect`), then re-run the same command to resume",
            )
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return,unused-ignore]

    def _client(self) -> adbutils.AdbClient:
        import adbutils

        host, port = self.cfg.server_address()
        try:  # adbutils would start a server on the DEFAULT port itself: check ours is there first
            socket.create_connection((host, port), timeout=min(self.cfg.call_timeout_s, 5)).close()
        except OSError:
            raise AdbServerError(
                f"{self.target}: no adb server answers at {self.cfg.adb_server}",
                hint=f"start it with `adb -P {port} start-server` (or fix adb_server in devices.toml)",
            ) from None
        return adbutils.AdbClient(host, port, socket_timeout=self.cfg.call_timeout_s)

    def state(self) -> str:
        """The device's state as the server lists it: device, offline, unauthorized, ... or absent."""
        client = self._client()

        def listed() -> str:
            for info in client.list():
                if info.serial == self.cfg.serial:
                    return str(info.state)
            return "absent"

        state = self._deadline_call("listing devices", self.cfg.call_timeout_s, listed)
        if state in ("absent", "offline") and _TCP_SERIAL.match(self.cfg.serial):
            # a device reached over TCP: ask the server to (re)connect, as `adb connect` does
            def reconnect() -> str:
                if state == "offline":
                    client.disconnect(self.cfg.serial)
                client.connect(self.cfg.serial, timeout=self.cfg.call_timeout_s)
                for _ in range(50):
                    st = listed()
                    if st == "device":
                        break
                    time.sleep(0.05)
                return st

            with contextlib.suppress(Exception):
                state = self._deadline_call("adb connect", self.cfg.call_timeout_s, reconnect)
        return state

    def _device(self) -> adbutils.AdbDevice:
        client = self._client()
        if not self._checked:
            state = self.state()
            serial, server = self.cfg.serial, self.cfg.adb_server
            if state in ("unauthorized", "authorizing"):
                raise DeviceUnauthorizedError(
                    f"{self.target}: device {serial} has not authorized this computer",
                    hint="unlock the phone and accept the 'Allow USB debugging?' prompt, then re-run",
                )
            if state == "offline":
                raise DeviceOfflineError(
                    f"{self.target}: device {serial} is offline on the adb server at {server}",
                    hint="replug the cable or run `adb reconnect`; then re-run the same command",
                )
            if state == "absent":
                raise DeviceAbsentError(
                    f"{self.target}: no device {serial} on the adb server at {server}",
                    hint="check `adb devices` (cable, USB debugging, the serial in devices.toml)",
                )
            if state != "device":
                raise DeviceOfflineError(f"{self.target}: device {serial} is in state {state!r}, not ready")
            self._checked = True
        return client.device(self.cfg.serial)

    def _adb_error(self, what: str, exc: BaseException) -> TransportError:
        self._checked = False  # check the device's state again before the next call
        return TransportError(f"{self.target}: {what} failed: {exc}")

    def default_workdir(self) -> str:
        return DEFAULT_WORKDIR

    def close(self) -> None:
        self._checked = False

    # -- files ----------------------------------------------------------------------------------------------
    def push(self, local: Path, remote: str, *, timeout_s: float) -> None:
        import adbutils

        end = time.monotonic() + timeout_s
        src = Path(local)
        files: list[tuple[Path, str]] = []
        dirs: list[str] = []
        if src.is_dir():
            for folder, _, names in os.walk(src):
                rel = Path(folder).relative_to(src).as_posix()
                dest = remote if rel == "." else posixpath.join(remote, rel)
                dirs.append(dest)
                files += [(Path(folder) / n, posixpath.join(dest, n)) for n in sorted(names)]
        else:
            dirs.append(posixpath.dirname(remote))
            files.append((src, remote))
        res = self.run(["mkdir", "-p", *dirs], timeout_s=min(timeout_s, self.cfg.call_timeout_s))
        if res.rc != 0:
            raise TransportError(f"{self.target}: cannot create {dirs[0]}: {res.output.strip()[-300:]}")
        dev = self._device()
        for path, dest in files:
            left = end - time.monotonic()
            if left <= 0:
                raise TransportError(
                    f"{self.target}: pushing {local} did not finish within {timeout_s:.0f} s"
                )
            mode = path.stat().st_mode & 0o777

            def put(path: Path = path, dest: str = dest, mode: int = mode) -> None:
                dev.sync.push(str(path), dest, mode=mode)

            try:
                self._deadline_call(
                    f"pushing {path.name} to {dest}", min(left, self.cfg.call_timeout_s * 4), put
                )
            except (adbutils.AdbError, OSError, EOFError) as exc:
                raise self._adb_error(f"pushing {path} to {dest}", exc) from None

    def pull(self, remote: str, local: Path, *, timeout_s: float) -> None:
        import adbutils

        dev = self._device()
        with atomic_path(Path(local)) as tmp:

            def get() -> int:
                size = 0
                with open(tmp, "wb") as fh:
                    for chunk in dev.sync.iter_content(remote):
                        fh.write(chunk)
                        size += len(chunk)
                return size

            try:
                self._deadline_call(f"pulling {remote}", timeout_s, get)
            except adbutils.AdbError as exc:
                if "No such file" in str(exc) or "cannot read" in str(exc):
                    raise TransportError(f"{self.target}: cannot pull {remote}: {exc}") from None
                raise self._adb_error(f"pulling {remote}", exc) from None
            except (OSError, EOFError) as exc:
                raise self._adb_error(f"pulling {remote}", exc) from None

    # -- commands -----------------------------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float,
        on_line: Callable[[str], None] | None = None,
        hold_stdin: bool = False,
    ) -> RunResult:
        import adbutils

        command = shlex.join(argv)
        what = f"{shlex.join(argv[:3])} ..." if len(argv) > 3 else command
        end = time.monotonic() + timeout_s
        dev = self._device()

        def start() -> adbutils.AdbConnection:
            c = dev.open_transport(timeout=self.cfg.call_timeout_s)
            c.send_command("shell,v2,raw:" + command)
            c.check_okay()
            return c

        try:
            conn = self._deadline_call(f"starting {what}", min(timeout_s, self.cfg.call_timeout_s), start)
        except (adbutils.AdbError, OSError, EOFError) as exc:
            raise self._adb_error(f"starting {what}", exc) from None
        sock = conn.conn
        out: list[str] = []
        pending = b""
        buf = b""
        rc: int | None = None
        try:
            if not hold_stdin:
                sock.sendall(struct.pack("<BI", 4, 0))  # close-stdin: the command sees end of input
            sock.settimeout(0.5)
            while rc is None:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    if time.monotonic() > end:
                        raise TransportError(
                            f"{self.target}: {what} did not finish within {timeout_s:.0f} s"
                        ) from None
                    continue
                if not data:
                    break
                buf += data
                while len(buf) >= 5:
                    fid, n = struct.unpack("<BI", buf[:5])
                    if len(buf) < 5 + n:
                        break
                    payload, buf = buf[5 : 5 + n], buf[5 + n :]
                    if fid in (1, 2):
                        pending += payload
                        *lines, pending = pending.split(b"\n")
                        for raw in lines:
                            line = raw.decode("utf-8", "replace")
                            out.append(line + "\n")
                            if on_line:
                                on_line(line)
                    elif fid == 3:
                        rc = payload[0] if payload else 255
        except OSError as exc:
            self._checked = False
            raise TransportError(
                f"{self.target}: the link to {self.cfg.serial} dropped while running {what}: {exc}"
            ) from None
        finally:
            conn.close()  # closes the stream: the driver's standard input ends and it stops itself
        if pending:
            out.append(pending.decode("utf-8", "replace"))
        if rc is None:
            self._checked = False
            raise TransportError(
                f"{self.target}: the link to {self.cfg.serial} dropped while running {what} "
                "(no exit status came back)",
                hint="re-run the same command to resume; finished ops are kept",
            )
        return RunResult(rc, "".join(out))
