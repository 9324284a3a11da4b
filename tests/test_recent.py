"""RecentMap keeps the most recent keys within its bound."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravpy.errors import UsageError
from gravpy.recent import RecentMap


def test_keeps_recent_keys_and_forgets_old_ones() -> None:
    """After many inserts the last limit//2 keys are all there and the size stays bounded."""
    m: RecentMap[int, int] = RecentMap(100)
    for i in range(1000):
        m[i] = i * 2
        assert len(m) <= 100
    assert all(m.get(i) == i * 2 for i in range(950, 1000))
    assert 0 not in m
    assert m.get(0) is None
    assert m.forgotten == 1000 - len(m)


def test_pop_removes_from_either_generation() -> None:
    """pop finds a key in the young or the old generation, and then it is gone."""
    m: RecentMap[str, int] = RecentMap(4)
    m["a"] = 1
    m["b"] = 2
    m["c"] = 3  # "a" and "b" move to the old generation
    assert m.pop("a") == 1
    assert m.pop("c") == 3
    assert m.pop("a", -1) == -1
    assert "b" in m


def test_bad_limit_is_refused() -> None:
    """A limit below 2 is a usage error."""
    with pytest.raises(UsageError):
        RecentMap(1)


@given(st.lists(st.integers(0, 50), max_size=300), st.integers(2, 40))
def test_agrees_with_a_reference_for_the_most_recent_keys(keys: list[int], limit: int) -> None:
    """Every one of the last limit//2 distinct keys set maps to its last value; size <= limit."""
    m: RecentMap[int, int] = RecentMap(limit)
    last: dict[int, int] = {}
    for n, k in enumerate(keys):
        m[k] = n
        last[k] = n
        assert len(m) <= limit
    recent = list(dict.fromkeys(reversed(keys)))[: limit // 2]
    for k in recent:
        assert m.get(k) == last[k]


@given(st.lists(st.integers(0, 50), max_size=300), st.integers(2, 40))
def test_add_sets_only_keys_it_does_not_remember(keys: list[int], limit: int) -> None:
    """``add`` is True and sets the key exactly when ``in`` said it was absent; size <= limit."""
    m: RecentMap[int, int] = RecentMap(limit)
    for n, k in enumerate(keys):
        known = k in m
        before = m.get(k)
        assert m.add(k, n) is (not known)
        assert m.get(k) == (before if known else n)
        assert len(m) <= limit
