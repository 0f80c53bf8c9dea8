"""``pool_linear``: global average pool + fully connected classifier (with bias)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from .base import OpSpec, register_op

if TYPE_CHECKING:
    from torch import nn


@register_op
@dataclasses.dataclass(frozen=True)
class PoolLinear(OpSpec):
    op_type: ClassVar[str] = "pool_linear"
    cin: int
    num_classes: int
    in_h: int
    in_w: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.cin, self.in_h, self.in_w)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (1, self.num_classes)

    @property
    def macs(self) -> int:
        return self.cin * self.num_classes

    @property
    def params(self) -> int:
        return self.cin * self.num_classes + self.num_classes

    def torch_module(self) -> nn.Module:
        from torch import nn

        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(self.cin, self.num_classes))
