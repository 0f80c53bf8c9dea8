"""``quant_edge``: the quantize/dequantize round trip of one activation tensor, an int8-only probe.

A per-op int8 program takes and returns fp32 tensors: it quantizes its input and dequantizes its
output inside the delegate. A whole int8 network does that once, at its own input and output; between
two of its ops the activation stays int8. So a LUT sum of int8 ops counts, at every boundary between
consecutive ops, one dequantize (end of op i) and one quantize (start of op i + 1) of that boundary's
tensor that the network never runs. This probe is exactly that pair on a ``(1, cin, in_h, in_w)``
tensor (per-tensor int8, the activations' scheme), lowered to XNNPACK as it is (the recipe's
quantizer is not run on it). ``chamlab profile --dtype int8`` measures one per distinct boundary shape
of the profiled archs, and the latency predictor subtracts ``p50 - invocation overhead`` per boundary
(see chamnet/predictors/latency.py).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from .base import OpSpec, register_op

if TYPE_CHECKING:
    from torch import nn

#: the fixed activation scale of the probe; the kernels' speed does not depend on it
PROBE_SCALE = 0.05


@register_op
@dataclasses.dataclass(frozen=True)
class QuantEdge(OpSpec):
    op_type: ClassVar[str] = "quant_edge"
    quantize_with_recipe: ClassVar[bool] = False
    cin: int
    in_h: int
    in_w: int

    @classmethod
    def for_shape(cls, shape: Sequence[int]) -> QuantEdge:
        """The probe of an NCHW activation shape (batch ignored)."""
        if len(shape) != 4:
            raise ValueError(f"quant_edge probes NCHW activations, got shape {tuple(shape)}")
        return cls(int(shape[1]), int(shape[2]), int(shape[3]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.cin, self.in_h, self.in_w)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.input_shape

    @property
    def macs(self) -> int:
        return 0

    @property
    def params(self) -> int:
        return 0

    def unsupported_reason(self, backend: str, dtype: str) -> str | None:
        if dtype != "int8":
            return f"quant_edge is an int8 probe: it has no {dtype} program"
        return super().unsupported_reason(backend, dtype)

    def torch_module(self) -> nn.Module:
        return _module_class()()


def boundary_probes(ops: Sequence[OpSpec]) -> list[QuantEdge]:
    """One probe per boundary between consecutive ops (``len(ops) - 1``, in order)."""
    return [QuantEdge.for_shape(op.output_shape) for op in ops[:-1]]


@functools.cache
def _module_class() -> type[nn.Module]:
    import torch
    import torchao.quantization.pt2e  # noqa: F401  (registers torch.ops.quantized_decomposed)
    from torch import nn

    class QuantEdgeModule(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ops = torch.ops.quantized_decomposed
            q = ops.quantize_per_tensor(x, PROBE_SCALE, 0, -128, 127, torch.int8)
            out: torch.Tensor = ops.dequantize_per_tensor(q, PROBE_SCALE, 0, -128, 127, torch.int8)
            return out

    return QuantEdgeModule
