"""Messages and their msgpack codec. Pure: no I/O, no event loop.

A message is seven fields. On the wire it is a msgpack array in this order::

    [uuid, parent_id, reply_to, type, timestamp, data, headers]

A six-element array (no ``headers``) is read as headers nil; this module always writes seven.

``uuid``, ``parent_id``, ``reply_to`` and ``type`` are strings (the empty string for "none"),
``timestamp`` is seconds since the epoch as a float, ``data`` is bytes and ``headers`` is a map of
str to str or nil. ``Message`` is a ``msgspec.Struct`` laid out as that array
(``array_like=True``), so msgspec packs it with no intermediate list; it is not tracked by the
garbage collector (``gc=False``), which is safe because its fields never point back at a message.

Decoding has two paths that agree. The fast one is a typed msgspec decoder straight into
``Message`` (the bounds of the fields are in its annotations), that checks shapes, field types and
lengths in C, after which only the type grammar is checked in Python, against a cache. Whatever it refuses goes to the careful path, ``Message.from_wire`` on
generically unpacked msgpack, which decides and says what is wrong. The fast path only ever
accepts what the careful one accepts, so both give the same messages and the same errors.

Ids are 32 lowercase hex digits: a per-process 128-bit counter printed in hex. It starts at a
random value (the top bit set, so the hex has 32 digits; 79 bits from ``os.urandom``, drawn at
import and again in a forked child; 48 zero bits) and goes up by one per id. Ids are unique across
processes with overwhelming probability and sort in creation order within a process. They are not
UUIDs and not random: cheap (one ``next``, one ``hex``) but predictable, so never use them as
secrets. The first ``PROCESS_DIGITS`` digits (the random start's 80 bits) are the same for every
id a process makes: the mesh's routers use them to send a reply back to its asker's process after
they forgot the request (``gravpy.mesh.routing``).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, TypeAlias

import msgpack
import msgspec

from gravpy.errors import MessageError, UsageError

__all__ = [
    "DEFAULT_TYPE",
    "ID_DIGITS",
    "MAX_HEADERS",
    "MAX_ID_LENGTH",
    "MAX_TYPE_LENGTH",
    "PROCESS_DIGITS",
    "VALIDATED_TYPES",
    "Message",
    "check_message",
    "id_source",
    "is_valid_type",
    "new_id",
    "process_of",
    "this_process",
    "validate_type",
]

DEFAULT_TYPE: Final = "grav.default"
MAX_TYPE_LENGTH: Final = 255
MAX_ID_LENGTH: Final = 64
PROCESS_DIGITS: Final = 20  # the hex digits of an id (``new_id``) that name the process making it
MAX_HEADERS: Final = 256  # headers per message a frame may carry
ID_DIGITS: Final = 32  # the length of an id ``new_id`` makes

_TYPE_RE: Final = re.compile(r"[^.\s*>]+(?:\.[^.\s*>]+)*")
_valid_types: dict[str, None] = {}
VALIDATED_TYPES: Final = _valid_types
"""Types validated so far (a bounded cache, emptied now and then): a type in it is valid."""
_VALID_TYPES_CACHE: Final = 4096


def _id_counter() -> itertools.count[int]:
    return itertools.count((int.from_bytes(os.urandom(10)) | 1 << 79) << 48)


_ids = _id_counter()


def _reseed_ids() -> None:
    global _ids
    _ids = _id_counter()


os.register_at_fork(after_in_child=_reseed_ids)


def new_id() -> str:
    """Return a new message id: 32 hex digits, unique, cheap, predictable (see module doc)."""
    return "%x" % next(_ids)  # noqa: UP031 - (hex()[2:] slices a second string: 25 ns more)


def id_source() -> Callable[[], str]:
    """A maker of ids of the ``new_id`` form with digits of its own for their process (drawn at
    random as a process's are): what it makes can be told from this process's own ids."""
    ids = _id_counter()
    return lambda: hex(next(ids))[2:]


def process_of(uuid: str) -> str:
    """The digits naming the process that made the id ``uuid`` (see the module doc); ``""`` for
    an id of another form, which names none."""
    return uuid[:PROCESS_DIGITS] if len(uuid) == ID_DIGITS else ""


def this_process() -> str:
    """The digits naming this process in the ids it makes now (``process_of``)."""
    return process_of(new_id())


def is_valid_type(msg_type: object) -> bool:
    """True if ``msg_type`` is a valid message type (see ``validate_type``). Cached."""
    if type(msg_type) is str and msg_type in _valid_types:
        return True
    try:
        validate_type(msg_type)  # type: ignore[arg-type]
    except UsageError:
        return False
    return True


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


_Id: TypeAlias = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
_Uuid: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Type: TypeAlias = Annotated[str, msgspec.Meta(max_length=MAX_TYPE_LENGTH)]
_Headers: TypeAlias = Annotated[dict[str, str], msgspec.Meta(max_length=MAX_HEADERS)]

_ENCODER: Final = msgspec.msgpack.Encoder()
_now: Final = time.time


class Message(msgspec.Struct, array_like=True, gc=False, forbid_unknown_fields=True):
    """One message. Build it with ``Message.new``; treat it as immutable once sent."""

    # (the bounds in the annotations are the wire's: msgspec checks them when it decodes a
    # message, never when one is made here, so they cost the constructor nothing)
    uuid: _Uuid
    parent_id: _Id
    reply_to: _Id
    type: _Type
    timestamp: float
    data: bytes
    headers: _Headers | None = None

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
        # The fast path (a type seen before, bytes data, no parent, no headers) validates with
        # one dict lookup and copies nothing.
        try:
            known = type in _valid_types
        except TypeError:  # unhashable: validate_type says why
            known = False
        return cls(
            "%x" % next(_ids),  # noqa: UP031 - new_id(), inlined
            _check_id(parent_id) if parent_id else "",
            "",
            type if known else validate_type(type),
            _now(),
            data if data.__class__ is bytes else _encode_data(data),
            _check_headers(headers) if headers else None,
        )

    @classmethod
    def new_reply(cls, to: Message, type: str = DEFAULT_TYPE, data: object = b"") -> Message:
        """Make a message that answers ``to``: its ``reply_to`` and ``parent_id`` are ``to.uuid``."""
        if not isinstance(to, Message):
            raise UsageError(f"new_reply answers a Message, got {to.__class__.__name__!r}")
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
        if type(obj) is not list or not 6 <= len(obj) <= 7:
            raise MessageError("a message is an array of 7 fields (6: no headers)")
        uuid, parent_id, reply_to, msg_type, timestamp, data, *rest = obj
        headers = rest[0] if rest else None
        if type(uuid) is not str or not uuid or len(uuid) > MAX_ID_LENGTH:
            raise MessageError("message uuid must be a non-empty string of at most 64 characters")
        if type(parent_id) is not str or len(parent_id) > MAX_ID_LENGTH:
            raise MessageError("message parent_id must be a string of at most 64 characters")
        if type(reply_to) is not str or len(reply_to) > MAX_ID_LENGTH:
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
        """This message as msgpack bytes (its wire array)."""
        try:
            return _ENCODER.encode(self)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UsageError(f"message {self.uuid!r} cannot be encoded: {exc}") from exc

    @classmethod
    def unmarshal(cls, raw: bytes | bytearray | memoryview) -> Message:
        """Decode ``marshal`` output; raises ``MessageError`` on anything else."""
        try:
            msg = _WIRE_DECODER.decode(raw)
        except (msgspec.DecodeError, TypeError):
            pass  # the careful path below decides and says why
        else:
            if is_valid_type(msg.type):
                return msg
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

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = f", reply_to={self.reply_to!r}" if self.reply_to else ""
        return f"Message(type={self.type!r}, uuid={self.uuid!r}{extra}, data={self.data[:32]!r})"


_WIRE_DECODER: Final = msgspec.msgpack.Decoder(Message)
"""A typed decoder of one message: shapes, field types and the annotations' bounds are checked
in C; the type grammar is not (``is_valid_type``)."""


def check_message(msg: object) -> None:
    """Raise ``UsageError`` if ``msg`` is not a ``Message`` whose fields its receivers accept.

    ``Message.new`` makes only such messages, but fields may be set afterwards (a uuid, a type);
    checked when a message is sent to a link (``Traffic.check_sendable``, which first passes the
    usual message with a few reads and calls this for any other), one bad field is refused at the
    sender instead of closing the link it travels on, with every message queued with it. Headers
    are checked where their size is, ``Traffic.check_sendable``."""
    if msg.__class__ is not Message:
        raise UsageError(f"expected a Message, got {type(msg).__name__}")
    assert isinstance(msg, Message)
    if type(msg.type) is not str:  # (before from_wire: an unhashable value breaks its lookup)
        raise UsageError(f"message type must be a str, got {msg.type!r}")
    for name in ("uuid", "parent_id", "reply_to"):
        value = getattr(msg, name)
        if type(value) is not str or not _encodable(value):
            raise UsageError(f"message {name} must be a str that encodes as UTF-8, got {value!r}")
    if type(msg.data) is not bytes:
        raise UsageError(f"message data must be bytes, got {type(msg.data).__name__}")
    try:
        Message.from_wire(msg.to_wire())
    except MessageError as exc:
        raise UsageError(f"message {msg.uuid!r} cannot be sent: {exc}") from None


def _check_headers(headers: object) -> dict[str, str]:
    if not isinstance(headers, Mapping) or not all(
        type(k) is str and type(v) is str and _encodable(k) and _encodable(v)
        for k, v in headers.items()
    ):
        raise UsageError("message headers must map str to str (valid Unicode)")
    return dict(headers)


def _check_id(value: object) -> str:
    if type(value) is not str or len(value) > MAX_ID_LENGTH or not _encodable(value):
        raise UsageError(f"a message id is a str of at most 64 characters, got {value!r}")
    return value


def _encodable(text: str) -> bool:
    """True if ``text`` encodes as UTF-8 (no lone surrogates), which msgpack needs."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
