"""The training oracle: accuracy by training each queried architecture with the proxy schedule.

:class:`TrainingOracle` implements the search's ``Oracle`` protocol (``oracle(archs) -> accuracies``,
percent on the validation split, see :mod:`.schedule`) and keeps what it trained:
``state_dict(arch)`` gives the trained weights of an arch it (or an earlier run) trained.

Executors (:data:`EXECUTORS`): ``process`` trains in worker processes on this machine (spawned, not
forked; ``workers`` of them, default the CPU count, started once and reused across calls); ``ray``
trains each arch as a Ray task (one CPU per task, ``threads`` of the schedule) on the cluster at
``address``, or on a private one-node cluster started for the oracle and stopped by :meth:`close`.
The dataset must be at the same path on every node (``digits`` needs no file).

Device: each training runs on :func:`~.device.train_device` of the process that runs it: a CUDA device
when torch sees one (bfloat16 autocast), else the CPU. A Ray task requests ``1 / TRIALS_PER_GPU`` GPU
when the cluster has GPUs (:func:`ray_gpus_per_trial`), none otherwise (Ray then hides the GPUs from it
and it trains on the CPU). The cache entry records the device under ``device``; the key does not hold
it (a CUDA-trained entry answers a CPU run and the other way round).

int8: every trained arch is also quantized by the oracle's ``quant_recipe`` (default
:data:`~chamlab.operators.quant.DEFAULT_RECIPE`) after training, calibrated on seeded batches of the
training split (:func:`~.schedule.int8_accuracy`), and evaluated on the same validation split: its
record holds both ``accuracy`` (fp32) and ``accuracy_int8``. ``accuracy_dtype`` (``"fp32"`` or
``"int8"``) says which of the two the oracle answers with; :meth:`TrainingOracle.accuracies` gives both.

Cache: each trained arch is kept under ``<cache>/training/`` as ``<key>.npz`` (its weights, a plain
numpy archive read with ``allow_pickle=False``) and ``<key>.json`` (fp32 accuracy, the int8 accuracy
per quantization recipe under ``int8``, timings, what it was trained on), both written atomically, the
JSON last. The key hashes the training recipe version, the space, the arch, the dataset's content
digest and the schedule (not the quantization recipe: the weights do not depend on it), so a resumed
search never trains an arch twice and changing any of them trains again. An entry without the int8
accuracy of the oracle's recipe (an older entry, or another recipe) is quantized again from its stored
weights, in the executor, without training.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chamlab.chamnet.search.problem import ACCURACY_DTYPES
from chamlab.core.errors import ChamlabError, DataFileError, InputError
from chamlab.core.files import atomic_path, atomic_write_text, cache_root, ensure_dir
from chamlab.core.procs import process_pool, start_ray, stop_pool

from .data import DIGITS, Dataset, check_classes, load_dataset
from .schedule import Schedule, num_outputs

if TYPE_CHECKING:
    import torch

    from chamlab.chamnet.spaces.base import Arch, SearchSpace

TRAIN_RECIPE = "chamlab-train-v1"
EXECUTORS = ("process", "ray")


class TrainingError(ChamlabError):
    """Training an architecture failed (the worker's error is in the message)."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """How a worker finds the dataset: ``digits`` or an absolute path, and the ImageFolder side."""

    source: str
    image_size: int

    def load(self) -> Dataset:
        return _load_cached(self.source, self.image_size)


@functools.lru_cache(maxsize=2)
def _load_cached(source: str, image_size: int) -> Dataset:
    return load_dataset(source, image_size=image_size)


@dataclasses.dataclass(frozen=True)
class TrainRecord:
    """One trained arch as the cache keeps it (``weights``: the ``.npz`` of its state dict)."""

    key: str
    arch: str
    accuracy: float
    train_seconds: float
    final_loss: float
    train_examples: int
    val_examples: int
    weights: Path
    cached: bool = False
    accuracy_int8: float | None = None  # after quantization by ``quant_recipe``
    quant_recipe: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["weights"] = str(self.weights)
        for k in ("cached", "accuracy_int8", "quant_recipe"):  # int8 figures live under "int8"
            del out[k]
        return out

    def accuracy_of(self, dtype: str) -> float:
        """The fp32 or int8 accuracy (percent)."""
        if dtype == "int8":
            if self.accuracy_int8 is None:
                raise TrainingError(f"{self.arch} has no int8 accuracy in its training record")
            return self.accuracy_int8
        return self.accuracy


def max_input_side(space: SearchSpace) -> int:
    """The largest input height/width of the space's networks (its ``resolution`` dimension's
    largest value when it has one)."""
    arch = list(space.sample(np.random.default_rng(0), 1)[0])
    for i, d in enumerate(space.dimensions):
        if d.name == "resolution":
            arch[i] = max(d.values)
    return int(max(space.input_shape(tuple(arch))[2:]))


class TrainingCache:
    """``<root>/<key>.json`` + ``<key>.npz`` per trained arch (default root ``<cache>/training``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root() / "training"

    @staticmethod
    def key(space: str, arch: str, data_digest: str, schedule: Schedule) -> str:
        ident: dict[str, Any] = {"recipe": TRAIN_RECIPE, "space": space, "arch": arch, "data": data_digest}
        ident["schedule"] = schedule.to_json()
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.json", self.root / f"{key}.npz"

    def lookup(self, key: str, quant_recipe: str | None = None) -> TrainRecord | None:
        """The record of ``key``, or None (an unreadable entry counts as absent: it is trained again);
        with ``quant_recipe``, its int8 accuracy by that recipe when the entry holds one."""
        meta, weights = self.paths(key)
        if not (meta.is_file() and weights.is_file()):
            return None
        try:
            rec = json.loads(meta.read_text())
            int8 = (rec.get("int8") or {}).get(quant_recipe) if quant_recipe else None
            return TrainRecord(
                key,
                str(rec["arch"]),
                float(rec["accuracy"]),
                float(rec["train_seconds"]),
                float(rec["final_loss"]),
                int(rec["train_examples"]),
                int(rec["val_examples"]),
                weights,
                cached=True,
                accuracy_int8=None if int8 is None else float(int8["accuracy"]),
                quant_recipe=None if int8 is None else quant_recipe,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def store(self, record: TrainRecord, extra: dict[str, Any], int8: dict[str, Any] | None = None) -> None:
        """Write ``record``'s JSON; ``int8``: its int8 figures, kept under ``int8`` beside those of
        other recipes already in the entry."""
        meta, _ = self.paths(record.key)
        by_recipe: dict[str, Any] = {}
        if meta.is_file():
            try:
                by_recipe = dict(json.loads(meta.read_text()).get("int8") or {})
            except (OSError, ValueError, TypeError, AttributeError):
                by_recipe = {}
        if int8 is not None and record.quant_recipe is not None:
            by_recipe[record.quant_recipe] = int8
        body = {**record.to_json(), **extra, "int8": by_recipe}
        atomic_write_text(meta, json.dumps(body, indent=1) + "\n")


def write_weights(path: Path, state: dict[str, np.ndarray]) -> None:
    """A state dict as a plain ``.npz`` (atomic)."""
    ensure_dir(path.parent, what="training cache")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **state)  # type: ignore[arg-type]


#: trials that share one GPU when the Ray cluster has GPUs (the proxy's networks are small)
TRIALS_PER_GPU = 4


def ray_gpus_per_trial(resources: dict[str, Any]) -> float:
    """The GPUs one Ray training task requests: ``1 / TRIALS_PER_GPU`` when the cluster has any
    (Ray then sets ``CUDA_VISIBLE_DEVICES`` for the task and it trains on that GPU), else 0 (Ray hides
    every GPU from the task: it trains on the CPU)."""
    return 1.0 / TRIALS_PER_GPU if float(resources.get("GPU", 0) or 0) > 0 else 0.0


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``.npz`` written by :func:`write_weights` (no pickle)."""
    import torch

    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: torch.from_numpy(npz[k].copy()) for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataFileError(f"cannot read trained weights {path}: {exc}") from None


def _dataset(data: DataSpec, digest: str) -> Dataset:
    dataset = data.load()
    if dataset.digest != digest:
        raise DataFileError(
            f"dataset {dataset.name} changed while the search ran "
            f"(digest {dataset.digest}, expected {digest})"
        )
    return dataset


def train_task(
    space: SearchSpace,
    arch: Arch,
    data: DataSpec,
    digest: str,
    schedule: Schedule,
    weights: str,
    quant_recipe: str | None = None,
) -> dict[str, Any]:
    """What a worker runs: train one arch, write its weights, return the figures (with its int8
    accuracy when ``quant_recipe`` is given)."""
    from .device import train_device
    from .schedule import train

    dataset = _dataset(data, digest)
    device = train_device()
    trained = train(space, arch, dataset, schedule, quant_recipe=quant_recipe, device=device)
    write_weights(Path(weights), trained.state)
    return {
        "device": device,
        "accuracy": trained.accuracy,
        "train_seconds": trained.train_seconds,
        "final_loss": trained.final_loss,
        "train_examples": trained.train_examples,
        "val_examples": trained.val_examples,
        "accuracy_int8": trained.accuracy_int8,
        "quant_seconds": trained.quant_seconds,
    }


def quantize_task(
    space: SearchSpace,
    arch: Arch,
    data: DataSpec,
    digest: str,
    schedule: Schedule,
    weights: str,
    quant_recipe: str,
) -> dict[str, Any]:
    """What a worker runs for a cached arch without the int8 accuracy of ``quant_recipe``: quantize
    its stored weights and evaluate (no training; same threads as training)."""
    import time

    import torch

    from .schedule import int8_accuracy

    dataset = _dataset(data, digest)
    state = {k: v.numpy() for k, v in read_weights(Path(weights)).items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(schedule.threads)
    try:
        t0 = time.perf_counter()
        acc = int8_accuracy(space, arch, dataset, schedule, state, quant_recipe)
        return {"accuracy_int8": acc, "quant_seconds": time.perf_counter() - t0}
    finally:
        torch.set_num_threads(threads)


class TrainingOracle:
    """Accuracy (percent, validation split) by training with ``schedule`` (see the module docstring).

    ``on_result(arch, record)`` is called as each arch is trained or found in the cache. Use the oracle
    as a context manager (or call :meth:`close`) to stop its workers. ``accuracy_dtype``: answer with the
    fp32 or the int8 accuracy (both are measured and kept whatever it says); ``quant_recipe``: the
    quantization recipe of the int8 accuracy.
    """

    def __init__(
        self,
        space: SearchSpace,
        data: str | Path,
        *,
        schedule: Schedule | None = None,
        executor: str = "process",
        workers: int | None = None,
        address: str | None = None,
        cache: TrainingCache | None = None,
        on_result: Callable[[Arch, TrainRecord], None] | None = None,
        accuracy_dtype: str = "fp32",
        quant_recipe: str | None = None,
    ) -> None:
        from chamlab.chamnet.spaces.base import SearchSpace
        from chamlab.operators import quant

        if not isinstance(space, SearchSpace):
            raise InputError(
                f"space {getattr(space, 'name', space)!r} has no networks to train (a table space?)",
                hint="the training oracle needs a network space such as macro-cifar10",
            )
        if executor not in EXECUTORS:
            raise InputError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
        if address is not None and executor != "ray":
            raise InputError("--address is for --executor ray only")
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise InputError(f"workers must be a positive integer, got {workers!r}")
        if accuracy_dtype not in ACCURACY_DTYPES:
            raise InputError(
                f"unknown accuracy dtype {accuracy_dtype!r}; choose one of {', '.join(ACCURACY_DTYPES)}"
            )
        self.accuracy_dtype = accuracy_dtype
        self.accuracy_note: str | None = None
        self.quant_recipe = quant.get_recipe(quant_recipe or quant.DEFAULT_RECIPE).id
        self.space = space
        self.schedule = schedule or Schedule()
        self.executor = executor
        self.workers = workers
        self.address = address
        self.cache = cache or TrainingCache()
        self.on_result = on_result
        source = DIGITS if str(data) == DIGITS else str(Path(data).resolve())
        self.data = DataSpec(source, max_input_side(space))
        self.dataset = self.data.load()  # bad input fails here, before any search work
        reference = space.sample(np.random.default_rng(0), 1)[0]
        check_classes(self.dataset, num_outputs(space, reference), f"search space {space.name}'s classifier")
        epochs = self.schedule.epochs
        self.name = f"trained on {self.dataset.name} ({epochs} epoch(s), {accuracy_dtype} accuracy)"
        self._records: dict[Arch, TrainRecord] = {}
        self._pool: cf.ProcessPoolExecutor | None = None
        self._ray_started = False

    # -- identity ---------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What defines this oracle's answers (a search stores it with its arguments)."""
        return {
            "kind": "train",
            "data": self.dataset.name,
            "data_digest": self.dataset.digest,
            "schedule": self.schedule.to_json(),
            "quant_recipe": self.quant_recipe,
        }

    def key(self, arch: Arch) -> str:
        return self.cache.key(self.space.name, self.space.format(arch), self.dataset.digest, self.schedule)

    # -- the oracle -------------------------------------------------------------------------------
    def __call__(self, archs: Sequence[Arch]) -> list[float]:
        archs = [self.space.validate(a) for a in archs]
        todo: list[tuple[Arch, Callable[..., dict[str, Any]]]] = []
        for arch in dict.fromkeys(archs):
            rec = self._records.get(arch) or self.cache.lookup(self.key(arch), self.quant_recipe)
            if rec is None:
                todo.append((arch, train_task))
                continue
            if rec.accuracy_int8 is None:  # cached before int8 accuracy, or by another recipe
                self._records[arch] = rec
                todo.append((arch, quantize_task))
                continue
            self._records[arch] = rec
            if self.on_result is not None:
                self.on_result(arch, rec)
        if todo:
            ensure_dir(self.cache.root, what="training cache")
            runner = self._run_ray if self.executor == "ray" else self._run_processes
            runner(todo)
        return [self._records[a].accuracy_of(self.accuracy_dtype) for a in archs]

    def accuracies(self, arch: Arch) -> dict[str, float]:
        """``{"fp32": ..., "int8": ...}`` (percent) of an arch this oracle (or the cache) has trained
        (empty if none; no int8 entry when the cached record lacks this oracle's recipe)."""
        rec = self.record(arch)
        if rec is None:
            return {}
        out = {"fp32": rec.accuracy}
        if rec.accuracy_int8 is not None:
            out["int8"] = rec.accuracy_int8
        return out

    def record(self, arch: Arch) -> TrainRecord | None:
        """The training record of ``arch`` if this oracle (or the cache) has it."""
        arch = self.space.validate(arch)
        rec = self._records.get(arch) or self.cache.lookup(self.key(arch), self.quant_recipe)
        if rec is not None:
            self._records[arch] = rec
        return rec

    def state_dict(self, arch: Arch) -> dict[str, torch.Tensor] | None:
        """The trained weights of ``arch`` (keys of ``space.build(arch).state_dict()``), or None when
        it was never trained with this dataset and schedule."""
        rec = self.record(arch)
        return None if rec is None else read_weights(rec.weights)

    def calibration(self, arch: Arch) -> list[np.ndarray]:
        """The int8 calibration batches of ``arch`` (float32 arrays at its input shape, batch
        ``batch_size``) that its int8 accuracy was measured with: an int8 export of its trained
        weights calibrated on them computes what that accuracy measured."""
        from .schedule import calibration_inputs

        batches = calibration_inputs(
            self.space, self.space.validate(arch), self.dataset, self.schedule, self.quant_recipe
        )
        return [b.numpy() for b in batches]

    def _finish(self, arch: Arch, figures: dict[str, Any]) -> None:
        key = self.key(arch)
        acc8 = float(figures["accuracy_int8"])
        old = self._records.get(arch)
        if "accuracy" not in figures and old is not None:  # a cached arch quantized again
            rec = dataclasses.replace(old, accuracy_int8=acc8, quant_recipe=self.quant_recipe)
        else:
            rec = TrainRecord(
                key,
                self.space.format(arch),
                float(figures["accuracy"]),
                float(figures["train_seconds"]),
                float(figures["final_loss"]),
                int(figures["train_examples"]),
                int(figures["val_examples"]),
                self.cache.paths(key)[1],
                accuracy_int8=acc8,
                quant_recipe=self.quant_recipe,
            )
        int8 = {
            "accuracy": acc8,
            "quant_seconds": float(figures["quant_seconds"]),
            "calibration": "training split, see chamlab.chamnet.training.schedule.calibration_indices",
        }
        extra = {
            "space": self.space.name,
            "recipe": TRAIN_RECIPE,
            "dataset": self.dataset.name,
            "data_digest": self.dataset.digest,
            "schedule": self.schedule.to_json(),
            "executor": self.executor,
            **({"device": figures["device"]} if "device" in figures else {}),
        }
        self.cache.store(rec, extra, int8)
        self._records[arch] = rec
        if self.on_result is not None:
            self.on_result(arch, rec)

    def _args(self, arch: Arch) -> tuple[Any, ...]:
        weights = str(self.cache.paths(self.key(arch))[1])
        return (self.space, arch, self.data, self.dataset.digest, self.schedule, weights, self.quant_recipe)

    def _failed(self, arch: Arch, exc: BaseException) -> TrainingError:
        if isinstance(exc, ChamlabError):
            return TrainingError(f"training {self.space.format(arch)} failed: {exc.message}", hint=exc.hint)
        return TrainingError(f"training {self.space.format(arch)} failed: {type(exc).__name__}: {exc}")

    # -- executors --------------------------------------------------------------------------------
    def _run_processes(self, todo: Sequence[tuple[Arch, Callable[..., dict[str, Any]]]]) -> None:
        if self._pool is None:
            n = self.workers or max(1, (os.cpu_count() or 1) // self.schedule.threads)
            self._pool = process_pool(n)
        futures = {self._pool.submit(fn, *self._args(a)): a for a, fn in todo}
        try:
            for fut in cf.as_completed(futures):
                arch = futures[fut]
                try:
                    figures = fut.result()
                except Exception as exc:
                    raise self._failed(arch, exc) from exc
                self._finish(arch, figures)
        except BaseException:
            self.close(abort=True)  # do not wait for the queued archs; finished ones are in the cache
            raise

    def _run_ray(self, todo: Sequence[tuple[Arch, Callable[..., dict[str, Any]]]]) -> None:
        if not self._ray_started:  # a private one-node cluster unless --address names one
            self._ray_started = start_ray(self.address, num_cpus=self.workers or os.cpu_count() or 1)
        import ray

        gpus = ray_gpus_per_trial(ray.cluster_resources())  # type: ignore[no-untyped-call]
        tasks = {
            fn: ray.remote(fn).options(num_cpus=self.schedule.threads, num_gpus=gpus, max_retries=0)
            for fn in {fn for _, fn in todo}
        }
        pending = {tasks[fn].remote(*self._args(a)): a for a, fn in todo}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    arch = pending.pop(ref)
                    try:
                        figures = ray.get(ref)
                    except Exception as exc:
                        cause = getattr(exc, "cause", None)
                        raise self._failed(arch, cause if isinstance(cause, BaseException) else exc) from exc
                    self._finish(arch, figures)
        except BaseException:
            for ref in pending:  # a failure or Ctrl-C: the queued trainings are not wanted any more
                ray.cancel(ref, force=True)
            raise

    def close(self, *, abort: bool = False) -> None:
        """Stop the worker processes (``abort``: kill them at once, work in flight is lost), and the
        Ray cluster if this oracle started it."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            stop_pool(pool, abort=abort)
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    def __enter__(self) -> TrainingOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
