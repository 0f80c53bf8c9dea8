"""Filesystem helpers shared by every package: the cache root, output checks and atomic writes.

Every output chamlab writes goes through :func:`atomic_path`: a temporary file in the same directory,
renamed over the target only when it is complete, so readers never see a half-written file and a
failed write leaves the previous file intact. An OS error while writing (disk full, I/O error) becomes
a one-line :class:`~chamlab.core.errors.WriteError` naming the path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputPathError, WriteError


def cache_root() -> Path:
    """Where exported artifacts, local run directories and device locks live.

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
    if not parent.is_dir():
        raise OutputPathError(f"{what} path {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} path {path}: directory {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} path {path} exists and is not writable")


def ensure_dir(path: Path, *, what: str = "output directory") -> Path:
    """Create ``path`` (and parents) or raise :class:`OutputPathError` naming it (a file in the way,
    a read-only parent). Returns ``path``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputPathError(f"{what} {path} cannot be created: a file of that name exists") from None
    except OSError as exc:
        raise OutputPathError(f"{what} {path} cannot be created: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path} is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. An ``OSError``
    raised inside the block (or by the rename) becomes a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
