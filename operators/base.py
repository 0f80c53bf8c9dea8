"""The operator contract: :class:`OpSpec`, its canonical key, the loud :class:`OpRegistry`, and the
backend and dtype enums.

An :class:`OpSpec` describes one operator *instance* as it appears in a network: its kind, its
arguments and its input shape (batch 1, NCHW). It knows its MACs and parameter count without torch,
and builds its torch module on demand. Each kind lives in its own module of this package, its spec
and its torch module side by side (``conv_bn_act.py``, ``inverted_residual.py``, ``pool_linear.py``).

Canonical op key
----------------
``<op_type>:<field>=<value>,<field>=<value>,...`` with the key fields in declaration order, integers
in decimal and strings from ``[a-z0-9_]``. Example::

    inverted_residual:cin=64,cout=64,kernel=5,stride=1,expand=6,in_h=16,in_w=16,act=relu

The key is a pure function of the spec (no hashing, no Python ``hash()``), so it is stable across
processes, machines and Python versions; ``OpRegistry.from_key`` parses it back. The ``digest``
(first 16 hex digits of its SHA-256) names files on targets. Changing a spec's fields or their order
changes its keys: that is a LUT schema change.

Registering a kind (``@register_op``) resolves its key fields and their types once (``int`` or
``str``; anything else is an error), and refuses a spec that defines no torch module.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import re
import typing
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from chamlab.core.errors import InputError
from chamlab.core.registry import Registry

if TYPE_CHECKING:  # torch is only needed to build modules
    from torch import nn

_TOKEN = re.compile(r"^[a-z0-9_]+$")
ACTIVATIONS = ("relu", "none")


class Backend(enum.StrEnum):
    """Where an op runs. ``xnnpack``: ExecuTorch with the XNNPACK delegate (portable kernels as the
    fallback for what it rejects); ``portable``: ExecuTorch's portable kernels only; ``cuda``: the
    op's torch module on an NVIDIA GPU (a ``torch.export`` program timed by ``agent/torch_runner.py``);
    ``qnn``: ExecuTorch's Qualcomm delegate (Hexagon DSP), which needs the Qualcomm SDK to export."""

    XNNPACK = "xnnpack"
    PORTABLE = "portable"
    CUDA = "cuda"
    QNN = "qnn"


class Dtype(enum.StrEnum):
    """Element type of an op's weights and activations. ``int8``: 8-bit weights (symmetric, per
    channel) and activations (asymmetric, per tensor), quantized with PT2E by a quantization recipe
    (:mod:`chamlab.operators.quant`) and lowered to the XNNPACK delegate; xnnpack backend only."""

    FP32 = "fp32"
    INT8 = "int8"


#: backends that can run each non-fp32 dtype
DTYPE_BACKENDS: dict[str, tuple[str, ...]] = {"int8": ("xnnpack",)}


BACKENDS: tuple[str, ...] = tuple(b.value for b in Backend)
DTYPES: tuple[str, ...] = tuple(d.value for d in Dtype)


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv with 'same'-style padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class KeyField:
    name: str
    type: type  # int or str


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """Base class of every operator spec. Subclasses are frozen dataclasses with int/str fields."""

    op_type: ClassVar[str] = ""
    #: False for a kind whose torch module is already a quantized program (the quantization-edge
    #: probe): the int8 export then lowers it as it is instead of running the recipe's quantizer
    quantize_with_recipe: ClassVar[bool] = True
    #: the key fields with their resolved types, set once by :meth:`OpRegistry.register`
    key_fields: ClassVar[tuple[KeyField, ...]] = ()

    # -- identity ---------------------------------------------------------------------------------
    @functools.cached_property
    def key(self) -> str:
        """The canonical op key (see the module docstring); computed once per instance (a search asks
        for the keys of the same ops millions of times)."""
        parts = [f"{f.name}={getattr(self, f.name)}" for f in self._fields()]
        return f"{self.op_type}:{','.join(parts)}"

    @property
    def digest(self) -> str:
        """First 16 hex digits of SHA-256 of :attr:`key`; used for file names."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:16]

    def params_dict(self) -> dict[str, int | str]:
        return {f.name: getattr(self, f.name) for f in self._fields()}

    @classmethod
    def _fields(cls) -> tuple[KeyField, ...]:
        if not cls.key_fields:  # an unregistered subclass (tests): resolve now, without caching
            return resolve_key_fields(cls)
        return cls.key_fields

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

    def mac_terms(self) -> tuple[int, ...]:
        """:attr:`macs` split by the kernels that execute them, for ops made of several (their sum is
        :attr:`macs`). The op-level latency model fits one cost per MAC for each term: a depthwise
        MAC costs a CPU several times a pointwise one. Default: one term, all of :attr:`macs`."""
        return (self.macs,)

    def unsupported_reason(self, backend: str, dtype: str) -> str | None:
        """Why ``backend``/``dtype`` cannot run this op, or None when it can."""
        if backend not in BACKENDS:
            return f"backend {backend!r} is not one of {', '.join(BACKENDS)}"
        if dtype not in DTYPES:
            return f"dtype {dtype!r} is not supported (supported: {', '.join(DTYPES)})"
        if dtype in DTYPE_BACKENDS and backend not in DTYPE_BACKENDS[dtype]:
            return f"dtype {dtype} runs on backend {', '.join(DTYPE_BACKENDS[dtype])} only, not {backend}"
        return None

    # -- torch --------------------------------------------------------------------------------------
    def torch_module(self) -> nn.Module:
        """The op's torch module with default initialisation. Every registered kind overrides it
        (importing torch inside, so that specs stay importable without torch). The eval-mode module
        with the op's deterministic weights is :func:`chamlab.operators.network.build`."""
        raise NotImplementedError

    # -- validation ---------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        """Every int field is a positive int (bool refused); kernel odd, stride 1 or 2, act known."""
        for f in self._fields():
            value = getattr(self, f.name)
            if f.type is int and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise InputError(f"{self.op_type}: {f.name} must be a positive integer, got {value!r}")
            if f.type is str and not (isinstance(value, str) and _TOKEN.match(value)):
                raise InputError(f"{self.op_type}: {f.name} must be a token of [a-z0-9_], got {value!r}")
        kernel, stride = getattr(self, "kernel", 1), getattr(self, "stride", 1)
        if kernel % 2 != 1:
            raise InputError(f"{self.op_type}: kernel must be odd, got {kernel}")
        if stride not in (1, 2):
            raise InputError(f"{self.op_type}: stride must be 1 or 2, got {stride}")
        act = getattr(self, "act", "none")
        if act not in ACTIVATIONS:
            raise InputError(f"{self.op_type}: act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")


def resolve_key_fields(cls: type[OpSpec]) -> tuple[KeyField, ...]:
    """The dataclass fields of ``cls`` with their annotations resolved to ``int`` or ``str``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        typ = hints.get(f.name)
        if typ not in (int, str):
            raise TypeError(f"{cls.__name__}.{f.name}: op key fields must be int or str, got {typ!r}")
        out.append(KeyField(f.name, typ))
    return tuple(out)


S = TypeVar("S", bound=type[OpSpec])


class OpRegistry:
    """A loud registry of op spec classes: duplicate names are errors, unknown names list the known.

    Build a fresh one in tests; :data:`OPS` holds the shipped operators.
    """

    def __init__(self) -> None:
        self._classes: Registry[type[OpSpec]] = Registry("op type")

    def register(self, cls: S) -> S:
        name = cls.op_type
        if not name or not _TOKEN.match(name):
            raise ValueError(f"{cls.__name__}.op_type must match [a-z0-9_]+, got {name!r}")
        if name in self._classes:
            self._classes.add(name, cls)  # DuplicateNameError naming the class registered first
        fields = resolve_key_fields(cls)
        if cls.torch_module is OpSpec.torch_module:
            raise TypeError(
                f"{cls.__name__} defines no torch module: implement torch_module() beside the spec"
            )
        cls.key_fields = fields
        self._classes.add(name, cls)
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def get(self, name: str) -> type[OpSpec]:
        return self._classes.get(name)

    def from_key(self, key: str) -> OpSpec:
        """Parse a canonical op key back into its spec (inverse of ``OpSpec.key``)."""
        op_type, sep, rest = key.partition(":")
        if not sep:
            raise InputError(f"malformed op key {key!r}: expected '<op_type>:<field>=<value>,...'")
        cls = self.get(op_type)
        fields = {f.name: f.type for f in cls.key_fields}
        values: dict[str, Any] = {}
        for item in rest.split(",") if rest else []:
            name, eq, raw = item.partition("=")
            if not eq or name not in fields:
                raise InputError(f"malformed op key {key!r}: unexpected field {item!r}")
            try:
                values[name] = fields[name](raw)
            except ValueError:
                raise InputError(f"malformed op key {key!r}: {name}={raw!r} is not an integer") from None
        missing = set(fields) - set(values)
        if missing:
            raise InputError(f"malformed op key {key!r}: missing {', '.join(sorted(missing))}")
        spec = cls(**values)
        if spec.key != key:
            raise InputError(f"op key {key!r} is not canonical (canonical: {spec.key!r})")
        return spec

    def field_types(self) -> dict[str, type]:
        """Union of the key fields of every registered spec -> python type (int or str)."""
        out: dict[str, type] = {}
        for _, cls in self._classes.items():
            for f in cls.key_fields:
                if out.setdefault(f.name, f.type) is not f.type:
                    raise TypeError(f"field {f.name!r} has two types across op specs")
        return out


OPS = OpRegistry()
register_op: Callable[[S], S] = OPS.register


class StridedOp(OpSpec):
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
            conv_out(self.in_h, self.kernel, self.stride),
            conv_out(self.in_w, self.kernel, self.stride),
        )


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int, act: str) -> list[nn.Module]:
    """conv (padding k//2, no bias) + BatchNorm + ReLU or identity: the building brick of the ops."""
    from torch import nn

    conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU() if act == "relu" else nn.Identity()]
