"""The one measuring pipeline behind ``profile``, ``measure`` (and later ``calibrate``, ``adapt`` and
farm runs): resolve -> export -> run -> parse, then the caller stores and calls :meth:`PipelineRun.finish`.

* :class:`RunSpec` is resolved once from a device and the command's options (backend, dtype,
  threads, batch): everything that defines *how* a device measures. Bad values are input errors (exit 2)
  before any work.
* :func:`claim_device` holds the device lock for a whole job (see :mod:`chamlab.host.devices.session`).
* :func:`run_items` exports the items (cached, in parallel), runs them in one session on the device,
  and parses each result once (samples, and the ETDump breakdown when asked for).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from chamlab.agent.measure import MeasurePolicy
from chamlab.core.errors import ConfigError, InputError, MeasurementError
from chamlab.host.devices.session import DeviceSession, Outcome, Task, device_lock
from chamlab.host.devices.transports.base import DeviceConfig, Transport
from chamlab.host.luts.lut import Lut, MeasurementSet
from chamlab.host.measurement import etdump as etdump_mod
from chamlab.host.measurement import power_traces as power_mod
from chamlab.operators import DTYPE_BACKENDS, Backend, Dtype, quant
from chamlab.operators.export import Artifact, ArtifactCache, ExportFailure, ExportItem, export_all

MAX_BATCH = 4096


class Progress(Protocol):
    """What long jobs report to (the CLI draws bars on stderr; the library default is silent)."""

    def start(self, phase: str, total: int) -> None: ...
    def advance(self, phase: str, label: str = "") -> None: ...
    def note(self, text: str) -> None: ...


class NullProgress:
    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, phase: str, label: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        pass


def _enum(cls: type[Backend] | type[Dtype], value: str, what: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise InputError(
            f"unknown {what} {value!r}; choose one of {', '.join(m.value for m in cls)}"
        ) from None


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """How one device measures: resolved once from devices.toml and the command's options."""

    device: DeviceConfig
    backend: Backend
    dtype: Dtype
    threads: int
    batch: int = 1
    quant_recipe: str | None = None  # int8: the quantization recipe's id (chamlab.operators.quant)

    @property
    def target(self) -> str:
        return self.device.name

    @property
    def policy(self) -> MeasurePolicy:
        return self.device.measure

    @property
    def measurement_set(self) -> MeasurementSet:
        """The LUT rows this spec produces and reads."""
        return MeasurementSet(
            self.device.name, self.backend.value, self.dtype.value, self.threads, self.batch
        )

    def choose_in(self, lut: Lut, path: Path | str) -> MeasurementSet:
        """This spec's measurement set in ``lut`` (read from ``path``): what a prediction for this run
        reads. None there is a :class:`LutError` naming what the LUT holds (see :meth:`Lut.choose`)."""
        return lut.choose(
            path,
            device=self.target,
            backend=self.backend.value,
            dtype=self.dtype.value,
            threads=self.threads,
            batch=self.batch,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "transport": self.device.transport,
            "backend": self.backend.value,
            "dtype": self.dtype.value,
            "threads": self.threads,
            "batch": self.batch,
            "quant_recipe": self.quant_recipe,
            "runner": self.device.runner,
            "measure": self.policy.to_json(),
        }


def resolve_run(
    device: DeviceConfig,
    *,
    threads: int | None = None,
    backend: str | None = None,
    dtype: str | None = None,
    batch: int = 1,
    quant_recipe: str | None = None,
) -> RunSpec:
    """The :class:`RunSpec` for ``device`` with the given overrides (None: the device's default);
    ``batch``: the input batch size every op and network is exported and measured at;
    ``quant_recipe``: the int8 quantization recipe (default:
    :data:`chamlab.operators.quant.DEFAULT_RECIPE`)."""
    if device.uses_python and not device.runner_python():
        raise ConfigError(
            f'device {device.name}: runner = "{device.runner_kind}" needs the target\'s python, '
            "and none is set",
            hint=f'set python = "/path/to/python3" in [devices.{device.name}] of devices.toml (or runner = '
            '"executor_runner" with runner_path = the executor_runner binary to push)',
        )
    threads = device.threads if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
        raise InputError(f"threads must be an integer from 1 to 256, got {threads!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise InputError(f"batch must be an integer from 1 to {MAX_BATCH}, got {batch!r}")
    chosen = _enum(Backend, backend, "backend") if backend is not None else device.backend
    if chosen is Backend.CUDA and device.runner_kind != "torch-cuda":
        raise InputError(
            f"backend cuda needs the torch-cuda runner, and device {device.name} has runner = "
            f"{device.runner!r} (it runs ExecuTorch programs)",
            hint=f'set runner = "torch-cuda" (and python) in [devices.{device.name}], or pick a GPU target; '
            "see docs/devices.md, section CUDA",
        )
    if device.runner_kind == "torch-cuda" and chosen is not Backend.CUDA:
        raise InputError(
            f'device {device.name} has runner = "torch-cuda", which runs torch.export programs only: '
            f"backend {chosen.value} cannot run there",
            hint='use --backend cuda (or backend = "cuda" in its devices.toml table)',
        )
    chosen_dtype = _enum(Dtype, dtype, "dtype") if dtype is not None else device.dtype
    allowed = DTYPE_BACKENDS.get(chosen_dtype.value)
    if allowed and chosen.value not in allowed:
        raise InputError(
            f"dtype {chosen_dtype.value} runs on backend {', '.join(allowed)} only; device {device.name} "
            f"uses backend {chosen.value}",
            hint=f"pass --backend {allowed[0]}, or --dtype fp32",
        )
    return RunSpec(
        device, chosen, chosen_dtype, threads, batch, quant.recipe_for(chosen_dtype.value, quant_recipe)
    )


@contextlib.contextmanager
def claim_device(
    spec: RunSpec, *, no_wait: bool = False, progress: Progress | None = None, what: str = ""
) -> Iterator[None]:
    """Hold the host's lock of ``spec.device`` for the block (waiting, and saying so, unless
    ``no_wait``: then a busy device is a :class:`~chamlab.core.errors.DeviceBusyError` at once)."""
    progress = progress or NullProgress()
    lock = device_lock(spec.device)
    description = f"pid {os.getpid()} on {socket.gethostname()}" + (f": {what}" if what else "")
    lock.acquire(
        wait=not no_wait,
        description=description,
        on_wait=lambda holder: progress.note(f"device {spec.target} is busy ({holder}); waiting for it"),
    )
    try:
        yield
    finally:
        lock.release()


@dataclasses.dataclass
class Measured:
    """One item measured: its raw samples, the runner's result record and the optional breakdown."""

    item: ExportItem
    artifact: Artifact
    samples_ms: list[float]
    result: dict[str, Any]
    events: list[dict[str, Any]] | None


@dataclasses.dataclass
class PipelineRun:
    """What :func:`run_items` did. Store :attr:`measured`, then call :meth:`finish`."""

    spec: RunSpec
    session: DeviceSession | None
    tasks: list[Task]
    outcomes: list[Outcome]
    measured: dict[ExportItem, Measured]
    failed: list[tuple[str, str]]
    exported: int = 0
    export_s: float = 0.0
    measure_s: float = 0.0
    #: (tasks, attempt, power executions) of each extra round (executor_runner: unstable ops re-queued,
    #: the power round)
    rounds: list[tuple[list[Task], int, dict[str, int] | None]] = dataclasses.field(default_factory=list)

    @property
    def run_id(self) -> str | None:
        return self.session.run_id(self.tasks) if self.session and self.tasks else None

    @property
    def remote_dir(self) -> str | None:
        return self.session.remote_dir(self.tasks) if self.session and self.tasks else None

    def finish(self) -> None:
        """Remove the run directory on the target; call it after storing what was measured."""
        if self.session is not None:
            self.session.finish(self.tasks)
            for tasks, attempt, power_executions in self.rounds:
                self.session.finish(tasks, attempt, power_executions)


def export_items(
    items: Sequence[ExportItem], spec: RunSpec, *, workers: int | None, progress: Progress
) -> tuple[dict[ExportItem, Artifact], list[ExportFailure], int]:
    """Export (cached, in parallel); returns artifacts, failures and how many were fresh exports."""
    progress.start("export", len(items))
    fresh = 0

    def on_done(item: ExportItem, res: object) -> None:
        nonlocal fresh
        fresh += int(getattr(res, "export_s", None) is not None)
        progress.advance("export", item.name)

    try:
        artifacts, failures = export_all(
            items,
            spec.backend,
            spec.dtype,
            cache=ArtifactCache(),
            workers=workers,
            on_done=on_done,
            recipe=spec.quant_recipe,
        )
    except KeyboardInterrupt:
        progress.note(
            f"interrupted during export: {fresh} new artifact(s) are kept in the cache; "
            "re-run the same command to continue"
        )
        raise
    return artifacts, failures, fresh


def _parse(
    outcome: Outcome, breakdown: bool, parsed: dict[str, Any] | None = None
) -> tuple[list[float], list[dict[str, Any]] | None]:
    """Samples (from the runner's result, else its ETDump) and the breakdown; the ETDump once
    (``parsed``: already parsed, for executor_runner outcomes)."""
    if parsed is None and outcome.etdump is not None and (breakdown or outcome.result is None):
        etrecord = outcome.task.artifact.etrecord_path  # a program given by path may have none
        parsed = etdump_mod.parse(outcome.etdump, etrecord if etrecord.is_file() else None)
    if outcome.result is not None:
        samples = [float(x) for x in outcome.result["samples_ms"]]
    elif parsed is not None and parsed["execute_ms"]:
        samples = list(parsed["execute_ms"])
    else:
        raise MeasurementError(f"{outcome.task.key}: no samples in the runner's result or ETDump")
    return samples, (parsed["events"] if breakdown and parsed is not None else None)


def _judge_etdumps(
    outcomes: Sequence[Outcome], spec: RunSpec, session: DeviceSession, parsed: dict[str, dict[str, Any]]
) -> None:
    """executor_runner outcomes: parse each ETDump once and build the result record on the host
    (samples, stability judged against the policy, the driver's device state). A failure to parse
    makes the outcome failed (as data)."""
    version = (
        f"executor_runner sha256:{session.runner_sha256()[:12]}"
        if spec.device.runner_path
        else f"executor_runner {spec.device.runner}"
    )
    for o in outcomes:
        if not o.ok or o.result is not None or o.etdump is None:
            continue
        try:
            etrecord = o.task.artifact.etrecord_path  # a program given by path may have none
            p = etdump_mod.parse(o.etdump, etrecord if etrecord.is_file() else None)
            o.result = etdump_mod.runner_result(
                p, o.state, spec.policy, warmup_runs=spec.policy.warmup_runs, runtime_version=version
            )
        except MeasurementError as exc:
            o.error = str(exc)
            continue
        parsed[o.task.key] = p


def _better(old: Outcome, new: Outcome) -> Outcome:
    """Of two measures of one op, the one to keep (stable first, then the lower robust CV); the kept
    result lists every attempt."""
    if not new.ok or new.result is None:
        return old
    assert old.result is not None

    # stable first; among unstable ones, a window that was not throttled; then the lower robust CV
    def rank(r: dict[str, Any]) -> tuple[bool, bool, float]:
        return bool(r["unstable"]), r.get("throttled") is True, float(r["robust_cv"])

    keep_new = rank(new.result) < rank(old.result)
    kept, other = (new, old) if keep_new else (old, new)
    assert kept.result is not None and other.result is not None
    # which window (0-based, in the order measured) the kept samples come from
    kept.result["kept_window"] = len(old.result["attempts"]) if keep_new else old.result.get("kept_window", 0)
    kept.result["attempts"] = old.result["attempts"] + new.result["attempts"]
    return kept


def _requeue_unstable(
    run: PipelineRun,
    session: DeviceSession,
    parsed: dict[str, dict[str, Any]],
    progress: Progress,
    sleep: Any,
) -> None:
    """Re-measure the ops whose ETDump samples were unstable, after ``cooldown_s``, at most
    ``retries`` times (each round in a run directory of its own); keep the best attempt per op."""
    policy = run.spec.policy
    for attempt in range(1, policy.retries + 1):
        unstable = [o.task for o in run.outcomes if o.ok and o.result is not None and o.result["unstable"]]
        if not unstable:
            return
        throttled = sum(1 for o in run.outcomes if o.ok and o.result and o.result.get("throttled"))
        progress.note(
            f"{len(unstable)} op(s) unstable"
            + (f" ({throttled} throttled)" if throttled else "")
            + f": re-measuring after {policy.cooldown_s:g} s (attempt {attempt + 1} of {policy.retries + 1})"
        )
        sleep(policy.cooldown_s)
        run.rounds.append((unstable, attempt, None))
        again_parsed: dict[str, dict[str, Any]] = {}
        again = {o.task.key: o for o in session.run(unstable, attempt=attempt)}
        _judge_etdumps(list(again.values()), run.spec, session, again_parsed)
        for i, o in enumerate(run.outcomes):
            if o.task.key in again:
                kept = _better(o, again[o.task.key])
                run.outcomes[i] = kept
                if kept is not o:
                    parsed[o.task.key] = again_parsed[o.task.key]


#: the power round's attempt number (its own run directory, after any re-measure rounds)
POWER_ATTEMPT = 1000
MAX_POWER_EXECUTIONS = 10_000_000


def _measure_power(run: PipelineRun, session: DeviceSession, progress: Progress) -> None:
    """executor_runner devices with ``power_reader``: one more round in which the driver samples the
    reader while idle and while the runner executes each op enough times to fill the window (sized
    from the op's measured latency); the energy above idle goes into each result's ``energy``."""
    device = run.spec.device
    settle_cs, window_cs = session.power_timing_cs()
    measured = [o for o in run.outcomes if o.ok and o.result is not None]
    if not measured:
        return
    executions = {}
    per_exec_ms: dict[str, float] = {}
    for o in measured:
        assert o.result is not None
        # time per execution: the ETDump's mean (the op's own time, as its latency); 4x the executions
        # that fill the window. Too many cost nothing (the driver ends the call when the window is
        # full); too few would end the call before it fills. The driver's wall estimate (a difference
        # of two process start-ups) is not used: it can be inflated by seconds on a busy device.
        etdump_ms = max(float(o.result["mean_ms"]), 1e-6)
        per_exec_ms[o.task.key] = etdump_ms
        need = math.ceil(4 * 10 * (settle_cs + window_cs) / etdump_ms) + 1
        executions[o.task.key] = min(MAX_POWER_EXECUTIONS, need)
    tasks = [o.task for o in measured]
    progress.note(f"measuring the energy of {len(tasks)} op(s) with the {device.power_reader} reader")
    run.rounds.append((tasks, POWER_ATTEMPT, executions))
    by_key = {o.task.key: o for o in session.run(tasks, attempt=POWER_ATTEMPT, power_executions=executions)}
    for o in measured:
        assert o.result is not None
        p = by_key.get(o.task.key)
        if p is None or p.rc != 0 or not p.power_samples:
            o.result["energy"] = {
                "reader": device.power_reader,
                "error": (p.error if p else None) or "no samples",
            }
            continue
        try:
            o.result["energy"] = power_mod.energy_from_driver_samples(
                p.power_samples,
                settle_s=settle_cs / 100.0,
                mean_ms=per_exec_ms[o.task.key],
                executions=executions[o.task.key],
                current_sign=device.battery_current_sign,
            )
        except ValueError as exc:
            o.result["energy"] = {"reader": device.power_reader, "error": str(exc)}


def _check_breakdown(spec: RunSpec, breakdown: bool) -> None:
    if breakdown and spec.device.runner_kind == "torch-cuda":
        raise InputError(
            f"device {spec.target}: the torch-cuda runner has no ETDump, so no per-op breakdown; "
            "drop --breakdown"
        )


def run_items(
    spec: RunSpec,
    items: Sequence[ExportItem],
    *,
    breakdown: bool = False,
    fresh: bool = False,
    workers: int | None = None,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
    run_tag: str = "",
    sleep: Any = time.sleep,
) -> PipelineRun:
    """Export ``items``, measure them in one session on ``spec.device`` and parse the results.

    executor_runner devices: the samples come from the ETDumps, judged here against the policy;
    unstable ops are re-measured up to ``policy.retries`` times after ``policy.cooldown_s``
    (``sleep``), and the best attempt is kept (flagged unstable if none was stable).

    Per-item failures (export, runner, parse) are data in :attr:`PipelineRun.failed`; transport
    failures raise. The caller holds the device lock (:func:`claim_device`). ``run_tag`` goes into
    the run id (farm runs pass their date, so a night never resumes another night's run).
    """
    progress = progress or NullProgress()
    _check_breakdown(spec, breakdown)
    items = list(dict.fromkeys(items))
    t0 = time.perf_counter()
    artifacts, failures, fresh_exports = export_items(items, spec, workers=workers, progress=progress)
    export_s = time.perf_counter() - t0
    run = run_artifacts(
        spec,
        [(item, artifacts[item]) for item in items if item in artifacts],
        breakdown=breakdown,
        fresh=fresh,
        transport=transport,
        progress=progress,
        no_wait=no_wait,
        run_tag=run_tag,
        sleep=sleep,
    )
    run.failed[:0] = [(f.item.name, f"export failed: {f.error}") for f in failures]
    run.exported = fresh_exports
    run.export_s = export_s
    return run


def run_artifacts(
    spec: RunSpec,
    pairs: Sequence[tuple[ExportItem, Artifact]],
    *,
    breakdown: bool = False,
    fresh: bool = False,
    transport: Transport | None = None,
    progress: Progress | None = None,
    no_wait: bool = False,
    run_tag: str = "",
    sleep: Any = time.sleep,
) -> PipelineRun:
    """Measure programs that already exist (exported, or given by path) in one session on
    ``spec.device`` and parse the results; the rest as :func:`run_items`."""
    progress = progress or NullProgress()
    _check_breakdown(spec, breakdown)
    parsed: dict[str, dict[str, Any]] = {}  # op key -> its parsed ETDump (executor_runner runs)
    run = PipelineRun(spec, None, [], [], {}, [])
    items = [item for item, _ in pairs]
    tasks = [Task(item.name, artifact) for item, artifact in pairs]
    if not tasks:
        return run
    owns_transport = transport is None
    transport = transport or spec.device.open()
    try:
        session = DeviceSession(
            spec.device,
            transport,
            threads=spec.threads,
            etdump=breakdown,
            no_wait=no_wait,
            on_wait=lambda owner: progress.note(f"device {spec.target} is busy (driver {owner}); waiting"),
            on_cool=lambda key, mc: progress.note(
                f"{key}: waiting for the zone to cool below {spec.device.cool_below_c:g} C "
                f"(it reads {mc / 1000:.1f} C; at most {spec.device.cool_wait_max_s:g} s)"
            ),
            run_tag=run_tag,
        )
        run.session, run.tasks = session, tasks
        progress.start("measure", len(tasks))
        t1 = time.perf_counter()
        run.outcomes = session.run(tasks, on_op=lambda key, rc: progress.advance("measure", key), fresh=fresh)
        if spec.device.runner_kind == "executor_runner":
            _judge_etdumps(run.outcomes, spec, session, parsed)
            _requeue_unstable(run, session, parsed, progress, sleep)
            if spec.device.power_reader:
                _measure_power(run, session, progress)
        run.measure_s = time.perf_counter() - t1
    finally:
        if owns_transport:
            transport.close()
    by_name = {item.name: item for item in items}
    for outcome in run.outcomes:
        item = by_name[outcome.task.key]
        if not outcome.ok:
            run.failed.append((outcome.task.key, outcome.error or f"exit {outcome.rc}"))
            continue
        try:
            samples, events = _parse(outcome, breakdown, parsed.get(outcome.task.key))
        except (MeasurementError, KeyError, TypeError, ValueError) as exc:
            run.failed.append((outcome.task.key, str(exc)))
            continue
        run.measured[item] = Measured(item, outcome.task.artifact, samples, outcome.result or {}, events)
    return run
