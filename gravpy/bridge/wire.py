"""``WireClient``: nats-py's client with the bridge's per-message costs cut, on both ends.

Theory of operation
-------------------
nats-py spends more per message on headers than on the whole plain publish: ``publish`` builds
the header block from a dict (a regex check, strip, translate and three ``extend`` per header)
and builds and queues each command alone; on receipt it parses the block into a dict, builds a
``Msg``, puts it on the subscription's queue and a task per subscription awaits the callback.
The bridge's traffic has one fixed shape (``NATS/1.0``, ``Grav-Meta``, rarely ``Grav-H-*``), so:

- **Out**: ``publish_batch`` formats each message's ``HPUB`` command (header block included)
  with one f-string and hands nats-py a whole batch as ONE pending command, then kicks its
  flusher as ``publish`` would. The checks ``publish`` makes are made here: closed or draining
  is counted for the whole batch; over ``max_payload`` per message, counted ``too_large``; while
  reconnecting (nats-py's bounded pending buffer) each message goes through ``publish`` itself.
  ``max_payload`` bounds the payload and the header block together (``hpub_size``): nats-server
  closes a connection that sends more, losing what was in flight on it, while nats-py's
  ``publish`` checks the payload alone; so every path here checks both.
- **In**: ``subscribe_direct`` subscriptions skip the ``Msg``, the queue and the task: the
  client's parser is a ``gravpy.bridge.reader.Reader``, which reads a chunk in one pass and
  hands each message's subject, reply, payload and header dict straight to its sink,
  synchronously. A sink must not block: the bridge's importer hands messages to the hub, which
  never waits.
- **At once**: ``publish_now`` appends one message's command to nats-py's pending buffer and
  kicks the flusher without awaiting (what ``publish`` does while connected), so the
  ``Outbox`` hands a message over from the hub's hot path when nothing is queued before it: a
  request or a reply waits for no task turn of the bridge's own. Only while nats-py holds less
  than ``NOW_BYTES`` unwritten: a stream goes through the outbox, whose high-water mark makes
  ``Pod.publish`` wait (nats-py's own buffer would take megabytes before pushing back).

All rely on nats-py internals (``_send_command``, ``_flush_pending``, ``_close``, ``_pending``,
``_pending_data_size``, ``_flush_queue``, ``_flusher_task``, the parser ``_ps`` and its call
``_process_msg(sid, subject, reply, data, headers)``), all named here and in ``reader``. ``FAST``
says whether this nats-py has them (checked once, by name and parameters); where it does not,
the same methods fall back to the public API (``publish`` with a header dict, ``subscribe``
with a callback; ``publish_now`` declines), slower but the same on the wire.
``tests/bridge/test_wire.py`` fails if the fast path is lost.

nats-py's flusher task can end before the client notices its connection dropped
(``_flusher_gone``); commands are then left pending for after the reconnect, never written
inline to the dead transport as nats-py's own flush would (and raise).

What nats-py holds in its pending buffer when it closes a connection it lost (gave up
reconnecting, or closed while reconnecting) is never written: ``_close`` counts those messages
(``unwritten``, read by the bridge as ``not_reconnected``) and drops them. nats-py's public API
has no count of them (``pending_data_size`` is bytes, of every command, not messages), so this
reads ``_pending`` too. What nats-py had written before the loss but the server never read (the
socket's buffers) no client can count: the importers count it (``gap``) where it was numbered.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, ConnectionDrainingError
from nats.errors import Error as NatsError
from nats.protocol.parser import Parser

from gravpy.bridge.reader import Reader, Sink, parse_headers
from gravpy.bridge.subjects import H_META

__all__ = [
    "FAST",
    "MAX_CONTROL_LINE",
    "Outgoing",
    "Sink",
    "WireClient",
    "hpub_size",
    "parse_headers",
    "pending_messages",
    "refusal",
]

# subject, reply subject, payload, Grav-Meta value, extra header lines ("Key: value\r\n" each)
Outgoing = tuple[str, str, bytes, str, str]
Failed = Callable[[str, int], None]  # (nats-py error name, messages)

_NO_NEWLINES: Final = str.maketrans({"\r": " ", "\n": " "})  # (``extra`` is escaped already)
_PROCESS_MSG: Final = ["self", "sid", "subject", "reply", "data", "headers"]
NOW_BYTES: Final = 64 * 1024  # what nats-py may hold unwritten for ``publish_now`` to add
MAX_CONTROL_LINE: Final = 4096  # nats-server's default max_control_line, in bytes
# subject and reply subject of one HPUB line: the rest is "HPUB", three spaces, two sizes (at
# most 20 digits each) and CRLF
_SUBJECTS_MAX: Final = MAX_CONTROL_LINE - len("HPUB    \r\n") - 2 * 20
_BLOCK: Final = len("NATS/1.0\r\nGrav-Meta: \r\n\r\n")  # a header block but its values
_PARSER_ATTRIBUTES: Final = ("buf", "state", "reset")
_ATTRIBUTES: Final = (
    "_pending",
    "_pending_data_size",
    "_flush_queue",
    "_flusher_task",
)


def _has_internals() -> bool:
    process = getattr(Client, "_process_msg", None)
    if process is None or not all(
        callable(getattr(Client, name, None))
        for name in ("_send_command", "_flush_pending", "_close")
    ):
        return False
    fresh = Client()
    if not all(hasattr(fresh, name) for name in _ATTRIBUTES):
        return False
    parser = getattr(fresh, "_ps", None)
    if type(parser) is not Parser or not all(hasattr(parser, n) for n in _PARSER_ATTRIBUTES):
        return False
    return list(inspect.signature(process).parameters) == _PROCESS_MSG


FAST: Final = _has_internals()


def refusal(out: Outgoing) -> str | None:
    """Why nats-server would refuse or misread ``out``'s ``HPUB`` command, or None: a subject
    or reply subject with whitespace or a control character (``bad_subject``: not one field of
    the command, a line break would even end it and start another), or a command line over
    ``MAX_CONTROL_LINE`` (``subject_too_long``: the server would close the connection, and
    what was in flight on it would be lost uncounted; a type of 255 characters can escape to
    3 KB, and both subjects carry it). The ``Outbox`` asks as a message comes in, before it is
    numbered (``gravpy.bridge.sequence``), unless the exporter asked once for the route it
    goes on (``Exporter._never_refused``): every message reaches ``_hpub`` so checked."""
    subject, reply = out[0], out[1]
    if not (subject.isprintable() and reply.isprintable()) or " " in subject or " " in reply:
        return "bad_subject"
    if subject.isascii() and reply.isascii():  # (the usual case)
        size = len(subject) + len(reply)
    else:
        size = len(subject.encode()) + len(reply.encode())
    if size > _SUBJECTS_MAX:
        return "subject_too_long"
    return None if subject else "bad_subject"


def hpub_size(out: Outgoing) -> int:
    """What nats-server counts against its ``max_payload`` for ``out``: its payload and its
    header block (``_hpub``) together."""
    meta, extra = out[3], out[4]
    if meta.isascii() and extra.isascii():  # (the usual case)
        return len(out[2]) + _BLOCK + len(meta) + len(extra)
    return len(out[2]) + _BLOCK + len(meta.encode()) + len(extra.encode())


def pending_messages(commands: Sequence[bytes]) -> int:
    """How many messages the NATS protocol ``commands`` (whole ones, as nats-py queues them)
    publish with headers: ``HPUB`` commands, as the bridge publishes every message it carries
    (its announcements are plain ``PUB`` commands, not counted). A command that is not what
    nats-py writes ends the count."""
    data, at, count = b"".join(commands), 0, 0
    while (end := data.find(b"\r\n", at)) >= 0:
        op, _, rest = data[at:end].partition(b" ")
        at = end + 2
        if op in (b"PUB", b"HPUB"):  # ``... <size>\r\n`` then its payload and CRLF
            size = rest.rpartition(b" ")[2]
            if not size.isdigit():
                break
            at += int(size) + 2
            count += op == b"HPUB"
    return count


def _hpub(out: Outgoing) -> tuple[bytes, bytes, bytes, bytes]:
    """The ``HPUB`` command of ``out``, in four parts (line, header block, payload, CRLF)."""
    subject, reply, data, meta, extra = out
    if "\r" in meta or "\n" in meta:  # (an id is checked for length only: as nats-py would)
        meta = meta.translate(_NO_NEWLINES)
    head = f"NATS/1.0\r\nGrav-Meta: {meta}\r\n{extra}\r\n".encode()
    hlen = len(head)
    return f"HPUB {subject} {reply} {hlen} {hlen + len(data)}\r\n".encode(), head, data, b"\r\n"


class WireClient(Client):
    """A nats-py ``Client`` with ``publish_batch`` and ``subscribe_direct``; see the module."""

    def __init__(self) -> None:
        super().__init__()
        self._sinks: dict[int, Sink] = {}
        # messages nats-py still held unwritten (its pending buffer) when it closed the
        # connection while lost: never written anywhere (``_close``); the bridge counts them
        self.unwritten = 0
        # without nats-py's internals (not ``FAST``): messages handed to it while it reconnects,
        # since it last connected, the count ``_close`` takes when it cannot read ``_pending``
        self.handed_reconnecting = 0
        if FAST:
            self._ps = Reader(self)

    async def subscribe_direct(self, subject: str, sink: Sink) -> Subscription:
        """Subscribe to ``subject``; each message goes to ``sink`` as it is read."""

        async def via_msg(m: Msg) -> None:  # the public path, where the fast one is missing
            sink(m.subject, m.reply, m.data, m.headers)

        sub: Subscription = await self.subscribe(subject, cb=via_msg)
        if FAST:
            self._sinks[sub._id] = sink
        return sub

    async def unsubscribe_direct(self, sub: Subscription) -> None:
        self._sinks.pop(sub._id, None)
        await sub.unsubscribe()

    async def publish_batch(self, batch: Sequence[Outgoing], failed: Failed) -> int:
        """Publish ``batch``; returns how many were handed to nats-py, the others are counted
        through ``failed`` under the nats-py error's name."""
        if self.is_closed or self.is_draining_pubs:
            closed = ConnectionClosedError if self.is_closed else ConnectionDrainingError
            failed(closed.__name__, len(batch))
            return 0
        if not FAST or not self.is_connected:  # (reconnecting: nats-py's buffer limit applies)
            sent = await self._publish_each(batch, failed)
            if not FAST and not self.is_connected:
                self.handed_reconnecting += sent
            return sent
        limit, size = self.max_payload, 0
        parts: list[bytes] = []
        for out in batch:
            command = _hpub(out)
            if len(command[1]) + len(out[2]) > limit:  # (the server would close the connection)
                failed("too_large", 1)
                continue
            parts += command
            size += len(out[2])
        if parts:
            self.stats["out_msgs"] += len(parts) // 4
            self.stats["out_bytes"] += size
            await self._send_command(b"".join(parts))  # (past ``pending_size``: waits)
            if self._flush_queue is not None and self._flush_queue.empty():
                await self._flush_pending()
        return len(parts) // 4

    def _flusher_gone(self) -> bool:
        """True while nats-py's flusher task has ended but the client still says connected.

        nats-py's flusher ends on a write error (a ``RuntimeError`` from a closed transport)
        without reporting it; the client stays connected until its read loop sees the
        connection drop and reconnects. Meanwhile nats-py's own ``_flush_pending`` writes
        inline to the dead transport and raises, out of ``publish`` too."""
        flusher = self._flusher_task
        return flusher is None or flusher.done()

    async def _flush_pending(self, force_flush: bool = False) -> Any:
        """nats-py's, except while its flusher is gone (``_flusher_gone``): then what is
        pending stays so, and nats-py writes it once it reconnects (if it closes instead, the
        messages in it are counted: ``_close``). Every nats-py call that flushes
        (``publish``, ``subscribe``, ``flush``...) goes through here."""
        if FAST and self.is_connected and self._flusher_gone():
            return None
        return await super()._flush_pending(force_flush)

    async def _close(self, *args: Any, **kwargs: Any) -> None:
        """nats-py's, except when it closes a connection it lost (it gave up reconnecting, or
        is closed while reconnecting): the messages still in its pending buffer, handed over
        before or after the loss, would never be written (nats-py drops them, or writes them
        to the dead transport, whose drain then raises out of ``close`` before the close
        callbacks). They are counted (``unwritten``: ``pending_messages``) and dropped here."""
        if FAST and not self.is_closed and not self.is_connected and self._pending:
            self.unwritten += pending_messages(self._pending)
            self._pending = []
            self._pending_data_size = 0
        elif not FAST and not self.is_closed and not self.is_connected:
            self.unwritten += self.handed_reconnecting  # (those taken before the loss: unseen)
        self.handed_reconnecting = 0
        await super()._close(*args, **kwargs)  # (nats-py's own arguments, passed on)

    def publish_now(self, out: Outgoing, numbered: Callable[[Outgoing], Outgoing]) -> bool:
        """Hand ``numbered(out)`` to nats-py without waiting (its flusher writes it in the next
        loop turn), as ``publish`` does while connected; False (``numbered`` not called) if
        that cannot be done now: not ``FAST``, not connected, too large, or nats-py already
        holds ``NOW_BYTES`` unwritten (the caller queues it instead, and pushes back). (The
        ``Outbox`` has refused what is too large with its headers, numbered: ``hpub_size``.)"""
        flush = self._flush_queue
        size = len(out[2])
        if not FAST or not self.is_connected or flush is None or size > self.max_payload:
            return False
        if self._flusher_gone():  # (the connection is going down: queue it)
            return False
        if self._pending_data_size + size > NOW_BYTES:  # a stream: the outbox batches it
            return False
        command = b"".join(_hpub(numbered(out)))
        self._pending.append(command)
        self._pending_data_size += len(command)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += size
        if flush.empty():  # (``_flush_pending`` without waiting for room: one is enough)
            flush.put_nowait(asyncio.get_running_loop().create_future())
        return True

    async def _publish_each(self, batch: Sequence[Outgoing], failed: Failed) -> int:
        sent, limit = 0, self.max_payload
        for out in batch:
            if hpub_size(out) > limit:  # (nats-py checks the payload alone)
                failed("too_large", 1)
                continue
            subject, reply, data, meta, extra = out
            headers = {H_META: meta}
            for line in extra.splitlines():
                key, _, value = line.partition(": ")
                headers[key] = value
            try:
                await self.publish(subject, data, reply=reply, headers=headers)
            except NatsError as exc:  # pending buffer full while reconnecting, too large, closed
                failed(type(exc).__name__, 1)
                continue
            except (OSError, RuntimeError) as exc:  # its flush met a dead transport: it may
                failed(type(exc).__name__, 1)  # be written there (lost) or be pending: counted
                continue
            sent += 1
        return sent
