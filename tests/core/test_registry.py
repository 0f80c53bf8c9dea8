"""The one registry class: typed, loud on duplicates, unknown names list the choices."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chamlab.core.errors import DuplicateNameError, InputError, UnknownNameError
from chamlab.core.registry import Registry


def test_add_get_and_listing_in_order() -> None:
    reg: Registry[Callable[[int], int]] = Registry("doubler")
    reg.add("twice", lambda x: 2 * x)

    @reg.register("thrice")
    def thrice(x: int) -> int:
        return 3 * x

    assert thrice(2) == 6  # the decorator returns the function unchanged
    assert reg.get("twice")(4) == 8 and reg["thrice"](1) == 3
    assert "twice" in reg and "once" not in reg and len(reg) == 2
    assert list(reg) == reg.names() == ["thrice", "twice"]  # names sorted
    assert [n for n, _ in reg.items()] == ["twice", "thrice"]  # items in registration order
    assert reg.check("twice") == "twice"


def test_a_duplicate_is_loud_and_keeps_the_first() -> None:
    reg: Registry[int] = Registry("width")
    reg.add("narrow", 1)
    with pytest.raises(DuplicateNameError, match="width 'narrow' is already registered"):
        reg.add("narrow", 2)

    class Base:
        pass

    kinds: Registry[type] = Registry("kind")
    kinds.add("k", Base)
    with pytest.raises(DuplicateNameError, match=r"kind 'k' is already registered by \S*Base;"):
        kinds.register("k")(int)
    assert kinds.get("k") is Base
    assert reg.get("narrow") == 1


def test_an_unknown_name_lists_the_choices_and_is_an_input_error() -> None:
    reg: Registry[int] = Registry("search space", hint="see `chamlab spaces`")
    reg.add("tiny", 1)
    reg.add("huge", 2)
    with pytest.raises(UnknownNameError) as e:
        reg.get("medium")
    assert str(e.value) == "unknown search space 'medium'; known: huge, tiny (see `chamlab spaces`)"
    assert isinstance(e.value, InputError) and e.value.exit_code == 2 and e.value.known == ("huge", "tiny")
    with pytest.raises(UnknownNameError, match="known: huge, tiny"):
        reg.check("medium")
    with pytest.raises(UnknownNameError, match=r"unknown sampler 'x'; known: \(none\)"):
        Registry[int]("sampler").get("x")


def test_every_listed_registry_is_one() -> None:
    """Op kinds, spaces, transports, store kinds, samplers, oracles, recipes, runner kinds,
    acquisitions, kernels and output warps are all Registry instances (one class, one behaviour)."""
    from chamlab.chamnet.search.acquisition import ACQUISITIONS
    from chamlab.chamnet.search.gp import KERNELS
    from chamlab.chamnet.search.sampling import SAMPLERS
    from chamlab.chamnet.search.warp import OUTPUT_WARPS
    from chamlab.chamnet.spaces import SPACES
    from chamlab.core.store import KINDS
    from chamlab.host.devices.transports import TRANSPORTS
    from chamlab.host.devices.transports.base import RUNNER_KINDS
    from chamlab.host.workflows.oracles import ORACLES
    from chamlab.operators import OPS
    from chamlab.operators.quant import RECIPES

    for reg in (ACQUISITIONS, KERNELS, SAMPLERS, OUTPUT_WARPS, ORACLES, RECIPES, RUNNER_KINDS):
        assert isinstance(reg, Registry)
    for wrapper, inner in (
        (SPACES, "_factories"),
        (KINDS, "_kinds"),
        (TRANSPORTS, "_configs"),
        (OPS, "_classes"),
    ):
        assert isinstance(getattr(wrapper, inner), Registry)
    assert ORACLES.names() == ["table", "train"]
    assert RUNNER_KINDS.names() == ["executor_runner", "shim", "torch-cuda"]
    with pytest.raises(UnknownNameError, match="unknown oracle 'coin'; known: table, train"):
        ORACLES.get("coin")
