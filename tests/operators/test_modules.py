from __future__ import annotations

import torch

from chamlab.chamnet.spaces import SPACES
from chamlab.operators import InvertedResidual
from chamlab.operators.network import Network


def test_weights_are_deterministic_per_op() -> None:
    spec = InvertedResidual(32, 32, 3, 1, 6, 8, 8)
    a, b = spec.build().state_dict(), spec.build().state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = InvertedResidual(32, 32, 5, 1, 6, 8, 8).build().state_dict()
    assert not torch.equal(a["body.0.weight"], other["body.0.weight"])


def test_network_is_exactly_its_ops_in_sequence() -> None:
    """The network that is deployed is the composition of the modules that were benchmarked."""
    space = SPACES.get("macro-cifar10")
    ops = space.ops(space.parse("12021102"))
    net = Network(ops).eval()
    x = torch.randn(ops[0].input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = x
        for op in ops:
            y = op.build()(y)
        assert torch.equal(net(x), y)
    assert y.shape == (1, 10)
