"""The search-space contract, for every registered space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chamlab.chamnet.spaces import SPACES, SpaceRegistry
from chamlab.chamnet.spaces.base import Dimension, SearchSpace
from chamlab.core.errors import ArchError, DuplicateNameError, UnknownNameError

NAMES = SPACES.names()


def test_shipped_spaces() -> None:
    assert NAMES == ["chamnet-mbv2", "macro-cifar10"]


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_reproducible_and_valid(name: str) -> None:
    space = SPACES.get(name)
    a = space.sample(np.random.default_rng(7), 20)
    assert a == space.sample(np.random.default_rng(7), 20)
    assert a != space.sample(np.random.default_rng(8), 20)
    for arch in a:
        assert space.validate(arch) == arch


@pytest.mark.parametrize("name", NAMES)
def test_encode_decode_and_format_parse_round_trip(name: str) -> None:
    space = SPACES.get(name)
    archs = [*space.references.values(), *space.sample(np.random.default_rng(0), 30)]
    for arch in archs:
        vec = space.encode(arch)
        assert vec.shape == (len(space.dimensions),)
        assert np.all((vec >= 0) & (vec <= 1))
        assert space.decode(vec) == arch
        assert space.parse(space.format(arch)) == arch
    assert space.decode(np.zeros(len(space.dimensions))) == tuple(d.values[0] for d in space.dimensions)
    assert space.decode(np.full(len(space.dimensions), 2.0)) == tuple(d.values[-1] for d in space.dimensions)


@pytest.mark.parametrize("name", NAMES)
def test_references_resolve_by_name(name: str) -> None:
    space = SPACES.get(name)
    for ref, arch in space.references.items():
        assert space.resolve(ref) == arch
        assert space.resolve(ref.upper()) == arch


@pytest.mark.parametrize("name", NAMES)
def test_invalid_archs_name_the_dimension(name: str) -> None:
    space = SPACES.get(name)
    arch = next(iter(space.references.values()))
    with pytest.raises(ArchError, match=f"has {len(space.dimensions)} values"):
        space.validate(arch[:-1])
    bad = (arch[0] + 10_000, *arch[1:])
    with pytest.raises(ArchError, match=space.dimensions[0].name):
        space.validate(bad)
    with pytest.raises(ArchError):
        space.parse("not-an-arch")


def _smallest(space: SearchSpace) -> tuple[int, ...]:
    return tuple(d.values[0] for d in space.dimensions)


@pytest.mark.parametrize("name", NAMES)
def test_build_matches_the_counted_network(name: str) -> None:
    space = SPACES.get(name)
    arch = _smallest(space)
    net = space.build(arch)
    assert sum(p.numel() for p in net.parameters()) == space.params(arch)
    with torch.no_grad():
        y = net(torch.randn(space.input_shape(arch)))
    assert y.shape == space.ops(arch)[-1].output_shape


def test_space_registry_is_loud() -> None:
    reg = SpaceRegistry()

    @reg.register("tiny")
    class Tiny(SearchSpace):
        @property
        def dimensions(self) -> tuple[Dimension, ...]:
            return (Dimension("a", (1, 2)),)

        def ops(self, arch):
            return []

        def parse(self, text: str) -> tuple[int, ...]:
            return (int(text),)

        def format(self, arch) -> str:
            return str(arch[0])

    assert reg.get("tiny").size == 2
    assert [*reg.get("tiny").enumerate()] == [(1,), (2,)]
    with pytest.raises(DuplicateNameError):
        reg.register("tiny")(Tiny)
    with pytest.raises(UnknownNameError, match="unknown search space 'huge'; known: tiny"):
        reg.get("huge")


def test_dimension_grid_and_errors() -> None:
    d = Dimension.grid("c", 8, 32, 4)
    assert d.values == (8, 12, 16, 20, 24, 28, 32)
    with pytest.raises(ArchError, match="c=10 is not a choice of this space"):
        d.index(10)
    with pytest.raises(ValueError, match="repeats"):
        Dimension("x", (1, 1))
