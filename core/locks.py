"""Inter-process file locks (``flock``) that say who holds them.

A :class:`FileLock` is held for as long as its file descriptor is open, so a process that dies
releases it (the kernel does); nothing is ever stale. The holder writes a one-line description of
itself (pid, host, what it is doing) into the lock file, which a waiting process shows its user.

Used for the device lock (one measuring run per device at a time) and for read-modify-write of
shared files such as LUTs (re-read and merge under the lock, then write atomically).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import DeviceBusyError, OutputPathError


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing, never deleted).

    ``acquire(wait=False)`` raises :class:`DeviceBusyError` at once when another process holds it;
    with ``wait=True`` it polls every ``poll_s`` and calls ``on_wait(holder)`` once, where ``holder``
    is what the holding process wrote. ``clock``/``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        path: Path,
        *,
        what: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None
        self._clock = clock
        self._sleep = sleep

    def holder(self) -> str:
        """What the current holder wrote (empty if nobody wrote anything)."""
        try:
            return self.path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def acquire(
        self,
        *,
        wait: bool = True,
        description: str = "",
        on_wait: Callable[[str], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 0.2,
    ) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.what} lock {self.path} is already held by this object")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputPathError(f"cannot create the {self.what} lock {self.path}: {exc.strerror}") from exc
        start = self._clock()
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = self.holder() or "another process"
                    if not wait:
                        raise DeviceBusyError(
                            f"{self.what} is busy: held by {holder}",
                            hint="wait for it to finish, or re-run without --no-wait to queue behind it",
                        ) from None
                    if timeout_s is not None and self._clock() - start > timeout_s:
                        raise DeviceBusyError(
                            f"{self.what} is still busy after {timeout_s:.0f} s: held by {holder}"
                        ) from None
                    if on_wait and not told:
                        on_wait(holder)
                        told = True
                    self._sleep(poll_s)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        text = description or f"pid {os.getpid()} on {socket.gethostname()}"
        with contextlib.suppress(OSError):  # who holds it is for messages only: a full disk must not matter
            os.ftruncate(fd, 0)
            os.pwrite(fd, (text + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @contextlib.contextmanager
    def hold(self, **kwargs: object) -> Iterator[FileLock]:
        self.acquire(**kwargs)  # type: ignore[arg-type]
        try:
            yield self
        finally:
            self.release()


def sibling_lock(path: Path, *, what: str) -> FileLock:
    """The lock that guards read-modify-write of ``path``: ``.<name>.lock`` in the same directory."""
    path = Path(path)
    return FileLock(path.with_name(f".{path.name}.lock"), what=what)
