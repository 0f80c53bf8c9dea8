"""Final training: the chosen architecture trained to be shipped, resumable, with a checkpoint per epoch.

The proxy schedule (:class:`~.schedule.Schedule`'s defaults) ranks architectures; a *final schedule*
trains the one ``adapt`` chose. :data:`FINAL_SCHEDULES` names them; each replaces a few fields of the
oracle's schedule and keeps the others, so the validation split (``seed``, ``val_fraction``,
``max_val``) is the oracle's: the final accuracy is measured on the very examples the search ranked
with, and the warm start's weights never saw them (the proxy's training examples are the first
``max_train`` of the same permutation's training part, a subset of the final schedule's):

* ``standard`` (the default): 4 epochs over the whole training split (``max_train`` 1,000,000), SGD at
  lr 0.05, batches of 64;
* ``short``: 1 epoch over the whole training split, SGD at lr 0.05, batches of 64;
* ``long``: 10 epochs over the whole training split, SGD at lr 0.05, batches of 64;
* ``none``: no final training (the program carries the oracle's weights when it trained the winner,
  else seeded random weights).

``--final-schedule`` also takes overrides of ``standard`` (``epochs=1,max_train=512``), parsed as
``--schedule`` is. ``threads`` is the number of CPUs torch may use here (the oracle's workers use one
each). Training runs on :func:`~.device.train_device`.

Warm start: from the oracle's trained weights of the arch when it has them (``warm_start`` names the
oracle's cache key), else from the space's deterministic initialisation. Either way seeded: the same
data, schedule, warm start and thread count give the same weights on a CPU, bit for bit, whether or not
the training was interrupted and resumed.

On disk (``<cache>/training/final/<key>/``, the key hashing the recipe, space, arch, dataset digest,
schedule and warm start): ``checkpoint.npz`` (the module's state dict under ``model/``, the optimizer's
state of parameter ``i`` under ``optim/<i>/<name>``) and ``checkpoint.json`` (epochs done, step, loss),
replaced atomically after every epoch, the JSON last; when training ends, ``weights.npz`` and
``final.json`` (accuracies, seconds, device), and the checkpoint is removed. A re-run finds
``final.json`` and trains nothing; a run killed mid-training resumes after the last whole epoch.
Archives are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chamlab.core.errors import DataFileError, InputError
from chamlab.core.files import atomic_path, atomic_write_text, ensure_dir

from .schedule import Schedule, TrainState

if TYPE_CHECKING:
    from chamlab.chamnet.spaces.base import Arch, SearchSpace

    from .data import Dataset

FINAL_RECIPE = "chamlab-final-v1"
#: ``max_train`` of the named final schedules: the whole training split of any dataset up to this size
WHOLE = 1_000_000
#: the named final schedules: the fields each replaces in the oracle's schedule
FINAL_SCHEDULES: dict[str, dict[str, Any]] = {
    "standard": {"epochs": 4, "optimizer": "sgd", "lr": 0.05, "batch_size": 64, "max_train": WHOLE},
    "short": {"epochs": 1, "optimizer": "sgd", "lr": 0.05, "batch_size": 64, "max_train": WHOLE},
    "long": {"epochs": 10, "optimizer": "sgd", "lr": 0.05, "batch_size": 64, "max_train": WHOLE},
}
DEFAULT_FINAL = "standard"
NO_FINAL = "none"
#: the fields a final schedule may not change: they define the validation split the search used
SPLIT_FIELDS = ("seed", "val_fraction", "max_val")
CHECKPOINT, CHECKPOINT_META = "checkpoint.npz", "checkpoint.json"
WEIGHTS, RECORD = "weights.npz", "final.json"


def choices() -> str:
    return ", ".join([*FINAL_SCHEDULES, NO_FINAL])


def check_final_schedule(text: str | None) -> str | None:
    """``text`` as a final-schedule spec (a name, ``none`` -> None, or ``NAME=VALUE`` overrides of
    ``standard``); an :class:`InputError` naming the choices for anything else."""
    if text is None:
        return None
    t = text.strip()
    if t.lower() == NO_FINAL:
        return None
    if t in FINAL_SCHEDULES:
        return t
    if "=" in t:
        resolve_final_schedule(t, Schedule())  # the overrides are checked now, before any work
        return t
    raise InputError(
        f"--final-schedule {text!r}: unknown schedule; choose one of {choices()}, or overrides such as "
        "epochs=1,max_train=2000"
    )


def resolve_final_schedule(spec: str, proxy: Schedule, threads: int | None = None) -> Schedule:
    """The schedule ``spec`` names (:func:`check_final_schedule`) on top of the oracle's ``proxy``:
    its split fields are kept; ``threads`` defaults to this machine's CPU count."""
    fields: dict[str, Any] = dict(FINAL_SCHEDULES.get(spec, FINAL_SCHEDULES[DEFAULT_FINAL]))
    if spec not in FINAL_SCHEDULES:
        try:
            given = Schedule.parse(spec)
        except InputError as exc:
            raise InputError(exc.message.replace("--schedule", "--final-schedule", 1)) from None
        for name in dict.fromkeys(part.partition("=")[0].strip() for part in spec.split(",")):
            if name in SPLIT_FIELDS:
                raise InputError(
                    f"--final-schedule {spec!r}: {name} defines the validation split, which is the "
                    "oracle's (set it with --schedule)"
                )
            fields[name] = getattr(given, name)
    fields.setdefault("threads", threads or max(1, os.cpu_count() or 1))
    return dataclasses.replace(proxy, **fields)


def final_key(space: str, arch: str, digest: str, schedule: Schedule, warm_start: str | None) -> str:
    ident = {
        "recipe": FINAL_RECIPE,
        "space": space,
        "arch": arch,
        "data": digest,
        "schedule": schedule.to_json(),
        "warm_start": warm_start,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class FinalResult:
    """The arch trained by a final schedule: its weights, accuracies (percent, the validation split)
    and how it got there."""

    name: str  # the spec: a schedule name or overrides
    schedule: Schedule
    key: str
    folder: Path
    state: dict[str, np.ndarray]
    accuracy: float
    accuracy_int8: float | None
    quant_recipe: str | None
    train_seconds: float  # of the epochs this call trained (0 when found finished)
    device: str
    warm_start: str | None  # the oracle cache key of the warm start's weights, None: the space's init
    resumed_from: int  # epochs found in a checkpoint (0: none)
    cached: bool  # found finished: nothing trained

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schedule": self.schedule.to_json(),
            "key": self.key,
            "folder": str(self.folder),
            "accuracy": self.accuracy,
            "accuracy_int8": self.accuracy_int8,
            "quant_recipe": self.quant_recipe,
            "train_seconds": round(self.train_seconds, 3),
            "device": self.device,
            "warm_start": self.warm_start,
            "resumed_from_epoch": self.resumed_from,
            "cached": self.cached,
        }


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k].copy() for k in npz.files}
    except (OSError, ValueError) as exc:
        hint = f"delete {path.parent} to train again"
        raise DataFileError(f"cannot read {path}: {exc}", hint=hint) from None


def write_checkpoint(folder: Path, state: TrainState) -> None:
    """``checkpoint.npz`` then ``checkpoint.json`` (each atomic; the JSON names the archive's epoch)."""
    arrays = {f"model/{k}": v for k, v in state.model.items()}
    arrays.update({f"optim/{i}/{k}": v for i, st in enumerate(state.optim) for k, v in st.items()})
    _save_npz(folder / CHECKPOINT, arrays)
    meta = {"epoch": state.epoch, "step": state.step, "loss": state.loss, "params": len(state.optim)}
    atomic_write_text(folder / CHECKPOINT_META, json.dumps(meta) + "\n")


def read_checkpoint(folder: Path) -> TrainState | None:
    """The checkpoint in ``folder`` (None: none, or one that cannot be read: training starts over)."""
    meta_path = folder / CHECKPOINT_META
    if not meta_path.is_file() or not (folder / CHECKPOINT).is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = _load_npz(folder / CHECKPOINT)
        n = int(meta["params"])
        model = {k.removeprefix("model/"): v for k, v in arrays.items() if k.startswith("model/")}
        optim: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
        for key, value in arrays.items():
            if key.startswith("optim/"):
                _, i, name = key.split("/", 2)
                optim[int(i)][name] = value
        return TrainState(int(meta["epoch"]), int(meta["step"]), float(meta["loss"]), model, optim)
    except (OSError, ValueError, KeyError, TypeError, DataFileError):
        return None


def train_final(
    space: SearchSpace,
    arch: Arch,
    dataset: Dataset,
    schedule: Schedule,
    *,
    name: str,
    root: Path,
    init_state: dict[str, np.ndarray] | None = None,
    warm_start: str | None = None,
    quant_recipe: str | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
    on_resume: Callable[[int], None] | None = None,
    device: str | None = None,
) -> FinalResult:
    """Train ``arch`` with the final ``schedule`` (module docstring) under ``root/<key>/``, warm-started
    from ``init_state`` (``warm_start``: its identity, part of the key). ``on_epoch(epoch, epochs,
    loss)`` after each epoch; ``on_resume(epochs_done)`` when a checkpoint is found. With
    ``quant_recipe``, the int8 accuracy of the trained weights too."""
    from .device import train_device
    from .schedule import int8_accuracy, train

    dev = device or train_device()
    key = final_key(space.name, space.format(arch), dataset.digest, schedule, warm_start)
    folder = root / key
    record = folder / RECORD
    if record.is_file() and (folder / WEIGHTS).is_file():
        try:
            rec = json.loads(record.read_text())
            state = _load_npz(folder / WEIGHTS)
            acc8 = rec.get("int8", {}).get(quant_recipe) if quant_recipe else None
            if quant_recipe and acc8 is None:
                acc8 = int8_accuracy(space, arch, dataset, schedule, state, quant_recipe)
                rec.setdefault("int8", {})[quant_recipe] = acc8
                atomic_write_text(record, json.dumps(rec, indent=1) + "\n")
            return FinalResult(
                name, schedule, key, folder, state, float(rec["accuracy"]),
                None if acc8 is None else float(acc8), quant_recipe, 0.0, str(rec.get("device", dev)),
                warm_start, 0, cached=True,
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, AttributeError, DataFileError):
            pass  # an unreadable record: train again
    ensure_dir(folder, what="final training folder")
    resume = read_checkpoint(folder)
    if resume is not None and resume.epoch > schedule.epochs:
        resume = None
    if resume is not None and on_resume is not None:
        on_resume(resume.epoch)

    def checkpoint(state: TrainState) -> None:
        write_checkpoint(folder, state)

    def epoch_done(epoch: int, loss: float) -> None:
        if on_epoch is not None:
            on_epoch(epoch, schedule.epochs, loss)

    t0 = time.perf_counter()
    trained = train(
        space, arch, dataset, schedule, on_epoch=epoch_done, quant_recipe=quant_recipe,
        init_state=init_state, resume=resume, on_state=checkpoint, device=dev,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    _save_npz(folder / WEIGHTS, trained.state)
    body = {
        "space": space.name,
        "arch": space.format(arch),
        "dataset": dataset.name,
        "data_digest": dataset.digest,
        "name": name,
        "schedule": schedule.to_json(),
        "warm_start": warm_start,
        "accuracy": trained.accuracy,
        "int8": {quant_recipe: trained.accuracy_int8} if quant_recipe else {},
        "train_seconds": seconds,
        "resumed_from_epoch": 0 if resume is None else resume.epoch,
        "final_loss": trained.final_loss,
        "train_examples": trained.train_examples,
        "val_examples": trained.val_examples,
        "device": dev,
    }
    atomic_write_text(record, json.dumps(body, indent=1) + "\n")
    for stale in (CHECKPOINT_META, CHECKPOINT):
        (folder / stale).unlink(missing_ok=True)
    return FinalResult(
        name, schedule, key, folder, trained.state, trained.accuracy, trained.accuracy_int8,
        quant_recipe, seconds, dev, warm_start, 0 if resume is None else resume.epoch, cached=False,
    )  # fmt: skip
