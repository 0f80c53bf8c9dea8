from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import ClassVar

import pytest
import torch
from torch import nn

from chamlab.core.errors import DuplicateNameError, InputError, UnknownNameError
from chamlab.operators import (
    INVOCATION_PROBE,
    OPS,
    ConvBNAct,
    InvertedResidual,
    OpRegistry,
    OpSpec,
    PoolLinear,
    QuantEdge,
)
from chamlab.operators.network import build

EXAMPLES: dict[str, list[OpSpec]] = {
    "conv_bn_act": [
        ConvBNAct(3, 32, 3, 2, 224, 224, "relu"),
        ConvBNAct(32, 64, 1, 2, 32, 32, "none"),
        INVOCATION_PROBE,
    ],
    "inverted_residual": [
        InvertedResidual(64, 64, 5, 1, 6, 16, 16),
        InvertedResidual(24, 40, 3, 2, 1, 56, 56),
        InvertedResidual(32, 64, 3, 2, 3, 31, 31),
    ],
    "pool_linear": [PoolLinear(1280, 10, 4, 4), PoolLinear(960, 1000, 7, 7)],
    "quant_edge": [QuantEdge(32, 56, 56), QuantEdge(1280, 4, 4)],
}
ALL = [spec for specs in EXAMPLES.values() for spec in specs]


def test_every_registered_op_type_is_exercised() -> None:
    assert set(OPS) == set(EXAMPLES)


def test_documented_key_format() -> None:
    assert InvertedResidual(64, 64, 5, 1, 6, 16, 16).key == (
        "inverted_residual:cin=64,cout=64,kernel=5,stride=1,expand=6,in_h=16,in_w=16,act=relu"
    )


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.key)
def test_key_round_trips(spec: OpSpec) -> None:
    assert OPS.from_key(spec.key) == spec
    assert spec.key.startswith(f"{spec.op_type}:")
    assert len(spec.digest) == 16


def test_key_and_digest_are_stable_across_processes() -> None:
    code = (
        "from chamlab.operators import InvertedResidual as I; s = I(64, 64, 5, 1, 6, 16, 16); "
        "print(s.key, s.digest)"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    spec = InvertedResidual(64, 64, 5, 1, 6, 16, 16)
    assert outs == {f"{spec.key} {spec.digest}\n"}


def _torch_macs(module: nn.Module, x: torch.Tensor) -> int:
    macs = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            macs += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return macs


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.key)
def test_counts_and_shapes_match_the_torch_module(spec: OpSpec) -> None:
    module = build(spec)
    x = torch.randn(spec.input_shape)
    with torch.no_grad():
        y = module(x)
    assert tuple(y.shape) == spec.output_shape
    assert sum(p.numel() for p in module.parameters()) == spec.params
    assert _torch_macs(module, x) == spec.macs


def test_specs_are_frozen_and_hashable() -> None:
    a, b = InvertedResidual(64, 64, 5, 1, 6, 16, 16), InvertedResidual(64, 64, 5, 1, 6, 16, 16)
    assert a == b and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.cin = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ConvBNAct(3, 32, 2, 1, 8, 8), "kernel must be odd"),
        (lambda: ConvBNAct(3, 32, 3, 3, 8, 8), "stride must be 1 or 2"),
        (lambda: ConvBNAct(0, 32, 3, 1, 8, 8), "cin must be a positive integer"),
        (lambda: ConvBNAct(True, 32, 3, 1, 8, 8), "cin must be a positive integer"),
        (lambda: ConvBNAct(3, 32, 3, 1, 8, 8, "gelu"), "act must be one of relu, none"),
        (lambda: InvertedResidual(8, 8, 3, 1, 0, 8, 8), "expand must be a positive integer"),
        (lambda: PoolLinear(8, 0, 1, 1), "num_classes must be a positive integer"),
    ],
)
def test_invalid_specs_are_rejected_with_the_field_named(factory, message: str) -> None:
    with pytest.raises(InputError, match=message):
        factory()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("conv_bn_act", "expected '<op_type>:<field>=<value>"),
        ("nope:cin=1", "unknown op type 'nope'; known: conv_bn_act, inverted_residual, pool_linear"),
        ("conv_bn_act:cin=1,cout=1", "missing"),
        ("conv_bn_act:cin=1,cout=1,kernel=1,stride=1,in_h=1,in_w=1,act=none,x=2", "unexpected field"),
        ("conv_bn_act:cout=1,cin=1,kernel=1,stride=1,in_h=1,in_w=1,act=none", "not canonical"),
    ],
)
def test_malformed_keys_are_rejected(key: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        OPS.from_key(key)


def test_registry_is_loud() -> None:
    fresh = OpRegistry()
    fresh.register(ConvBNAct)
    with pytest.raises(DuplicateNameError, match="already registered"):
        fresh.register(ConvBNAct)
    with pytest.raises(UnknownNameError, match="known: conv_bn_act"):
        fresh.get("inverted_residual")
    assert list(fresh) == ["conv_bn_act"]


def test_unsupported_backend_or_dtype_has_a_reason() -> None:
    spec = INVOCATION_PROBE
    assert spec.unsupported_reason("xnnpack", "fp32") is None
    assert spec.unsupported_reason("xnnpack", "int8") is None
    assert "xnnpack only" in (spec.unsupported_reason("portable", "int8") or "")
    assert "int4" in (spec.unsupported_reason("xnnpack", "int4") or "")
    assert "tpu" in (spec.unsupported_reason("tpu", "fp32") or "")


def test_registering_a_kind_without_a_torch_module_fails_at_import_time() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoModule(OpSpec):
        op_type: ClassVar[str] = "no_module"
        cin: int

    with pytest.raises(TypeError, match="NoModule defines no torch module: implement torch_module"):
        OpRegistry().register(NoModule)


def test_key_fields_are_resolved_once_to_int_or_str() -> None:
    assert [(f.name, f.type) for f in InvertedResidual.key_fields][:2] == [("cin", int), ("cout", int)]
    assert InvertedResidual.key_fields[-1].name == "act" and InvertedResidual.key_fields[-1].type is str

    @dataclasses.dataclass(frozen=True)
    class FloatField(OpSpec):
        op_type: ClassVar[str] = "float_field"
        scale: float

        def torch_module(self) -> nn.Module:
            return nn.Identity()

    with pytest.raises(TypeError, match=r"FloatField.scale: op key fields must be int or str"):
        OpRegistry().register(FloatField)


def test_backend_and_dtype_are_enums_of_strings() -> None:
    from chamlab.operators import BACKENDS, DTYPES, Backend, Dtype

    assert BACKENDS == ("xnnpack", "portable", "cuda", "qnn") and DTYPES == ("fp32", "int8")
    assert Backend("xnnpack") is Backend.XNNPACK and f"{Dtype.FP32}" == "fp32"
