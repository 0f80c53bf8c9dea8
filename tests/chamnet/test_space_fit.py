"""Spaces fitted to a task: ``NAME@KEY=VALUE`` variants, ``fit(side, classes)`` and the data it reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_idx
from PIL import Image

from chamlab.chamnet.search import NoOracleError, oracle_for
from chamlab.chamnet.spaces import SPACES, SpaceRegistry
from chamlab.chamnet.spaces.base import SpaceParamError
from chamlab.chamnet.spaces.chamnet_mbv2 import ChamNetMbV2
from chamlab.chamnet.spaces.macro_cifar10 import MacroCifar10
from chamlab.chamnet.training.data import fit_shape, load_dataset


def test_fit_shape_reads_side_and_classes(tmp_path: Path) -> None:
    assert fit_shape("digits") == (8, 10)
    assert fit_shape(write_idx(tmp_path / "idx", 12, 28, 3)) == (28, 3)
    folder = tmp_path / "folder"
    for c, size in (("cat", (40, 30)), ("dog", (50, 60)), ("eel", (70, 64))):
        (folder / c).mkdir(parents=True)
        Image.fromarray(np.zeros(size[::-1], dtype=np.uint8)).save(folder / c / "a.png")
    assert fit_shape(folder) == (50, 3)  # the median shorter side: 30, 50, 64


@pytest.mark.parametrize(
    ("side", "classes", "name", "grid"),
    [
        (28, 10, "chamnet-mbv2@res=32-96,classes=10", (32, 48, 64, 80, 96)),
        (8, 3, "chamnet-mbv2@res=32-96,classes=3", (32, 48, 64, 80, 96)),
        (60, 100, "chamnet-mbv2@res=64-192,classes=100", tuple(range(64, 193, 16))),
        (500, 1000, "chamnet-mbv2", tuple(range(96, 225, 16))),
    ],
)
def test_a_fitted_mbv2_follows_the_data(side: int, classes: int, name: str, grid: tuple[int, ...]) -> None:
    space = SPACES.get("chamnet-mbv2").fit(side, classes)
    assert space.name == name and SPACES.get(name).name == name
    assert space.dimensions[0].name == "resolution" and space.dimensions[0].values == grid
    assert space.fit_summary() == {"resolution": list(grid), "classes": classes}
    archs = [*space.references.values(), *space.sample(np.random.default_rng(1), 20)]
    assert {space.input_shape(a)[2] for a in archs} <= set(grid)
    for arch in archs:
        ops = space.ops(arch)
        assert ops[0].input_shape == (1, 3, arch[0], arch[0])
        assert ops[-1].output_shape == (1, classes)
        assert ops[-1].key.startswith(f"pool_linear:cin={ops[-1].cin},num_classes={classes},")  # type: ignore[attr-defined]
        assert space.parse(space.format(arch)) == arch
    small = min(archs, key=space.macs)
    with torch.no_grad():
        out = space.build(small)(torch.zeros(space.input_shape(small)))
    assert tuple(out.shape) == (1, classes)


def test_a_fitted_macro_cifar10_and_its_table() -> None:
    base = SPACES.get("macro-cifar10")
    assert base.fit(28, 10).name == "macro-cifar10"  # Fashion-MNIST: the defaults
    v = base.fit(40, 3)
    assert v.name == "macro-cifar10@res=48,classes=3" and v.fit_summary() == {
        "resolution": [48],
        "classes": 3,
    }
    assert base.fit(300, 3).name == "macro-cifar10@res=64,classes=3"
    arch = v.parse("01201201")
    assert v.input_shape(arch) == (1, 3, 48, 48) and v.ops(arch)[-1].output_shape == (1, 3)
    assert base.ops(arch)[-1].output_shape == (1, 10)
    # the shipped accuracy table is CIFAR-10 at 32 px: the variant has none
    oracle_for(base)
    with pytest.raises(NoOracleError, match="macro-cifar10@res=48,classes=3"):
        oracle_for(v)


def test_parameters_have_one_canonical_name() -> None:
    reg = SpaceRegistry()  # subclasses: registering sets the class's name

    @reg.register("mbv2")
    class Mbv2(ChamNetMbV2):
        pass

    @reg.register("macro")
    class Macro(MacroCifar10):
        pass

    a = reg.get("mbv2@classes=10,res=32-96")
    assert a.name == "mbv2@res=32-96,classes=10" and reg.get("mbv2@res=32-96,classes=10") is a
    assert reg.get("mbv2@res=96-224,classes=1000") is reg.get("mbv2")  # defaults are the plain space
    assert reg.get("mbv2@res=64").name == "mbv2@res=64" and reg.get("mbv2@res=64").dimensions[0].values == (
        64,
    )
    assert reg.get("macro@classes=10") is reg.get("macro")
    assert a.base_name == "mbv2" and a.space_params() == {"res": "32-96", "classes": "10"}
    assert reg.get("mbv2").space_params() == {}
    # the published references are kept, at the grid's nearest resolution
    assert set(a.references) == set(reg.get("mbv2").references)
    assert {arch[0] for arch in a.references.values()} == {96}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("chamnet-mbv2@res=33-96", "res=33-96: write LO-HI with LO <= HI and HI - LO a multiple of 16"),
        ("chamnet-mbv2@res=96-32", "res=96-32: write LO-HI with LO <= HI"),
        ("chamnet-mbv2@res=8", "res=8 must be an integer from 16 to 512"),
        ("chamnet-mbv2@res=big", "res=big must be an integer from 16 to 512"),
        ("chamnet-mbv2@classes=1", "classes=1 must be an integer from 2 to 100000"),
        ("chamnet-mbv2@depth=3", "chamnet-mbv2 has no parameter 'depth' (parameters: res, classes)"),
        ("chamnet-mbv2@res", "'res' is not KEY=VALUE"),
        ("chamnet-mbv2@classes=3,classes=4", "parameter 'classes' is given twice"),
        ("macro-cifar10@res=32-64", "res=32-64 must be an integer from 8 to 512"),
    ],
)
def test_bad_parameters_name_the_key_and_value(spec: str, message: str) -> None:
    with pytest.raises(SpaceParamError, match="--space ") as info:
        SPACES.get(spec)
    assert message in info.value.message and "\n" not in info.value.message
    assert info.value.exit_code == 2


def test_a_fitted_space_trains_on_its_data(tmp_path: Path) -> None:
    """The training oracle maps a 3-class IDX dataset onto the fitted space's input and classifier."""
    from chamlab.chamnet.training import Schedule
    from chamlab.chamnet.training.schedule import train

    data_dir = write_idx(tmp_path / "idx", 40, 20, 3)
    space = SPACES.get("macro-cifar10").fit(*fit_shape(data_dir))
    assert space.name == "macro-cifar10@classes=3"
    data = load_dataset(data_dir)
    trained = train(space, space.parse("00000000"), data, Schedule(epochs=1, batch_size=8, max_val=8))
    [head] = [v for k, v in trained.state.items() if v.ndim == 2]  # the classifier's weight
    assert head.shape == (3, 1280)
