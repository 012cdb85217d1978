"""A named registry: what protocols and analyses share (one entry per name, refusals that say why).

Registering the same entry twice is harmless; a different entry under a taken name is refused, so a
plugin can never silently replace a built-in. Unknown names list the known ones in the error.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pytest_layercheck.core.errors import LayercheckError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order. ``what`` names the kind in messages
    ("protocol"); ``error`` is the error class raised for unknown and conflicting names."""

    def __init__(self, what: str, error: type[LayercheckError]) -> None:
        self.what = what
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, fix: str) -> T:
        known = self._entries.get(name)
        if known is not None and known != entry:
            raise self.error(f"a different {self.what} named {name!r} is already registered", fix)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str, fix: str = "") -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries)
            raise self.error(f"unknown {self.what} {name!r}", f"use one of {known}{fix}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)
