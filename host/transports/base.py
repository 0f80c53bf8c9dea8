"""The one small protocol every transport implements (local now; ssh and adb beside it later).

Remote paths are POSIX strings on the target. Every call has a deadline; a call that fails raises
:class:`~chamlab.operators.errors.TransportError` naming the target and what was attempted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class RunResult:
    rc: int
    output: str  # stdout and stderr, interleaved as the target produced them


class Transport(Protocol):
    """Move files to and from a target and run argv lists on it."""

    target: str

    def push(self, local: Path, remote: str, *, timeout_s: float) -> None:
        """Copy a file or a directory tree to ``remote`` (parents are created)."""

    def pull(self, remote: str, local: Path, *, timeout_s: float) -> None:
        """Copy one remote file to ``local`` (written atomically)."""

    def run(
        self, argv: Sequence[str], *, timeout_s: float, on_line: Callable[[str], None] | None = None
    ) -> RunResult:
        """Run ``argv`` (a list, never a shell string) on the target; stream lines to ``on_line``."""

    def default_workdir(self) -> str:
        """Where run directories go on the target when devices.toml sets no ``workdir``."""

    def close(self) -> None: ...
