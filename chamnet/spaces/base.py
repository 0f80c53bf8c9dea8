"""The search-space contract every part of the engine works against.

A space is a typed object with discrete *dimensions*; an architecture (``Arch``) is a tuple with one
value per dimension, in dimension order. The base class derives everything generic from that:

* ``encode(arch) -> (d,) float array in [0, 1]`` (ordinal: value index / (choices - 1)) and
  ``decode(vec) -> Arch`` (nearest choice), so GP predictors and samplers see a unit cube;
* ``sample(rng, n)`` draws uniformly over the choices with the caller's ``numpy.random.Generator``;
* ``macs(arch)`` / ``params(arch)`` sum the op specs' counts, no torch needed;
* ``build(arch)`` is the torch network made of exactly the modules of ``ops(arch)``, so a LUT built
  from those ops describes the network that is deployed, and archs with the same ops are the same
  network (``equivalence_key``).

A subclass supplies ``dimensions``, ``ops(arch)``, ``parse(text)`` / ``format(arch)`` and its named
``references``.

Space parameters (fitting a space to a task): a space may take parameters, written after its name as
``NAME@KEY=VALUE,KEY=VALUE`` (e.g. ``chamnet-mbv2@res=32-96,classes=10``). A subclass lists them in
``parameters`` (key -> help) and builds the variant in ``with_params``; ``fit(side, classes)`` gives the
variant fitted to a dataset of ``side``-pixel images and ``classes`` classes. A variant's ``name`` is
its canonical spec (parameters in declaration order, those at their default left out), so everything
keyed by the space name (LUT provenance and calibrations, the training cache, run folders, manifests)
keeps variants apart, and :meth:`SpaceRegistry.get` rebuilds the variant from that name.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from chamlab.core.errors import ArchError, InputError
from chamlab.core.registry import Registry
from chamlab.operators import OpSpec

if TYPE_CHECKING:
    from torch import nn

Arch = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searchable choice: a name and its ordered candidate values.

    ``categorical``: the values have no order (strings, booleans of a table space); encoders one-hot
    them instead of placing them on an ordinal axis. Network spaces' dimensions are ordinal integers.
    """

    name: str
    values: tuple[Any, ...]
    categorical: bool = False

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"dimension {self.name!r} has no values")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"dimension {self.name!r} repeats a value")

    @classmethod
    def grid(cls, name: str, start: int, stop: int, step: int) -> Dimension:
        """Values ``start, start + step, ..., stop`` (``stop`` included)."""
        return cls(name, tuple(range(start, stop + 1, step)))

    @functools.cached_property
    def _positions(self) -> dict[Any, int]:
        return {v: i for i, v in enumerate(self.values)}

    def index(self, value: int) -> int:
        """The position of ``value`` among the choices (a dict look-up: searches validate millions)."""
        try:
            return self._positions[value]
        except (KeyError, TypeError):
            raise ArchError(
                f"{self.name}={value} is not a choice of this space ({_describe_values(self.values)})"
            ) from None


def _describe_values(values: tuple[Any, ...]) -> str:
    if len(values) > 6 and all(isinstance(v, int) for v in values):
        steps = {b - a for a, b in itertools.pairwise(values)}
        if len(steps) == 1:
            return f"{values[0]}..{values[-1]} step {steps.pop()}"
    return "choices: " + ", ".join(map(str, values))


PARAM_SEP = "@"


class SpaceParamError(InputError):
    """A space parameter (``NAME@KEY=VALUE``) or a fit request that the space cannot take."""


class SearchSpace(abc.ABC):
    """Base class of search spaces (see the module docstring for the contract)."""

    name: str = ""
    description: str = ""
    #: the parameters ``NAME@KEY=VALUE,...`` may set (key -> help), in canonical order; none by default
    parameters: ClassVar[Mapping[str, str]] = {}

    @property
    def base_name(self) -> str:
        """The registered name, without parameters."""
        return self.name.split(PARAM_SEP, 1)[0]

    def space_params(self) -> dict[str, str]:
        """This variant's parameters that differ from the defaults (canonical text values)."""
        return {}

    def with_params(self, params: Mapping[str, str]) -> SearchSpace:
        """The variant with ``params`` (text values, as written after ``@``); raises
        :class:`SpaceParamError` naming the key or value it cannot take."""
        if params:
            raise SpaceParamError(f"search space {self.base_name} takes no parameters (got {_join(params)})")
        return self

    def fit(self, side: int, classes: int) -> SearchSpace:
        """The variant fitted to a dataset of ``side``-pixel images (the shorter side) and ``classes``
        classes; raises :class:`SpaceParamError` when the space cannot follow a dataset."""
        raise SpaceParamError(
            f"search space {self.base_name} cannot be fitted to a dataset (it has no parameters)"
        )

    def fit_summary(self) -> dict[str, Any]:
        """What a fit chose, as data (e.g. ``{"resolution": [32, 48, 64], "classes": 10}``): written into
        run results and manifests beside the space name."""
        return {}

    def _named(self, params: Mapping[str, str]) -> str:
        shown = {k: params[k] for k in self.parameters if k in params}
        return self.base_name + (PARAM_SEP + _join(shown) if shown else "")

    @property
    @abc.abstractmethod
    def dimensions(self) -> tuple[Dimension, ...]: ...

    @abc.abstractmethod
    def ops(self, arch: Arch) -> list[OpSpec]:
        """The operators of ``arch`` in execution order (repeats included)."""

    @abc.abstractmethod
    def parse(self, text: str) -> Arch:
        """Parse the space's string form (or a reference name) into an arch; raises ArchError."""

    @abc.abstractmethod
    def format(self, arch: Arch) -> str:
        """The canonical string form of ``arch`` (``parse(format(a)) == a``)."""

    @property
    def references(self) -> Mapping[str, Arch]:
        """Named reference architectures (e.g. published models)."""
        return {}

    # -- generic ----------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of architectures (a Python int: it can be astronomically large)."""
        n = 1
        for d in self.dimensions:
            n *= len(d.values)
        return n

    def validate(self, arch: Sequence[int]) -> Arch:
        dims = self.dimensions
        if len(arch) != len(dims):
            raise ArchError(f"{self.name}: an arch has {len(dims)} values, got {len(arch)}")
        for d, v in zip(dims, arch, strict=True):
            d.index(int(v))
        return tuple(int(v) for v in arch)

    def resolve(self, text: str) -> Arch:
        """A reference name or the space's string form."""
        name = text.strip().lower()
        if name in self.references:
            return self.references[name]
        return self.parse(text)

    def encode(self, arch: Arch) -> np.ndarray:
        """``(d,)`` float64 vector in [0, 1]: each value's index over (choices - 1)."""
        out = np.zeros(len(self.dimensions))
        for i, (d, v) in enumerate(zip(self.dimensions, self.validate(arch), strict=True)):
            out[i] = d.index(v) / (len(d.values) - 1) if len(d.values) > 1 else 0.0
        return out

    def decode(self, vector: Sequence[float] | np.ndarray) -> Arch:
        """Nearest arch to a ``(d,)`` vector in [0, 1] (values outside are clipped)."""
        vec = np.clip(np.asarray(vector, dtype=float), 0.0, 1.0)
        if vec.shape != (len(self.dimensions),):
            raise ArchError(
                f"{self.name}: expected a vector of shape ({len(self.dimensions)},), got {vec.shape}"
            )
        return tuple(
            d.values[int(np.rint(x * (len(d.values) - 1)))] for d, x in zip(self.dimensions, vec, strict=True)
        )

    def sample(self, rng: np.random.Generator, n: int) -> list[Arch]:
        """``n`` archs drawn uniformly (with replacement) over every dimension's choices."""
        cols = [rng.integers(0, len(d.values), size=n) for d in self.dimensions]
        return [
            tuple(d.values[int(c[i])] for d, c in zip(self.dimensions, cols, strict=True)) for i in range(n)
        ]

    def enumerate(self) -> Iterator[Arch]:
        """Every arch, in lexicographic order of choice indices (only sensible for small spaces)."""
        import itertools

        yield from itertools.product(*(d.values for d in self.dimensions))

    def input_shape(self, arch: Arch) -> tuple[int, ...]:
        return self.ops(arch)[0].input_shape

    def equivalence_key(self, arch: Arch) -> tuple[OpSpec, ...]:
        """What ``arch`` builds: its op list. ``build`` is exactly these modules, so archs with equal
        keys are one network under several names (macro-cifar10's identity layers inside a stage, for
        instance: ``11111201`` and ``11111210``); the search engine's ``merge_equivalent`` asks each
        network once. A space with a cheaper exact test may override it."""
        return tuple(self.ops(arch))

    def macs(self, arch: Arch) -> int:
        return sum(op.macs for op in self.ops(arch))

    def params(self, arch: Arch) -> int:
        return sum(op.params for op in self.ops(arch))

    def build(self, arch: Arch) -> nn.Module:
        from chamlab.operators.network import Network

        return Network(self.ops(arch)).eval()


class SpaceRegistry:
    """A loud registry of search spaces by name (a fresh one can be built for tests); each space is
    built once, on its first :meth:`get`."""

    def __init__(self) -> None:
        self._factories: Registry[Callable[[], SearchSpace]] = Registry(
            "search space", hint="see `chamlab spaces`"
        )
        self._instances: dict[str, SearchSpace] = {}

    def register(self, name: str) -> Callable[[type[SearchSpace]], type[SearchSpace]]:
        def deco(cls: type[SearchSpace]) -> type[SearchSpace]:
            self._factories.add(name, cls)
            cls.name = name
            return cls

        return deco

    def names(self) -> list[str]:
        return self._factories.names()

    def get(self, name: str) -> SearchSpace:
        """The space ``name`` names: a registered name, or ``NAME@KEY=VALUE,...`` (a variant: see the
        module docstring). Unknown names and bad parameters raise (exit 2 on the command line)."""
        if name in self._instances:
            return self._instances[name]
        base, sep, rest = name.partition(PARAM_SEP)
        factory = self._factories.get(base)
        if base not in self._instances:
            self._instances[base] = factory()
        space = self._instances[base]
        if sep:
            space = space.with_params(parse_params(name, rest))
            self._instances.setdefault(space.name, space)
            space = self._instances[space.name]
        self._instances[name] = space
        return space


def parse_params(spec: str, text: str) -> dict[str, str]:
    """``"res=32-96,classes=10"`` -> ``{"res": "32-96", "classes": "10"}`` (``spec``: the whole space
    name, for the error)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise SpaceParamError(
                f"--space {spec}: {part.strip()!r} is not KEY=VALUE",
                hint="write parameters as NAME@KEY=VALUE,KEY=VALUE (see `chamlab spaces`)",
            )
        if key in out:
            raise SpaceParamError(f"--space {spec}: parameter {key!r} is given twice")
        out[key] = value
    return out


def int_param(space: str, key: str, value: str, lo: int, hi: int) -> int:
    """``value`` as an integer in ``lo..hi`` (else :class:`SpaceParamError` naming space, key and value)."""
    try:
        n = int(value)
    except ValueError:
        n = None
    if n is None or not lo <= n <= hi:
        raise SpaceParamError(f"--space {space}: {key}={value} must be an integer from {lo} to {hi}")
    return n


def grid_param(space: str, key: str, value: str, lo: int, hi: int, step: int) -> tuple[int, ...]:
    """``"N"`` (one value) or ``"LO-HI"`` (``LO, LO + step, ..., HI``), every value in ``lo..hi``."""
    first, dash, last = value.partition("-")
    a = int_param(space, key, first, lo, hi)
    b = int_param(space, key, last, lo, hi) if dash else a
    if b < a or (b - a) % step:
        raise SpaceParamError(
            f"--space {space}: {key}={value}: write LO-HI with LO <= HI and HI - LO a multiple of {step}, "
            "or one value"
        )
    return tuple(range(a, b + 1, step))


def format_grid(values: Sequence[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _join(params: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


SPACES = SpaceRegistry()
