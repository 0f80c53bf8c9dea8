"""Export operators and networks to ExecuTorch ``.pte`` programs, cached by content.

An *export item* is a sequence of op keys: one key for a single-operator microbenchmark, the whole
op sequence for a network, and the batch size of its input (op specs describe batch 1; the item's
``batch`` replaces the first dimension at export time). Its cache key hashes the recipe version,
backend, dtype, the torch and executorch versions, the batch size and the op keys, so an item is
exported once per backend, batch and toolchain, ever; changing any of them exports again. Files:
``<cache>/artifacts/<backend>-<dtype>/<cache_key>.pte`` plus ``.etrecord``
(for ``executorch.devtools.Inspector``).

int8
----
An int8 item is quantized by a recipe (:mod:`chamlab.operators.quant`; default
:data:`~chamlab.operators.quant.DEFAULT_RECIPE`) before lowering, and the recipe's id joins the cache
key, so programs of two recipes never share a file. Beside the program, ``<cache_key>.quant.json``
holds the :class:`~chamlab.operators.quant.QuantReport`: the ops the quantizer left in fp32 and those
outside the XNNPACK delegate (both empty for every shipped op kind); the artifact carries it to the
LUT row (``delegated``).

Backends
--------
``xnnpack``: lowered with ``XnnpackPartitioner``; anything XNNPACK rejects stays on the portable
kernels in the same program (ExecuTorch's normal fallback). ``portable``: no delegate at all.
``cuda``: no ExecuTorch at all: the ``torch.export`` program itself, saved with ``torch.export.save``
as ``<cache_key>.pt2`` (no ETRecord), for ``chamlab.agent.torch_runner``. ``qnn``: refused with an
error naming what is missing (the Qualcomm AI Engine Direct SDK; chamlab has no QNN lowering yet).

Exports always run in worker processes, in parallel (lowering costs about 1 s per op and is
single-threaded; :func:`export_workers` starts one per :data:`OPS_PER_WORKER` ops, since each worker first
imports the toolchain): the host process never imports the toolchain, whose import-time warnings go
to ``<cache>/artifacts/export.log`` instead of the user's terminal. A failed item is reported as
data and the others carry on. Importing the toolchain costs a worker several seconds of CPU
(``import executorch.exir``: 6 to 11 s in three runs here, ``bench/toolchain_start.py``), so the
programs that one workflow exports one after another (``adapt``'s winner, its final weights, their
int8 sibling) share one worker: :func:`export_worker` around the workflow.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from chamlab.core.errors import ExportError
from chamlab.core.files import atomic_path, cache_root
from chamlab.core.procs import process_pool, stop_pool

from . import quant
from .base import BACKENDS, OPS, OpSpec

RECIPE_VERSION = "chamlab-export-v1"


@dataclasses.dataclass(frozen=True)
class ExportItem:
    """What to export: a display name, the op keys of the module, in order, and the batch size."""

    name: str
    op_keys: tuple[str, ...]
    batch: int = 1

    @classmethod
    def for_op(cls, spec: OpSpec, batch: int = 1) -> ExportItem:
        return cls(spec.key, (spec.key,), batch)

    @classmethod
    def for_network(cls, name: str, ops: Sequence[OpSpec], batch: int = 1) -> ExportItem:
        return cls(name, tuple(op.key for op in ops), batch)


#: backends whose artifact is a torch.export program (``.pt2``) rather than an ExecuTorch ``.pte``
TORCH_EXPORT_BACKENDS = ("cuda",)


def backend_unavailable(backend: str) -> str | None:
    """Why this machine cannot export for ``backend`` at all, or None."""
    if backend == "qnn":
        sdk = os.environ.get("QNN_SDK_ROOT")
        missing = (
            "QNN_SDK_ROOT is not set (the Qualcomm AI Engine Direct SDK is not installed here)"
            if not sdk
            else f"QNN_SDK_ROOT={sdk} is set, but chamlab has no QNN lowering yet"
        )
        return (
            f"cannot export for backend qnn: {missing}; exporting for the Hexagon DSP needs that SDK and "
            "ExecuTorch built with EXECUTORCH_BUILD_QNN (see docs/devices.md)"
        )
    return None


@dataclasses.dataclass(frozen=True)
class Artifact:
    item: ExportItem
    backend: str
    dtype: str
    pte_path: Path  # the program: ``.pte`` (ExecuTorch) or ``.pt2`` (torch.export, backend cuda)
    etrecord_path: Path  # absent for torch.export programs
    cache_key: str
    export_s: float | None  # None when it came from the cache
    quant_recipe: str | None = None  # int8: the recipe's id
    quant_report: quant.QuantReport | None = None  # int8: what was left in fp32 / outside the delegate


@dataclasses.dataclass(frozen=True)
class ExportFailure:
    item: ExportItem
    error: str


def toolchain_versions() -> dict[str, str]:
    """Versions that change what an export produces (read from metadata: no heavy imports)."""
    out = {}
    for dist in ("torch", "executorch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


class ArtifactCache:
    """Content-addressed store of exported programs."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root() / "artifacts"
        self._versions = toolchain_versions()

    def cache_key(self, item: ExportItem, backend: str, dtype: str, recipe: str | None = None) -> str:
        """``recipe``: the quantization recipe id (int8); fp32 keys are unchanged by it (None)."""
        h = hashlib.sha256()
        for part in (RECIPE_VERSION, backend, dtype, self._versions["torch"], self._versions["executorch"]):
            h.update(part.encode() + b"\0")
        if recipe is not None:
            h.update(f"quant_recipe={recipe}".encode() + b"\0")
        h.update(f"batch={item.batch}".encode() + b"\0")
        h.update("\n".join(item.op_keys).encode())
        return h.hexdigest()[:24]

    def paths(
        self, item: ExportItem, backend: str, dtype: str, recipe: str | None = None
    ) -> tuple[Path, Path, str]:
        key = self.cache_key(item, backend, dtype, recipe)
        folder = self.root / f"{backend}-{dtype}"
        suffix = ".pt2" if backend in TORCH_EXPORT_BACKENDS else ".pte"
        return folder / f"{key}{suffix}", folder / f"{key}.etrecord", key

    def artifact(
        self, item: ExportItem, backend: str, dtype: str, recipe: str | None, export_s: float | None
    ) -> Artifact:
        """The artifact of an exported item (reading its quantization report when int8)."""
        pte, etr, key = self.paths(item, backend, dtype, recipe)
        report = quant.QuantReport.read(report_path(pte)) if recipe is not None else None
        return Artifact(item, backend, dtype, pte, etr, key, export_s, recipe, report)

    def lookup(
        self, item: ExportItem, backend: str, dtype: str, recipe: str | None = None
    ) -> Artifact | None:
        pte, etr, _ = self.paths(item, backend, dtype, recipe)
        complete = pte.is_file() and (backend in TORCH_EXPORT_BACKENDS or etr.is_file())
        if complete and (recipe is None or report_path(pte).is_file()):
            return self.artifact(item, backend, dtype, recipe, None)
        return None


def report_path(pte_path: Path) -> Path:
    """Where an int8 program's :class:`~chamlab.operators.quant.QuantReport` lives."""
    return pte_path.with_suffix(".quant.json")


def _build_module_and_input(  # type: ignore[no-untyped-def]
    op_keys: Sequence[str], batch: int = 1, state_dict: Mapping[str, Any] | None = None
):
    import torch

    from .network import Network, build

    specs = [OPS.from_key(k) for k in op_keys]
    module = build(specs[0]) if len(specs) == 1 else Network(specs).eval()
    if state_dict is not None:  # trained weights (e.g. the training oracle's) replace the seeded ones
        try:
            module.load_state_dict(dict(state_dict), strict=True)
        except RuntimeError as exc:
            raise ExportError(f"the given weights do not fit the network: {str(exc)[:400]}") from None
    generator = torch.Generator().manual_seed(0)
    example = torch.randn((batch, *specs[0].input_shape[1:]), generator=generator)
    return module, example


def lower(
    op_keys: Sequence[str],
    backend: str,
    pte_path: Path,
    etrecord_path: Path,
    batch: int = 1,
    state_dict: Mapping[str, Any] | None = None,
    *,
    dtype: str = "fp32",
    recipe: str | None = None,
    calibration: Sequence[Any] | None = None,
) -> float:
    """Export, lower and serialise one item; returns the seconds it took. Writes are atomic.
    ``state_dict``: weights for the module (default: the deterministic seeded ones).
    int8 (``recipe`` set) also writes the quantization report beside the program; ``calibration``:
    real calibration batches (arrays or tensors of the input shape at any batch size >= 2, e.g. the
    training oracle's) instead of the recipe's seeded random ones."""
    import torch

    if backend not in BACKENDS:
        raise ExportError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    reason = backend_unavailable(backend)
    if reason:
        raise ExportError(reason)
    start = time.perf_counter()
    module, example = _build_module_and_input(op_keys, batch, state_dict)
    if dtype == "int8":
        if backend != "xnnpack":
            raise ExportError(f"dtype int8 is lowered to the xnnpack backend only, not {backend}")
        recipe = quant.recipe_for(dtype, recipe)
        assert recipe is not None
        if all(OPS.from_key(k).quantize_with_recipe for k in op_keys):
            if calibration is not None:  # dynamic batch, so batches of any size calibrate it
                batches = [torch.as_tensor(c) for c in calibration]
                module = quant.quantized_module(module, batches, recipe=recipe)
            else:
                module = quant.quantize(module, example, recipe=recipe)
        elif any(OPS.from_key(k).quantize_with_recipe for k in op_keys):
            raise ExportError("a probe (quant_edge) cannot be exported together with other ops")
        program, report = quant.lower(module, example, recipe=recipe)
        quant.save_program(program, pte_path, etrecord_path)
        quant.write_report(report, report_path(pte_path))
        return time.perf_counter() - start
    with torch.no_grad():
        exported = torch.export.export(module, (example,))
    if backend in TORCH_EXPORT_BACKENDS:
        pte_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(pte_path) as tmp, open(tmp, "wb") as fh:
            torch.export.save(exported, fh)
        return time.perf_counter() - start
    from executorch.exir import to_edge_transform_and_lower

    partitioners = []
    if backend == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioners.append(XnnpackPartitioner())
    edge = to_edge_transform_and_lower(exported, partitioner=partitioners, generate_etrecord=True)
    program = edge.to_executorch()
    pte_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(etrecord_path) as tmp:
        program.get_etrecord().save(str(tmp))
    with atomic_path(pte_path) as tmp:
        tmp.write_bytes(program.buffer)
    return time.perf_counter() - start


#: a worker process pays 6 to 11 s of CPU to import the toolchain (``bench/toolchain_start.py``), as long
#: as lowering about that many ops: another worker is started only for this many ops to lower each
OPS_PER_WORKER = 8


def export_workers(todo: Sequence[ExportItem], workers: int | None = None) -> int:
    """How many worker processes export ``todo``: ``workers`` when given, else one per
    :data:`OPS_PER_WORKER` ops to lower (at least one, at most one per CPU); never more than items.
    A few ops lower in one worker: a second would spend more CPU importing the toolchain than it
    saves, and on a busy machine (a CI runner, a farm host) that CPU is time."""
    if workers is None:
        ops = sum(len(item.op_keys) for item in todo)
        workers = min(os.cpu_count() or 1, max(1, ops // OPS_PER_WORKER))
    return max(1, min(workers, len(todo)))


def _quiet_worker(log_path: str) -> None:
    """Worker initialiser: the toolchain prints warnings on import; send fd 2 to a log file."""
    import logging
    import warnings

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)


def _lower_in_worker(
    op_keys: tuple[str, ...], backend: str, pte: str, etr: str, batch: int, dtype: str, recipe: str | None
) -> float:
    return lower(op_keys, backend, Path(pte), Path(etr), batch, dtype=dtype, recipe=recipe)


def export_all(
    items: Sequence[ExportItem],
    backend: str,
    dtype: str = "fp32",
    *,
    cache: ArtifactCache | None = None,
    workers: int | None = None,
    on_done: Callable[[ExportItem, Artifact | ExportFailure], None] | None = None,
    recipe: str | None = None,
) -> tuple[dict[ExportItem, Artifact], list[ExportFailure]]:
    """Export every item not yet in the cache, in ``workers`` processes (default:
    :func:`export_workers`).

    Returns the artifacts by item and the failures (as data: the other items still export).
    ``on_done`` is called once per item, cached ones first. ``recipe``: the quantization recipe of an
    int8 export (default :data:`~chamlab.operators.quant.DEFAULT_RECIPE`; an error for fp32).
    """
    reason = backend_unavailable(backend)
    if reason:
        raise ExportError(reason)
    recipe = quant.recipe_for(str(dtype), recipe)
    cache = cache or ArtifactCache()
    done: dict[ExportItem, Artifact] = {}
    failures: list[ExportFailure] = []
    todo: list[ExportItem] = []
    for item in dict.fromkeys(items):  # dedupe, keep order
        for key in item.op_keys:
            reason = OPS.from_key(key).unsupported_reason(backend, dtype)
            if reason:
                failures.append(ExportFailure(item, reason))
                if on_done:
                    on_done(item, failures[-1])
                break
        else:
            hit = cache.lookup(item, backend, dtype, recipe)
            if hit:
                done[item] = hit
                if on_done:
                    on_done(item, hit)
            else:
                todo.append(item)
    if not todo:
        return done, failures

    workers = export_workers(todo, workers)
    log_dir = cache.root
    log_dir.mkdir(parents=True, exist_ok=True)

    def finish(item: ExportItem, seconds: float | None, error: BaseException | None) -> None:
        if error is not None:
            failure = ExportFailure(item, f"{type(error).__name__}: {error}".strip())
            failures.append(failure)
            if on_done:
                on_done(item, failure)
            return
        try:
            art = cache.artifact(item, backend, dtype, recipe, seconds)
        except ExportError as exc:
            finish(item, None, exc)
            return
        done[item] = art
        if on_done:
            on_done(item, art)

    pool = process_pool(workers, _quiet_worker, (str(log_dir / "export.log"),))
    try:
        futures = {}
        for item in todo:
            pte, etr, _ = cache.paths(item, backend, dtype, recipe)
            args = (item.op_keys, backend, str(pte), str(etr), item.batch, str(dtype), recipe)
            futures[pool.submit(_lower_in_worker, *args)] = item
        for fut in cf.as_completed(futures):
            item = futures[fut]
            try:
                finish(item, fut.result(), None)
            except Exception as exc:
                finish(item, None, exc)
    except BaseException:
        # Ctrl-C (or any error here): do not wait for the queued exports. Finished artifacts are
        # already in the cache (each written atomically); the ones in flight are abandoned.
        stop_pool(pool, abort=True)
        raise
    stop_pool(pool)
    return done, failures


def _lower_with_weights_in_worker(
    op_keys: tuple[str, ...],
    backend: str,
    pte: str,
    etr: str,
    batch: int,
    state_dict: Mapping[str, Any] | None,
    dtype: str = "fp32",
    recipe: str | None = None,
    calibration: Sequence[Any] | None = None,
) -> float:
    return lower(
        op_keys, backend, Path(pte), Path(etr), batch, state_dict, dtype=dtype, recipe=recipe,
        calibration=calibration,
    )  # fmt: skip


def export_program(
    item: ExportItem,
    backend: str,
    pte_path: Path,
    etrecord_path: Path,
    *,
    dtype: str = "fp32",
    recipe: str | None = None,
    state_dict: Mapping[str, Any] | None = None,
    calibration: Sequence[Any] | None = None,
) -> float:
    """Export one item to the given paths (not the cache), in a worker process as :func:`export_all`
    does, with ``state_dict`` as its weights (e.g. a trained network's); returns the seconds it took.
    int8: quantized by ``recipe`` (default: the default recipe) with ``calibration`` (numpy arrays of
    the input shape, batch >= 2) or, without it, the recipe's seeded calibration batches.
    A failure is an :class:`ExportError` naming the item."""
    reason = backend_unavailable(backend)
    if reason:
        raise ExportError(reason)
    for key in item.op_keys:
        why = OPS.from_key(key).unsupported_reason(backend, dtype)
        if why:
            raise ExportError(f"{item.name} cannot be exported for {backend}/{dtype}: {why}")
    shared = _current_worker()
    pool = _program_pool(shared) if shared is not None else _new_program_pool()
    try:
        fut = pool.submit(
            _lower_with_weights_in_worker,
            item.op_keys,
            backend,
            str(pte_path),
            str(etrecord_path),
            item.batch,
            dict(state_dict) if state_dict is not None else None,
            dtype,
            recipe,
            list(calibration) if calibration is not None else None,
        )
        try:
            seconds = float(fut.result())
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"exporting {item.name} failed: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        # Ctrl-C or a failure: the worker is killed (a shared one too; the next call starts afresh)
        if shared is not None:
            shared.pool = None
        stop_pool(pool, abort=True)
        raise
    if shared is None:
        stop_pool(pool)
    return seconds


@dataclasses.dataclass
class _SharedWorker:
    pool: cf.ProcessPoolExecutor | None = None


_blocks = threading.local()  # .worker: the _SharedWorker of this thread's export_worker block


def _current_worker() -> _SharedWorker | None:
    worker: _SharedWorker | None = getattr(_blocks, "worker", None)
    return worker


def _new_program_pool() -> cf.ProcessPoolExecutor:
    log_dir = cache_root() / "artifacts"
    log_dir.mkdir(parents=True, exist_ok=True)
    return process_pool(1, _quiet_worker, (str(log_dir / "export.log"),))


def _program_pool(shared: _SharedWorker) -> cf.ProcessPoolExecutor:
    if shared.pool is None:
        shared.pool = _new_program_pool()
    return shared.pool


@contextlib.contextmanager
def export_worker() -> Iterator[None]:
    """Within the block, :func:`export_program`'s calls share one worker process, started by the first
    of them and ended when the block ends: the toolchain is imported once, not once per program. A
    failed or interrupted export kills the worker (the next call starts a new one), as outside the
    block. Nested blocks share the outer one's worker; each thread has its own blocks (a thread outside
    any block exports as before, one worker per call)."""
    if _current_worker() is not None:
        yield
        return
    _blocks.worker = holder = _SharedWorker()
    try:
        yield
    except BaseException:
        _blocks.worker = None
        if holder.pool is not None:
            stop_pool(holder.pool, abort=True)
        raise
    _blocks.worker = None
    if holder.pool is not None:
        stop_pool(holder.pool)
