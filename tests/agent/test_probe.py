"""Device-state probes read prepared sysfs trees (this machine has no thermal/battery/cpufreq data)."""

from __future__ import annotations

from pathlib import Path

from chamlab.agent import probe


def _tree(root: Path) -> probe.SysfsRoots:
    for cpu, gov in (("cpu0", "schedutil"), ("cpu1", "schedutil"), ("cpu4", "performance")):
        d = root / "cpu" / cpu / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(gov + "\n")
    (root / "cpu" / "cpufreq").mkdir()  # a non-cpu entry that must be ignored
    for zone, milli in (("thermal_zone0", "41500"), ("thermal_zone1", "55250"), ("thermal_zone2", "garbage")):
        (root / "thermal" / zone).mkdir(parents=True)
        (root / "thermal" / zone / "temp").write_text(milli)
    for supply, typ, cap in (("ac", "Mains", None), ("battery", "Battery", "87")):
        d = root / "power" / supply
        d.mkdir(parents=True)
        (d / "type").write_text(typ)
        if cap:
            (d / "capacity").write_text(cap)
    return probe.SysfsRoots(str(root / "cpu"), str(root / "thermal"), str(root / "power"))


def test_reads_prepared_sysfs(tmp_path: Path) -> None:
    roots = _tree(tmp_path)
    assert probe.governor(roots) == "performance,schedutil"
    assert probe.temperature_c(roots) == 55.25
    assert probe.battery_pct(roots) == 87.0


def test_missing_sysfs_gives_none(tmp_path: Path) -> None:
    roots = probe.SysfsRoots(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"))
    assert (probe.governor(roots), probe.temperature_c(roots), probe.battery_pct(roots)) == (None, None, None)


def test_cpu_list_format() -> None:
    assert probe.format_cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert probe.format_cpu_list({3}) == "3"
    assert probe.affinity()  # this process runs on at least one CPU
    assert probe.fingerprint().count("|") == 2
