"""`chamlab measure --pte PATH`: an existing ExecuTorch program measured as it is, on this machine, over
ssh (a real sshd on loopback) and over adb (the real adb server and the peer of tests/peers.py); its
input shape read from the program; missing and corrupt files as clear errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import chamlab
from peers import AdbPeer, Sshd, fast

from chamlab.chamnet.spaces import SPACES
from chamlab.core.errors import DataFileError, InputError
from chamlab.host import api
from chamlab.host.devices.config import parse_devices_file
from chamlab.operators.export import ExportItem, export_all

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory, profiled_lut: tuple[Path, dict]) -> Path:
    """The first op of macro-cifar10 (3x32x32 input), copied with its ETRecord beside it (exported for
    the session's profiled LUT already: taken from the artifact cache)."""
    space = SPACES.get("macro-cifar10")
    op = space.ops(space.resolve("all-identity"))[0]
    arts, failures = export_all([ExportItem.for_op(op)], "xnnpack")
    assert not failures
    [art] = arts.values()
    folder = tmp_path_factory.mktemp("programs")
    shutil.copyfile(art.pte_path, folder / "stem.pte")
    shutil.copyfile(art.etrecord_path, folder / "stem.etrecord")
    return folder / "stem.pte"


def test_measure_a_program_locally(program: Path, fast_devices: Path) -> None:
    res = chamlab("measure", "--pte", program, "--target", "test-cpu", "--devices", fast_devices,
                  "--input-shape", "1,3,32,32", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["input_shapes"] == [list(SHAPE)] and rep["input_dtypes"] == ["float32"]
    assert rep["sha256"] == hashlib.sha256(program.read_bytes()).hexdigest()
    assert rep["measured_p50_ms"] > 0 and rep["n_samples"] >= 5 and rep["target"] == "test-cpu"
    assert rep["etrecord"] == str(program.with_suffix(".etrecord")) and rep["breakdown"] is None


def test_measure_a_program_over_ssh_and_adb(
    program: Path, tmp_path: Path, sshd: Sshd, adb_peer: AdbPeer
) -> None:
    toml = fast(sshd.devices_toml("box"), "box") + fast(adb_peer.devices_toml("peer"), "peer")
    (tmp_path / "devices.toml").write_text(toml)
    registry = parse_devices_file(tmp_path / "devices.toml")
    for name, runs in (("box", sshd.dir / "remote-runs"), ("peer", adb_peer.sandbox / "chamlab")):
        spec = api.resolve_run(registry.get(name))
        rep = api.measure_program(spec, program, input_shape=SHAPE)
        assert rep.program.input_shapes == (SHAPE,) and rep.measurement.p50_ms > 0, name
        assert rep.to_json()["transport"] == ("ssh" if name == "box" else "adb")
        assert not any(runs.glob("run-*")), name  # the run directory is removed once measured


def test_bad_programs(program: Path, tmp_path: Path, fast_devices: Path) -> None:
    spec = api.resolve_run(parse_devices_file(fast_devices).get("test-cpu"))
    with pytest.raises(InputError, match=r"program .*none\.pte does not exist"):
        api.measure_program(spec, tmp_path / "none.pte")
    (tmp_path / "text.pte").write_text("hello, I am not a program\n")
    with pytest.raises(DataFileError, match=r"text\.pte is not an ExecuTorch program"):
        api.measure_program(spec, tmp_path / "text.pte")
    (tmp_path / "cut.pte").write_bytes(program.read_bytes()[:200])
    with pytest.raises(DataFileError, match=r"cut\.pte is not a loadable ExecuTorch program"):
        api.inspect_program(tmp_path / "cut.pte")
    with pytest.raises(InputError, match=r"takes 1x3x32x32, not 1x3x64x64 \(--input-shape\)"):
        api.measure_program(spec, program, input_shape=(1, 3, 64, 64))
    res = chamlab("measure", "--pte", program, "--space", "macro-cifar10", "--devices", fast_devices,
                  env={"COLUMNS": "300"})  # fmt: skip
    assert res.returncode == 2 and "--pte measures a program as it is: --space" in res.stderr
    res = chamlab("measure", "--devices", fast_devices, env={"COLUMNS": "300"})
    assert res.returncode == 2 and "needs --space and --arch" in res.stderr
