"""Transports: how the host reaches a target. One module per transport (its devices.toml model, its
factory and its implementation side by side), all registered in :data:`TRANSPORTS`."""

from __future__ import annotations

from . import local as _local  # noqa: F401  (registers "local")
from .base import TRANSPORTS, DeviceConfig, RunResult, Transport, TransportRegistry
from .local import LocalConfig, LocalTransport


def open_transport(device: DeviceConfig) -> Transport:
    """The transport for ``device`` (its config model's factory)."""
    return device.open()


__all__ = [
    "TRANSPORTS",
    "DeviceConfig",
    "LocalConfig",
    "LocalTransport",
    "RunResult",
    "Transport",
    "TransportRegistry",
    "open_transport",
]
