"""``scripts/system-packages.sh``: what ``make test`` runs first so that the tests find their peers and
shells."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "system-packages.sh"


def _run(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "CHAMLAB_NO_APT": "1"}
    return subprocess.run(
        ["/bin/sh", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=30
    )


def test_missing_tools_are_named_on_one_line_and_fail(tmp_path: Path) -> None:
    # a PATH that holds only `id`: every tool the tests need is missing, and installing is not allowed
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("id") or "/usr/bin/id", bin_dir / "id")
    res = _run(str(bin_dir))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for pkg in ("dash", "mksh", "busybox", "openssh-client", "adb"):
        assert f" {pkg}" in lines[0]
    assert "apt-get install -y" in lines[0]
    assert res.stdout == ""


def test_nothing_missing_is_silent() -> None:
    # `make test` ran the script before the tests, so here everything is installed
    res = _run(os.environ["PATH"], "--check")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
