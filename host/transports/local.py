"""The ``local`` transport: the target is this machine; runs go to a local directory.

It runs exactly the same driver contract as the remote transports (push into a run directory, run
``sh driver.sh``, pull ``results.jsonl``), so everything above it is tested for real on this machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from chamlab.operators.errors import TransportError
from chamlab.operators.fsutil import atomic_path, cache_root

from .base import RunResult


class LocalTransport:
    def __init__(self, target: str) -> None:
        self.target = target

    def default_workdir(self) -> str:
        return str(cache_root() / "runs" / self.target)

    def push(self, local: Path, remote: str, *, timeout_s: float) -> None:
        dest = Path(remote)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if Path(local).is_dir():
                shutil.copytree(local, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(local, dest)
        except OSError as exc:
            raise TransportError(f"{self.target}: cannot copy {local} to {remote}: {exc}") from exc

    def pull(self, remote: str, local: Path, *, timeout_s: float) -> None:
        try:
            with atomic_path(Path(local)) as tmp:
                shutil.copyfile(remote, tmp)
        except OSError as exc:
            raise TransportError(f"{self.target}: cannot pull {remote}: {exc}") from exc

    def run(
        self, argv: Sequence[str], *, timeout_s: float, on_line: Callable[[str], None] | None = None
    ) -> RunResult:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                start_new_session=True,
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
