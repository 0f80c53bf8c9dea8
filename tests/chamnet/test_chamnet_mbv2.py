from __future__ import annotations

import json
from importlib import resources

import pytest

from chamlab.chamnet.spaces import SPACES
from chamlab.chamnet.spaces.chamnet_mbv2 import published_results
from chamlab.core.errors import ArchError
from chamlab.operators import InvertedResidual

SPACE = SPACES.get("chamnet-mbv2")
REFERENCE = json.loads(
    resources.files("chamlab.chamnet").joinpath("data", "chamnet_reference_archs.json").read_text()
)


@pytest.mark.parametrize("name", sorted(REFERENCE["archs"]))
def test_reference_archs_build_the_published_networks(name: str) -> None:
    ref = REFERENCE["archs"][name]
    arch = SPACE.resolve(name)
    fields = SPACE.fields(arch)
    assert fields["resolution"] == ref["resolution"] and fields["stem"] == ref["stem"]
    assert [list(g) for g in fields["groups"]] == ref["groups"] and fields["last"] == ref["last"]
    ops = SPACE.ops(arch)
    blocks = [o for o in ops if isinstance(o, InvertedResidual)]
    assert len(blocks) == sum(n for _, _, n in ref["groups"])
    # group strides [1,2,2,2,1,2,1] on each group's first block, stride-2 stem: /32 at the head
    expected_strides = []
    for (_, _, n), s in zip(ref["groups"], REFERENCE["group_strides"], strict=True):
        expected_strides += [s] + [1] * (n - 1)
    assert [b.stride for b in blocks] == expected_strides
    assert ops[-1].in_h == ref["resolution"] // 32  # type: ignore[attr-defined]
    assert all(b.kernel == 3 for b in blocks)


def test_mobilenetv2_counts() -> None:
    arch = SPACE.resolve("mobilenetv2-1.0")
    # torchvision's MobileNetV2 has 3,504,872 params; our notation adds a 1x1 expansion conv (+BN) to
    # the first block (t=1): 32*32 weights + 2*32 BN = 1,088 more
    assert SPACE.params(arch) == 3_504_872 + 1_088
    assert SPACE.format(arch) == "r224_s32_1x16x1_6x24x2_6x32x3_6x64x4_6x96x3_6x160x3_6x320x1_l1280"


def test_json_form_is_accepted() -> None:
    ref = REFERENCE["archs"]["chamnet-b"]
    assert SPACE.parse(json.dumps(ref)) == SPACE.resolve("chamnet-b")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("r224_s32_2x16x1_6x24x2_6x32x3_6x64x4_6x96x3_6x160x3_6x320x1_l1280", "fixed expansion t=1"),
        ("r224_s32_1x16x1_6x24x2_6x32x3_6x64x4_6x96x3_6x160x3_6x320x2_l1280", "fixed repeats n=1"),
        ("r224_s32_1x16x1_6x24x2_6x32x3_6x64x4_6x96x3_6x160x3_6x322x1_l1280", "c7=322"),
        ("r225_s32_1x16x1_6x24x2_6x32x3_6x64x4_6x96x3_6x160x3_6x320x1_l1280", "resolution=225"),
        ("r224_s32_1x16x1_l1280", "neither a reference name"),
        ('{"resolution": 224}', "JSON arch is malformed"),
    ],
)
def test_bad_archs(text: str, message: str) -> None:
    with pytest.raises(ArchError, match=message):
        SPACE.parse(text)


def test_every_reference_is_on_the_grid_with_step_4_channels() -> None:
    for d in SPACE.dimensions:
        if d.name.startswith("c") or d.name in ("stem", "last"):
            assert d.values[1] - d.values[0] == 4, d.name


def test_published_results() -> None:
    res = published_results()
    assert res["chamnet-a"]["int8_ms"] == 24.7 and set(res) == {f"chamnet-{c}" for c in "abcdef"}
