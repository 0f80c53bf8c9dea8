"""Torch modules for the op specs, with deterministic weights.

Weights come from a ``torch.Generator`` seeded by the spec's digest (never the global RNG), so the
same op has the same weights in every process, and a whole network built from its op sequence
contains exactly the modules that were benchmarked one by one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .specs import ConvBNAct, InvertedResidual, OpSpec, PoolLinear


def _act(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.Identity()


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int, act: str) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout), _act(act)]


class ConvBNActModule(nn.Sequential):
    def __init__(self, spec: ConvBNAct) -> None:
        super().__init__(*_conv_bn(spec.cin, spec.cout, spec.kernel, spec.stride, 1, spec.act))


class InvertedResidualModule(nn.Module):
    def __init__(self, spec: InvertedResidual) -> None:
        super().__init__()
        h = spec.hidden
        self.body = nn.Sequential(
            *_conv_bn(spec.cin, h, 1, 1, 1, spec.act),
            *_conv_bn(h, h, spec.kernel, spec.stride, h, spec.act),
            *_conv_bn(h, spec.cout, 1, 1, 1, "none"),
        )
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class PoolLinearModule(nn.Module):
    def __init__(self, spec: PoolLinear) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(spec.cin, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


_BUILDERS: dict[type[OpSpec], type[nn.Module]] = {
    ConvBNAct: ConvBNActModule,
    InvertedResidual: InvertedResidualModule,
    PoolLinear: PoolLinearModule,
}


@torch.no_grad()
def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """He-normal convs, small-normal linears, BN with non-trivial running statistics.

    Non-trivial statistics keep the XNNPACK BN folding honest, and the scales keep activations
    away from denormals (which would distort x86 timings).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.copy_(0.5 + torch.rand(c, generator=generator))
            m.bias.copy_(0.1 * torch.randn(c, generator=generator))
            if m.running_mean is not None and m.running_var is not None:
                m.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(c, generator=generator))
        elif isinstance(m, nn.Linear):
            m.weight.copy_(0.01 * torch.randn(m.weight.shape, generator=generator))
            if m.bias is not None:
                m.bias.zero_()


def build(spec: OpSpec) -> nn.Module:
    """The eval-mode module of ``spec`` with deterministic weights."""
    try:
        cls = _BUILDERS[type(spec)]
    except KeyError:
        raise TypeError(f"no torch module registered for op type {spec.op_type!r}") from None
    module = cls(spec)
    generator = torch.Generator().manual_seed(int(spec.digest, 16) & 0x7FFF_FFFF_FFFF_FFFF)
    init_weights(module, generator)
    return module.eval()


class Network(nn.Sequential):
    """A whole network: the modules of its op sequence, in order."""

    def __init__(self, ops: Sequence[OpSpec]) -> None:
        super().__init__(*(build(op) for op in ops))
        self.ops = tuple(ops)
