"""``chamnet-mbv2``: the ChamNet paper's MobileNetV2-based space (ImageNet, 1000 classes).

Seven groups of inverted residuals with fixed strides [1, 2, 2, 2, 1, 2, 1] after a 3x3 stride-2
stem; every block has a 1x1 expansion conv (also when t = 1), a 3x3 depthwise conv (the stride on
the group's first block) and a 1x1 projection; a 1x1 head conv, global pool and a 1000-way classifier.

Searchable dimensions and the grids we chose (every channel grid has step 4, so ChamNet-B's 92 and
104 are on it; every published ChamNet A-F and MobileNetV2-1.0 lies inside):

=============  ==================  =======================================
dimension      grid                note
=============  ==================  =======================================
resolution     96..224 step 16
stem           8..48 step 4        stem conv output channels
c1             8..32 step 4        group 1 (t = 1, n = 1 fixed)
t2..t7         1..6                expansion ratio of groups 2-7
c2             12..48 step 4
c3             16..64 step 4
c4             32..128 step 4
c5             48..192 step 4
c6             80..320 step 4
c7             128..640 step 4     group 7 (n = 1 fixed)
n2..n6         1..4                repeats of groups 2-6
last           1024..2048 step 4   head 1x1 conv channels
=============  ==================  =======================================

String form (``format``/``parse``): ``r<res>_s<stem>_<t>x<c>x<n>_..._l<last>`` with all seven groups,
e.g. MobileNetV2-1.0 is ``r224_s32_1x16x1_6x24x2_6x32x3_6x64x4_6x96x3_6x160x3_6x320x1_l1280``.
The JSON form of the reference file is accepted too:
``{"resolution": 224, "stem": 32, "groups": [[1, 16, 1], ...], "last": 1280}``.
Reference names: ``chamnet-a`` ... ``chamnet-f``, ``mobilenetv2-1.0``.

Parameters (``chamnet-mbv2@res=32-96,classes=10``): ``res`` the resolution grid (``LO-HI`` in steps of
16, or one side; default 96-224) and ``classes`` the classifier's outputs (default 1000); every other
dimension keeps the paper's grid. ``fit(side, classes)``, for a dataset of ``side``-pixel images: the
grid starts at ``side`` rounded up to a multiple of 16, kept within 32..96 (the network downsamples 32x,
and the paper's grid starts at 96), and ends at three times its start, at most 224 (so data of 96 px or
more gets the paper's 96-224). A variant's references are the published structures at the grid's
resolution nearest to the published one.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, ClassVar

from chamlab.core.errors import ArchError
from chamlab.operators import ConvBNAct, InvertedResidual, OpSpec, PoolLinear

from .base import (
    SPACES,
    Arch,
    Dimension,
    SearchSpace,
    SpaceParamError,
    format_grid,
    grid_param,
    int_param,
    round_up,
)

GROUP_STRIDES = (1, 2, 2, 2, 1, 2, 1)
NUM_CLASSES = 1000
RESOLUTIONS = tuple(range(96, 225, 16))
RES_STEP = 16
RES_LIMITS = (16, 512)
CLASS_LIMITS = (2, 100_000)
#: the resolution grid of a fit starts at the data's side rounded up to RES_STEP, within FIT_START
FIT_START = (32, 96)
KERNEL = 3
_CHANNEL_GRIDS = {
    1: (8, 32),
    2: (12, 48),
    3: (16, 64),
    4: (32, 128),
    5: (48, 192),
    6: (80, 320),
    7: (128, 640),
}
_REPEATED = (2, 3, 4, 5, 6)  # groups whose repeats are searchable
_EXPANDED = (2, 3, 4, 5, 6, 7)  # groups whose expansion is searchable


def _dimensions(resolutions: tuple[int, ...] = RESOLUTIONS) -> tuple[Dimension, ...]:
    dims = [Dimension("resolution", resolutions), Dimension.grid("stem", 8, 48, 4)]
    for g in range(1, 8):
        if g in _EXPANDED:
            dims.append(Dimension.grid(f"t{g}", 1, 6, 1))
        lo, hi = _CHANNEL_GRIDS[g]
        dims.append(Dimension.grid(f"c{g}", lo, hi, 4))
        if g in _REPEATED:
            dims.append(Dimension.grid(f"n{g}", 1, 4, 1))
    dims.append(Dimension.grid("last", 1024, 2048, 4))
    return tuple(dims)


_STR_RE = re.compile(r"^r(\d+)_s(\d+)_((?:\d+x\d+x\d+_){7})l(\d+)$")


@SPACES.register("chamnet-mbv2")
class ChamNetMbV2(SearchSpace):
    description = "ChamNet's MobileNetV2 space: resolution, stem, per-group channels/expansion/repeats, head"
    parameters: ClassVar[Mapping[str, str]] = {
        "res": "input resolutions: LO-HI in steps of 16, or one side (default 96-224)",
        "classes": "classifier outputs (default 1000)",
    }

    def __init__(self, resolutions: tuple[int, ...] = RESOLUTIONS, num_classes: int = NUM_CLASSES) -> None:
        self.resolutions = tuple(resolutions)
        self.num_classes = num_classes
        self._dims = _dimensions(self.resolutions)
        params = self.space_params()
        if params:
            self.name = self._named(params)
            self.description = (
                f"{type(self).description}; fitted: {format_grid(self.resolutions)} px, {num_classes} classes"
            )

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dims

    @property
    def references(self) -> Mapping[str, Arch]:
        return _references(self)

    # -- parameters -------------------------------------------------------------------------------
    def space_params(self) -> dict[str, str]:
        out = {}
        if self.resolutions != RESOLUTIONS:
            out["res"] = format_grid(self.resolutions)
        if self.num_classes != NUM_CLASSES:
            out["classes"] = str(self.num_classes)
        return out

    def with_params(self, params: Mapping[str, str]) -> ChamNetMbV2:
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            given = ",".join(f"{k}={v}" for k, v in params.items())
            raise SpaceParamError(
                f"--space {self.base_name}@{given}: {self.base_name} has no parameter {unknown[0]!r} "
                f"(parameters: {', '.join(self.parameters)})"
            )
        spec = self._named(params)
        res = (
            grid_param(spec, "res", params["res"], *RES_LIMITS, RES_STEP) if "res" in params else RESOLUTIONS
        )
        classes = (
            int_param(spec, "classes", params["classes"], *CLASS_LIMITS)
            if "classes" in params
            else NUM_CLASSES
        )
        return type(self)(res, classes)

    def fit(self, side: int, classes: int) -> ChamNetMbV2:
        start = min(FIT_START[1], max(FIT_START[0], round_up(side, RES_STEP)))
        stop = min(RESOLUTIONS[-1], 3 * start)
        spec = f"{self.base_name} fitted to {side}-px images"
        classes = int_param(spec, "classes", str(classes), *CLASS_LIMITS)
        return type(self)(tuple(range(start, stop + 1, RES_STEP)), classes)

    def fit_summary(self) -> dict[str, Any]:
        return {"resolution": list(self.resolutions), "classes": self.num_classes}

    # -- conversions between the dimension tuple and the (resolution, stem, groups, last) form ----------
    def from_fields(
        self, resolution: int, stem: int, groups: list[list[int]] | list[tuple[int, int, int]], last: int
    ) -> Arch:
        if len(groups) != 7 or any(len(g) != 3 for g in groups):
            raise ArchError("chamnet-mbv2 needs 7 groups of [t, c, n]")
        values: dict[str, int] = {"resolution": resolution, "stem": stem, "last": last}
        for g, (t, c, n) in enumerate(groups, start=1):
            values[f"c{g}"] = c
            if g in _EXPANDED:
                values[f"t{g}"] = t
            elif t != 1:
                raise ArchError(f"chamnet-mbv2 group {g} has a fixed expansion t=1, got t={t}")
            if g in _REPEATED:
                values[f"n{g}"] = n
            elif n != 1:
                raise ArchError(f"chamnet-mbv2 group {g} has fixed repeats n=1, got n={n}")
        return self.validate(tuple(values[d.name] for d in self._dims))

    def fields(self, arch: Arch) -> dict[str, Any]:
        arch = self.validate(arch)
        v = {d.name: arch[i] for i, d in enumerate(self._dims)}
        groups = [(v.get(f"t{g}", 1), v[f"c{g}"], v.get(f"n{g}", 1)) for g in range(1, 8)]
        return {"resolution": v["resolution"], "stem": v["stem"], "groups": groups, "last": v["last"]}

    def parse(self, text: str) -> Arch:
        text = text.strip()
        if text.startswith("{"):
            try:
                obj = json.loads(text)
                return self.from_fields(
                    int(obj["resolution"]),
                    int(obj["stem"]),
                    [[int(x) for x in g] for g in obj["groups"]],
                    int(obj["last"]),
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ArchError(f"chamnet-mbv2 JSON arch is malformed: {exc}") from exc
        m = _STR_RE.match(text)
        if not m:
            raise ArchError(
                f"chamnet-mbv2 arch {text!r} is neither a reference name ({', '.join(self.references)}) nor "
                "of the form r<res>_s<stem>_<t>x<c>x<n>_(7 groups)_l<last>"
            )
        groups = [[int(x) for x in g.split("x")] for g in m.group(3).rstrip("_").split("_")]
        return self.from_fields(int(m.group(1)), int(m.group(2)), groups, int(m.group(4)))

    def format(self, arch: Arch) -> str:
        f = self.fields(arch)
        groups = "_".join(f"{t}x{c}x{n}" for t, c, n in f["groups"])
        return f"r{f['resolution']}_s{f['stem']}_{groups}_l{f['last']}"

    def ops(self, arch: Arch) -> list[OpSpec]:
        f = self.fields(arch)
        hw = f["resolution"]
        ops: list[OpSpec] = [_conv(3, f["stem"], 3, 2, hw, hw, "relu")]
        hw = (hw - 1) // 2 + 1
        channels = f["stem"]
        for (t, c, n), group_stride in zip(f["groups"], GROUP_STRIDES, strict=True):
            for i in range(n):
                stride = group_stride if i == 0 else 1
                ops.append(_block(channels, c, KERNEL, stride, t, hw, hw, "relu"))
                channels = c
                hw = (hw - 1) // stride + 1
        ops.append(_conv(channels, f["last"], 1, 1, hw, hw, "relu"))
        ops.append(_head(f["last"], self.num_classes, hw, hw))
        return ops


# The specs are frozen: archs that share an op share its (validated, key-cached) spec, so a search
# that predicts thousands of archs builds each distinct op once.
_conv = functools.lru_cache(maxsize=1 << 16)(ConvBNAct)
_block = functools.lru_cache(maxsize=1 << 16)(InvertedResidual)
_head = functools.lru_cache(maxsize=1 << 12)(PoolLinear)


@functools.cache
def _reference_file() -> dict[str, Any]:
    ref = resources.files("chamlab.chamnet").joinpath("data", "chamnet_reference_archs.json")
    data: dict[str, Any] = json.loads(ref.read_text())
    return data


def _references(space: ChamNetMbV2) -> dict[str, Arch]:
    """The published archs; in a variant, at the grid's resolution nearest to the published one."""
    archs = _reference_file()["archs"]

    def nearest(r: int) -> int:
        return min(space.resolutions, key=lambda v: (abs(v - r), -v))

    return {
        name: space.from_fields(nearest(a["resolution"]), a["stem"], a["groups"], a["last"])
        for name, a in archs.items()
    }


def published_results() -> dict[str, dict[str, float]]:
    """Published Galaxy S8 CPU results of the references (ImageNet top-1 %, latency ms)."""
    pub = _reference_file()["published_results_s8_cpu"]
    cols = pub["columns"]
    return {
        k: dict(zip(cols, v, strict=True)) for k, v in pub.items() if not k.startswith("_") and k != "columns"
    }
