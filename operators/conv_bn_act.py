"""``conv_bn_act``: kxk convolution (padding k//2, no bias) + BatchNorm + optional ReLU.

Used for stems, head 1x1 convs and NAS-Bench-Macro's strided 1x1 'identity' (act=none).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from .base import StridedOp, conv_bn, register_op

if TYPE_CHECKING:
    from torch import nn


@register_op
@dataclasses.dataclass(frozen=True)
class ConvBNAct(StridedOp):
    op_type: ClassVar[str] = "conv_bn_act"
    cin: int
    cout: int
    kernel: int
    stride: int
    in_h: int
    in_w: int
    act: str = "relu"

    @property
    def macs(self) -> int:
        _, c, h, w = self.output_shape
        return c * h * w * self.cin * self.kernel * self.kernel

    @property
    def params(self) -> int:
        return self.cout * self.cin * self.kernel * self.kernel + 2 * self.cout

    def torch_module(self) -> nn.Module:
        from torch import nn

        return nn.Sequential(*conv_bn(self.cin, self.cout, self.kernel, self.stride, 1, self.act))


#: A near-empty program (a 1x1 conv on a 1x1x1 tensor). Its latency is the fixed cost of one program
#: invocation (execute call, delegate dispatch) that every single-op microbenchmark pays once, while a
#: whole network pays it once in total. ``chamlab profile`` always measures it so that the latency
#: predictor can subtract ``(n_ops - 1) x`` that cost (see chamnet/predictors/latency.py).
INVOCATION_PROBE = ConvBNAct(1, 1, 1, 1, 1, 1, "none")
