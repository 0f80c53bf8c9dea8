"""The one measuring pipeline behind ``profile``, ``measure`` (and later ``calibrate``, ``adapt`` and
farm runs): resolve -> export -> run -> parse, then the caller stores and calls :meth:`PipelineRun.finish`.

* :class:`RunSpec` is resolved once from a device and the command's options (backend, dtype,
  threads, batch): everything that defines *how* a device measures. Bad values are input errors (exit 2)
  before any work.
* :func:`claim_device` holds the device lock for a whole job (see :mod:`chamlab.host.session`).
* :func:`run_items` exports the items (cached, in parallel), runs them in one session on the device,
  and parses each result once (samples, and the ETDump breakdown when asked for).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from chamlab.agent.measure import MeasurePolicy
from chamlab.core.errors import ConfigError, InputError, MeasurementError
from chamlab.operators import DTYPE_BACKENDS, Backend, Dtype, quant
from chamlab.operators.export import Artifact, ArtifactCache, ExportFailure, ExportItem, export_all

from . import etdump as etdump_mod
from .lut import MeasurementSet
from .session import DeviceSession, Outcome, Task, device_lock
from .transports.base import DeviceConfig, Transport

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
    if device.runner_kind == "shim" and not device.runner_python():
        raise ConfigError(
            f'device {device.name}: runner = "shim" needs the target\'s python, and none is set',
            hint=f'set python = "/path/to/python3" in [devices.{device.name}] of devices.toml (or runner = '
            "the path of an executor_runner on the target)",
        )
    threads = device.threads if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256:
        raise InputError(f"threads must be an integer from 1 to 256, got {threads!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise InputError(f"batch must be an integer from 1 to {MAX_BATCH}, got {batch!r}")
    chosen = _enum(Backend, backend, "backend") if backend is not None else device.backend
    if chosen is Backend.CUDA:
        raise InputError(
            f"backend cuda: the device driver cannot start the torch-cuda runner yet (device {device.name} "
            "runs ExecuTorch programs); time a cuda artifact with `python -m chamlab.agent.torch_runner`",
            hint="see docs/devices.md, section CUDA",
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


def _parse(outcome: Outcome, breakdown: bool) -> tuple[list[float], list[dict[str, Any]] | None]:
    """Samples (from the runner's result, else its ETDump) and the breakdown; the ETDump once."""
    parsed = None
    if outcome.etdump is not None and (breakdown or outcome.result is None):
        parsed = etdump_mod.parse(outcome.etdump, outcome.task.artifact.etrecord_path)
    if outcome.result is not None:
        samples = [float(x) for x in outcome.result["samples_ms"]]
    elif parsed is not None and parsed["execute_ms"]:
        samples = list(parsed["execute_ms"])
    else:
        raise MeasurementError(f"{outcome.task.key}: no samples in the runner's result or ETDump")
    return samples, (parsed["events"] if breakdown and parsed is not None else None)


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
) -> PipelineRun:
    """Export ``items``, measure them in one session on ``spec.device`` and parse the results.

    Per-item failures (export, runner, parse) are data in :attr:`PipelineRun.failed`; transport
    failures raise. The caller holds the device lock (:func:`claim_device`). ``run_tag`` goes into
    the run id (farm runs pass their date, so a night never resumes another night's run).
    """
    progress = progress or NullProgress()
    items = list(dict.fromkeys(items))
    t0 = time.perf_counter()
    artifacts, failures, fresh_exports = export_items(items, spec, workers=workers, progress=progress)
    run = PipelineRun(spec, None, [], [], {}, [(f.item.name, f"export failed: {f.error}") for f in failures])
    run.exported = fresh_exports
    run.export_s = time.perf_counter() - t0
    tasks = [Task(item.name, artifacts[item]) for item in items if item in artifacts]
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
            run_tag=run_tag,
        )
        run.session, run.tasks = session, tasks
        progress.start("measure", len(tasks))
        t1 = time.perf_counter()
        run.outcomes = session.run(tasks, on_op=lambda key, rc: progress.advance("measure", key), fresh=fresh)
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
            samples, events = _parse(outcome, breakdown)
        except (MeasurementError, KeyError, TypeError, ValueError) as exc:
            run.failed.append((outcome.task.key, str(exc)))
            continue
        run.measured[item] = Measured(item, outcome.task.artifact, samples, outcome.result or {}, events)
    return run
