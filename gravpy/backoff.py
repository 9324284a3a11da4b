"""Capped, jittered exponential backoff for redialling peers. Pure: no clock, no sleeping.

The n-th delay (counting from 0) before jitter is ``min(maximum, initial * factor**n)``. Jitter
then draws the delay uniformly from ``[base * (1 - jitter), base]``, so ``maximum`` is a true cap
and nodes that lost a peer at the same moment do not redial it in lock-step. ``jitter=0`` gives the
plain deterministic sequence.

::

    policy = BackoffPolicy(initial=0.1, maximum=10.0)      # frozen, validated, shareable config
    backoff = policy.new_backoff(rng=random.Random(seed))  # one per peer, mutable
    delay = backoff.next_delay()                          # the caller sleeps, then dials
    backoff.reset()                                       # after a link succeeded

``Backoff(initial=..., maximum=..., factor=..., jitter=...)`` builds the policy and the state in one
call. The random source is injected so tests are reproducible.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gravpy.errors import UsageError

__all__ = ["Backoff", "BackoffPolicy"]


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How delays grow: from ``initial`` seconds, times ``factor`` each attempt, up to ``maximum``.

    ``jitter`` (0 to 1) is the fraction of each delay that is randomised away.
    """

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for field in ("initial", "maximum", "factor", "jitter"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"backoff {field} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise UsageError(f"backoff {field} must be finite, got {value!r}")
        if self.initial <= 0:
            raise UsageError(f"backoff initial must be > 0, got {self.initial!r}")
        if self.maximum < self.initial:
            raise UsageError(
                f"backoff maximum ({self.maximum!r}) must be >= initial ({self.initial!r})"
            )
        if self.factor < 1:
            raise UsageError(f"backoff factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise UsageError(f"backoff jitter must be between 0 and 1, got {self.jitter!r}")

    def base_delay(self, attempt: int) -> float:
        """The delay before jitter for ``attempt`` (0 for the first retry)."""
        if attempt < 0:
            raise UsageError(f"attempt must be >= 0, got {attempt!r}")
        if self.factor == 1:
            return self.initial
        # Past this many attempts the cap applies; stopping here also avoids float overflow.
        steps_to_cap = math.log(self.maximum / self.initial, self.factor)
        if attempt >= steps_to_cap:
            return self.maximum
        return min(self.maximum, self.initial * self.factor**attempt)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The jittered delay for ``attempt``, drawn from ``rng``."""
        base = self.base_delay(attempt)
        if self.jitter == 0:
            return base
        return base * (1.0 - self.jitter * rng.random())

    def new_backoff(self, rng: random.Random | None = None) -> Backoff:
        """A fresh backoff state following this policy."""
        return Backoff.from_policy(self, rng=rng)


class Backoff:
    """The delays of one retry loop: call :meth:`next_delay` before each retry, :meth:`reset` after
    a success.

    ``rng`` defaults to a new, OS-seeded ``random.Random``; pass a seeded one in tests.
    """

    __slots__ = ("_attempt", "_rng", "policy")

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 10.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = BackoffPolicy(initial=initial, maximum=maximum, factor=factor, jitter=jitter)
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    @classmethod
    def from_policy(cls, policy: BackoffPolicy, *, rng: random.Random | None = None) -> Backoff:
        """A backoff following an existing (already validated) policy."""
        backoff = cls.__new__(cls)
        backoff.policy = policy
        backoff._rng = rng if rng is not None else random.Random()
        backoff._attempt = 0
        return backoff

    @property
    def attempts(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        """Return the delay in seconds to wait before the next retry, and advance."""
        delay = self.policy.delay(self._attempt, self._rng)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from ``initial`` (call after a successful attempt)."""
        self._attempt = 0

    def __repr__(self) -> str:
        return f"Backoff({self.policy!r}, attempts={self._attempt})"
