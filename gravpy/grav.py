"""Grav: one node of the bus. In-process on its own; a mesh node once a transport is given."""

from __future__ import annotations

import uuid as uuidlib
from types import TracebackType

from gravpy.buffer import MsgBuffer
from gravpy.bus import Bus, BusStatistics
from gravpy.errors import UsageError
from gravpy.pod import Overflow, Pod

__all__ = ["Grav"]


class Grav:
    """A message bus node. ``async with Grav() as g: pod = g.connect()``.

    ``buffer_size`` is the replay buffer (messages a ``connect_with_replay`` pod first receives);
    ``inbox_limit`` and ``overflow`` bound each pod's inbox and say what a full one does;
    ``failure_limit`` is how many pending handler failures disconnect a pod (Grav's 64).
    """

    def __init__(
        self,
        *,
        buffer_size: int = 128,
        inbox_limit: int = 10_000,
        overflow: Overflow | str = Overflow.DROP_NEWEST,
        failure_limit: int = 64,
    ) -> None:
        self.node_uuid = str(uuidlib.uuid4())
        self.bus = Bus(
            buffer_size=buffer_size,
            inbox_limit=inbox_limit,
            overflow=Overflow(overflow),
            failure_limit=failure_limit,
        )
        self._started = False

    async def start(self) -> None:
        """Start the node (``async with`` calls this)."""
        if self.bus.closed:
            raise UsageError("this Grav was stopped; make a new one")
        self._started = True

    async def stop(self) -> None:
        """Disconnect every pod and end every task the node owns."""
        await self.bus.close()

    async def __aenter__(self) -> Grav:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def connect(self, *, inbox_limit: int | None = None, overflow: Overflow | None = None) -> Pod:
        """A new pod on this node."""
        return self.bus.connect(inbox_limit=inbox_limit, overflow=overflow)

    def connect_with_replay(
        self, *, inbox_limit: int | None = None, overflow: Overflow | None = None
    ) -> Pod:
        """A new pod that first receives the buffered messages when it starts receiving."""
        return self.bus.connect(replay=True, inbox_limit=inbox_limit, overflow=overflow)

    @property
    def buffer(self) -> MsgBuffer:
        """The replay buffer (read-only use)."""
        return self.bus.buffer

    def statistics(self) -> BusStatistics:
        return self.bus.statistics()
