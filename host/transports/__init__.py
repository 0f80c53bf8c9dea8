"""Transports: how the host reaches a target. One module per transport, one small Protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chamlab.operators.errors import UnknownNameError

from .base import RunResult, Transport
from .local import LocalTransport

if TYPE_CHECKING:
    from chamlab.host.config import DeviceConfig

_FACTORIES: dict[str, Callable[[DeviceConfig], Transport]] = {
    "local": lambda device: LocalTransport(device.name),
}


def open_transport(device: DeviceConfig) -> Transport:
    try:
        factory = _FACTORIES[device.transport]
    except KeyError:
        raise UnknownNameError("transport", device.transport, list(_FACTORIES)) from None
    return factory(device)


__all__ = ["LocalTransport", "RunResult", "Transport", "open_transport"]
