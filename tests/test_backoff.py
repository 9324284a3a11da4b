"""Tests for gravpy.backoff: capped, jittered exponential backoff."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravpy.backoff import Backoff, BackoffPolicy
from gravpy.errors import UsageError


def test_delays_double_until_the_cap_without_jitter() -> None:
    """With no jitter the delays are initial * factor**n, capped at maximum."""
    backoff = Backoff(initial=0.1, maximum=1.0, factor=2.0, jitter=0.0)
    delays = [backoff.next_delay() for _ in range(7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert backoff.attempts == 7


def test_reset_starts_again_from_initial() -> None:
    """reset() makes the next delay the initial one again."""
    backoff = Backoff(initial=0.5, maximum=8.0, jitter=0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == pytest.approx(0.5)


def test_same_seed_gives_the_same_delays() -> None:
    """The injected random source makes the jittered sequence reproducible."""
    first = Backoff(rng=random.Random(42))
    second = Backoff(rng=random.Random(42))
    assert [first.next_delay() for _ in range(20)] == [second.next_delay() for _ in range(20)]


def test_jitter_spreads_delays_below_the_base() -> None:
    """Jittered delays vary and stay within [base * (1 - jitter), base]."""
    policy = BackoffPolicy(initial=1.0, maximum=1.0, jitter=0.5)
    rng = random.Random(7)
    delays = [policy.delay(0, rng) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert max(delays) - min(delays) > 0.3


def test_huge_attempt_numbers_return_the_cap() -> None:
    """Far past the cap the base delay is maximum, with no float overflow."""
    policy = BackoffPolicy(initial=0.1, maximum=30.0, factor=3.0)
    assert policy.base_delay(100_000) == 30.0


def test_factor_one_gives_a_constant_delay() -> None:
    """factor=1 repeats the initial delay."""
    policy = BackoffPolicy(initial=2.0, maximum=5.0, factor=1.0, jitter=0.0)
    assert [policy.base_delay(n) for n in range(4)] == [2.0, 2.0, 2.0, 2.0]


def test_policy_is_frozen_and_shared_by_new_backoffs() -> None:
    """A policy cannot be changed, and backoffs made from it follow it independently."""
    policy = BackoffPolicy(initial=0.25, maximum=1.0, jitter=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.initial = 1.0  # type: ignore[misc]
    one, two = policy.new_backoff(), policy.new_backoff()
    one.next_delay()
    assert one.next_delay() == pytest.approx(0.5)
    assert two.next_delay() == pytest.approx(0.25)
    assert one.policy is policy


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial": 0.0}, "initial"),
        ({"initial": -1.0}, "initial"),
        ({"initial": 5.0, "maximum": 1.0}, "maximum"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"maximum": float("inf")}, "maximum"),
        ({"initial": float("nan")}, "initial"),
        ({"factor": True}, "factor"),
    ],
)
def test_invalid_config_is_refused(kwargs: dict[str, float], field: str) -> None:
    """Each out-of-range or non-numeric setting raises UsageError naming the field."""
    with pytest.raises(UsageError, match=field):
        BackoffPolicy(**kwargs)


def test_negative_attempt_is_refused() -> None:
    """An attempt number below zero is a usage error."""
    with pytest.raises(UsageError, match="attempt"):
        BackoffPolicy().base_delay(-1)


@given(
    initial=st.floats(min_value=1e-3, max_value=10.0),
    spread=st.floats(min_value=1.0, max_value=1000.0),
    factor=st.floats(min_value=1.0, max_value=10.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    attempt=st.integers(min_value=0, max_value=10_000),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delays_stay_within_bounds(
    initial: float, spread: float, factor: float, jitter: float, attempt: int, seed: int
) -> None:
    """Every delay is at most maximum and at least base * (1 - jitter)."""
    policy = BackoffPolicy(initial=initial, maximum=initial * spread, factor=factor, jitter=jitter)
    base = policy.base_delay(attempt)
    delay = policy.delay(attempt, random.Random(seed))
    assert initial <= base <= policy.maximum
    assert base * (1 - jitter) <= delay <= base
