from __future__ import annotations

from pathlib import Path

import pytest

from chamlab.host.config import DeviceConfig, load_registry, parse_devices_file
from chamlab.operators.errors import ConfigError, UnknownNameError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "devices.toml"
    p.write_text(text)
    return p


def test_repository_example_parses() -> None:
    reg = parse_devices_file(REPO / "devices.toml")
    dev = reg.get("local-cpu")
    assert (dev.transport, dev.backend, dev.threads, dev.runner_kind) == ("local", "xnnpack", 1, "shim")
    assert dev.measure.num_executions == 30 and dev.measure.min_time_ms == 300.0


def test_devices_are_frozen_and_typed(tmp_path: Path) -> None:
    reg = parse_devices_file(
        _write(
            tmp_path, '[devices.a]\nthreads = 4\naffinity = "0-3"\n[devices.a.measure]\nmin_time_ms = 50\n'
        )
    )
    dev = reg.get("a")
    assert isinstance(dev, DeviceConfig) and dev.threads == 4 and dev.measure.min_time_ms == 50.0
    with pytest.raises(Exception, match="frozen"):
        dev.threads = 2  # type: ignore[misc]
    assert dev.measure.runner_flags()[:2] == ["--warmup_runs", "5"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[devices.a]\nthreds = 2\n", r"\[devices.a\] key 'threds' is unknown \(allowed: affinity, backend"),
        ("[devices.a.measure]\nfoo = 1\n", r"\[devices.a.measure\] key 'foo' is unknown"),
        ('[devices.a]\nthreads = "2"\n', r"\[devices.a\] key 'threads': Input should be a valid integer"),
        ("[devices.a]\nthreads = 0\n", r"key 'threads': Input should be greater than or equal to 1"),
        ('[devices.a]\nbackend = "qnn"\n', r"key 'backend'.*must be one of xnnpack, portable"),
        ('[devices.a]\naffinity = "zero"\n', r"key 'affinity'.*CPU list"),
        ('[devices.a]\ntransport = "ssh"\n', r"'transport' = 'ssh' is not supported by this version"),
        ('[devices.a]\nname = "b"\n', r"key 'name' is not allowed"),
        ("[devices.A]\n", r"device names use a-z"),
        ("[devices.a\n", r"not valid TOML: .*line 1"),
        ("[other]\nx = 1\n", r"unknown top-level key 'other'"),
        ("", r"no \[devices.<name>\] table found"),
    ],
)
def test_bad_files_name_file_table_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        parse_devices_file(path)
    assert str(path) in info.value.message
    assert info.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_registry(tmp_path / "nope.toml")


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHAMLAB_DEVICES", raising=False)
    reg = load_registry()
    assert "built-in" in reg.source and [d.name for d in reg] == ["local-cpu"]
    _write(tmp_path, "[devices.here]\n")
    assert [d.name for d in load_registry()] == ["here"]
    other = tmp_path / "sub"
    other.mkdir()
    (other / "x.toml").write_text("[devices.env]\n")
    monkeypatch.setenv("CHAMLAB_DEVICES", str(other / "x.toml"))
    assert [d.name for d in load_registry()] == ["env"]
    (other / "y.toml").write_text("[devices.explicit]\n")
    assert [d.name for d in load_registry(other / "y.toml")] == ["explicit"]


def test_unknown_target_lists_the_known(tmp_path: Path) -> None:
    reg = parse_devices_file(_write(tmp_path, "[devices.a]\n[devices.b]\n"))
    with pytest.raises(UnknownNameError, match="unknown target 'c'; known: a, b"):
        reg.get("c")
