from __future__ import annotations

from pathlib import Path

import pytest

from chamlab.core.errors import ConfigError, UnknownNameError
from chamlab.host.devices.config import DeviceConfig, load_registry, parse_devices_file

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
    flags = dev.measure.to_flags()
    assert flags[:4] == ["--num_executions", "30", "--warmup_runs", "5"]
    assert flags[flags.index("--min_time_ms") + 1] == "50.0"


def test_policy_round_trips_through_the_runner_flags() -> None:
    """The runner's argparse flags are generated from MeasurePolicy: every field survives the trip."""
    from chamlab.agent.measure import MeasurePolicy
    from chamlab.agent.runner import build_parser

    policy = MeasurePolicy(num_executions=7, min_time_ms=12.5, max_cv=0.2, retries=0)
    args = build_parser().parse_args(["--model_path", "x.pte", *policy.to_flags()])
    assert MeasurePolicy.from_namespace(args) == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[devices.a]\nthreds = 2\n",
            r"\[devices.a\] key 'threds' is unknown for transport 'local' \(allowed: affinity, backend",
        ),
        ("[devices.a.measure]\nfoo = 1\n", r"\[devices.a.measure\] key 'foo': is not a policy field"),
        ('[devices.a]\nthreads = "2"\n', r"\[devices.a\] key 'threads': Input should be a valid integer"),
        ("[devices.a]\nthreads = 0\n", r"key 'threads': Input should be greater than or equal to 1"),
        ('[devices.a]\nbackend = "tpu"\n', r"key 'backend'.*must be one of xnnpack, portable, cuda, qnn"),
        ('[devices.a]\npower_reader = "joule"\n', r"key 'power_reader'.*'battery', 'rapl' or 'nvml'"),
        ('[devices.a]\ndtype = "fp64"\n', r"key 'dtype'.*must be one of fp32"),
        (
            "[devices.a.measure]\nnum_executions = 50\nmax_runs = 20\n",
            r"\[devices.a.measure\] key 'max_runs': must be >= num_executions \(50\), got 20",
        ),
        ("[devices.a.measure]\nmax_cv = 0\n", r"\[devices.a.measure\] key 'max_cv': must be > 0"),
        ('[devices.a.measure]\nretries = "2"\n', r"key 'retries': must be an integer"),
        ("[devices.a.measure]\nretries = 1.5\n", r"key 'retries': must be an integer"),
        ('[devices.a]\naffinity = "zero"\n', r"key 'affinity'.*CPU list"),
        (
            '[devices.a]\ntransport = "carrier-pigeon"\n',
            r"'transport' = 'carrier-pigeon' is not a known transport",
        ),
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


def test_transport_registry_is_loud_and_each_transport_owns_its_model() -> None:
    from typing import Literal

    from chamlab.core.errors import DuplicateNameError
    from chamlab.host.devices.transports import TRANSPORTS, LocalConfig, TransportRegistry
    from chamlab.host.devices.transports.base import DeviceConfig

    assert TRANSPORTS.config_class("local") is LocalConfig
    fresh = TransportRegistry()

    class NoFactory(DeviceConfig):
        transport: Literal["x"] = "x"

    with pytest.raises(TypeError, match="NoFactory must implement open"):
        fresh.register("x")(NoFactory)
    fresh.register("local")(LocalConfig)
    with pytest.raises(DuplicateNameError, match="transport 'local' is already registered"):
        fresh.register("local")(LocalConfig)
    with pytest.raises(UnknownNameError, match="unknown transport 'y'; known: local"):
        fresh.config_class("y")
