"""One registry class for every name -> thing table of chamlab: typed, loud on duplicates, and
whose unknown-name error lists the choices.

    SAMPLERS: Registry[Sampler] = Registry("sampler")
    SAMPLERS.add("uniform", uniform)             # or @SAMPLERS.register("uniform") on a def/class
    SAMPLERS.get("sobl")  # UnknownNameError: unknown sampler 'sobl'; known: imbalanced-sobol, ...

A second :meth:`~Registry.add` of a name is a :class:`~chamlab.core.errors.DuplicateNameError`
(registries never override silently; tests build a fresh registry instead); :meth:`~Registry.get`
of an unknown name is an :class:`~chamlab.core.errors.UnknownNameError` (an ``InputError``: exit 2)
naming the kind and listing the known names. Registries with more to check on registration (op
specs, table kinds, transports, search spaces) wrap one and add their checks.

It lives in ``core`` (which imports nothing of ours). ``agent`` imports nothing of ours either, so
the registry of runner kinds lives host-side (``host/devices/transports/base.py``: RUNNER_KINDS); the
agent knows them by name only (``RUNNER_KIND`` in agent/driver.sh).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> items of one type. ``kind`` names what is registered in messages ("sampler");
    ``hint`` is added to the unknown-name error (e.g. "see `chamlab spaces`")."""

    def __init__(self, kind: str, *, hint: str | None = None) -> None:
        self.kind = kind
        self.hint = hint
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; a name already registered is a DuplicateNameError."""
        if name in self._items:
            old = self._items[name]
            by = f" by {old.__qualname__}" if hasattr(old, "__qualname__") else ""
            raise DuplicateNameError(
                f"{self.kind} {name!r} is already registered{by}; pick another name or build a fresh registry"
            )
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add` (returns the decorated object unchanged)."""

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def get(self, name: str) -> T:
        """The item registered as ``name``; UnknownNameError (listing the known names) otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names(), hint=self.hint) from None

    def check(self, name: str) -> str:
        """``name`` if registered (UnknownNameError otherwise): validate a configured name early."""
        self.get(name)
        return name

    __getitem__ = get

    def names(self) -> list[str]:
        """The registered names, sorted (as listed in errors)."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, item) pairs in registration order (where order matters, e.g. column order)."""
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
