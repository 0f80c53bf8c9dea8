"""Real remote peers for the transport tests (see tests/peers.py): a foreground sshd per test, one adb
server per test session on its own port, and an adb device-side peer per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from peers import FAST_MEASURE, AdbPeer, AdbServer, Sshd


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = Sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    server = AdbServer(tmp_path_factory.mktemp("adb-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def adb_peer(adb_server: AdbServer, tmp_path: Path) -> Iterator[AdbPeer]:
    peer = AdbPeer(adb_server, tmp_path / "peer")
    try:
        yield peer
    finally:
        peer.stop()


def fast(toml: str, name: str) -> str:
    """A peer's devices.toml table plus the fast measurement policy of the tests."""
    return toml + FAST_MEASURE.format(name=name)
