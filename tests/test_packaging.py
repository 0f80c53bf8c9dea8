"""The distribution: one `chamlab` namespace, every subpackage and data file in the wheel, and the
tests running against a non-editable install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("core", "host", "agent", "operators", "chamnet")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    for name in (*FOLDERS, "pyproject.toml", "README.md", "LICENSE"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    [whl] = out.glob("chamlab-*.whl")
    return zipfile.ZipFile(whl)


def _shipped_sources() -> set[str]:
    files = set()
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files.add(f"chamlab/{folder}/{path.relative_to(REPO / folder).as_posix()}")
    return files


def test_wheel_holds_every_module_and_data_file(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    missing = _shipped_sources() - names
    assert missing == set()
    for data in (
        "chamlab/chamnet/data/macro_cifar10.parquet",
        "chamlab/chamnet/data/NOTICE",
        "chamlab/chamnet/data/LICENSE-nas-bench-macro",
        "chamlab/chamnet/data/chamnet_reference_archs.json",
        "chamlab/agent/driver.sh",
        "chamlab/host/devices/transports/local.py",
        "chamlab/host/cli/profile.py",
        "chamlab/core/store.py",
    ):
        assert data in names


def test_nothing_outside_the_namespace(wheel: zipfile.ZipFile) -> None:
    tops = {n.split("/")[0] for n in wheel.namelist()}
    assert tops == {"chamlab", next(t for t in tops if t.endswith(".dist-info"))}
    assert "chamlab/__init__.py" not in wheel.namelist()  # an implicit namespace package


def test_console_script(wheel: zipfile.ZipFile) -> None:
    [ep] = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    assert "chamlab = chamlab.host.cli:main" in wheel.read(ep).decode()


def test_tests_run_against_the_installed_package() -> None:
    """`make test` installs the wheel contents (non-editable): the tests must exercise that copy."""
    import sysconfig

    import chamlab.host

    installed = Path(chamlab.host.__file__).resolve()
    assert installed.is_relative_to(Path(sysconfig.get_paths()["purelib"]).resolve()), installed
    assert not installed.is_relative_to(REPO / "host"), f"imported from the source tree: {installed}"
