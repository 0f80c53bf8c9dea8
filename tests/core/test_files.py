from __future__ import annotations

import stat
from pathlib import Path

import pytest

from chamlab.core.errors import OutputPathError
from chamlab.core.files import atomic_path, atomic_write_text, cache_root, check_writable


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    assert stat.S_IMODE(target.stat().st_mode) & 0o044  # readable by others, not mkstemp's 0600


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_check_writable_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match=r"does not exist.*mkdir -p"):
        check_writable(tmp_path / "missing" / "x.parquet")
    with pytest.raises(OutputPathError, match="is a directory"):
        check_writable(tmp_path)
    check_writable(tmp_path / "new.parquet")


def test_cache_root_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHAMLAB_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("CHAMLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "chamlab"
