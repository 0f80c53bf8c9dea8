"""The ``local`` transport: the target is this machine; runs go to a local directory.

It runs exactly the same driver contract as the remote transports (push into a run directory, run
``sh driver.sh``, pull ``results.jsonl``), so everything above it is tested for real on this machine.
Every call honours its deadline: copies check it between chunks, commands are killed (their whole
process group) when it passes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from chamlab.core.errors import TransportError
from chamlab.core.files import atomic_path, cache_root

from .base import TRANSPORTS, DeviceConfig, RunResult, Transport

_CHUNK = 1 << 20


@TRANSPORTS.register("local")
class LocalConfig(DeviceConfig):
    """This machine. ``python`` defaults to the interpreter running chamlab; ``workdir`` to
    ``<cache>/runs/<name>``."""

    transport: Literal["local"] = "local"

    def runner_python(self) -> str:
        return self.python or sys.executable  # the target IS the host

    def open(self) -> Transport:
        return LocalTransport(self.name)


class _Deadline:
    def __init__(self, target: str, what: str, timeout_s: float) -> None:
        self.target, self.what, self.timeout_s = target, what, timeout_s
        self.end = time.monotonic() + timeout_s

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise TransportError(f"{self.target}: {self.what} did not finish within {self.timeout_s:.0f} s")


def _copy_file(src: Path, dst: Path, deadline: _Deadline) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            deadline.check()
    shutil.copymode(src, dst)


class LocalTransport:
    shares_host_cpu = True

    def __init__(self, target: str) -> None:
        self.target = target

    def default_workdir(self) -> str:
        return str(cache_root() / "runs" / self.target)

    def push(self, local: Path, remote: str, *, timeout_s: float) -> None:
        deadline = _Deadline(self.target, f"copying {local} to {remote}", timeout_s)
        src, dest = Path(local), Path(remote)
        try:
            if src.is_dir():
                for folder, _, files in os.walk(src):
                    rel = Path(folder).relative_to(src)
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                    for name in files:
                        _copy_file(Path(folder) / name, dest / rel / name, deadline)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                _copy_file(src, dest, deadline)
        except OSError as exc:
            raise TransportError(f"{self.target}: cannot copy {local} to {remote}: {exc}") from exc

    def pull(self, remote: str, local: Path, *, timeout_s: float) -> None:
        deadline = _Deadline(self.target, f"pulling {remote}", timeout_s)
        try:
            src = open(remote, "rb")  # noqa: SIM115  (closed below; a missing file is the target's fault)
        except OSError as exc:
            raise TransportError(f"{self.target}: cannot pull {remote}: {exc.strerror}") from exc
        with src, atomic_path(Path(local)) as tmp, open(tmp, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
                deadline.check()

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float,
        on_line: Callable[[str], None] | None = None,
        hold_stdin: bool = False,
    ) -> RunResult:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if hold_stdin else subprocess.DEVNULL,
                text=True,
                bufsize=1,
                start_new_session=True,  # Ctrl-C reaches only us: we end the child ourselves
            )
        except OSError as exc:
            raise TransportError(f"{self.target}: cannot start {argv[0]}: {exc.strerror}") from exc
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if on_line:
                    on_line(line.rstrip("\n"))
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # the driver's cue to end itself and its runner
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            if proc.poll() is None:
                kill()
                proc.wait()
        if timed_out.is_set():
            raise TransportError(
                f"{self.target}: {' '.join(argv[:3])} ... did not finish within {timeout_s:.0f} s"
            )
        return RunResult(rc, "".join(lines))

    def close(self) -> None:
        pass
