"""Operator specifications: typed, frozen, hashable, with a canonical key.

An :class:`OpSpec` describes one operator *instance* as it appears in a network: its kind, its
arguments and its input shape (batch 1, NCHW, fp32 unless a LUT row says otherwise). It knows its
MACs and parameter count without torch, and builds its torch module on demand.

Canonical op key
----------------
``<op_type>:<field>=<value>,<field>=<value>,...`` with the fields in declaration order, integers in
decimal and strings from ``[a-z0-9_]``. Example::

    inverted_residual:cin=64,cout=64,kernel=5,stride=1,expand=6,in_h=16,in_w=16,act=relu

The key is a pure function of the spec (no hashing, no Python ``hash()``), so it is stable across
processes, machines and Python versions. It contains no characters that need escaping in JSON or
quoting in a POSIX shell word beyond the usual, and ``OpRegistry.from_key`` parses it back. The
``digest`` (first 16 hex digits of its SHA-256) names files on targets. Changing a spec's fields or
their order changes its keys: that is a LUT schema change and must bump ``LUT_SCHEMA_VERSION``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .errors import DuplicateNameError, InputError, UnknownNameError

if TYPE_CHECKING:  # torch is only needed to build modules
    from torch import nn

_TOKEN = re.compile(r"^[a-z0-9_]+$")
ACTIVATIONS = ("relu", "none")
BACKENDS = ("xnnpack", "portable")
DTYPES = ("fp32",)


def _conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv with 'same'-style padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """Base class of every operator spec. Subclasses are frozen dataclasses with int/str fields."""

    op_type: ClassVar[str] = ""

    # -- identity ---------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """The canonical op key (see the module docstring)."""
        parts = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)]
        return f"{self.op_type}:{','.join(parts)}"

    @property
    def digest(self) -> str:
        """First 16 hex digits of SHA-256 of :attr:`key`; used for file names."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:16]

    def params_dict(self) -> dict[str, int | str]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    # -- shapes and cost --------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Input tensor shape, batch 1."""
        raise NotImplementedError

    @property
    def output_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the convolutions and linear layers (BN, ReLU, adds not counted)."""
        raise NotImplementedError

    @property
    def params(self) -> int:
        """Trainable parameters, BN affine (2 per channel) and biases included."""
        raise NotImplementedError

    def unsupported_reason(self, backend: str, dtype: str) -> str | None:
        """Why ``backend``/``dtype`` cannot run this op, or None when it can."""
        if backend not in BACKENDS:
            return f"backend {backend!r} is not one of {', '.join(BACKENDS)}"
        if dtype not in DTYPES:
            return f"dtype {dtype!r} is not supported yet (supported: {', '.join(DTYPES)})"
        return None

    def build(self) -> nn.Module:
        """The torch module (eval mode), with weights drawn from a generator seeded by the digest."""
        from . import modules

        return modules.build(self)

    # -- validation ---------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        """Every int field is a positive int (bool refused); kernel odd, stride 1 or 2, act known."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (
                not isinstance(value, int) or isinstance(value, bool) or value <= 0
            ):
                raise InputError(f"{self.op_type}: {f.name} must be a positive integer, got {value!r}")
        kernel, stride = getattr(self, "kernel", 1), getattr(self, "stride", 1)
        if kernel % 2 != 1:
            raise InputError(f"{self.op_type}: kernel must be odd, got {kernel}")
        if stride not in (1, 2):
            raise InputError(f"{self.op_type}: stride must be 1 or 2, got {stride}")
        act = getattr(self, "act", "none")
        if act not in ACTIVATIONS:
            raise InputError(f"{self.op_type}: act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")


S = TypeVar("S", bound=type[OpSpec])


class OpRegistry:
    """A loud registry of op spec classes: duplicate names are errors, unknown names list the known.

    Build a fresh one in tests; the module-level :data:`OPS` holds the shipped operators.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type[OpSpec]] = {}

    def register(self, cls: S) -> S:
        name = cls.op_type
        if not name or not _TOKEN.match(name):
            raise ValueError(f"{cls.__name__}.op_type must match [a-z0-9_]+, got {name!r}")
        if name in self._classes:
            raise DuplicateNameError(
                f"op type {name!r} is already registered by {self._classes[name].__qualname__}; "
                "pick another op_type or build a fresh OpRegistry()"
            )
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a frozen dataclass")
        self._classes[name] = cls
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._classes))

    def get(self, name: str) -> type[OpSpec]:
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownNameError("op type", name, list(self._classes)) from None

    def from_key(self, key: str) -> OpSpec:
        """Parse a canonical op key back into its spec (inverse of ``OpSpec.key``)."""
        op_type, sep, rest = key.partition(":")
        if not sep:
            raise InputError(f"malformed op key {key!r}: expected '<op_type>:<field>=<value>,...'")
        cls = self.get(op_type)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for item in rest.split(",") if rest else []:
            name, eq, raw = item.partition("=")
            if not eq or name not in fields:
                raise InputError(f"malformed op key {key!r}: unexpected field {item!r}")
            values[name] = int(raw) if fields[name].type in ("int", int) else raw
        missing = set(fields) - set(values)
        if missing:
            raise InputError(f"malformed op key {key!r}: missing {', '.join(sorted(missing))}")
        spec = cls(**values)
        if spec.key != key:
            raise InputError(f"op key {key!r} is not canonical (canonical: {spec.key!r})")
        return spec

    def field_types(self) -> dict[str, type]:
        """Union of the fields of every registered spec -> python type (int or str)."""
        out: dict[str, type] = {}
        for cls in self._classes.values():
            for f in dataclasses.fields(cls):
                typ = int if f.type in ("int", int) else str
                if out.setdefault(f.name, typ) is not typ:
                    raise TypeError(f"field {f.name!r} has two types across op specs")
        return out


OPS = OpRegistry()
register_op: Callable[[S], S] = OPS.register


class _Strided(OpSpec):
    """Shapes of an op mapping ``(cin, in_h, in_w)`` to ``cout`` channels with a kxk, stride-s window
    (padding k // 2).

    The annotations below are for type checkers only. Each dataclass subclass declares its own fields,
    because their order *is* the canonical op key (``expand`` sits between ``stride`` and ``in_h``):
    inheriting them would reorder the keys.
    """

    cin: int
    cout: int
    kernel: int
    stride: int
    in_h: int
    in_w: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.cin, self.in_h, self.in_w)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (
            1,
            self.cout,
            _conv_out(self.in_h, self.kernel, self.stride),
            _conv_out(self.in_w, self.kernel, self.stride),
        )


@register_op
@dataclasses.dataclass(frozen=True)
class ConvBNAct(_Strided):
    """kxk convolution (padding k//2, no bias) + BatchNorm + optional ReLU.

    Used for stems, head 1x1 convs and NAS-Bench-Macro's strided 1x1 'identity' (act=none).
    """

    op_type: ClassVar[str] = "conv_bn_act"
    cin: int
    cout: int
    kernel: int
    stride: int
    in_h: int
    in_w: int
    act: str = "relu"

    @property
    def macs(self) -> int:
        _, c, h, w = self.output_shape
        return c * h * w * self.cin * self.kernel * self.kernel

    @property
    def params(self) -> int:
        return self.cout * self.cin * self.kernel * self.kernel + 2 * self.cout


@register_op
@dataclasses.dataclass(frozen=True)
class InvertedResidual(_Strided):
    """MobileNetV2 inverted residual: 1x1 expand + BN + act, kxk depthwise (stride) + BN + act,
    1x1 project + BN; residual add when stride 1 and cin == cout. hidden = cin * expand.

    The expansion conv is present for every ``expand`` (also 1), as in the ChamNet model files.
    """

    op_type: ClassVar[str] = "inverted_residual"
    cin: int
    cout: int
    kernel: int
    stride: int
    expand: int
    in_h: int
    in_w: int
    act: str = "relu"

    @property
    def hidden(self) -> int:
        return self.cin * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout

    @property
    def macs(self) -> int:
        _, _, oh, ow = self.output_shape
        h = self.hidden
        expand = h * self.in_h * self.in_w * self.cin
        depthwise = h * oh * ow * self.kernel * self.kernel
        project = self.cout * oh * ow * h
        return expand + depthwise + project

    @property
    def params(self) -> int:
        h = self.hidden
        return h * self.cin + 2 * h + h * self.kernel * self.kernel + 2 * h + self.cout * h + 2 * self.cout


@register_op
@dataclasses.dataclass(frozen=True)
class PoolLinear(OpSpec):
    """Global average pool + fully connected classifier (with bias)."""

    op_type: ClassVar[str] = "pool_linear"
    cin: int
    num_classes: int
    in_h: int
    in_w: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.cin, self.in_h, self.in_w)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (1, self.num_classes)

    @property
    def macs(self) -> int:
        return self.cin * self.num_classes

    @property
    def params(self) -> int:
        return self.cin * self.num_classes + self.num_classes


#: A near-empty program (a 1x1 conv on a 1x1x1 tensor). Its latency is the fixed cost of one program
#: invocation (execute call, delegate dispatch) that every single-op microbenchmark pays once, while a
#: whole network pays it once in total. ``chamlab profile`` always measures it so that the latency
#: predictor can subtract ``(n_ops - 1) x`` that cost (see chamnet/predictors/latency.py).
INVOCATION_PROBE = ConvBNAct(1, 1, 1, 1, 1, 1, "none")
