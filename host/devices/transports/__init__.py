"""Transports: how the host reaches a target. One module per transport (its devices.toml model, its
factory and its implementation side by side), all registered in :data:`TRANSPORTS`."""

from __future__ import annotations

from . import adb as _adb  # noqa: F401  (registers "adb")
from . import local as _local  # noqa: F401  (registers "local")
from . import ssh as _ssh  # noqa: F401  (registers "ssh")
from .adb import AdbConfig, AdbTransport
from .base import TRANSPORTS, DeviceConfig, RunResult, Transport, TransportRegistry
from .local import LocalConfig, LocalTransport
from .ssh import SshConfig, SshTransport


def open_transport(device: DeviceConfig) -> Transport:
    """The transport for ``device`` (its config model's factory)."""
    return device.open()


__all__ = [
    "TRANSPORTS",
    "AdbConfig",
    "AdbTransport",
    "DeviceConfig",
    "LocalConfig",
    "LocalTransport",
    "RunResult",
    "SshConfig",
    "SshTransport",
    "Transport",
    "TransportRegistry",
    "open_transport",
]
