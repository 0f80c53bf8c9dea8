"""Deterministic weights for op modules and whole networks (needs torch).

Weights come from a ``torch.Generator`` seeded by the spec's digest (never the global RNG), so the
same op has the same weights in every process, and a whole network built from its op sequence
contains exactly the modules that were benchmarked one by one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import OpSpec


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
    module = spec.torch_module()
    generator = torch.Generator().manual_seed(int(spec.digest, 16) & 0x7FFF_FFFF_FFFF_FFFF)
    init_weights(module, generator)
    return module.eval()


class Network(nn.Sequential):
    """A whole network: the modules of its op sequence, in order."""

    def __init__(self, ops: Sequence[OpSpec]) -> None:
        super().__init__(*(build(op) for op in ops))
        self.ops = tuple(ops)
