"""``chamlab farm run``: layout, exit codes, drift, pre-flight, lock, retention, load and faults.

Devices are ``local`` ones with distinct names (tests/host/farm_devices.py): stand-in runners for the
behaviour tests (fast, device-distinct samples), the real shim in the CLI test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import chamlab, processes_with, spawn_chamlab, wait_for
from farm_devices import ARCH, device_table, stand_in_farm

from chamlab.core.errors import ConfigError, DeviceBusyError, InputError
from chamlab.core.files import cache_root
from chamlab.core.locks import FileLock
from chamlab.host.devices.config import parse_devices_file
from chamlab.host.devices.transports.local import LocalTransport
from chamlab.host.workflows.farm import Sensors, read_sensors, run_farm, select_devices

DAY1 = dt.datetime(2026, 11, 20, 23, 30, tzinfo=dt.UTC)


def _lut_rows(path: Path) -> list[dict]:
    return pq.read_table(path, columns=["device", "op_key", "samples_ms", "run_id"]).to_pylist()


def test_tags_in_devices_toml_and_selection(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(
        device_table("a", tags=["pixel", "nightly"]) + device_table("b", tags=["nightly"]) + device_table("c")
    )
    reg = parse_devices_file(path)
    assert reg.get("a").tags == ("pixel", "nightly") and reg.get("c").tags == ()
    assert [d.name for d in select_devices(reg, ["pixel"])] == ["a"]
    assert [d.name for d in select_devices(reg, ["pixel", "nightly"])] == ["a", "b"]
    assert len(select_devices(reg)) == 3
    with pytest.raises(InputError, match=r"no device .* has any of the tags lab2") as info:
        select_devices(reg, ["lab2"])
    assert "nightly, pixel" in (info.value.hint or "")
    path.write_text(device_table("d").replace("threads = 1", "threads = 1\ntags = [3]"))
    with pytest.raises(ConfigError, match=r"\[devices.d\] key 'tags'"):
        parse_devices_file(path)


def test_cli_run_layout_latest_predict_and_retention(tmp_path: Path, fast_devices: Path) -> None:
    """One real-shim device and one stand-in, through the console script."""
    devices, _ = stand_in_farm(tmp_path, ["standin-a"], tags={"standin-a": ["nightly"]})
    with devices.open("a") as fh:
        fh.write("\n" + device_table("real-a", tags=["nightly"]))
    out = tmp_path / "farm"
    (out / "2000-01-01").mkdir(parents=True)  # an old run: removed by --keep-days
    (out / "2000-01-01" / "summary.json").write_text('{"date": "2000-01-01", "devices": {}}')
    res = chamlab(
        "farm", "run", "--devices", devices, "--only", "nightly", "--space", "macro-cifar10",
        "--arch", ARCH, "--out", out, "--keep-days", "7", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert rep["date"] == today and rep["exit_code"] == 0 and rep["removed_runs"] == ["2000-01-01"]
    run = out / today
    assert sorted(p.name for p in run.iterdir()) == [
        "real-a.parquet", "report.html", "report.md", "standin-a.parquet", "summary.json",
    ]  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    for name in ("real-a", "standin-a"):
        entry = summary["devices"][name]
        assert entry["status"] == "ok" and entry["measured_ops"] == 7 and entry["error"] is None
        assert entry["drift"] is None  # no previous good run
        assert any("not readable" in n for n in entry["notes"]) or entry["battery_pct"] is not None
        rows = _lut_rows(run / f"{name}.parquet")
        assert len(rows) == 7 and {r["device"] for r in rows} == {name}
        assert all(f"farm-{today}" in r["run_id"] for r in rows)
    assert (out / "latest").is_symlink() and os.readlink(out / "latest") == today
    assert not (out / "2000-01-01").exists()
    assert "real-a" in (run / "report.md").read_text() and "<table>" in (run / "report.html").read_text()
    for lut in (out / "latest" / "real-a.parquet", out):
        args = ["--space", "macro-cifar10", "--arch", ARCH, "--lut", lut, "--target", "real-a", "--json"]
        res = chamlab("predict", *args)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["latency_ms"] > 0
    # a second run the same day resumes: nothing left to measure
    res = chamlab("farm", "run", "--devices", devices, "--space", "macro-cifar10", "--arch", ARCH,
                  "--out", out, "--only", "nightly", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert {e["measured_ops"] for e in json.loads(res.stdout)["devices"].values()} == {0}


def test_drift_is_exit_3_with_plot_embedded(tmp_path: Path) -> None:
    devices, values = stand_in_farm(tmp_path, ["d1", "d2"], sleep_s=0.01)
    reg, out = parse_devices_file(devices), tmp_path / "farm"
    first = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=DAY1)
    assert first.exit_code == 0 and first.date == "2026-11-20"
    values["d1"].write_text("1.5\n")  # d1 got 50 % slower overnight; d2 (2.0 ms) did not change
    second = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=DAY1 + dt.timedelta(hours=2))
    assert second.date == "2026-11-21"
    d1, d2 = second.devices["d1"]["drift"], second.devices["d2"]["drift"]
    assert d1["drifted"] and d1["median_drift_pct"] == pytest.approx(50.0) and d1["ops_over_threshold"] == 7
    assert d1["previous"].endswith("2026-11-20/d1.parquet")
    assert not d2["drifted"] and d2["max_abs_drift_pct"] == pytest.approx(0.0)
    assert second.exit_code == 3
    page = (out / "2026-11-21" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,iVBOR') == 2  # both plots embedded, PNG magic
    md = (out / "2026-11-21" / "report.md").read_text()
    assert "drift beyond the threshold" in md and "| d1 | ok | 7 | 0 | 0 | +50.0 | 50.0 | yes |  |" in md
    assert md.count("\n|") == 4  # header, rule, 2 devices: no stray '|' splits a row
    # a higher threshold: no alarm
    third = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=DAY1 + dt.timedelta(hours=3),
                     drift_threshold_pct=60)  # fmt: skip
    assert third.exit_code == 0
    # a night the device failed is not a "previous good run"
    values["d1"].write_text("not a number\n")
    fourth = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=DAY1 + dt.timedelta(days=2))
    assert fourth.devices["d1"]["status"] == "failed" and fourth.exit_code == 1
    assert fourth.devices["d2"]["status"] == "ok"
    values["d1"].write_text("1.5\n")
    fifth = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=DAY1 + dt.timedelta(days=3))
    assert fifth.devices["d1"]["drift"]["previous"].endswith("2026-11-21/d1.parquet")


def test_preflight_skips_with_a_reason(tmp_path: Path) -> None:
    devices, _ = stand_in_farm(tmp_path, ["low", "hot", "fine"], sleep_s=0.01)
    readings = {"low": Sensors(5, 30.0), "hot": Sensors(90, 61.5), "fine": Sensors(None, None)}

    def sensors(transport: LocalTransport) -> Sensors:
        return readings[transport.target]

    rep = run_farm(parse_devices_file(devices), "macro-cifar10", out=tmp_path / "farm", archs=[ARCH],
                   sensor_reader=sensors)  # type: ignore[arg-type]  # fmt: skip
    low, hot, fine = (rep.devices[n] for n in ("low", "hot", "fine"))
    assert low["status"] == "skipped" and low["error"] == "battery 5 % is below 20 %"
    assert hot["status"] == "skipped" and hot["error"] == "start temperature 61.5 C is above 45.0 C"
    assert low["lut"] is None and low["measured_ops"] == 0
    assert fine["status"] == "ok" and len(fine["notes"]) == 2  # unreadable = pass, with a note each
    assert rep.exit_code == 1
    # this machine has no battery: the real reader says so instead of inventing one
    assert read_sensors(LocalTransport("here")).battery_pct is None


def test_farm_run_directories_of_earlier_days_are_removed_from_the_device(tmp_path: Path) -> None:
    """A night the device died leaves its run directory on the target, never resumed (runs resume
    only on their own day): a later farm run removes it; yesterday's and `chamlab profile`'s stay."""
    devices, _ = stand_in_farm(tmp_path, ["tidy"], sleep_s=0.01)
    workdir = cache_root() / "runs" / "tidy"
    names = ["run-farm-2026-11-17-0123456789ab", "run-farm-2026-11-18-ba9876543210",
             "run-farm-2026-11-19-00aa11bb22cc", "run-0123456789ab", "notes.txt"]  # fmt: skip
    for name in names:
        (workdir / name / "artifacts").mkdir(parents=True)
    rep = run_farm(
        parse_devices_file(devices), "macro-cifar10", out=tmp_path / "farm", archs=[ARCH], now=DAY1
    )
    assert rep.exit_code == 0
    left = sorted(p.name for p in workdir.iterdir() if not p.name.startswith("."))
    assert left == ["notes.txt", "run-0123456789ab", "run-farm-2026-11-19-00aa11bb22cc"]  # today's is stored
    note = next(n for n in rep.devices["tidy"]["notes"] if n.startswith("removed"))
    assert note.startswith("removed 2 farm run directories of earlier days from")
    assert names[0] in note and names[1] in note


def test_overlapping_farm_runs_are_refused(tmp_path: Path) -> None:
    devices, _ = stand_in_farm(tmp_path, ["x"])
    out = tmp_path / "farm"
    lock = FileLock(out / ".farm.lock", what="test")
    lock.acquire(description="another farm run")
    try:
        with pytest.raises(DeviceBusyError, match="another farm run") as info:
            run_farm(parse_devices_file(devices), "macro-cifar10", out=out, archs=[ARCH])
        # before: the hint named --no-wait, an option farm run does not have
        assert "--no-wait" not in (info.value.hint or "") and "chamlab farm run" in (info.value.hint or "")
    finally:
        lock.release()
    assert not (out / "latest").exists()
    with pytest.raises(InputError, match="--address is for --executor ray"):
        run_farm(parse_devices_file(devices), "macro-cifar10", out=out, archs=[ARCH], address="x:1")


def _driver_pids(device: str) -> list[int]:
    """The local driver of ``device``'s farm run (a process-group leader: the local transport starts
    it in its own session)."""
    needle = f"/runs/{device}/run-farm-".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
                pgrp = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
            except (OSError, ValueError):
                continue
            if needle in cmd and b"driver.sh" in cmd and pgrp == int(proc.name):
                pids.append(int(proc.name))  # the leader, not the driver's own subshells
    return pids


def test_eight_devices_one_killed_mid_run_resumes_next_run(tmp_path: Path) -> None:
    """8 devices at once; farm-3's driver (and runner) is killed when its run directory holds its
    2nd result line. The other 7 finish; the next run resumes farm-3 from its run directory (the
    ops done before the kill are not measured again); no row is lost or crosses devices."""
    names = [f"farm-{i}" for i in range(8)]
    devices, _ = stand_in_farm(tmp_path, names, sleep_s=0.25)
    reg, out = parse_devices_file(devices), tmp_path / "farm"
    victim = "farm-3"
    runs = cache_root() / "runs" / victim
    done_before_kill: dict[str, list[float]] = {}

    def results() -> list[dict]:
        found = list(runs.glob("run-farm-*/results.jsonl"))
        if not found:
            return []
        return [json.loads(ln) for ln in found[0].read_text().splitlines() if ln.endswith("}")]

    def killer() -> None:
        wait_for(lambda: len(results()) >= 2, f"{victim}'s 2nd result line", timeout_s=120)
        pids = _driver_pids(victim)
        assert len(pids) == 1, pids
        os.killpg(pids[0], signal.SIGKILL)
        done_before_kill.update({r["op_key"]: r["result"]["samples_ms"] for r in results()})

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        first = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=DAY1)
    finally:
        thread.join()
    assert first.devices[victim]["status"] == "failed"
    assert "stopped early" in first.devices[victim]["error"]
    assert first.devices[victim]["lut"] is None  # nothing stored: the measurements wait on the target
    assert all(first.devices[n]["status"] == "ok" for n in names if n != victim)
    assert first.exit_code == 1
    assert 2 <= len(done_before_kill) < 7

    second = run_farm(reg, "macro-cifar10", out=out, archs=[ARCH], now=DAY1 + dt.timedelta(minutes=5))
    assert second.exit_code == 0, second.devices[victim]
    assert second.devices[victim]["measured_ops"] == 7  # stored now: 7, of which only 5- ran again
    assert all(second.devices[n]["measured_ops"] == 0 for n in names if n != victim)
    keys = None
    for i, name in enumerate(names):
        rows = _lut_rows(out / "2026-11-20" / f"{name}.parquet")
        assert len(rows) == 7 and {r["device"] for r in rows} == {name}
        assert {v for r in rows for v in r["samples_ms"]} == {float(i + 1)}  # this device's own value
        keys = keys or {r["op_key"] for r in rows}
        assert {r["op_key"] for r in rows} == keys
    rows = {r["op_key"]: r for r in _lut_rows(out / "2026-11-20" / f"{victim}.parquet")}
    for key, samples in done_before_kill.items():
        assert rows[key]["samples_ms"] == samples
    assert not list(runs.glob("run-farm-*"))  # the resumed run directory is cleaned up once stored


def test_ctrl_c_ends_every_device_session_and_the_next_run_resumes(tmp_path: Path) -> None:
    """SIGINT to `chamlab farm run` once a device has a result line, while the other is inside a 30 s
    op: exit 130 at once (not after that op), no driver or runner left behind (each driver ends when
    the host's end of its stdin closes), lock released, and the next run finishes both devices."""
    devices, _ = stand_in_farm(tmp_path, ["int-a", "int-b"], sleep_s=0.3)
    slow = tmp_path / "stand-ins" / "int-b-python"
    slow.write_text(slow.read_text().replace("time.sleep(0.3)", "time.sleep(30)"))  # int-b: 30 s per op
    out, marker = tmp_path / "farm", f"chamlab-farm-test-{uuid.uuid4().hex}"
    args = ["farm", "run", "--devices", devices, "--space", "macro-cifar10", "--arch", ARCH, "--out", out]
    proc = spawn_chamlab(*args, env={"FARM_TEST_MARKER": marker})
    try:
        results = cache_root() / "runs" / "int-a"
        wait_for(
            lambda: any(p.read_text() for p in results.glob("run-farm-*/results.jsonl")), "a result line"
        )
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=60)
        stopped_s = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert stopped_s < 15  # not waiting for int-b's 30 s op
    wait_for(lambda: not processes_with(marker), "the drivers and runners to end", timeout_s=10)
    slow.write_text(slow.read_text().replace("time.sleep(30)", "time.sleep(0.01)"))
    res = chamlab(*args, "--json")
    assert res.returncode == 0, res.stderr
    assert {e["status"] for e in json.loads(res.stdout)["devices"].values()} == {"ok"}


@contextlib.contextmanager
def _small_disk(path: Path, size: str = "256k") -> Iterator[str]:
    """``path`` on a real filesystem that runs out of space: a ``size`` tmpfs when this process may
    mount one (root; the CI and lab machines run the suite as root), else (no mount allowed) a folder
    this user cannot write, which fails the same writes with EACCES instead of ENOSPC. Yields the
    error text the failed writes give."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        path.chmod(0o555)
    try:
        yield "No space left on device" if mounted else "Permission denied"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)
        else:
            path.chmod(0o755)


def test_a_full_disk_loses_no_measurement_and_writes_what_fits(tmp_path: Path) -> None:
    """--out on a 256 KiB tmpfs that a filler leaves 8 KiB of: the LUT does not fit. Before: exit 1 with
    an OSError, nothing on stdout under --json, no summary, and the device's run directory deleted, so
    its 7 measurements were measured again the next run. Now: the device is failed naming the
    error and where its LUT is kept, summary.json and the rest are written where they fit, and the
    next run puts the LUT in place without measuring anything again."""
    devices, _ = stand_in_farm(tmp_path, ["full"], sleep_s=0.01)
    calls = tmp_path / "stand-ins" / "full.calls"
    out = tmp_path / "farm"
    today = dt.datetime.now(dt.UTC)
    date = today.date().isoformat()
    with _small_disk(out) as why:
        if why.startswith("No space"):
            free = os.statvfs(out).f_bavail * os.statvfs(out).f_frsize
            (out / "filler").write_bytes(b"x" * (free - 8 * 1024))
            (out / date).mkdir()
        res = chamlab("farm", "run", "--devices", devices, "--space", "macro-cifar10", "--arch", ARCH,
                      "--out", out, "--json")  # fmt: skip
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr
        rep = json.loads(res.stdout)
        entry = rep["devices"]["full"]
        assert entry["status"] == "failed" and entry["lut"] is None and rep["exit_code"] == 1
        assert why in entry["error"] and "measurements are kept in" in entry["error"]
        kept = Path(entry["error"].split("measurements are kept in ")[1].split(": the next")[0])
        assert kept.is_file() and len(_lut_rows(kept)) == 7
        assert len(calls.read_text().splitlines()) == 7
        if why.startswith("No space"):  # the summary (a few KiB) still fits, summary first
            summary = json.loads((out / date / "summary.json").read_text())
            assert summary["devices"]["full"]["error"] == entry["error"]
    # room again: the next run puts the LUT in place and measures nothing again
    second = run_farm(parse_devices_file(devices), "macro-cifar10", out=out, archs=[ARCH], now=today)
    assert second.exit_code == 0, second.devices["full"]
    assert second.devices["full"]["measured_ops"] == 0 and second.devices["full"]["already_ops"] == 7
    assert len(_lut_rows(out / date / "full.parquet")) == 7
    assert len(calls.read_text().splitlines()) == 7 and not kept.exists()


def test_keep_days_removes_only_folders_a_farm_run_wrote(tmp_path: Path) -> None:
    """Before: --keep-days deleted `2020-13-45/` (not a date; a user's file inside) and a dated folder
    without a farm summary.json. Only a real date holding a farm summary is a farm run's folder."""
    devices, _ = stand_in_farm(tmp_path, ["keep"], sleep_s=0.01)
    out = tmp_path / "farm"
    for name, summary in (("2000-01-01", '{"date": "2000-01-01", "devices": {}}'), ("2000-01-02", None),
                          ("2020-13-45", None), ("2000-01-03", "my notes, not JSON")):  # fmt: skip
        (out / name).mkdir(parents=True)
        (out / name / "mine.txt").write_text("a user's file")
        if summary is not None:
            (out / name / "summary.json").write_text(summary)
    rep = run_farm(parse_devices_file(devices), "macro-cifar10", out=out, archs=[ARCH], now=DAY1, keep_days=7)
    assert rep.exit_code == 0 and rep.removed == ["2000-01-01"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "2000-01-02", "2000-01-03", "2020-13-45", "2026-11-20", "index.html", "latest",
    ]  # fmt: skip
    assert (out / "2020-13-45" / "mine.txt").read_text() == "a user's file"
