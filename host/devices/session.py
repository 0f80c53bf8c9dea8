"""Profiling sessions: stage -> push -> run the driver -> pull -> parse, resumable.

A *task* is one artifact to measure on a target (a single-op microbenchmark or a whole network).
:class:`DeviceSession` runs a list of tasks through the device-side contract (``agent/driver.sh``):

1. stage a run directory locally: ``driver.sh``, ``driver.env``, ``runner.sh``, ``tasks.tsv``,
   ``artifacts/`` and, for the python runners (shim, torch-cuda), the agent's own code under ``lib/``;
   for ``runner = "executor_runner"`` the host file ``runner_path`` is pushed once to
   ``<workdir>/runners/<sha256>/<file name>`` (a content-addressed cache on the target: a file lands
   under its final name only complete, by rename) and every run reuses it;
2. push it to ``<workdir>/<run id>`` on the target and run ``sh driver.sh`` there, streaming its
   progress lines;
3. pull ``results.jsonl`` (and the ETDumps and logs it names) and turn each line into an outcome.

The run id is a hash of everything that defines the run (device, backend, dtype, threads, runner,
measurement policy, task keys), so re-running the same command after a crash or a dropped link
lands in the same run directory, and the driver skips the ops it already finished. The run directory
stays on the target until the caller has stored the results (:meth:`DeviceSession.finish`): a failed
LUT write loses nothing, and the re-run only pulls and stores.

Locks: one measuring run per device at a time. :func:`device_lock` is the host's lock (a ``flock`` in
the cache, held for a whole job, so plans are made against the LUT as it is once the device is ours);
the driver takes a second lock in the target's workdir (pid + boot id), which also covers runs from
other hosts. A run that finds the device busy waits and says so, or with ``no_wait`` fails at once
(:class:`~chamlab.core.errors.DeviceBusyError`, exit 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from chamlab.core.errors import ConfigError, DeviceBusyError, InputError, TransportError
from chamlab.core.files import cache_root
from chamlab.core.locks import FileLock
from chamlab.host.devices.transports.base import RUNNER_KINDS, DeviceConfig, Transport
from chamlab.operators.export import Artifact

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.:=,+-]+$")
_SAFE_TAG = re.compile(r"^[A-Za-z0-9_.-]+$")
RUNNERS_DIR = "runners"  # <workdir>/runners/<sha256>/<name>: pushed executor_runner binaries
LOG_TAIL_CHARS = 600
LOCK_NAME = ".chamlab-device.lock"
EX_BUSY = 75  # the driver's exit code when the device lock is held and NO_WAIT=1


class RunInterrupted(TransportError):
    """A run that ended before every op was tried (a dropped link, a dead device or driver).

    Nothing measured is lost: finished ops stay in the run directory on the target, and re-running
    the same command resumes there. :attr:`done`, :attr:`failed` and :attr:`missing` count the ops.
    """

    def __init__(self, device: str, total: int, finished: dict[str, int], reason: str) -> None:
        self.total = total
        self.done = sum(1 for rc in finished.values() if rc == 0)
        self.failed = len(finished) - self.done
        self.missing = total - len(finished)
        super().__init__(
            f"{device}: the run stopped with {self.done} op(s) done, {self.failed} failed and "
            f"{self.missing} missing of {total}: {reason}",
            hint="re-run the same command to resume: finished ops are kept on the target and only "
            "the missing ones are measured",
        )


def stage_agent(folder: Path) -> Path:
    """Copy the agent's python files into ``folder/lib/chamlab/agent`` (the target runs them with
    ``PYTHONPATH=<folder>/lib``, whatever chamlab it may have installed); ``folder/lib``."""
    lib = folder / "lib" / "chamlab" / "agent"
    lib.mkdir(parents=True)
    for entry in resources.files("chamlab.agent").iterdir():  # every module of the agent, none forgotten
        if entry.name.endswith(".py"):
            (lib / entry.name).write_text(entry.read_text())
    return folder / "lib"


def device_lock(device: DeviceConfig) -> FileLock:
    """The host's lock of ``device`` (``<cache>/locks/<name>.lock``); hold it for a whole job."""
    return FileLock(cache_root() / "locks" / f"{device.name}.lock", what=f"device {device.name}")


@dataclasses.dataclass(frozen=True)
class Task:
    key: str  # an op key, or a network name such as net:macro-cifar10:01201201
    artifact: Artifact

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Outcome:
    task: Task
    rc: int
    result: dict[str, Any] | None = None
    etdump: Path | None = None
    error: str | None = None
    #: the driver's device state around the op (executor_runner runs): see agent/driver.sh
    state: dict[str, Any] | None = None
    #: the driver's power samples (the executor_runner power round): the text of out/<digest>.power
    power_samples: str | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.error is None


def cpu_mask(cpu_list: str) -> str:
    """``"0-2,5"`` -> ``"27"``: the hex mask both util-linux and toybox ``taskset`` accept."""
    mask = 0
    for part in cpu_list.split(","):
        lo, _, hi = part.partition("-")
        for c in range(int(lo), int(hi or lo) + 1):
            mask |= 1 << c
    return format(mask, "x")


class DeviceSession:
    """Runs tasks on one device through a transport (see the module docstring)."""

    def __init__(
        self,
        device: DeviceConfig,
        transport: Transport,
        *,
        threads: int,
        etdump: bool = False,
        no_wait: bool = False,
        on_wait: Callable[[str], None] | None = None,
        run_tag: str = "",
        on_cool: Callable[[str, int], None] | None = None,
    ) -> None:
        if run_tag and not _SAFE_TAG.match(run_tag):
            raise InputError(f"run tag {run_tag!r} must use only A-Z a-z 0-9 . _ -")
        if device.runner_kind == "executor_runner" and not etdump:
            etdump = True  # executor_runner prints no timings: its ETDump is the measurement
        if device.runner_kind == "torch-cuda" and etdump:
            raise InputError(
                f"device {device.name}: the torch-cuda runner has no ETDump (no per-op breakdown); "
                "drop --breakdown"
            )
        self.device = device
        self.transport = transport
        self.threads = threads
        self.etdump = etdump
        self.no_wait = no_wait
        self.on_wait = on_wait
        self.on_cool = on_cool  # (op key, zone millidegrees): the driver waits for the zone to cool
        self._runner_sha: str | None = None
        self.run_tag = run_tag  # part of the run id: runs with another tag (e.g. date) never resume this one

    # -- identity ---------------------------------------------------------------------------------------
    def run_id(
        self, tasks: Sequence[Task], attempt: int = 0, power_executions: dict[str, int] | None = None
    ) -> str:
        """The run directory's name; ``attempt`` > 0: a re-measure of unstable ops (a new directory)."""
        ident: dict[str, Any] = {
            "device": self.device.name,
            "threads": self.threads,
            "etdump": self.etdump,
            "runner": self.device.runner,
            "measure": self.device.measure.to_json(),
            "affinity": self.device.affinity,
            "power": self.device.power_flags(),
            "tasks": sorted(
                (t.key, t.artifact.backend, t.artifact.dtype, t.artifact.cache_key) for t in tasks
            ),
        }
        if self.device.state_flags():
            ident["state_roots"] = self.device.state_flags()
        if self.device.heat_env():
            ident["heat"] = self.device.heat_env()
        if self.device.runner_kind == "torch-cuda":
            ident["torch"] = [self.device.torch_mode, self.device.torch_device]
        if self.device.runner_path:
            ident["runner_sha256"] = self.runner_sha256()
        if attempt:
            ident["attempt"] = attempt
        if power_executions:
            ident["power_executions"] = power_executions
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        return f"run-{self.run_tag}-{digest}" if self.run_tag else f"run-{digest}"

    def workdir(self) -> str:
        return self.device.workdir or self.transport.default_workdir()

    # -- the executor_runner binary, cached on the target by content ------------------------------------
    def runner_sha256(self) -> str:
        """sha256 of the host file ``runner_path`` (read once per session)."""
        if self._runner_sha is None:
            path = Path(self.device.runner_path).expanduser()
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"device {self.device.name}: runner_path {str(path)!r} cannot be read ({exc.strerror})",
                    hint="build executor_runner for the target (docs/android.md) and set "
                    "runner_path to the file",
                ) from None
            self._runner_sha = hashlib.sha256(data).hexdigest()
        return self._runner_sha

    def remote_runner(self) -> str:
        """Where the runner binary is on the target (``runner_path``'s cached copy, or ``runner``)."""
        if not self.device.runner_path:
            return self.device.runner
        name = Path(self.device.runner_path).name
        return posixpath.join(self.workdir(), RUNNERS_DIR, self.runner_sha256(), name)

    def ensure_runner(self) -> bool:
        """Push ``runner_path`` to its cache slot on the target unless it is there; True if pushed."""
        if not self.device.runner_path:
            return False
        remote = self.remote_runner()
        if self.transport.run(["test", "-x", remote], timeout_s=60).rc == 0:
            return False
        part = f"{remote}.part"
        self.transport.push(Path(self.device.runner_path).expanduser(), part, timeout_s=600)
        for argv in (["chmod", "755", part], ["mv", "-f", part, remote]):
            res = self.transport.run(argv, timeout_s=60)
            if res.rc != 0:
                raise TransportError(
                    f"{self.device.name}: {shlex.join(argv)} failed (exit {res.rc}): "
                    f"{res.output.strip()[-200:]}"
                )
        return True

    # -- staging ----------------------------------------------------------------------------------------
    def _runner_script(self) -> str:
        prefix: list[str] = []
        if self.device.affinity:
            prefix = ["taskset", cpu_mask(self.device.affinity)]
        lines = ["#!/bin/sh", "# written by chamlab: the runner command for this run"]
        kind = self.device.runner_kind
        if self.device.uses_python:
            python = self.device.runner_python()
            if not python:
                raise ConfigError(
                    f'device {self.device.name}: runner = "{kind}" needs the target\'s python',
                    hint=f'set python = "/path/to/python3" in [devices.{self.device.name}] of devices.toml',
                )
            module = RUNNER_KINDS.get(kind).module
            assert module is not None  # uses_python: a kind with a python module
            cmd = [*prefix, python, "-m", module, *self.device.measure.to_flags()]
            if kind == "torch-cuda":
                cmd += ["--mode", self.device.torch_mode, "--device", self.device.torch_device]
            cmd += self.device.power_flags() + self.device.state_flags()
            if kind == "shim":
                cmd += self.device.heat_flags()  # the shim gates and checks each window itself
            lines += [
                'here=$(cd "$(dirname "$0")" && pwd)',
                'PYTHONPATH="$here/lib${PYTHONPATH:+:$PYTHONPATH}"',
                "export PYTHONPATH",
            ]
        else:
            cmd = [*prefix, self.remote_runner()]
        lines.append(f'exec {shlex.join(cmd)} "$@"')
        return "\n".join(lines) + "\n"

    def power_timing_cs(self) -> tuple[int, int]:
        """executor_runner power round: (settle, window) in centiseconds. The settling time covers the
        fuel gauge's averaging and the runner's start-up; the window is ``power_window_s`` or the
        reader's minimum for a shell sampler at 0.1 s."""
        reader = self.device.power_reader
        settle = self.device.power_settle_s or (2.5 if reader == "battery" else 0.5)
        window = self.device.power_window_s or (5.0 if reader == "battery" else 1.0)
        return round(settle * 100), round(window * 100)

    def _driver_env(self, power_round: bool = False) -> str:
        values: dict[str, object] = {
            "THREADS": self.threads,
            "NUM_EXECUTIONS": self.device.measure.num_executions,
            "RUNNER_KIND": self.device.runner_kind,
            "ETDUMP": int(self.etdump),
            "OP_TIMEOUT_S": int(self.device.op_timeout_s),
            "COOLDOWN_S": self.device.cooldown_between_ops_s,
            "LOCK_DIR": posixpath.join(self.workdir(), LOCK_NAME),
            "NO_WAIT": int(self.no_wait),
            "WATCH_STDIN": 1,
            # the python runners measure the whole task list in one process (start-up paid once per run)
            "BATCH": int(self.device.uses_python),
            # executor_runner: the throw-away warm-up call, and executions the host drops (see driver.sh)
            "WARMUP_RUNS": self.device.measure.warmup_runs
            if self.device.runner_kind == "executor_runner"
            else 0,
        }
        for key in ("cpufreq_root", "thermal_root", "power_supply_root"):
            if getattr(self.device, key):
                values[key.upper()] = getattr(self.device, key)
        if not power_round and self.device.runner_kind == "executor_runner":
            values |= self.device.heat_env()  # the python runners take them as flags (runner.sh)
        if power_round:
            settle_cs, window_cs = self.power_timing_cs()
            values |= {
                "POWER_ROUND": 1,
                "POWER_READER": self.device.power_reader,
                "POWER_ROOT": self.device.power_root,
                "POWER_SETTLE_CS": settle_cs,
                "POWER_WINDOW_CS": window_cs,
            }
        return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in values.items())

    def stage(
        self, tasks: Sequence[Task], folder: Path, power_executions: dict[str, int] | None = None
    ) -> None:
        """Write the run directory for ``tasks`` into ``folder`` (``power_executions``: the
        executor_runner power round, executions of each op's active call)."""
        (folder / "artifacts").mkdir(parents=True)
        pkg = resources.files("chamlab.agent")
        (folder / "driver.sh").write_text(pkg.joinpath("driver.sh").read_text())
        (folder / "driver.env").write_text(self._driver_env(power_round=bool(power_executions)))
        (folder / "runner.sh").write_text(self._runner_script())
        if self.device.uses_python:
            stage_agent(folder)
        lines = []
        for task in tasks:
            if not _SAFE_KEY.match(task.key):
                raise InputError(f"task key {task.key!r} has characters the device driver cannot carry")
            rel = f"artifacts/{task.artifact.pte_path.name}"
            if not (folder / rel).exists():
                shutil.copyfile(task.artifact.pte_path, folder / rel)
            extra = f"\t{power_executions[task.key]}" if power_executions else ""
            lines.append(f"{task.digest}\t{task.key}\t{rel}{extra}\n")
        (folder / "tasks.tsv").write_text("".join(lines))

    # -- running ----------------------------------------------------------------------------------------
    def remote_dir(self, tasks: Sequence[Task], attempt: int = 0) -> str:
        return posixpath.join(self.workdir(), self.run_id(tasks, attempt))

    def run(
        self,
        tasks: Sequence[Task],
        *,
        on_op: Callable[[str, int], None] | None = None,
        fresh: bool = False,
        attempt: int = 0,
        power_executions: dict[str, int] | None = None,
    ) -> list[Outcome]:
        """Run ``tasks`` (resuming a previous identical run) and return one outcome per task.

        ``on_op(key, rc)`` is called as each op finishes on the target (rc -1: skipped, done before).
        ``fresh`` discards what a previous identical run left (``profile --force``); ``attempt`` > 0
        re-measures (unstable ops) in a directory of their own; ``power_executions`` (op key ->
        executions) makes it the executor_runner power round (see agent/driver.sh). The run directory
        stays on the target: call :meth:`finish` once the outcomes are stored.
        """
        if not tasks:
            return []
        run_id = self.run_id(tasks, attempt, power_executions)
        remote = posixpath.join(self.workdir(), run_id)
        timeout = 60.0 + len(tasks) * (self.device.op_timeout_s or 3600.0)
        by_key = {t.key: t for t in tasks}
        with tempfile.TemporaryDirectory(prefix="chamlab-") as tmp:
            stage = Path(tmp) / run_id
            self.stage(tasks, stage, power_executions)
            if fresh:
                self.transport.run(["rm", "-rf", remote], timeout_s=120)
            self.ensure_runner()
            self.transport.push(stage, remote, timeout_s=600)
            busy: list[str] = []
            finished: dict[str, int] = {}  # op key -> rc, as the driver reports them (skip: 0)

            def on_line(line: str) -> None:
                parts = line.split(" ")
                if len(parts) < 2 or parts[0] != "chamlab-driver":
                    return
                if parts[1] == "op" and len(parts) >= 6:
                    finished[" ".join(parts[5:])] = int(parts[4])
                    if on_op:
                        on_op(" ".join(parts[5:]), int(parts[4]))
                elif parts[1] == "skip" and len(parts) >= 5:
                    finished[" ".join(parts[4:])] = 0
                    if on_op:
                        on_op(" ".join(parts[4:]), -1)
                elif parts[1] == "wait" and self.on_wait:
                    self.on_wait(" ".join(parts[2:]) or "another driver")
                elif parts[1] == "cool" and len(parts) >= 6 and parts[4].lstrip("-").isdigit():
                    if self.on_cool:
                        self.on_cool(" ".join(parts[5:]), int(parts[4]))
                elif parts[1] == "busy":
                    busy.append(" ".join(parts[2:]) or "another driver")

            try:
                res = self.transport.run(
                    ["sh", posixpath.join(remote, "driver.sh")],
                    timeout_s=timeout,
                    on_line=on_line,
                    hold_stdin=True,
                )
            except TransportError as exc:
                raise RunInterrupted(self.device.name, len(tasks), finished, exc.message) from exc
            if res.rc == EX_BUSY and busy:
                raise DeviceBusyError(
                    f"device {self.device.name} is busy: a driver (pid and boot id {busy[0]}) holds "
                    f"{posixpath.join(self.workdir(), LOCK_NAME)}",
                    hint="wait for it to finish, or re-run without --no-wait to queue behind it",
                )
            if res.rc != 0 or "chamlab-driver done" not in res.output:
                raise RunInterrupted(
                    self.device.name,
                    len(tasks),
                    finished,
                    f"the driver in {remote} stopped early (exit {res.rc}): "
                    f"{res.output.strip()[-LOG_TAIL_CHARS:]}",
                )
            local_results = Path(tmp) / "results.jsonl"
            self.transport.pull(posixpath.join(remote, "results.jsonl"), local_results, timeout_s=600)
            outcomes = self._parse_results(local_results, by_key, remote, Path(tmp))
            # ETDumps must outlive the temporary directory
            etdump_dir = cache_root() / "etdumps" / self.device.name / run_id
            for o in outcomes:
                if o.etdump is not None:
                    etdump_dir.mkdir(parents=True, exist_ok=True)
                    kept = etdump_dir / o.etdump.name
                    shutil.copyfile(o.etdump, kept)
                    o.etdump = kept
        return outcomes

    def finish(
        self, tasks: Sequence[Task], attempt: int = 0, power_executions: dict[str, int] | None = None
    ) -> None:
        """Remove the run directory: call it once the outcomes are stored. (A re-run after some ops
        failed plans only those, which is another run id, so the directory has nothing to resume;
        the failures' log tails are in their outcomes' errors.)"""
        if tasks:
            remote = posixpath.join(self.workdir(), self.run_id(tasks, attempt, power_executions))
            self.transport.run(["rm", "-rf", remote], timeout_s=120)

    def _parse_results(self, path: Path, by_key: dict[str, Task], remote: str, tmp: Path) -> list[Outcome]:
        latest: dict[str, dict[str, Any]] = {}
        for line in path.read_bytes().decode("utf-8", "replace").splitlines():  # a corrupt file too
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a dropped link: that op is simply measured again
            if isinstance(rec, dict) and rec.get("op_key") in by_key:
                prev = latest.get(rec["op_key"])
                if prev is None or prev.get("rc") != 0:  # a success is never replaced by a later failure
                    latest[rec["op_key"]] = rec
        outcomes = []
        for key, task in by_key.items():
            rec = latest.get(key)
            if rec is None:
                outcomes.append(Outcome(task, -1, error="the driver recorded no result for this op"))
                continue
            state = rec.get("state") if isinstance(rec.get("state"), dict) else None
            outcome = Outcome(task, int(rec.get("rc", -1)), result=rec.get("result"), state=state)
            if rec.get("etdump"):
                local = tmp / f"{task.digest}.etdp"
                self.transport.pull(posixpath.join(remote, rec["etdump"]), local, timeout_s=300)
                outcome.etdump = local
            if rec.get("power"):
                local = tmp / f"{task.digest}.power"
                self.transport.pull(posixpath.join(remote, rec["power"]), local, timeout_s=120)
                outcome.power_samples = local.read_text(errors="replace")
            if outcome.rc != 0:
                outcome.error = f"runner exit {outcome.rc}: {self._log_tail(remote, rec.get('log'), tmp)}"
            elif outcome.result is None and outcome.etdump is None and outcome.power_samples is None:
                outcome.error = "the runner produced neither a result nor an ETDump"
            outcomes.append(outcome)
        return outcomes

    def _log_tail(self, remote: str, log: str | None, tmp: Path) -> str:
        if not log:
            return "(no log)"
        local = tmp / "last.log"
        try:
            self.transport.pull(posixpath.join(remote, log), local, timeout_s=120)
        except TransportError:
            return f"(log {log} could not be pulled)"
        text = local.read_text(errors="replace").strip()
        lines = [ln for ln in text.splitlines() if not ln.startswith("[")]  # drop runtime chatter
        return " | ".join(lines[-4:])[-LOG_TAIL_CHARS:] or "(empty log)"
