"""Shared fixtures: an isolated artifact cache, a fast device registry, the CLI, a profiled LUT.

Everything here is real: ExecuTorch exports, the agent's runner in its own processes, the POSIX
driver, Parquet files. The only thing made fast is the measurement policy (few executions, no
re-measure), which the tests do not judge by time.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from peers import AdbPeer, AdbServer, Sshd

# pytest-xdist's workers inherit COLUMNS=80 from it; the CLI's rich consoles, made at import, would fix
# their width from it once, and the tests that give an invocation its own COLUMNS would get 80 columns.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` (40 s or more on the 2-core CI machine) run first, the others in
    their usual order after them: under ``make unit``'s two workers a long test reached last would
    keep one worker busy while the other waits with nothing left (the longest-first rule). Every
    worker collects the same order, as pytest-xdist requires."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: False (slow) first


FAST_DEVICES = """
[devices.test-cpu]
transport = "local"
description = "this machine, fast measurement policy for tests"
threads = 1

[devices.test-cpu.measure]
num_executions = 5
warmup_runs = 1
warmup_ms = 0
min_time_ms = 10
retries = 0
"""


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session gets its own cache: run directories and device locks (inherited by
    children). The processes of one run (:func:`run_shared_dir`) share its ``artifacts`` folder (a
    link): programs are stored by content, each written by an atomic rename, so an op or network one
    worker exported is not exported again by the other."""
    cache = tmp_path_factory.mktemp("chamlab-cache")
    shared = run_shared_dir(tmp_path_factory)
    if shared is not None:
        (shared / "artifacts").mkdir(exist_ok=True)
        (cache / "artifacts").symlink_to(shared / "artifacts", target_is_directory=True)
    os.environ["CHAMLAB_CACHE"] = str(cache)
    os.environ.pop("CHAMLAB_DEVICES", None)
    return cache


@pytest.fixture(autouse=True)
def reap_subprocesses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every process a test starts with ``subprocess.Popen`` ends with the test, and its pipes are
    closed: a test that only ``wait()``s (or fails before it does) would otherwise leave open pipe files
    for the garbage collector, which reports them later (``ResourceWarning``) inside whichever test then
    runs. Processes still running at teardown are killed (a failing test must not leave them behind)."""
    started: list[subprocess.Popen[Any]] = []
    init = subprocess.Popen.__init__

    def tracked(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(subprocess.Popen, "__init__", tracked)
    yield
    monkeypatch.undo()
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        proc.wait()


@pytest.fixture(scope="session")
def fast_devices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("devices") / "devices.toml"
    path.write_text(FAST_DEVICES)
    return path


def chamlab(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the installed `chamlab` console script."""
    exe = shutil.which("chamlab", path=str(BIN)) or "chamlab"
    return subprocess.run(
        [exe, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def profile_macro(out: Path, devices: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    """`chamlab profile --target test-cpu --space macro-cifar10 --out OUT --devices DEVICES ...`."""
    return chamlab(
        "profile",
        "--target",
        "test-cpu",
        "--space",
        "macro-cifar10",
        "--out",
        out,
        "--devices",
        devices,
        *extra,
    )


def run_shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A folder that every pytest process of this test run shares: ``$CHAMLAB_TEST_SHARED`` when set
    (``make unit`` sets one for its parallel and its serial part, so the serial part finds the
    session LUT and the exported programs made before it), else the pytest-xdist workers' own (named by
    xdist's run id); None when the tests run in one process without it."""
    given = os.environ.get("CHAMLAB_TEST_SHARED")
    if given:
        shared = Path(given)
        shared.mkdir(parents=True, exist_ok=True)
        return shared
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        return None
    shared = tmp_path_factory.getbasetemp().parent / f"shared-{run}"  # the workers' common base
    shared.mkdir(exist_ok=True)
    return shared


@contextlib.contextmanager
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[None]:
    """Hold the run-wide lock ``name`` (an flock in :func:`run_shared_dir`) for the block: the workers
    take turns. Nothing to wait for in one process.

    pytest-xdist's ``xdist_group`` cannot do this here: xdist 3.8 groups tests by rewriting
    ``item._nodeid``, which pytest 9 no longer reads, so ``--dist loadgroup`` spreads a group's tests
    over the workers like ``--dist load``."""
    shared = run_shared_dir(tmp_path_factory)
    if shared is None:
        yield
        return
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture
def ray_turn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One Ray cluster at a time across the workers, for a test that starts one."""
    with one_at_a_time(tmp_path_factory, "ray"):
        yield


@pytest.fixture(scope="module")
def ray_turn_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """:func:`ray_turn` held for a module whose fixture keeps a cluster up for its tests."""
    with one_at_a_time(tmp_path_factory, "ray"):
        yield


@pytest.fixture(scope="session")
def profiled_lut(tmp_path_factory: pytest.TempPathFactory, fast_devices: Path) -> tuple[Path, dict]:
    """`chamlab profile` of all of macro-cifar10 on test-cpu: (LUT path, its --json report).

    Under pytest-xdist (`make unit`) the workers of one run share it: the first to need it profiles it
    under a lock, in a folder of the run (named by xdist's run id) beside the workers' own, and the
    others read it once it is complete. The tests copy it before writing to it (one only re-profiles
    it, a no-op). Alone (`pytest tests/...`) it is the session's own, as before."""
    shared = run_shared_dir(tmp_path_factory)
    if shared is None:
        out = tmp_path_factory.mktemp("lut") / "macro.parquet"
        res = profile_macro(out, fast_devices, "--json")
        assert res.returncode == 0, res.stderr
        return out, json.loads(res.stdout)
    out, report = shared / "macro.parquet", shared / "macro-report.json"
    with one_at_a_time(tmp_path_factory, "macro-lut"):
        if not report.is_file():
            res = profile_macro(out, fast_devices, "--json")
            assert res.returncode == 0, res.stderr
            tmp = report.with_suffix(".tmp")
            tmp.write_text(res.stdout)
            tmp.replace(report)  # complete: the LUT was written before the report
    return out, json.loads(report.read_text())


SLOW_DEVICES = """
[devices.test-cpu]
transport = "local"
description = "this machine, a measurement slow enough to interrupt mid-op"
threads = 1

[devices.test-cpu.measure]
num_executions = 5
warmup_runs = 1
warmup_ms = 0
min_time_ms = 1500
retries = 0
"""


def wait_for(predicate: Callable[[], object], what: str, timeout_s: float = 120) -> None:
    """Poll for an observed event (never a fixed sleep standing in for one)."""
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def private_cache(tmp_path: Path) -> dict[str, str]:
    """The environment of a test's own ``CHAMLAB_CACHE`` (its processes are told apart by it:
    :func:`processes_with`) whose ``artifacts`` are the session's (a link): what was exported before is
    not exported again."""
    session = Path(os.environ["CHAMLAB_CACHE"]) / "artifacts"
    session.mkdir(parents=True, exist_ok=True)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "artifacts").symlink_to(session.resolve(), target_is_directory=True)
    return {"CHAMLAB_CACHE": str(cache)}


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment contains ``marker`` (e.g. a test's private CHAMLAB_CACHE):
    the host, its export workers, the driver, the runner all inherit it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def _default_sigint() -> None:
    # a test run launched in the background (`make test &`) inherits SIGINT ignored, and a Python
    # started with SIGINT ignored never raises KeyboardInterrupt: the Ctrl-C tests would wait forever
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_chamlab(*args: str | Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start the installed `chamlab` in the background, with Ctrl-C (SIGINT) at its default whatever
    the test run inherited, so that the tests that interrupt it see what a terminal user sees."""
    exe = shutil.which("chamlab", path=str(BIN)) or "chamlab"
    return subprocess.Popen(
        [exe, *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        preexec_fn=_default_sigint,
    )


# -- real remote peers (tests/peers.py): a foreground sshd per test, one adb server per test session on
# its own port, and a device-side adb peer per test
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


def write_idx(folder: Path, n: int, side: int, classes: int) -> Path:
    """A tiny IDX dataset (the Fashion-MNIST file format), gzipped as Debian ships it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    labels = (np.arange(n) % classes).astype(np.uint8)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">HBB3I", 0, 8, 3, n, side, side) + images.tobytes())
    )
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">HBBI", 0, 8, 1, n) + labels.tobytes())
    )
    return folder
