"""The WebSocket listener's connection cap and its bound on upgrades in flight, applied at accept.

Theory of operation
-------------------
``websockets`` builds a connection object for every accepted socket, parses its HTTP request and
only then asks ``process_request``; a cap checked only there costs each refused connection a
parse, a task, a response and a logged close, and leaves the number of upgrades in flight
unbounded. Under a 2,000-connection flood that work kept gravd's one event loop busy for hundreds
of milliseconds at a time, and ``/healthz``, served on the same loop, waited behind it.

A ``ConnectionGate`` decides as ``websockets`` asks for the connection object
(``serve(create_connection=...)``, called at ``accept``, before anything is read). It counts the
links (upgraded, until their handler ends) and the upgrades in flight (accepted, not yet
upgraded). When ``limit`` links are open the socket gets a ``TurnedAway`` protocol: a fixed ``503``
answer written at once, then the socket is dropped; no parsing, no task, no log line, counted in
``refused``. Otherwise it gets a ``GatedConnection``, an ordinary ``ServerConnection`` that
leaves the in-flight count when it is upgraded or closed.

Upgrades in flight are bounded by ``max_upgrading`` (the loop's work per turn grows with them:
with 1,024 of them at once a turn took over half a second). The overflow policy is *evict the
oldest silent*: a newcomer past the bound takes the place of the oldest socket in flight that has
sent nothing for ``SILENCE`` seconds (it gets the 503 and is dropped), so sockets that connect and
say nothing cannot hold the door shut for the whole handshake deadline; when no socket in flight
is that silent (a burst of real clients, whose requests are on their way), the newcomer is
refused instead, which costs nothing.
``process_request`` still checks the link count (``full``) when an upgrade completes, and an
upgrade it accepts counts as a link at once (``admit``; until its socket closes), so links never
exceed ``limit`` even when many upgrades complete in the same loop turn (before, they were
counted when their handler started, and a burst could pass the cap).

``UpgradePacer``: at most ``PER_TURN`` upgrades go on past ``process_request`` in one turn of the
event loop, the others wait for the next turns, in order. An upgrade (the 101, the link, its
HELLO) costs a few hundred microseconds; a hundred requests read in one turn made one turn of
40 ms or more, and ``/healthz`` on the same loop waited behind it.

A socket dropped with its request unread is reset, not closed; Linux still hands the client the
503 already received before the reset (checked), so the client reads why it was refused.

With TLS the listener listens on plain TCP and the gate holds a :class:`~transports.tls_door.
TlsDoor`: the decision is still made at accept, *before* the TLS handshake. A refused socket is
reset at once with nothing read or written (:class:`~transports.tls_door.Dropped`: a plain-text
503 means nothing to a TLS client), counted in ``refused``; an admitted one runs its handshake
through an :class:`~transports.tls_door.Entrance` and counts as in flight from accept, so the
handshakes in progress are bounded by ``max_upgrading`` too. Evicting a socket still in its TLS
handshake resets it (no 503 can be sent before TLS is up); it had sent no HTTP request either.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Final, cast

from websockets.asyncio.server import ServerConnection

from transports.tls_door import Dropped, Entrance, TlsDoor, TurnedAway

__all__ = ["PER_TURN", "SILENCE", "ConnectionGate", "GatedConnection", "UpgradePacer"]

SILENCE: Final = 1.0  # seconds a socket in flight may say nothing before a newcomer evicts it
_ON_TIME: Final = 0.99  # (a timer may fire a hair before its time on another clock's reading)
PER_TURN: Final = 16  # upgrades completed per turn of the event loop; the others wait a turn


class ConnectionGate:
    """Links and upgrades in flight on one listener; ``refused`` counts what it turned away."""

    def __init__(
        self,
        limit: int,
        max_upgrading: int,
        door: TlsDoor | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.limit = limit
        self.max_upgrading = max_upgrading
        self.open_timeout = open_timeout  # (websockets drops a socket not upgraded by then)
        self.timed_out = 0  # sockets dropped at that deadline, not upgraded
        self.door = door  # with TLS: the handshakes run after the decision
        self.pacer = UpgradePacer(PER_TURN)
        self.refused = 0
        self.links = 0  # upgrades accepted, until their socket closes
        self.reason = f"too many connections ({limit})\n"
        body = self.reason.encode()
        self._answer = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self._upgrading: dict[GatedConnection, None] = {}  # in accept order
        self._silent: dict[GatedConnection, None] = {}  # those not heard from yet, in accept order
        self.evicted = 0  # silent sockets in flight dropped for a newcomer

    @property
    def upgrading(self) -> int:
        """Sockets accepted and not yet upgraded (nor closed)."""
        return len(self._upgrading)

    @property
    def silent(self) -> int:
        """Sockets in flight whose client has sent nothing yet (the ones a newcomer evicts)."""
        return len(self._silent)

    @property
    def full(self) -> bool:
        """True when ``limit`` links are open."""
        return self.links >= self.limit

    def connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        """What ``websockets`` calls for each accepted socket (its ``create_connection``)."""
        if self.full or (len(self._upgrading) >= self.max_upgrading and not self._evict()):
            self.refused += 1
            refused = TurnedAway(self._answer) if self.door is None else Dropped()
            return refused  # type: ignore[return-value]  # an asyncio protocol only
        connection = GatedConnection(*args, gate=self, **kwargs)
        self._upgrading[connection] = None
        self._silent[connection] = None
        if self.door is None:
            return connection
        connection.entrance = self.door.entrance(connection, lambda: self.closed(connection))
        return connection.entrance  # type: ignore[return-value]  # hands over after the handshake

    def _evict(self) -> bool:
        """Drop the oldest socket in flight that has sent nothing for ``SILENCE`` seconds; False
        if there is none (the oldest silent one is the first in accept order: one look)."""
        silent = next(iter(self._silent), None)
        if silent is None or silent.accepted >= time.monotonic() - SILENCE:
            return False
        self.closed(silent)
        self.evicted += 1
        self.refused += 1
        silent.evict(self._answer)
        return True

    def spoke(self, connection: GatedConnection) -> None:
        """``connection``'s client sent its first bytes: it can no longer be evicted."""
        self._silent.pop(connection, None)

    def refuse(self) -> str:
        """Count a refusal made after the upgrade was parsed (``full`` by then); the reason."""
        self.refused += 1
        return self.reason

    def admit(self, connection: ServerConnection) -> None:
        """``connection``'s upgrade is accepted: it counts as a link now (until its socket
        closes), so upgrades completing at once cannot take the links past ``limit``."""
        if isinstance(connection, GatedConnection) and not connection.linked:
            self.closed(connection)
            connection.linked = True
            self.links += 1

    def lost(self, connection: GatedConnection) -> None:
        """``connection``'s socket closed: counted in ``timed_out`` if it was still in flight
        when ``open_timeout`` had passed (websockets drops it then, without a word)."""
        late = time.monotonic() - connection.accepted >= self.open_timeout * _ON_TIME
        if late and connection in self._upgrading:
            self.timed_out += 1
        self.closed(connection)

    def closed(self, connection: GatedConnection) -> None:
        """``connection``'s socket closed (upgraded or not), or it was evicted."""
        self._upgrading.pop(connection, None)
        self._silent.pop(connection, None)
        if connection.linked:
            connection.linked = False
            self.links -= 1


class GatedConnection(ServerConnection):
    """A ``ServerConnection`` that knows whether its client has spoken, can be evicted, and
    leaves its gate's in-flight count when its socket closes."""

    def __init__(self, *args: Any, gate: ConnectionGate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate
        self.spoke = False  # some bytes of the request arrived
        self.linked = False  # its upgrade was accepted: it counts among the gate's links
        self.accepted = time.monotonic()
        self._socket: asyncio.WriteTransport | None = None
        self._eviction: bytes | None = None  # evicted before connection_made: the answer
        self.entrance: Entrance | None = None  # with TLS: the socket during its handshake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # a stream transport; not always an asyncio.WriteTransport subclass (uvloop's)
        self._socket = cast(asyncio.WriteTransport, transport)
        if self._eviction is not None:
            self.evict(self._eviction)

    def data_received(self, data: bytes) -> None:
        if not self.spoke:
            self.spoke = True
            self._gate.spoke(self)
        super().data_received(data)

    def evict(self, answer: bytes) -> None:
        """Answer ``answer`` (the 503) and drop the socket; at once, or as soon as it is made."""
        if self._socket is None and self.entrance is not None:
            self.entrance.drop()  # in its TLS handshake: no 503 can be read yet
            return
        if self._socket is None:
            self._eviction = answer
            return
        self._socket.write(answer)
        self._socket.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.lost(self)
        super().connection_lost(exc)


class UpgradePacer:
    """At most ``per_turn`` upgrades go on in one turn of the event loop; the others wait, in
    order, for the next turns, so a burst of upgrades is spread over many short turns instead of
    one long one that every other socket of the loop (``/healthz``) waits behind."""

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self.waited = 0  # upgrades that waited for a later turn
        self._granted = 0  # upgrades let on since the turn began
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._turn: asyncio.Handle | None = None

    async def wait_turn(self) -> None:
        """Return at once while this turn has room, else once a later turn lets this one on."""
        if self._granted < self.per_turn and not self._waiting:
            self._granted += 1
            self._next_turn()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.waited += 1
        self._next_turn()
        await waiter

    def _next_turn(self) -> None:
        if self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self._new_turn)

    def _new_turn(self) -> None:
        self._turn = None
        self._granted = 0
        while self._waiting and self._granted < self.per_turn:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a cancelled wait (the socket closed) takes no place
                waiter.set_result(None)
                self._granted += 1
        if self._granted:
            self._next_turn()
