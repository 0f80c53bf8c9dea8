"""Hostile serials, paths and device names (quotes, spaces, ``$(...)``, ``;``, newlines) never execute
anything: every remote command is an argv list quoted with shlex, through the real sshd and the real
adb server + peer. Property-based (hypothesis, derandomised, no deadline)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import AdbPeer, Sshd

from chamlab.core.errors import ChamlabError, TransportError
from chamlab.host.devices.config import parse_device, unlisted_adb_device
from chamlab.host.devices.transports.adb import AdbConfig
from chamlab.host.devices.transports.ssh import SshConfig

MARK = Path("/tmp/chamlab-hostile-mark")  # a payload that runs would create this file
PAYLOADS = [
    f"$(touch {MARK})",
    f"`touch {MARK}`",
    f"; touch {MARK}",
    f"'; touch {MARK}; '",
    f'"; touch {MARK}; "',
    f"\ntouch {MARK}\n",
    f"&& touch {MARK}",
    f"| touch {MARK}",
    f"$(IFS=,;touch {MARK})",
]
hostile = st.one_of(
    st.sampled_from(PAYLOADS),
    st.text(alphabet=st.sampled_from(list("'\"$()`;&|<> \n\t\\*?~#!{}[]ab-")), min_size=1, max_size=24),
    st.tuples(st.sampled_from(PAYLOADS), st.text(alphabet="ab '\"$;\n", max_size=6)).map("".join),
)
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def no_mark() -> Iterator[None]:
    MARK.unlink(missing_ok=True)
    yield
    assert not MARK.exists(), "a hostile value was executed"


def _ssh(sshd: Sshd) -> SshConfig:
    return SshConfig(
        name="box",
        host="127.0.0.1",
        port=sshd.port,
        user="root",
        identity_file=str(sshd.user_key),
        known_hosts=str(sshd.known_hosts),
    )


@given(value=hostile)
@SETTINGS
def test_ssh_arguments_arrive_verbatim(sshd: Sshd, value: str) -> None:
    transport = _ssh(sshd).open()
    res = transport.run(["printf", "%s", value], timeout_s=20)
    assert (res.rc, res.output) == (0, value)
    assert not MARK.exists()


@given(value=hostile)
@SETTINGS
def test_adb_arguments_arrive_verbatim(adb_peer: AdbPeer, value: str) -> None:
    cfg = AdbConfig(name="p", serial=adb_peer.serial, adb_server=adb_peer.server.address)
    res = cfg.open().run(["printf", "%s", value], timeout_s=20)
    assert (res.rc, res.output) == (0, value)
    assert not MARK.exists()


@given(name=hostile.filter(lambda s: "/" not in s and s not in (".", "..")))
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_hostile_file_names_round_trip(sshd: Sshd, adb_peer: AdbPeer, tmp_path: Path, name: str) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(name.encode() * 3)
    adb = AdbConfig(name="p", serial=adb_peer.serial, adb_server=adb_peer.server.address).open()
    for transport, root in ((_ssh(sshd).open(), sshd.dir / "files"), (adb, adb_peer.sandbox / "files")):
        remote = str(root / name / name)
        transport.push(src, remote, timeout_s=20)
        back = tmp_path / "back.bin"
        transport.pull(remote, back, timeout_s=20)
        assert back.read_bytes() == src.read_bytes()
        assert transport.run(["rm", "-rf", "--", str(root)], timeout_s=20).rc == 0
        assert not MARK.exists()


@given(serial=hostile)
@SETTINGS
def test_hostile_serials_only_ever_name_a_device(adb_peer: AdbPeer, serial: str) -> None:
    try:
        dev, _warning = unlisted_adb_device(serial)
    except ChamlabError:
        return  # refused up front (not printable, surrounding spaces)
    assert re.fullmatch(r"adb-[a-z0-9_.-]+", dev.name)  # a safe lock-file and LUT name
    assert isinstance(dev, AdbConfig) and dev.serial == serial
    moved = dev.model_copy(update={"adb_server": adb_peer.server.address, "call_timeout_s": 5.0})
    with pytest.raises(TransportError, match="no device"):
        moved.open().run(["true"], timeout_s=5)
    assert not MARK.exists()


@given(name=hostile.filter(lambda s: not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", s)))
@settings(max_examples=40, deadline=None, derandomize=True)
def test_hostile_device_names_are_refused(name: str) -> None:
    with pytest.raises(ChamlabError, match="device names use"):
        parse_device(Path("devices.toml"), name, {"transport": "ssh", "host": "h"})


@given(argv=st.lists(hostile, min_size=1, max_size=4))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_commands_are_quoted_argument_lists(argv: list[str]) -> None:
    assert shlex.split(shlex.join(argv)) == argv
