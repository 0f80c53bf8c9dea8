"""``inverted_residual``: the MobileNetV2 block.

1x1 expand + BN + act, kxk depthwise (stride) + BN + act, 1x1 project + BN; residual add when stride 1
and cin == cout. hidden = cin * expand. The expansion conv is present for every ``expand`` (also 1),
as in the ChamNet model files.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, ClassVar

from .base import StridedOp, conv_bn, register_op

if TYPE_CHECKING:
    from torch import nn


@register_op
@dataclasses.dataclass(frozen=True)
class InvertedResidual(StridedOp):
    op_type: ClassVar[str] = "inverted_residual"
    cin: int
    cout: int
    kernel: int
    stride: int
    expand: int
    in_h: int
    in_w: int
    act: str = "relu"

    @property
    def hidden(self) -> int:
        return self.cin * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout

    @property
    def macs(self) -> int:
        return sum(self.mac_terms())

    def mac_terms(self) -> tuple[int, ...]:
        """(1x1 expand, kxk depthwise, 1x1 project) MACs."""
        _, _, oh, ow = self.output_shape
        h = self.hidden
        return (
            h * self.in_h * self.in_w * self.cin,
            h * oh * ow * self.kernel * self.kernel,
            self.cout * oh * ow * h,
        )

    @property
    def params(self) -> int:
        h = self.hidden
        return h * self.cin + 2 * h + h * self.kernel * self.kernel + 2 * h + self.cout * h + 2 * self.cout

    def torch_module(self) -> nn.Module:
        return _module_class()(self)


@functools.cache
def _module_class() -> type[nn.Module]:
    """The torch module class, defined on first use so that the spec imports without torch."""
    import torch
    from torch import nn

    class InvertedResidualModule(nn.Module):
        def __init__(self, spec: InvertedResidual) -> None:
            super().__init__()
            h = spec.hidden
            self.body = nn.Sequential(
                *conv_bn(spec.cin, h, 1, 1, 1, spec.act),
                *conv_bn(h, h, spec.kernel, spec.stride, h, spec.act),
                *conv_bn(h, spec.cout, 1, 1, 1, "none"),
            )
            self.residual = spec.residual

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y: torch.Tensor = self.body(x)
            return x + y if self.residual else y

    return InvertedResidualModule
