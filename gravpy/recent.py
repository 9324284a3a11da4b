"""RecentMap: a bounded map that forgets its oldest entries, in O(1) per insert.

Two generations of plain dicts: inserts go to the young one; when it holds ``limit // 2`` entries
it becomes the old one and the previous old one is dropped whole. So the map always remembers at
least the last ``limit // 2`` keys and never more than ``limit``. (Deleting the first key of a
plain dict one at a time is O(n) per delete once the dict is large: dicts leave dummy slots at the
front that every ``next(iter(d))`` has to skip.)
"""

from __future__ import annotations

from typing import Generic, TypeVar, overload

from gravpy.errors import UsageError

__all__ = ["RecentMap"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")
_MISSING = object()


class RecentMap(Generic[K, V]):
    """The last ``limit // 2`` to ``limit`` keys set, with their values."""

    __slots__ = ("_half", "_old", "_young", "forgotten")

    def __init__(self, limit: object) -> None:
        if not isinstance(limit, int) or limit < 2:
            raise UsageError(f"RecentMap limit must be an int >= 2, got {limit!r}")
        self._half = limit // 2
        self._young: dict[K, V] = {}
        self._old: dict[K, V] = {}
        self.forgotten = 0  # entries dropped with an old generation

    def __setitem__(self, key: K, value: V) -> None:
        young = self._young
        if len(young) >= self._half and key not in young:
            self.forgotten += len(self._old)
            self._old = young
            young = self._young = {}
        young[key] = value

    def add(self, key: K, value: V) -> bool:
        """Set ``key`` to ``value`` if it is not remembered yet; True if it was new."""
        young = self._young
        if key in young or key in self._old:
            return False
        if len(young) >= self._half:
            self.forgotten += len(self._old)
            self._old = young
            young = self._young = {}
        young[key] = value
        return True

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: object = None) -> object:
        value = self._young.get(key, _MISSING)
        if value is _MISSING:
            value = self._old.get(key, _MISSING)
            if value is _MISSING:
                return default
        return value

    def pop(self, key: K, default: V | None = None) -> V | None:
        value = self._young.pop(key, _MISSING)
        if value is _MISSING:
            value = self._old.pop(key, _MISSING)
            if value is _MISSING:
                return default
        return value  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        return key in self._young or key in self._old

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def items(self) -> list[tuple[K, V]]:
        """A snapshot, oldest generation first."""
        return [*self._old.items(), *self._young.items()]
