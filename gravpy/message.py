"""Messages and their msgpack codec. Pure: no I/O, no event loop.

A message is seven fields. On the wire it is a msgpack array in this order::

    [uuid, parent_id, reply_to, type, timestamp, data, headers]

``uuid``, ``parent_id``, ``reply_to`` and ``type`` are strings (the empty string for "none"),
``timestamp`` is seconds since the epoch as a float, ``data`` is bytes and ``headers`` is a map of
str to str or nil. ``Message.to_wire``/``Message.from_wire`` convert to and from that array so that
frames can carry many messages without packing each one twice.

Ids are UUID-shaped strings (version 4 layout) made from a per-process random prefix and a counter:
unique across processes with overwhelming probability, about ten times cheaper than ``uuid.uuid4()``,
but predictable, so never use them as secrets.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Mapping
from typing import Any, Final

import msgpack

from gravpy.errors import MessageError, UsageError

__all__ = ["DEFAULT_TYPE", "MAX_TYPE_LENGTH", "Message", "new_id", "validate_type"]

DEFAULT_TYPE: Final = "grav.default"
MAX_TYPE_LENGTH: Final = 255
_MAX_ID_LENGTH: Final = 64
_COUNTER_LIMIT: Final = 1 << 48

_TYPE_RE: Final = re.compile(r"[^.\s*>]+(?:\.[^.\s*>]+)*")
_valid_types: dict[str, None] = {}
_VALID_TYPES_CACHE: Final = 4096


class _IdSource:
    """UUID-shaped ids: 72 random bits per process (reseeded after fork) and a 48-bit counter."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = ""
        self._counter: itertools.count[int] = itertools.count()
        self.reseed()

    def reseed(self) -> None:
        r = os.urandom(10).hex()
        variant = "89ab"[int(r[18], 16) & 3]
        self._prefix = f"{r[0:8]}-{r[8:12]}-4{r[12:15]}-{variant}{r[15:18]}-"
        self._counter = itertools.count()

    def next(self) -> str:
        n = next(self._counter)
        if n >= _COUNTER_LIMIT:  # pragma: no cover - 2**48 ids in one process
            self.reseed()
            n = next(self._counter)
        return f"{self._prefix}{n:012x}"


_ids = _IdSource()
os.register_at_fork(after_in_child=_ids.reseed)


def new_id() -> str:
    """Return a new message id (UUID-shaped, unique, cheap)."""
    return _ids.next()


def validate_type(msg_type: str) -> str:
    """Return ``msg_type`` if it is a valid message type, else raise ``UsageError``.

    A type is one or more ``.``-separated tokens; a token is non-empty and holds no whitespace, ``*``
    or ``>`` (those two are pattern wildcards, see ``gravpy.filter``); it must encode as UTF-8.
    """
    if not isinstance(msg_type, str):  # first: an unhashable value would break the cache lookup
        raise UsageError(f"invalid message type {msg_type!r}: a type is a str")
    if msg_type in _valid_types:
        return msg_type
    if (
        len(msg_type) > MAX_TYPE_LENGTH
        or _TYPE_RE.fullmatch(msg_type) is None
        or not _encodable(msg_type)
    ):
        raise UsageError(
            f"invalid message type {msg_type!r}: use dot-separated tokens, no wildcards"
        )
    if len(_valid_types) >= _VALID_TYPES_CACHE:
        _valid_types.clear()
    _valid_types[msg_type] = None
    return msg_type


def _encode_data(data: object) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        try:
            return data.encode()
        except UnicodeEncodeError as exc:
            raise UsageError("message data str is not encodable as UTF-8") from exc
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    try:
        packed: bytes = msgpack.packb(data, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"message data of type {type(data).__name__} is not msgpack-able") from exc
    return packed


class Message:
    """One message. Build it with ``Message.new``; treat it as immutable once sent."""

    __slots__ = ("data", "headers", "parent_id", "reply_to", "timestamp", "type", "uuid")

    def __init__(
        self,
        uuid: str,
        parent_id: str,
        reply_to: str,
        type: str,
        timestamp: float,
        data: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.uuid = uuid
        self.parent_id = parent_id
        self.reply_to = reply_to
        self.type = type
        self.timestamp = timestamp
        self.data = data
        self.headers = headers

    @classmethod
    def new(
        cls,
        type: str = DEFAULT_TYPE,
        data: object = b"",
        *,
        parent_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Make a message. ``data`` may be bytes, str (UTF-8) or any msgpack-able value.

        Raises ``UsageError`` for anything that could not travel: an invalid type, data that does
        not pack, a ``parent_id`` over 64 characters, headers not mapping str to str, or strings
        that are not valid Unicode (lone surrogates).
        """
        if parent_id:
            _check_id(parent_id)
        return cls(
            _ids.next(),
            parent_id,
            "",
            validate_type(type),
            time.time(),
            _encode_data(data),
            _check_headers(headers) if headers else None,
        )

    @classmethod
    def new_reply(cls, to: Message, type: str = DEFAULT_TYPE, data: object = b"") -> Message:
        """Make a message that answers ``to``: its ``reply_to`` and ``parent_id`` are ``to.uuid``."""
        msg = cls.new(type, data, parent_id=to.uuid)
        msg.reply_to = to.uuid
        return msg

    def text(self) -> str:
        """The data decoded as UTF-8; raises ``MessageError`` if it is not."""
        try:
            return self.data.decode()
        except UnicodeDecodeError as exc:
            raise MessageError(f"message {self.uuid} data is not UTF-8 text") from exc

    def unmarshal_data(self) -> Any:
        """The data unpacked as msgpack (what ``Message.new`` packed from a non-bytes value)."""
        try:
            return msgpack.unpackb(self.data, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise MessageError(f"message {self.uuid} data is not msgpack") from exc

    def to_wire(self) -> list[Any]:
        """The msgpack-able array this message travels as (see the module docstring)."""
        return [
            self.uuid,
            self.parent_id,
            self.reply_to,
            self.type,
            self.timestamp,
            self.data,
            self.headers,
        ]

    @classmethod
    def from_wire(cls, obj: object) -> Message:
        """Build a message from its wire array, checking every field; raises ``MessageError``."""
        if type(obj) is not list or len(obj) != 7:
            raise MessageError("a message is an array of 7 fields")
        uuid, parent_id, reply_to, msg_type, timestamp, data, headers = obj
        if type(uuid) is not str or not uuid or len(uuid) > _MAX_ID_LENGTH:
            raise MessageError("message uuid must be a non-empty string of at most 64 characters")
        if type(parent_id) is not str or len(parent_id) > _MAX_ID_LENGTH:
            raise MessageError("message parent_id must be a string of at most 64 characters")
        if type(reply_to) is not str or len(reply_to) > _MAX_ID_LENGTH:
            raise MessageError("message reply_to must be a string of at most 64 characters")
        if type(msg_type) is not str or msg_type not in _valid_types:
            try:
                validate_type(msg_type)
            except UsageError as exc:
                raise MessageError(str(exc)) from None
        if type(timestamp) is not float and type(timestamp) is not int:
            raise MessageError("message timestamp must be a number")
        if type(data) is not bytes:
            raise MessageError("message data must be bytes")
        if headers is not None:
            try:
                headers = _check_headers(headers)
            except UsageError as exc:
                raise MessageError(str(exc)) from None
        return cls(uuid, parent_id, reply_to, msg_type, float(timestamp), data, headers)

    def marshal(self) -> bytes:
        """This message as msgpack bytes."""
        packed: bytes = msgpack.packb(self.to_wire(), use_bin_type=True)
        return packed

    @classmethod
    def unmarshal(cls, raw: bytes) -> Message:
        """Decode ``marshal`` output; raises ``MessageError`` on anything else."""
        try:
            obj = msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=True)
        except (
            ValueError,
            TypeError,
            msgpack.ExtraData,
            msgpack.FormatError,
            msgpack.StackError,
        ) as exc:
            raise MessageError("bytes are not a msgpack message") from exc
        return cls.from_wire(obj)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.to_wire() == other.to_wire()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = f", reply_to={self.reply_to!r}" if self.reply_to else ""
        return f"Message(type={self.type!r}, uuid={self.uuid!r}{extra}, data={self.data[:32]!r})"


def _check_headers(headers: object) -> dict[str, str]:
    if not isinstance(headers, Mapping) or not all(
        type(k) is str and type(v) is str and _encodable(k) and _encodable(v)
        for k, v in headers.items()
    ):
        raise UsageError("message headers must map str to str (valid Unicode)")
    return dict(headers)


def _check_id(value: object) -> None:
    if type(value) is not str or len(value) > _MAX_ID_LENGTH or not _encodable(value):
        raise UsageError(f"a message id is a str of at most 64 characters, got {value!r}")


def _encodable(text: str) -> bool:
    """True if ``text`` encodes as UTF-8 (no lone surrogates), which msgpack needs."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
