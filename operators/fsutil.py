"""Filesystem helpers shared by every layer: atomic writes and the cache directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputPathError


def cache_root() -> Path:
    """Where exported artifacts and local run directories live.

    ``$CHAMLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/chamlab``, else ``~/.cache/chamlab``.
    """
    env = os.environ.get("CHAMLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "chamlab"


def check_writable(path: Path, *, what: str = "output") -> None:
    """Raise :class:`OutputPathError` unless ``path`` could be created or replaced.

    Checked *before* long work starts, so a bad ``--out`` fails in a second, not after an hour.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} path {path} is a directory; give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise OutputPathError(
            f"{what} path {path}: directory {parent} does not exist", hint=f"create it: mkdir -p {parent}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} path {path}: directory {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} path {path} exists and is not writable")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched, so readers
    never see a half-written file.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
