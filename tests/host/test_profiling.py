"""``profile`` as a library call and as concurrent, interrupted, failing processes (all real).

Processes are interrupted on observed events (a result line written, an artifact exported), never
after a sleep, and each test that starts processes gives them a private cache so that leftovers
(orphaned drivers, runners, export workers) can be found by their environment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import SLOW_DEVICES, chamlab, processes_with, profile_macro, spawn_chamlab, wait_for

from chamlab.chamnet.spaces import SPACES
from chamlab.core.errors import DeviceBusyError, InputError, OutputPathError, WriteError
from chamlab.host import api
from chamlab.operators import INVOCATION_PROBE

MACRO = SPACES.get("macro-cifar10")


def _ops(*archs: str) -> set[str]:
    return {op.key for op in api.plan_ops(MACRO, [MACRO.resolve(a) for a in archs])}


def test_plan_and_default_archs() -> None:
    ops = api.plan_ops(MACRO, [MACRO.resolve("all-identity")])
    assert ops[0].key <= ops[-1].key and INVOCATION_PROBE in ops and len(ops) == 7
    archs, which = api.default_archs(MACRO)
    assert len(archs) == 6561 and which == "all 6,561 archs of macro-cifar10"
    mbv2 = SPACES.get("chamnet-mbv2")
    archs, which = api.default_archs(mbv2)
    assert archs == list(mbv2.references.values()) and "reference archs" in which


def test_profile_library_call_and_resume(tmp_path: Path, fast_devices: Path) -> None:
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    out = tmp_path / "lut.parquet"
    arch = [MACRO.resolve("all-identity")]
    first = api.profile(spec, MACRO, arch, out=out)
    assert first.ok and first.planned == 7 and len(first.measured) == 7 and first.already == 0
    assert first.run_id and first.to_json()["run_id"] == first.run_id
    workdir = Path(os.environ["CHAMLAB_CACHE"]) / "runs" / "test-cpu"
    assert not (workdir / first.run_id).exists()  # removed once the rows were stored
    again = api.profile(spec, MACRO, arch, out=out)
    assert again.planned == again.already == 7 and again.measured == []
    lut = api.Lut.read(out)
    assert lut.combinations() == [spec.measurement_set]
    assert lut.provenance[-1]["run_id"] == first.run_id and lut.provenance[-1]["rows"] == 7


def test_bad_run_options_are_input_errors(fast_devices: Path) -> None:
    device = api.load_registry(fast_devices).get("test-cpu")
    with pytest.raises(InputError, match="unknown backend 'xnnpak'; choose one of xnnpack, portable"):
        api.resolve_run(device, backend="xnnpak")
    with pytest.raises(InputError, match="threads must be an integer from 1 to 256"):
        api.resolve_run(device, threads=0)


def test_two_processes_never_lose_rows_nor_share_a_run(tmp_path: Path, fast_devices: Path) -> None:
    """Different ops into one LUT at once: the union is kept; the same ops at once: no duplicates,
    no spurious failure, and the second run says it waited."""
    out = tmp_path / "lut.parquet"
    go = tmp_path / "go"

    def behind_barrier(*arch: str) -> subprocess.Popen[str]:
        cmd = ["chamlab", "profile", "--target", "test-cpu", "--space", "macro-cifar10", "--out", str(out)]
        cmd += ["--devices", str(fast_devices), *(x for a in arch for x in ("--arch", a))]
        script = 'while [ ! -f "$1" ]; do sleep 0.01; done; shift; exec "$@"'
        return subprocess.Popen(
            ["sh", "-c", script, "barrier", str(go), *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        )

    procs = [behind_barrier("all-identity"), behind_barrier("all-k3t3")]
    go.touch()
    results = [(p.wait(600), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    assert sum("is busy" in r[2] and "waiting for it" in r[2] for r in results) == 1
    df = pd.read_parquet(out)
    assert set(df["op_key"]) == _ops("all-identity", "all-k3t3") and df["op_key"].is_unique

    go.unlink()
    same = [behind_barrier("all-k5t6"), behind_barrier("all-k5t6")]
    go.touch()
    results = [(p.wait(600), *p.communicate()) for p in same]
    assert [r[0] for r in results] == [0, 0], results
    assert any("nothing to measure" in r[2] for r in results)  # the second found the work done
    df = pd.read_parquet(out)
    assert set(df["op_key"]) == _ops("all-identity", "all-k3t3", "all-k5t6") and df["op_key"].is_unique


def test_no_wait_fails_at_once_when_the_device_is_busy(tmp_path: Path, fast_devices: Path) -> None:
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    with api.claim_device(spec, what="a test holding the device"):
        res = profile_macro(tmp_path / "lut.parquet", fast_devices, "--arch", "all-identity", "--no-wait")
        assert res.returncode == 2 and "error: device test-cpu is busy: held by pid" in res.stderr
        assert "a test holding the device" in res.stderr
        with pytest.raises(DeviceBusyError):
            api.profile(
                spec, MACRO, [MACRO.resolve("all-identity")], out=tmp_path / "x.parquet", no_wait=True
            )
    assert not (tmp_path / "lut.parquet").exists() and not (tmp_path / "x.parquet").exists()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 64 KiB tmpfs (root only: CI runs as root), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_failed_lut_write_keeps_every_measurement(tiny_tmpfs: Path, fast_devices: Path) -> None:
    filler = tiny_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk
        while True:
            os.write(fd, b"x" * 1024)
    except OSError:
        pass
    finally:
        os.close(fd)
    out = tiny_tmpfs / "lut.parquet"
    res = profile_macro(out, fast_devices, "--arch", "all-identity")
    assert res.returncode == 1, res.stderr
    [line] = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert line.startswith(f"error: cannot write {out}: ") and "No space left on device" in line
    assert "Traceback" not in res.stderr and "measurement(s) are kept in" in res.stderr
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == [".lut.parquet.lock", "filler"]
    filler.unlink()
    started = dt.datetime.now(dt.UTC)
    res = profile_macro(out, fast_devices, "--arch", "all-identity", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["measured_ops"] == 7
    measured_at = pd.read_parquet(out)["measured_at"]
    assert (measured_at < pd.Timestamp(started)).all()  # pulled from the kept run, not measured again


def test_write_error_from_the_library_names_the_kept_run(
    tmp_path: Path, fast_devices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = api.resolve_run(api.load_registry(fast_devices).get("test-cpu"))
    from chamlab.host.luts import lut as lut_mod

    def no_space(self: object, path: Path) -> None:
        raise WriteError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(lut_mod.Lut, "write", no_space)
    with pytest.raises(WriteError) as info:
        api.profile(spec, MACRO, [MACRO.resolve("all-identity")], out=tmp_path / "lut.parquet")
    assert "re-run the same command" in (info.value.hint or "")
    run_dir = (info.value.hint or "").split(" are kept in ")[1].split(" on ")[0]
    assert (Path(run_dir) / "results.jsonl").is_file()


def _private_env(tmp_path: Path) -> dict[str, str]:
    return {"CHAMLAB_CACHE": str(tmp_path / "private-cache")}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_an_interrupted_host_leaves_no_orphans_and_resumes(tmp_path: Path, sig: signal.Signals) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text(SLOW_DEVICES)
    env = _private_env(tmp_path)
    out = tmp_path / "lut.parquet"
    args = ["profile", "-t", "test-cpu", "-s", "macro-cifar10", "-a", "all-identity", "-o", out]
    args += ["--devices", devices]
    proc = spawn_chamlab(*args, env=env)
    runs = Path(env["CHAMLAB_CACHE"]) / "runs" / "test-cpu"
    wait_for(lambda: any(p.stat().st_size for p in runs.glob("run-*/results.jsonl")), "the first result line")
    proc.send_signal(sig)
    rc = proc.wait(60)
    assert rc == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    if sig == signal.SIGINT:
        assert "interrupted: re-run the same command to resume" in proc.communicate()[1]
    wait_for(lambda: not processes_with(env["CHAMLAB_CACHE"]), "the driver and runner to end", 30)
    [run] = runs.glob("run-*")
    done_before = len((run / "results.jsonl").read_text().splitlines())
    res = chamlab(*args, "--json", env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["measured_ops"] == 7 and report["failed_ops"] == []
    assert pd.read_parquet(out)["op_key"].is_unique and done_before >= 1


def test_ctrl_c_during_export_stops_at_once_and_says_what_was_kept(
    tmp_path: Path, fast_devices: Path
) -> None:
    env = _private_env(tmp_path)
    args = ["profile", "-t", "test-cpu", "-s", "chamnet-mbv2", "-o", tmp_path / "lut.parquet"]
    proc = spawn_chamlab(*args, "--workers", "1", "--devices", fast_devices, env=env)
    artifacts = Path(env["CHAMLAB_CACHE"]) / "artifacts" / "xnnpack-fp32"
    wait_for(lambda: any(artifacts.glob("*.pte")), "the first exported artifact", 300)
    proc.send_signal(signal.SIGINT)
    # 262 ops at ~1 s each remain: an exit within 60 s means the queue was abandoned, not drained
    rc = proc.wait(60)
    stderr = proc.communicate()[1]
    assert rc == 130, stderr
    assert "interrupted during export:" in stderr and "new artifact(s) are kept in the cache" in stderr
    # the worker had exported (torch.fx drew tqdm bars): its locks are not named semaphores left behind
    assert "leaked semaphore" not in stderr, stderr
    wait_for(lambda: not processes_with(env["CHAMLAB_CACHE"]), "the export workers to end", 30)
    assert not (tmp_path / "lut.parquet").exists()
    assert len(list(artifacts.glob("*.pte"))) < 100


def test_default_out_that_cannot_be_created_is_bad_input(tmp_path: Path, fast_devices: Path) -> None:
    (tmp_path / "luts").write_text("a file in the way")
    args = ["profile", "-t", "test-cpu", "-s", "macro-cifar10", "-a", "all-identity"]
    res = chamlab(*args, "--devices", fast_devices, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: default LUT directory luts cannot be created: a file of that name")


def test_default_out_in_a_read_only_directory_is_bad_input(tmp_path: Path, fast_devices: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root (CI runs as root)")
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True)
    try:
        args = ["profile", "-t", "test-cpu", "-s", "macro-cifar10", "-a", "all-identity"]
        res = chamlab(*args, "--devices", fast_devices, cwd=ro)
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: default LUT directory luts cannot be created: Read-only file system")


def test_ensure_dir_names_the_problem(tmp_path: Path) -> None:
    from chamlab.core.files import ensure_dir

    (tmp_path / "f").write_text("")
    with pytest.raises(OutputPathError, match="a file of that name exists"):
        ensure_dir(tmp_path / "f")
    assert ensure_dir(tmp_path / "a" / "b").is_dir()
