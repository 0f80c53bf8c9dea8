"""The lab's device registry: ``devices.toml`` parsed into frozen, typed objects.

Where it is read from, first match wins: ``--devices PATH``, ``$CHAMLAB_DEVICES``, ``./devices.toml``,
else the built-in registry that holds only ``local-cpu`` (this machine, defaults below).

Format (see the repository's ``devices.toml`` for a commented example)::

    [devices.local-cpu]
    transport = "local"        # how the host reaches it: local (ssh and adb come next)
    backend = "xnnpack"        # default ExecuTorch backend: xnnpack | portable
    threads = 1                # default --threads
    runner = "shim"            # "shim" (python -m chamlab.agent.runner) or the path of an executor_runner
    affinity = "0"             # optional CPU list for taskset; "" = no pinning

    [devices.local-cpu.measure]  # the measurement policy (agent/measure.py documents each field)
    num_executions = 30
    min_time_ms = 300

Unknown keys, wrong types and bad values are errors that name the file, the table and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from chamlab.operators.errors import ConfigError, UnknownNameError
from chamlab.operators.specs import BACKENDS, DTYPES

DEFAULT_FILE = "devices.toml"
ENV_VAR = "CHAMLAB_DEVICES"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
TRANSPORTS = ("local",)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class MeasureConfig(_Frozen):
    """Measurement policy sent to the agent (field meanings: ``chamlab.agent.measure.MeasurePolicy``)."""

    num_executions: int = Field(30, ge=1)
    warmup_runs: int = Field(5, ge=0)
    warmup_ms: float = Field(100.0, ge=0)
    min_time_ms: float = Field(300.0, ge=0)
    max_runs: int = Field(10_000, ge=3)
    max_time_ms: float = Field(10_000.0, gt=0)
    max_cv: float = Field(0.05, gt=0)
    max_drift: float = Field(0.05, gt=0)
    max_temp_rise_c: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0)
    cooldown_s: float = Field(2.0, ge=0)

    def runner_flags(self) -> list[str]:
        """Shim flags for everything but ``--num_executions`` (the driver passes that one)."""
        out: list[str] = []
        for name, value in self.model_dump().items():
            if name != "num_executions":
                out += [f"--{name}", str(value)]
        return out


class DeviceConfig(_Frozen):
    name: str
    transport: Literal["local"] = "local"
    description: str = ""
    backend: str = "xnnpack"
    dtype: str = "fp32"
    threads: int = Field(1, ge=1, le=256)
    runner: str = "shim"
    python: str = Field("", description="python on the target for the shim; local default: this interpreter")
    workdir: str = Field("", description="run directories on the target; local default: <cache>/runs/<name>")
    affinity: str = ""
    op_timeout_s: float = Field(300.0, ge=0)
    cooldown_between_ops_s: float = Field(0.0, ge=0)
    measure: MeasureConfig = MeasureConfig()

    @field_validator("backend", "dtype")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        allowed = {"backend": BACKENDS, "dtype": DTYPES}[str(info.field_name)]
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v

    @field_validator("affinity")
    @classmethod
    def _affinity(cls, v: str) -> str:
        if v and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", v):
            raise ValueError("must be a CPU list such as '0', '0-3' or '0,2'")
        return v

    @property
    def runner_kind(self) -> str:
        return "shim" if self.runner == "shim" else "executor_runner"


class DeviceRegistry:
    """The parsed registry: devices by name, and where they came from."""

    def __init__(self, devices: dict[str, DeviceConfig], source: str) -> None:
        self._devices = devices
        self.source = source

    def __iter__(self) -> Iterator[DeviceConfig]:
        return iter(self._devices[n] for n in sorted(self._devices))

    def __len__(self) -> int:
        return len(self._devices)

    def get(self, name: str) -> DeviceConfig:
        if name not in self._devices:
            raise UnknownNameError(
                "target",
                name,
                list(self._devices),
                hint=f"targets come from {self.source}; `chamlab devices` lists them",
            )
        return self._devices[name]


def builtin_registry() -> DeviceRegistry:
    return DeviceRegistry(
        {"local-cpu": DeviceConfig(name="local-cpu", description="this machine's CPU (built-in default)")},
        "the built-in default (no devices.toml found)",
    )


def find_devices_file(explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    local = Path.cwd() / DEFAULT_FILE
    return local if local.is_file() else None


def load_registry(explicit: Path | None = None) -> DeviceRegistry:
    """Load the registry (see the module docstring for the lookup order)."""
    path = find_devices_file(explicit)
    if path is None:
        return builtin_registry()
    return parse_devices_file(path)


def _format_loc(path: Path, table: str, loc: tuple[int | str, ...]) -> str:
    keys = [str(p) for p in loc]
    if len(keys) > 1 and keys[0] == "measure":
        return f"{path}: [{table}.measure] key {'.'.join(keys[1:])!r}"
    return f"{path}: [{table}] key {'.'.join(keys)!r}" if keys else f"{path}: [{table}]"


def parse_devices_file(path: Path) -> DeviceRegistry:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"devices file {path} does not exist",
            hint=f"create it (see the repository's devices.toml) or unset ${ENV_VAR}",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read devices file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}", hint="fix the syntax at the position given"
        ) from exc

    extra = sorted(set(data) - {"devices"})
    if extra:
        raise ConfigError(
            f"{path}: unknown top-level key {extra[0]!r}; devices go in [devices.<name>] tables"
        )
    tables = data.get("devices", {})
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(
            f"{path}: no [devices.<name>] table found", hint="add one, e.g. [devices.local-cpu]"
        )

    devices: dict[str, DeviceConfig] = {}
    for name, body in tables.items():
        table = f"devices.{name}"
        if not _NAME_RE.match(name):
            raise ConfigError(f"{path}: [{table}] device names use a-z, 0-9, '.', '_' and '-'")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: devices.{name} must be a table")
        if "name" in body:
            raise ConfigError(
                f"{path}: [{table}] key 'name' is not allowed: the table name is the device name"
            )
        transport = body.get("transport", "local")
        if transport not in TRANSPORTS:
            raise ConfigError(
                f"{path}: [{table}] key 'transport' = {transport!r} is not supported by this version "
                f"(supported: {', '.join(TRANSPORTS)})"
            )
        try:
            devices[name] = DeviceConfig(name=name, **body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = _format_loc(path, table, tuple(err["loc"]))
            if err["type"] == "extra_forbidden":
                allowed = (
                    sorted(MeasureConfig.model_fields)
                    if err["loc"][0] == "measure"
                    else sorted(set(DeviceConfig.model_fields) - {"name"})
                )
                raise ConfigError(f"{where} is unknown (allowed: {', '.join(allowed)})") from None
            raise ConfigError(f"{where}: {err['msg']} (got {err.get('input')!r})") from None
    return DeviceRegistry(devices, str(path))
