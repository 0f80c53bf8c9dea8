"""Where training runs: a CUDA device when torch sees one, the CPU otherwise.

:func:`train_device` is ``"cuda"`` when ``torch.cuda.is_available()``, else ``"cpu"``; the environment
variable ``CHAMLAB_TRAIN_DEVICE`` (``cpu`` or ``cuda``) forces one (``cuda`` without a CUDA device is an
:class:`~chamlab.core.errors.InputError`). The oracle's workers and the final training call it, so a
worker process (or a Ray task given a GPU) trains on the GPU it sees.

Mixed precision (:func:`autocast`): on CUDA the forward pass and the loss run under
``torch.autocast("cuda", dtype=torch.bfloat16)`` (bfloat16 keeps float32's exponent range, so no loss
scaling is needed); weights, optimizer state and gradients stay float32, and evaluation runs in float32.
On the CPU nothing changes: float32 throughout, bit for bit the same results for the same data,
schedule and thread count. On CUDA results are close to but not bit-identical with the CPU's, and may
differ from run to run (cuDNN's algorithms and atomics; docs/training.md).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from chamlab.core.errors import InputError

#: the environment variable that forces the training device
DEVICE_ENV = "CHAMLAB_TRAIN_DEVICE"
DEVICES = ("cpu", "cuda")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def train_device() -> str:
    """``"cuda"`` when a CUDA device is present, else ``"cpu"``; ``$CHAMLAB_TRAIN_DEVICE`` forces one."""
    forced = os.environ.get(DEVICE_ENV, "").strip().lower()
    if forced:
        if forced not in DEVICES:
            raise InputError(f"{DEVICE_ENV}={forced!r}: choose one of {', '.join(DEVICES)}")
        if forced == "cuda" and not cuda_available():
            raise InputError(
                f"{DEVICE_ENV}=cuda, but torch sees no CUDA device",
                hint=f"unset {DEVICE_ENV} to train on the CPU",
            )
        return forced
    return "cuda" if cuda_available() else "cpu"


def autocast(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA; nothing on the CPU (float32, deterministic)."""
    if device_type != "cuda":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16)
