"""Registries by name: envs, objectives, policies, rewards, aligners and backends all use one.

    ENVS = Registry("env")

    @ENVS.register("reach-around")
    class ReachAround: ...

    ENVS.get("reach-around")  # -> ReachAround; an unknown name raises UnknownNameError
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from robalign.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table whose lookups fail with the list of valid names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered to {self._entries[name]!r}")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
