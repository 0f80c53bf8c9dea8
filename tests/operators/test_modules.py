from __future__ import annotations

import torch

from chamlab.chamnet.spaces import SPACES
from chamlab.operators import InvertedResidual
from chamlab.operators.network import Network, build


def test_weights_are_deterministic_per_op() -> None:
    spec = InvertedResidual(32, 32, 3, 1, 6, 8, 8)
    a, b = build(spec).state_dict(), build(spec).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = build(InvertedResidual(32, 32, 5, 1, 6, 8, 8)).state_dict()
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
            y = build(op)(y)
        assert torch.equal(net(x), y)
    assert y.shape == (1, 10)
