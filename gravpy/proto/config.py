"""Configuration of a link: ``Limits`` (what a node accepts) and ``ProtocolConfig`` (timers).

Both are frozen and validated on construction; a bad value raises ``UsageError`` at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from gravpy.errors import UsageError

__all__ = ["DEFAULT_LIMITS", "MESSAGE_OVERHEAD", "Limits", "ProtocolConfig"]

MESSAGE_OVERHEAD: Final = 1024  # room Limits keeps for a message's envelope in a frame


@dataclass(frozen=True, slots=True)
class Limits:
    """What a node accepts from a link. Validated on construction (``UsageError``).

    The frame limit must leave room for one maximal message plus its envelope, so the default
    frame is 1 MiB + 64 KiB and the default message data 1 MiB.
    """

    max_frame_bytes: int = (1 << 20) + (64 << 10)
    max_message_bytes: int = 1 << 20
    max_batch: int = 1024
    max_interests: int = 4096
    max_peers: int = 1024

    def __post_init__(self) -> None:
        for name in (
            "max_frame_bytes",
            "max_message_bytes",
            "max_batch",
            "max_interests",
            "max_peers",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise UsageError(f"Limits.{name} must be a positive int, not {value!r}")
        if self.max_frame_bytes < self.max_message_bytes + MESSAGE_OVERHEAD:
            raise UsageError(
                f"Limits.max_frame_bytes must be at least max_message_bytes + {MESSAGE_OVERHEAD}"
            )

    @property
    def max_array_len(self) -> int:
        """The longest msgpack array a frame may contain (passed to the unpacker)."""
        return max(self.max_batch, self.max_interests, self.max_peers, 16)


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """Timers (seconds) and limits of a link. Validated on construction (``UsageError``).

    Use the same values on every node of a mesh: a node declares its remote dead after
    ``dead_after`` seconds of silence, and the remote pings only every ``ping_interval``.
    """

    limits: Limits = field(default_factory=Limits)
    handshake_timeout: float = 5.0
    ping_interval: float = 2.0
    dead_after: float = 6.0

    def __post_init__(self) -> None:
        if not isinstance(self.limits, Limits):
            raise UsageError("ProtocolConfig.limits must be a Limits")
        for name in ("handshake_timeout", "ping_interval", "dead_after"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise UsageError(f"ProtocolConfig.{name} must be a positive number, not {value!r}")
        if self.dead_after <= self.ping_interval:
            raise UsageError("ProtocolConfig.dead_after must be longer than ping_interval")
