"""``macro-cifar10``: the NAS-Bench-Macro space (3^8 = 6,561 networks with measured CIFAR-10 accuracy).

Network (CIFAR-10, input 3x32x32): stem 3x3 conv 3->32 + BN + ReLU; 8 searchable layers in stages of
[2, 3, 3]; the first layer of a stage has stride 2 and doubles the channels (32->64->128->256); head
1x1 conv to 1280 + BN + ReLU, global average pool, linear to 10 classes.

An arch string is 8 digits, one per layer, first layer first:
``0`` identity (a strided 1x1 conv + BN where the stride or channels change, nothing otherwise),
``1`` inverted residual k3 t3, ``2`` inverted residual k5 t6. Example: ``01201201``.

Parameters (``macro-cifar10@res=48,classes=100``): ``res`` the input side (default 32) and ``classes``
the classifier's outputs (default 10); the layers are the benchmark's. ``fit(side, classes)``: the side
rounded up to a multiple of 16, kept within 32..64 (the stem has stride 1, so the cost grows with the
square of the side). The shipped accuracy table describes the default space only: a variant has no
table oracle (train it with ``--oracle train``).

The accuracy table ships as ``chamnet/data/macro_cifar10.parquet`` (see ``data/NOTICE``); it was
converted from the public benchmark's JSON with :func:`convert_source_json`
(``make data`` re-runs it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from chamlab.core.errors import ArchError, DataFileError
from chamlab.core.store import KINDS, TableKind, read_table, write_table
from chamlab.operators import ConvBNAct, InvertedResidual, OpSpec, PoolLinear

from .base import SPACES, Arch, Dimension, SearchSpace, SpaceParamError, int_param, round_up

if TYPE_CHECKING:
    import pandas as pd

STAGES = (2, 3, 3)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 10
RESOLUTION = 32
#: choice digit -> (kernel, expand) of the inverted residual; 0 is the identity
CHOICES = {1: (3, 3), 2: (5, 6)}
TABLE_FILE = "macro_cifar10.parquet"
RES_LIMITS = (8, 512)
CLASS_LIMITS = (2, 100_000)
#: a fit's input side: the data's side rounded up to a multiple of 16, within these
FIT_SIDE = (32, 64)

_ARCH_RE = re.compile(r"^[012]{8}$")


def _accuracy_kind() -> TableKind:
    import pyarrow as pa

    schema = pa.schema(
        [
            ("arch", pa.string()),
            ("acc_seed0", pa.float64()),
            ("acc_seed1", pa.float64()),
            ("acc_seed2", pa.float64()),
            ("mean_acc", pa.float64()),
            ("std_acc", pa.float64()),
            ("params", pa.int64()),
            ("macs", pa.int64()),
        ]
    )
    return KINDS.register(
        "macro-cifar10-accuracy",
        version=1,
        schema=schema,
        what="NAS-Bench-Macro accuracy table",
        make_hint="re-create it with `make data`",
    )


ACCURACY_KIND = _accuracy_kind()


@SPACES.register("macro-cifar10")
class MacroCifar10(SearchSpace):
    description = "NAS-Bench-Macro: 8 layers x {identity, IR k3 t3, IR k5 t6}, CIFAR-10 32x32, 6,561 archs"

    parameters: ClassVar[Mapping[str, str]] = {
        "res": "input side in pixels (default 32)",
        "classes": "classifier outputs (default 10)",
    }

    _dims = tuple(Dimension(f"layer{i + 1}", (0, 1, 2)) for i in range(sum(STAGES)))

    def __init__(self, resolution: int = RESOLUTION, num_classes: int = NUM_CLASSES) -> None:
        self.resolution = resolution
        self.num_classes = num_classes
        params = self.space_params()
        if params:
            self.name = self._named(params)
            self.description = (
                f"NAS-Bench-Macro's 8 layers x {{identity, IR k3 t3, IR k5 t6}} fitted: {resolution}x"
                f"{resolution} input, {num_classes} classes, 6,561 archs (no accuracy table)"
            )

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dims

    # -- parameters -------------------------------------------------------------------------------
    def space_params(self) -> dict[str, str]:
        out = {}
        if self.resolution != RESOLUTION:
            out["res"] = str(self.resolution)
        if self.num_classes != NUM_CLASSES:
            out["classes"] = str(self.num_classes)
        return out

    def with_params(self, params: Mapping[str, str]) -> MacroCifar10:
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise SpaceParamError(
                f"--space {self.base_name}@{','.join(f'{k}={v}' for k, v in params.items())}: "
                f"{self.base_name} has no parameter {unknown[0]!r} (parameters: {', '.join(self.parameters)})"
            )
        spec = self._named(params)
        res = int_param(spec, "res", params["res"], *RES_LIMITS) if "res" in params else RESOLUTION
        classes = (
            int_param(spec, "classes", params["classes"], *CLASS_LIMITS)
            if "classes" in params
            else NUM_CLASSES
        )
        return type(self)(res, classes)

    def fit(self, side: int, classes: int) -> MacroCifar10:
        res = min(FIT_SIDE[1], max(FIT_SIDE[0], round_up(side, 16)))
        classes = int_param(
            f"{self.base_name} fitted to {side}-px images", "classes", str(classes), *CLASS_LIMITS
        )
        return type(self)(res, classes)

    def fit_summary(self) -> dict[str, Any]:
        return {"resolution": [self.resolution], "classes": self.num_classes}

    @property
    def references(self) -> Mapping[str, Arch]:
        return {
            "all-identity": (0,) * 8,
            "all-k3t3": (1,) * 8,
            "all-k5t6": (2,) * 8,
        }

    def parse(self, text: str) -> Arch:
        text = text.strip()
        if not _ARCH_RE.match(text):
            raise ArchError(
                f"macro-cifar10 arch {text!r} must be 8 digits from 0-2 (e.g. 01201201) or one of "
                f"{', '.join(self.references)}"
            )
        return tuple(int(c) for c in text)

    def format(self, arch: Arch) -> str:
        return "".join(str(v) for v in self.validate(arch))

    def ops(self, arch: Arch) -> list[OpSpec]:
        arch = self.validate(arch)
        hw = self.resolution
        channels = STEM_CHANNELS
        ops: list[OpSpec] = [ConvBNAct(3, channels, 3, 1, hw, hw, "relu")]
        layer = 0
        for depth in STAGES:
            for idx in range(depth):
                choice = arch[layer]
                layer += 1
                stride, cout = (2, channels * 2) if idx == 0 else (1, channels)
                if choice == 0:
                    if stride != 1 or cout != channels:
                        ops.append(ConvBNAct(channels, cout, 1, stride, hw, hw, "none"))
                else:
                    kernel, expand = CHOICES[choice]
                    ops.append(InvertedResidual(channels, cout, kernel, stride, expand, hw, hw, "relu"))
                channels = cout
                hw = (hw - 1) // stride + 1
        ops.append(ConvBNAct(channels, HEAD_CHANNELS, 1, 1, hw, hw, "relu"))
        ops.append(PoolLinear(HEAD_CHANNELS, self.num_classes, hw, hw))
        return ops


def accuracy_table() -> pd.DataFrame:
    """The shipped table: ``arch`` (8-digit str), ``acc_seed0..2``, ``mean_acc``, ``std_acc`` (CIFAR-10
    test accuracy in %), ``params``, ``macs`` (the benchmark's ``flops`` field: conv + linear MACs)."""
    ref = resources.files("chamlab.chamnet").joinpath("data", TABLE_FILE)
    with resources.as_file(ref) as path:
        return read_table(path, ACCURACY_KIND).table.to_pandas()


def convert_source_json(src: Path, dst: Path) -> int:
    """Convert NAS-Bench-Macro's ``nas-bench-macro_cifar10.json`` into the shipped Parquet table.

    Returns the number of rows. Raises :class:`DataFileError` naming the key that does not fit.
    """
    import pyarrow as pa

    try:
        raw = json.loads(Path(src).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFileError(f"cannot read NAS-Bench-Macro JSON {src}: {exc}") from exc
    rows: dict[str, list[Any]] = {name: [] for name in ACCURACY_KIND.schema.names}  # type: ignore[union-attr]
    for arch in sorted(raw):
        entry = raw[arch]
        if not _ARCH_RE.match(arch):
            raise DataFileError(f"{src}: key {arch!r} is not an 8-digit macro-cifar10 arch")
        try:
            accs = [float(a) for a in entry["test_acc"]]
            if len(accs) != 3:
                raise ValueError("test_acc must hold 3 seeds")
            values = (
                float(entry["mean_acc"]),
                float(entry["std"]),
                int(entry["params"]),
                int(entry["flops"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFileError(f"{src}: entry {arch!r} is malformed: {exc}") from exc
        rows["arch"].append(arch)
        for i, a in enumerate(accs):
            rows[f"acc_seed{i}"].append(a)
        for name, v in zip(("mean_acc", "std_acc", "params", "macs"), values, strict=True):
            rows[name].append(v)
    table = pa.table(rows)
    write_table(
        Path(dst),
        ACCURACY_KIND,
        table,
        {
            "chamlab.space": "macro-cifar10",
            "chamlab.source": "NAS-Bench-Macro (xiusu/NAS-Bench-Macro, Apache-2.0), "
            "nas-bench-macro_cifar10.json",
            "chamlab.metric": "CIFAR-10 test top-1 accuracy, percent",
        },
    )
    return int(table.num_rows)
