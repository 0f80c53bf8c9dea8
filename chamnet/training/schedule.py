"""The proxy training schedule and the training of one architecture (needs torch).

:class:`Schedule` is the whole recipe; every field is part of the training cache key. Defaults:

* split: the dataset's examples are permuted with ``numpy.random.default_rng(seed)``; the first
  ``val_fraction`` (20%) is the validation split, the rest the training split; then at most
  ``max_train`` (8,000) and ``max_val`` (5,000) of each are used (a *proxy*: ranking architectures,
  not training them to convergence; its cost per arch on a CPU and its rank fidelity against a 4x
  longer schedule are measured by ``bench/proxy_fidelity.py``: one pass over 8,000 examples ranked
  macro-cifar10 archs as 4 passes did with Kendall tau 0.61, where 2 passes over 2,000 gave 0.29 at
  half the cost; docs/training.md);
* ``epochs`` (1) over the training split in batches of ``batch_size`` (32), reshuffled every epoch by a
  ``torch.Generator`` seeded with ``seed + epoch``; a last batch of one example is dropped (batch norm);
* ``optimizer``: ``adamw`` (AdamW, betas 0.9 and 0.999; the default: within a proxy's few hundred
  steps it trains deep chamnet-mbv2 networks that SGD leaves near chance) or ``sgd`` (SGD, momentum
  ``momentum`` 0.9, Nesterov; give it a larger ``lr``, e.g. 0.05), weight decay ``weight_decay``
  (5e-4), learning rate ``lr`` (0.002) decayed per step by a cosine to 0 over all steps;
  cross-entropy loss;
* weights start from the space's deterministic initialisation (:mod:`chamlab.operators.network`:
  seeded by each op's digest, never the global RNG); batch-norm running statistics are reset and
  become the cumulative average over all training batches (the init's synthetic statistics exist for
  timing, not for data);
* after the last step, the batch-norm statistics are estimated again with the *final* weights
  (``bn_batches``, 16: that many training batches of ``batch_size``, the first of a permutation of the
  training split drawn by ``numpy.random.default_rng((seed, BN_STREAM))``, forward only, averaged
  cumulatively; 0 keeps the running averages). A short schedule moves the weights far within few
  steps, so the averages over all its batches describe networks it has left: without this, a proxy's
  validation accuracy measures that lag (chance level for a deep chamnet-mbv2) rather than the
  trained network. The exported program keeps these statistics;
* ``threads`` (1) torch threads per worker.

The result is the top-1 accuracy on the validation split, in percent (the unit of the shipped
macro-cifar10 table). With the same dataset, schedule and thread count, two runs on a CPU give the same
accuracy bit for bit (checked by the tests).

int8 accuracy (:func:`int8_accuracy`, when ``train`` is given a quantization recipe): the trained
network is quantized *after* training by the recipe (:func:`chamlab.operators.quant.quantized_module`,
the same quantizer configuration as the int8 export) and evaluated on the same validation split.
Calibration data come from the training split, never the validation split: the recipe's number of
batches (8 for the shipped recipes) of ``batch_size`` examples, the first of a permutation of the
training indices drawn by ``numpy.random.default_rng((seed, CALIBRATION_STREAM))``, mapped onto the
input exactly as training batches are (:func:`calibration_indices`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from chamlab.core.errors import InputError

from .data import Dataset, Normalisation, check_classes, to_input

#: the second word of the numpy seed of the int8 calibration draw (the first is the schedule's seed)
CALIBRATION_STREAM = 8
#: the second word of the numpy seed of the batch-norm re-estimation draw
BN_STREAM = 9

if TYPE_CHECKING:
    import torch

    from chamlab.chamnet.spaces.base import Arch, SearchSpace


#: ``Schedule.optimizer`` values
OPTIMIZERS = ("sgd", "adamw")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The seeded proxy training recipe (see the module docstring)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    val_fraction: float = 0.2
    max_train: int = 8_000
    max_val: int = 5_000
    seed: int = 0
    threads: int = 1
    bn_batches: int = 16
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_train", "max_val", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"training schedule: {name} must be a positive integer, got {v!r}")
        if isinstance(self.bn_batches, bool) or not isinstance(self.bn_batches, int) or self.bn_batches < 0:
            raise InputError(
                f"training schedule: bn_batches must be an integer >= 0, got {self.bn_batches!r}"
            )
        if self.batch_size < 2:
            raise InputError("training schedule: batch_size must be at least 2 (batch norm)")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(
                f"training schedule: optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"training schedule: val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("lr", "momentum", "weight_decay"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise InputError(f"training schedule: {name} must be a finite number >= 0, got {v}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Schedule:
        unknown = set(obj) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(
                f"training schedule: unknown key(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(f.name for f in dataclasses.fields(cls))}"
            )
        return cls(**obj)

    @classmethod
    def parse(cls, text: str | None) -> Schedule:
        """``"epochs=1,max_train=256"``: the defaults with these fields replaced (``--schedule``)."""
        if not text or not text.strip():
            return cls()
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for part in text.split(","):
            name, sep, raw = part.partition("=")
            name = name.strip()
            if not sep or name not in fields:
                raise InputError(
                    f"--schedule {text!r}: {part.strip()!r} is not NAME=VALUE with a known name; "
                    f"known: {', '.join(fields)}"
                )
            kind = float if fields[name] in (float, "float") else str if fields[name] in (str, "str") else int
            try:
                values[name] = kind(raw.strip())
            except ValueError:
                raise InputError(
                    f"--schedule {text!r}: {name} must be a{'' if kind is int else ' real'} "
                    f"number, got {raw.strip()!r}"
                ) from None
        return cls(**values)


def split(n: int, schedule: Schedule) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` example indices (see the module docstring)."""
    order = np.random.default_rng(schedule.seed).permutation(n)
    n_val = max(1, round(n * schedule.val_fraction))
    if n - n_val < 2:
        raise InputError(f"a dataset of {n} examples is too small to split for training")
    return order[n_val:][: schedule.max_train], order[:n_val][: schedule.max_val]


@dataclasses.dataclass(frozen=True)
class Trained:
    """One architecture trained: validation accuracy in percent, timings, and its weights."""

    accuracy: float
    train_seconds: float
    final_loss: float
    train_examples: int
    val_examples: int
    state: dict[str, np.ndarray]
    accuracy_int8: float | None = None  # after quantization by ``quant_recipe`` (None: not asked)
    quant_recipe: str | None = None
    quant_seconds: float = 0.0


def num_outputs(space: SearchSpace, arch: Arch) -> int:
    return int(space.ops(arch)[-1].output_shape[-1])


def train(
    space: SearchSpace,
    arch: Arch,
    dataset: Dataset,
    schedule: Schedule,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    quant_recipe: str | None = None,
    init_state: dict[str, np.ndarray] | None = None,
    resume: TrainState | None = None,
    on_state: Callable[[TrainState], None] | None = None,
    device: str | None = None,
) -> Trained:
    """Train ``arch`` of ``space`` on ``dataset`` with ``schedule``; evaluate on the validation split.
    ``quant_recipe``: also quantize the trained network by this recipe and evaluate it (int8 accuracy).
    ``init_state`` (a warm start), ``resume`` (a checkpoint), ``on_state`` (a checkpoint writer) and
    ``device`` (``cpu``, ``cuda``; default :func:`~.device.train_device`): see :func:`_train`."""
    import torch

    check_classes(dataset, num_outputs(space, arch), f"{space.name} arch {space.format(arch)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(schedule.threads)
    try:
        trained = _train(
            space, arch, dataset, schedule, on_epoch, clock,
            init_state=init_state, resume=resume, on_state=on_state, device=device,
        )  # fmt: skip
        if quant_recipe is None:
            return trained
        t0 = clock()
        acc8 = int8_accuracy(space, arch, dataset, schedule, trained.state, quant_recipe)
        return dataclasses.replace(
            trained, accuracy_int8=acc8, quant_recipe=quant_recipe, quant_seconds=clock() - t0
        )
    finally:
        torch.set_num_threads(threads)


def calibration_indices(train_idx: np.ndarray, schedule: Schedule, batches: int) -> list[np.ndarray]:
    """The training examples that calibrate the int8 quantization: ``batches`` batches of
    ``batch_size`` (fewer when the split is small; the first holds at least 2), each sorted."""
    order = np.random.default_rng((schedule.seed, CALIBRATION_STREAM)).permutation(len(train_idx))
    chosen = train_idx[order[: batches * schedule.batch_size]]
    out = [np.sort(chosen[b : b + schedule.batch_size]) for b in range(0, len(chosen), schedule.batch_size)]
    return [b for b in out if len(b) >= 2]


def int8_accuracy(
    space: SearchSpace,
    arch: Arch,
    dataset: Dataset,
    schedule: Schedule,
    state: dict[str, np.ndarray],
    recipe: str,
) -> float:
    """Top-1 validation accuracy in percent of ``arch`` with the trained weights ``state``, quantized
    by ``recipe`` and calibrated on training batches (module docstring). Deterministic for a given
    thread count, like training."""
    import torch

    from chamlab.operators import quant

    shape = tuple(space.input_shape(arch))
    train_idx, val_idx = split(len(dataset), schedule)
    norm = Normalisation.of(dataset.images[train_idx])
    model = space.build(arch)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
    model.eval()
    batches = calibration_inputs(space, arch, dataset, schedule, recipe)
    converted = quant.quantized_module(model, batches, recipe=recipe)
    return evaluate(converted, dataset, val_idx, shape, norm, schedule.batch_size)


def calibration_inputs(
    space: SearchSpace, arch: Arch, dataset: Dataset, schedule: Schedule, recipe: str
) -> list[torch.Tensor]:
    """The int8 calibration batches of ``arch`` (:func:`calibration_indices` mapped onto its input as
    training batches are): what :func:`int8_accuracy` calibrates with, and what an int8 export of the
    trained network should calibrate with to compute what that accuracy measured."""
    from chamlab.operators import quant

    shape = tuple(space.input_shape(arch))
    train_idx, _ = split(len(dataset), schedule)
    norm = Normalisation.of(dataset.images[train_idx])
    n = quant.get_recipe(recipe).calibration_batches
    return [to_input(dataset.images[idx], shape, norm) for idx in calibration_indices(train_idx, schedule, n)]


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Where a training stands after ``epoch`` whole epochs (a checkpoint's content): the module's
    state dict, the optimizer's per-parameter state (:func:`optimizer_state`, in ``model.parameters()``
    order), the steps taken and the last loss. Plain arrays, so a checkpoint is a numpy archive (no
    pickle)."""

    epoch: int  # epochs completed
    step: int
    loss: float
    model: dict[str, np.ndarray]
    optim: list[dict[str, np.ndarray]]


def _train(
    space: SearchSpace,
    arch: Arch,
    dataset: Dataset,
    schedule: Schedule,
    on_epoch: Callable[[int, float], None] | None,
    clock: Callable[[], float],
    *,
    init_state: dict[str, np.ndarray] | None = None,
    resume: TrainState | None = None,
    on_state: Callable[[TrainState], None] | None = None,
    device: str | None = None,
) -> Trained:
    """The training loop (module docstring). ``init_state``: start from these weights (a warm start:
    batch-norm statistics are reset all the same); ``resume``: continue after its epochs (its weights,
    statistics, optimizer state and step); ``on_state``: called with the state after every epoch (a
    checkpoint writer); ``device``: where to train (default :func:`~.device.train_device`)."""
    import torch
    import torch.nn.functional as F

    from .device import autocast, train_device

    dev = torch.device(device or train_device())
    start = clock()
    shape = tuple(space.input_shape(arch))
    train_idx, val_idx = split(len(dataset), schedule)
    norm = Normalisation.of(dataset.images[train_idx])
    model = space.build(arch)
    if init_state is not None:
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in init_state.items()}, strict=True)
    model.train()
    for m in model.modules():  # the init's synthetic BN statistics are for timing, not for data
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over all training batches
    if resume is not None:
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in resume.model.items()}, strict=True)
    model.to(dev)
    params = list(model.parameters())
    opt = optimizer(model, schedule)
    if resume is not None:
        restore_optimizer(opt, params, resume.optim, dev)
    steps_per_epoch = math.ceil(len(train_idx) / schedule.batch_size)
    total = max(1, steps_per_epoch * schedule.epochs)
    step, loss_value = (resume.step, resume.loss) if resume is not None else (0, float("nan"))
    labels = torch.from_numpy(dataset.labels)
    for epoch in range(resume.epoch if resume is not None else 0, schedule.epochs):
        gen = torch.Generator().manual_seed(schedule.seed + epoch)
        perm = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        for b in range(0, len(perm), schedule.batch_size):
            idx = np.sort(perm[b : b + schedule.batch_size])
            if len(idx) < 2:
                continue
            for group in opt.param_groups:
                group["lr"] = 0.5 * schedule.lr * (1.0 + math.cos(math.pi * step / total))
            x = to_input(dataset.images[idx], shape, norm).to(dev, non_blocking=True)
            with autocast(dev.type):
                loss = F.cross_entropy(model(x), labels[idx].to(dev, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_value = float(loss.detach())
        if on_state is not None:
            on_state(
                TrainState(
                    epoch + 1,
                    step,
                    loss_value,
                    _numpy_state(model),
                    [optimizer_state(opt, p) for p in params],
                )
            )
        if on_epoch is not None:
            on_epoch(epoch, loss_value)
    reestimate_bn(model, dataset, train_idx, shape, norm, schedule)
    accuracy = evaluate(model, dataset, val_idx, shape, norm, schedule.batch_size)
    state = _numpy_state(model)
    return Trained(accuracy, clock() - start, loss_value, len(train_idx), len(val_idx), state)


def optimizer(model: torch.nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    """The schedule's optimizer over ``model``'s parameters (its learning rate is set per step)."""
    import torch

    if schedule.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=schedule.lr,
        momentum=schedule.momentum,
        nesterov=schedule.momentum > 0,
        weight_decay=schedule.weight_decay,
    )


def bn_indices(train_idx: np.ndarray, schedule: Schedule) -> list[np.ndarray]:
    """The training examples that re-estimate the batch-norm statistics after training:
    ``bn_batches`` batches of ``batch_size`` (fewer when the split is small), each sorted; batches of
    one example are left out (batch norm)."""
    order = np.random.default_rng((schedule.seed, BN_STREAM)).permutation(len(train_idx))
    chosen = train_idx[order[: schedule.bn_batches * schedule.batch_size]]
    out = [np.sort(chosen[b : b + schedule.batch_size]) for b in range(0, len(chosen), schedule.batch_size)]
    return [b for b in out if len(b) >= 2]


def reestimate_bn(
    model: torch.nn.Module,
    dataset: Dataset,
    train_idx: np.ndarray,
    shape: tuple[int, ...],
    norm: Normalisation,
    schedule: Schedule,
) -> None:
    """Replace the batch-norm running statistics of the trained ``model`` by their cumulative average
    over :func:`bn_indices` batches, forward only (no weight changes); nothing when ``bn_batches`` is
    0. Leaves the model in eval mode."""
    import torch

    batches = bn_indices(train_idx, schedule)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if batches and norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            dev = next(model.parameters()).device
            for idx in batches:
                model(to_input(dataset.images[idx], shape, norm).to(dev))
    model.eval()


def _numpy_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def optimizer_state(opt: torch.optim.Optimizer, param: torch.Tensor) -> dict[str, np.ndarray]:
    """The optimizer's state of one parameter as plain arrays (SGD: ``momentum_buffer``; AdamW: ``step``,
    ``exp_avg``, ``exp_avg_sq``); entries that are None (SGD without momentum) are left out."""
    return {k: v.detach().cpu().numpy().copy() for k, v in opt.state[param].items() if v is not None}


def restore_optimizer(
    opt: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    saved: list[dict[str, np.ndarray]],
    dev: torch.device,
) -> None:
    """Put :func:`optimizer_state` arrays back, in ``params`` order (AdamW's ``step`` stays on the CPU,
    where the optimizer keeps it); a checkpoint of another network is an :class:`InputError`."""
    import torch

    if len(saved) != len(params):
        raise InputError(
            f"a checkpoint of {len(saved)} parameters' optimizer state does not fit a network of "
            f"{len(params)} parameters"
        )
    for p, state in zip(params, saved, strict=True):
        opt.state[p] = {
            k: torch.from_numpy(v.copy()) if k == "step" else torch.from_numpy(v.copy()).to(dev)
            for k, v in state.items()
        }


def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    idx: np.ndarray,
    shape: tuple[int, ...],
    norm: Normalisation,
    batch_size: int,
) -> float:
    """Top-1 accuracy in percent of ``model`` (put in eval mode) on the examples ``idx``."""
    import torch

    if isinstance(model, torch.fx.GraphModule):  # a converted (quantized) graph: no train/eval switch
        pass  # exported from an eval-mode module: batch norm is already in inference form
    else:
        model.eval()
    try:  # the module's device (a quantized graph may hold no parameters: the CPU)
        dev = next(model.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    correct = 0
    with torch.no_grad():
        for b in range(0, len(idx), batch_size):
            part = idx[b : b + batch_size]
            x = to_input(dataset.images[part], shape, norm).to(dev)
            pred = model(x).argmax(dim=1).cpu().numpy()
            correct += int((pred == dataset.labels[part]).sum())
    return 100.0 * correct / len(idx)
