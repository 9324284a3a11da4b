"""``Reader``: nats-py's protocol parser, with messages for the bridge's sinks read in one pass.

Theory of operation
-------------------
nats-py's ``Parser.parse`` tries two regular expressions on every control line (``MSG``, then
``HMSG``), keeps the fields in a dict, copies the payload out of a ``bytearray`` and awaits
``_process_msg`` for every message. ``Reader.parse`` turns a chunk into ``bytes`` once and walks
it with ``find`` and ``split``: each complete ``MSG``/``HMSG`` whose subscription has a sink
(``WireClient.subscribe_direct``) goes to the sink synchronously, with no await per message.
The sink gets the subject, reply, payload and the header block as a dict: a block of exactly
one ``Grav-Meta`` line is read by slicing, anything else by ``parse_headers`` (a NATS status
line such as ``503`` included), as nats-py reads it.

Everything else is nats-py's, one item at a time: a message for any other subscription is
awaited through its ``_process_msg``; any other control line (``PING``, ``PONG``, ``INFO``,
``+OK``, ``-ERR``, garbage) is handed alone to nats-py's ``parse``, which raises
``ProtocolError`` on what it does not know. A malformed ``MSG``/``HMSG`` line raises
``ProtocolError``, as in nats-py. An incomplete line or message waits in ``buf`` for the next
chunk (a message whose size is known is not looked at again, nor copied, until it is whole),
so the parser is always left awaiting a control line. Around each await the chunk's rest waits
in ``buf``; if nats-py replaced ``buf`` meanwhile (``reset``), that rest belonged to the
connection it dropped and is dropped too, as nats-py's parser drops its buffer.

Relies on nats-py's ``Parser`` (``buf``, ``state``, ``parse``), its client's ``stats``,
``_error_cb`` and ``_process_msg(sid, subject, reply, data, headers)``: ``WireClient`` checks
them once (``FAST``) and installs a ``Reader`` only if they are there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from nats.errors import ProtocolError
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from gravpy.bridge.subjects import H_META

__all__ = ["Reader", "Sink", "parse_headers"]

# subject, reply subject, payload, headers (None if the message has none)
Sink = Callable[[str, str, bytes, dict[str, str] | None], None]

_META_BLOCK: Final = b"NATS/1.0\r\nGrav-Meta: "
_META_AT: Final = len(_META_BLOCK)
_STATUS_LINE: Final = b"NATS/1.0 "


class Client(Protocol):
    """What ``Reader`` uses of nats-py's client (a ``WireClient``)."""

    stats: dict[str, int]
    _sinks: dict[int, Sink]
    _error_cb: Callable[[Exception], Awaitable[None]]

    def _process_msg(  # (nats-py passes None for no headers; annotated ``bytes``)
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> Awaitable[None]: ...


def parse_headers(raw: bytes) -> dict[str, str] | None:
    """A NATS header block as nats-py reads it (``Status`` from a status line); None if empty."""
    lines = raw.split(b"\r\n")
    out: dict[str, str] = {}
    if lines[0].startswith(_STATUS_LINE):
        status = lines[0][len(_STATUS_LINE) :].strip()[:3]
        if status.isdigit():
            out["Status"] = status.decode()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        key = name.strip().decode("ascii", "replace")
        if sep and len(key.split()) == 1:  # (one word: not empty, no space inside)
            out[key] = value.strip().decode("utf-8", "replace")
    return out or None


def headers_of(raw: bytes | None) -> dict[str, str] | None:
    """The header block ``raw`` (None: the message has none), the usual one read by slicing."""
    if not raw:
        return None
    if raw.startswith(_META_BLOCK) and raw.find(b"\r\n", _META_AT) == len(raw) - 4:
        return {H_META: raw[_META_AT:-4].decode("utf-8", "replace").strip()}  # (as nats-py)
    return parse_headers(raw)


class Reader(Parser):
    """nats-py's ``Parser``, with a one-pass path for messages to sinks; see the module."""

    def __init__(self, nc: Client) -> None:
        self._wanted = 0  # bytes ``buf`` must hold before a message in it is whole
        super().__init__(nc)
        self._nc = nc

    def reset(self) -> None:
        super().reset()
        self._wanted = 0

    async def parse(self, data: bytes = b"") -> None:
        if self.state != AWAITING_CONTROL_LINE:  # (never left so here; nats-py's own state)
            await super().parse(data)
            return
        buf = self.buf
        if buf:
            buf += data
            if len(buf) < self._wanted:
                return  # a large message still coming: not copied again for every chunk
            data = bytes(buf)
        self._wanted = 0
        nc = self._nc
        sinks = nc._sinks
        read_headers, message_line = headers_of, _message_line  # (locals: read per message)
        pos, end = 0, len(data)
        taken = taken_bytes = 0  # what went to sinks, added to nats-py's stats in one step
        while pos < end:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break
            step: Awaitable[Any]
            if data.startswith(b"HMSG ", pos) or data.startswith(b"MSG ", pos):
                fields = data[pos:eol].split()
                try:
                    if len(fields) == 6 and fields[0] == b"HMSG":  # (the bridge's usual message)
                        sid, reply = int(fields[2]), fields[3]
                        header_size, size = int(fields[4]), int(fields[5])
                        if not 0 <= header_size <= size:
                            raise ValueError(fields)
                    else:
                        sid, reply, size, header_size = message_line(fields)
                except (ValueError, IndexError):
                    self._count(taken, taken_bytes)
                    raise ProtocolError("nats: malformed MSG") from None
                start = eol + 2
                stop = start + size
                if stop + 2 > end:
                    self._wanted = stop + 2 - pos
                    break  # the payload is still coming
                headers = data[start : start + header_size] if header_size else None
                payload = data[start + header_size : stop]
                pos = stop + 2
                sink = sinks.get(sid)
                if sink is None:
                    step = nc._process_msg(sid, fields[1], reply, payload, headers)  # type: ignore[arg-type]
                else:
                    taken += 1
                    taken_bytes += len(payload)
                    try:
                        sink(fields[1].decode(), reply.decode(), payload, read_headers(headers))
                        continue
                    except Exception as exc:  # a sink's bug: reported as nats-py reports a
                        step = nc._error_cb(exc)  # callback's
            else:
                line, pos = data[pos : eol + 2], eol + 2
                step = super().parse(line)
            taken, taken_bytes = self._count(taken, taken_bytes)
            if not await self._awaiting(data[pos:], step):
                return
            data, pos = bytes(self.buf), 0
            end = len(data)
        self._count(taken, taken_bytes)
        self.buf = bytearray(data[pos:])

    def _count(self, messages: int, size: int) -> tuple[int, int]:
        """Add ``messages`` of ``size`` bytes that went to sinks to nats-py's stats; (0, 0)."""
        if messages:
            stats = self._nc.stats
            stats["in_msgs"] += messages
            stats["in_bytes"] += size
        return 0, 0

    async def _awaiting(self, rest: bytes, step: Awaitable[Any]) -> bool:
        """Await ``step`` with ``rest`` of the chunk kept in ``buf``; False if nats-py reset
        the parser meanwhile (``rest`` belonged to the connection it dropped)."""
        mine = self.buf = bytearray()
        await step
        if self.buf is not mine:
            return False
        mine += rest
        return True


def _message_line(fields: list[bytes]) -> tuple[int, bytes, int, int]:
    """sid, reply, total size, header size of ``MSG <subject> <sid> [reply] <size>`` or
    ``HMSG <subject> <sid> [reply] <header size> <total size>``; raises ``ValueError``."""
    n = len(fields)
    if fields[0] == b"MSG" and n in (4, 5):
        sid, reply, size, header_size = int(fields[2]), fields[3] if n == 5 else b"", fields[-1], 0
    elif fields[0] == b"HMSG" and n in (5, 6):
        sid, reply, size = int(fields[2]), fields[3] if n == 6 else b"", fields[-1]
        header_size = int(fields[-2])
    else:
        raise ValueError(fields)
    total = int(size)
    if not 0 <= header_size <= total:
        raise ValueError(fields)
    return sid, reply, total, header_size
