"""The lab's device registry: ``devices.toml`` parsed into frozen, typed objects.

Where it is read from, first match wins: ``--devices PATH``, ``$CHAMLAB_DEVICES``, ``./devices.toml``,
else the built-in registry that holds only ``local-cpu`` (this machine, defaults below).

Format (see the repository's ``devices.toml`` for a commented example)::

    [devices.local-cpu]
    transport = "local"        # how the host reaches it; each transport has its own keys
    backend = "xnnpack"        # default ExecuTorch backend: xnnpack | portable
    threads = 1                # default --threads
    runner = "shim"            # "shim" (python -m chamlab.agent.runner) or the path of an executor_runner
    affinity = "0"             # optional CPU list for taskset; "" = no pinning

    [devices.local-cpu.measure]  # the measurement policy: chamlab.agent.measure.MeasurePolicy's fields
    num_executions = 30
    min_time_ms = 300

Each table is validated by its transport's own model (``host/transports/<transport>.py``). Unknown
keys, wrong types, bad values and impossible measurement policies are errors that name the file, the
table and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from chamlab.agent.measure import MeasurePolicy
from chamlab.core.errors import ConfigError, InputError, UnknownNameError
from chamlab.host.devices.transports import TRANSPORTS, DeviceConfig, LocalConfig

DEFAULT_FILE = "devices.toml"
ENV_VAR = "CHAMLAB_DEVICES"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

__all__ = [
    "DeviceConfig",
    "DeviceRegistry",
    "load_registry",
    "parse_devices_file",
    "parse_policy",
    "resolve_device",
    "unlisted_adb_device",
]


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

    def by_serial(self, serial: str) -> list[DeviceConfig]:
        """The entries whose ``serial`` key is ``serial`` (adb devices)."""
        return [d for d in self if getattr(d, "serial", None) == serial]


def default_adb_server() -> str:
    """adb's own conventions: ``$ADB_SERVER_SOCKET`` (tcp:HOST:PORT), ``$ANDROID_ADB_SERVER_PORT``,
    else ``127.0.0.1:5037``."""
    sock = os.environ.get("ADB_SERVER_SOCKET", "")
    if sock.startswith("tcp:") and sock.count(":") >= 2:
        return sock.removeprefix("tcp:")
    port = os.environ.get("ANDROID_ADB_SERVER_PORT", "")
    return f"127.0.0.1:{port}" if port.isdigit() else "127.0.0.1:5037"


def unlisted_adb_device(serial: str) -> tuple[DeviceConfig, str]:
    """An adb device that devices.toml does not list, named ``adb-<serial>`` (made safe), with
    defaults; and the warning that lists them."""
    from chamlab.host.devices.transports.adb import AdbConfig

    safe = re.sub(r"[^a-z0-9_.-]+", "-", serial.lower()).strip("-.") or "device"
    name = f"adb-{safe}"
    try:
        dev = AdbConfig(name=name, serial=serial, adb_server=default_adb_server())
    except ValidationError as exc:
        msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"--serial {serial!r}: {msg}") from None
    defaults = ", ".join(
        f"{k}={getattr(dev, k)!s}" for k in ("transport", "adb_server", "workdir", "runner", "threads")
    )
    warning = (
        f"device {serial!r} is not in the device registry: using it as {name} with defaults "
        f"({defaults}, workdir={dev.workdir or '/data/local/tmp/chamlab'}, python unset, "
        f"backend={dev.backend.value}, dtype={dev.dtype.value}); add a [devices.{name}] table with "
        f'serial = "..." to change them'
    )
    return dev, warning


def resolve_device(
    registry: DeviceRegistry, target: str | None, serial: str | None
) -> tuple[DeviceConfig, str | None]:
    """The device that ``--target`` and/or ``--serial`` name, and a warning (or None).

    ``--serial`` picks the entry with that serial; a serial no entry has is an unlisted adb device
    (:func:`unlisted_adb_device`). Both given and naming different devices is an input error.
    """
    if not target and not serial:
        raise InputError(
            "no device given: pass --target NAME (see `chamlab devices`) "
            "or --serial SERIAL (see `adb devices`)"
        )
    if not serial:
        return registry.get(str(target)), None
    matches = registry.by_serial(serial)
    if target:
        dev = registry.get(target)
        if dev not in matches:
            has = getattr(dev, "serial", None)
            raise InputError(
                f"--serial {serial!r} and --target {target!r} disagree: [devices.{target}] in "
                f"{registry.source} has " + (f"serial {has!r}" if has else "no serial"),
                hint="give only one of them",
            )
        return dev, None
    if len(matches) > 1:
        names = ", ".join(d.name for d in matches)
        raise ConfigError(
            f"{registry.source}: serial {serial!r} is used by several devices ({names})",
            hint="pick one with --target",
        )
    if matches:
        return matches[0], None
    return unlisted_adb_device(serial)


def builtin_registry() -> DeviceRegistry:
    return DeviceRegistry(
        {"local-cpu": LocalConfig(name="local-cpu", description="this machine's CPU (built-in default)")},
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


def parse_policy(body: Any, where: str) -> MeasurePolicy:
    """A ``[... .measure]`` table -> :class:`MeasurePolicy`; errors name ``where`` and the key."""
    if not isinstance(body, dict):
        raise ConfigError(f"{where} must be a table")
    problems = MeasurePolicy.check(body)
    if problems:
        first = problems[0]
        raise ConfigError(f"{where} key {first.field!r}: {first.message}")
    return MeasurePolicy(**body)


def _format_loc(path: Path, table: str, loc: tuple[int | str, ...]) -> str:
    keys = [str(p) for p in loc]
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
    devices = {name: parse_device(path, name, body) for name, body in tables.items()}
    return DeviceRegistry(devices, str(path))


def parse_device(path: Path, name: str, body: Any) -> DeviceConfig:
    """One ``[devices.<name>]`` table, validated by its transport's model."""
    table = f"devices.{name}"
    if not _NAME_RE.match(name):
        raise ConfigError(f"{path}: [{table}] device names use a-z, 0-9, '.', '_' and '-'")
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: devices.{name} must be a table")
    if "name" in body:
        raise ConfigError(f"{path}: [{table}] key 'name' is not allowed: the table name is the device name")
    body = dict(body)
    transport = body.setdefault("transport", "local")
    if transport not in TRANSPORTS:
        raise ConfigError(
            f"{path}: [{table}] key 'transport' = {transport!r} is not a known transport "
            f"(known: {', '.join(TRANSPORTS.names())})"
        )
    cls = TRANSPORTS.config_class(str(transport))
    if "measure" in body:
        body["measure"] = parse_policy(body["measure"], f"{path}: [{table}.measure]")
    try:
        return cls(name=name, **body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _format_loc(path, table, tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            allowed = sorted(set(cls.model_fields) - {"name"})
            raise ConfigError(
                f"{where} is unknown for transport {transport!r} (allowed: {', '.join(allowed)})"
            ) from None
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: {msg} (got {err.get('input')!r})") from None
