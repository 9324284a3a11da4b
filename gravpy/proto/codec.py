"""The frame codec: frame objects to bytes and back. Pure: no I/O.

``encode_frame`` packs any frame. ``encode_msgs_split`` packs a batch of messages into as few
MSGS frames as ``Limits`` allow, one msgspec ``encode`` call per frame (a ``Message`` is a
msgspec Struct, so no per-message list is built). ``decode_frame`` turns one whole frame into a
frame object, or raises ``FrameError`` (and nothing else) saying what is wrong.

MSGS frames, the traffic, take a fast path: a typed msgspec decoder builds the messages in C,
checking shapes, field types and lengths, and Python then checks only each message's type (a
cached lookup), its data size and the batch size. Every other frame, and any MSGS frame the fast
path refuses, goes to the careful path: a generic, bounded unpacker (array, map and ext lengths,
frame size checked first, so a small hostile frame cannot make it allocate a huge buffer) and a
decoder per kind that says what is wrong. The fast path accepts only what the careful path
accepts, so the messages and the errors are the same whichever path runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Final, Literal

import msgpack
import msgspec

from gravpy.errors import FrameError, MessageError, UsageError
from gravpy.message import Message, is_valid_type
from gravpy.proto.config import DEFAULT_LIMITS, Limits
from gravpy.proto.frames import (
    MAX_APP_NAME_LENGTH,
    MAX_DETAIL_LENGTH,
    MAX_ENDPOINT_LENGTH,
    MAX_GROUP_MEMBERS,
    MAX_HEADERS,
    MAX_NAME_LENGTH,
    MAX_NONCE_LENGTH,
    MAX_PING_NONCE,
    MAX_REASON_LENGTH,
    MAX_TOKEN_LENGTH,
    MAX_UPGRADE_TOKEN_LENGTH,
    MAX_UUID_LENGTH,
    MIN_NONCE_LENGTH,
    PROOF_LENGTH,
    PROTOCOL_VERSION,
    PUBLIC_KEY_LENGTH,
    SIGNATURE_LENGTH,
    SIZE_ESTIMATE_OVERHEAD,
    Accept,
    Auth,
    Close,
    Frame,
    FrameKind,
    Hello,
    Interests,
    Moved,
    Msgs,
    Peers,
    Ping,
    Pong,
    Reject,
    Withdraw,
    WithdrawAck,
    is_valid_pattern,
)

__all__ = [
    "decode_frame",
    "encode_frame",
    "encode_interests",
    "encode_msgs",
    "encode_msgs_split",
    "encode_peers",
]


# -- encoding ---------------------------------------------------------------------------------


def _pack(obj: object) -> bytes:
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"frame cannot be encoded as msgpack: {exc}") from exc
    return packed


_MSGS: Final = int(FrameKind.MSGS)
_ENCODER: Final = msgspec.msgpack.Encoder()


def encode_frame(frame: Frame) -> bytes:
    """The bytes of ``frame``. Raises ``UsageError`` if a field cannot be packed."""
    if type(frame) is Msgs:
        return encode_msgs(frame.messages, frame.seqs)
    return _pack(frame.to_wire())


def encode_msgs(messages: Sequence[Message], seqs: Sequence[int] | None = None) -> bytes:
    """One MSGS frame holding ``messages`` (and their origin numbers ``seqs``, one per message,
    if given), packed in one call. No limit is checked here."""
    batch = messages if type(messages) is list else list(messages)
    if seqs is not None and len(seqs) != len(batch):
        raise UsageError(f"{len(seqs)} origin numbers for {len(batch)} messages")
    try:
        if seqs is None:
            return _ENCODER.encode((_MSGS, batch))
        return _ENCODER.encode((_MSGS, batch, seqs))
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"frame cannot be encoded as msgpack: {exc}") from exc


def encode_msgs_split(
    messages: Sequence[Message], limits: Limits = DEFAULT_LIMITS, seqs: Sequence[int] | None = None
) -> list[bytes]:
    """MSGS frames holding ``messages`` in order (each with its origin number from ``seqs``, if
    given), each frame within ``limits``.

    Most batches give one frame; a batch is cut by ``max_batch`` and by ``max_frame_bytes``.
    Raises ``UsageError`` (and returns nothing) if a message's data is over ``max_message_bytes``,
    it has more than ``MAX_HEADERS`` headers, or it cannot fit in a frame at all.
    """
    batch = messages if type(messages) is list else list(messages)
    numbers = None if seqs is None else list(seqs)
    frames: list[bytes] = []
    if _fits_one_frame(batch, limits):  # the usual case, checked in two comprehensions
        _pack_within(batch, numbers, limits.max_frame_bytes, frames)
        return frames
    for start, end in _chunks(batch, limits):
        part = None if numbers is None else numbers[start:end]
        _pack_within(batch[start:end], part, limits.max_frame_bytes, frames)
    return frames


def _fits_one_frame(batch: list[Message], limits: Limits) -> bool:
    """True if ``batch`` is non-empty, within every limit, and ``_chunks`` would not cut it."""
    if not batch or len(batch) > limits.max_batch:
        return False
    sizes = [len(msg.data) for msg in batch]
    if max(sizes) > limits.max_message_bytes:
        return False
    if sum(sizes) + SIZE_ESTIMATE_OVERHEAD * len(batch) > limits.max_frame_bytes:
        return False
    return all(len(h) <= MAX_HEADERS for h in [msg.headers for msg in batch if msg.headers])


def _chunks(batch: list[Message], limits: Limits) -> list[tuple[int, int]]:
    """``batch`` cut by ``max_batch`` and estimated size, as ``(start, end)`` index ranges;
    ``UsageError`` for a message over limits."""
    chunks: list[tuple[int, int]] = []
    start = 0
    estimate = 0
    for i, msg in enumerate(batch):
        size = len(msg.data)
        if size > limits.max_message_bytes:
            raise UsageError(
                f"message {msg.uuid} has {size} bytes of data, over max_message_bytes "
                f"({limits.max_message_bytes})"
            )
        if msg.headers is not None and len(msg.headers) > MAX_HEADERS:
            raise UsageError(f"message {msg.uuid} has more than {MAX_HEADERS} headers")
        size += SIZE_ESTIMATE_OVERHEAD
        full = i - start >= limits.max_batch or estimate + size > limits.max_frame_bytes
        if i > start and full:
            chunks.append((start, i))
            start, estimate = i, 0
        estimate += size
    if start < len(batch):
        chunks.append((start, len(batch)))
    return chunks


def encode_interests(
    patterns: Iterable[str],
    limits: Limits = DEFAULT_LIMITS,
    groups: Iterable[tuple[str, str, int]] = (),
) -> bytes:
    """An INTERESTS frame; ``UsageError`` if a pattern or group entry is invalid, or there are
    too many of either."""
    pats = tuple(patterns)
    entries = tuple((g, p, n) for g, p, n in groups)
    for what, items in (("interests", pats), ("group interests", entries)):
        if len(items) > limits.max_interests:
            raise UsageError(f"{len(items)} {what}, over max_interests ({limits.max_interests})")
    for pattern in pats:
        if not is_valid_pattern(pattern):
            raise UsageError(f"invalid type pattern {pattern!r}")
    for entry in entries:
        try:
            _group_entry(list(entry))
        except FrameError as exc:
            raise UsageError(str(exc)) from None
    return encode_frame(Interests(pats, entries))


def encode_peers(pairs: Iterable[tuple[str, str]], limits: Limits = DEFAULT_LIMITS) -> bytes:
    """A PEERS frame; ``UsageError`` if an entry is invalid or there are too many."""
    items = tuple((node, endpoint) for node, endpoint in pairs)
    if len(items) > limits.max_peers:
        raise UsageError(f"{len(items)} peers, over max_peers ({limits.max_peers})")
    for node, endpoint in items:
        if not (type(node) is str and 0 < len(node) <= MAX_UUID_LENGTH):
            raise UsageError(f"invalid node uuid {node!r}")
        if not (type(endpoint) is str and 0 < len(endpoint) <= MAX_ENDPOINT_LENGTH):
            raise UsageError(f"invalid endpoint {endpoint!r}")
    return encode_frame(Peers(items))


def _pack_within(
    batch: list[Message], seqs: list[int] | None, max_bytes: int, out: list[bytes]
) -> None:
    frame = encode_msgs(batch, seqs)
    if len(frame) <= max_bytes:
        out.append(frame)
    elif len(batch) == 1:
        raise UsageError(f"message {batch[0].uuid} does not fit in a frame of {max_bytes} bytes")
    else:
        half = len(batch) // 2
        _pack_within(batch[:half], None if seqs is None else seqs[:half], max_bytes, out)
        _pack_within(batch[half:], None if seqs is None else seqs[half:], max_bytes, out)


# -- decoding ---------------------------------------------------------------------------------


_MSGS_PREFIX: Final = bytes([0x92, _MSGS])  # fixarray of 2, then the kind
_MSGS_SEQS_PREFIX: Final = bytes([0x93, _MSGS])  # fixarray of 3: the batch, then its numbers
_MSGS_DECODER: Final = msgspec.msgpack.Decoder(  # Literal[5]: FrameKind.MSGS
    tuple[Literal[5], Annotated[list[Message], msgspec.Meta(min_length=1)]]
)
_MSGS_SEQS_DECODER: Final = msgspec.msgpack.Decoder(
    tuple[Literal[5], Annotated[list[Message], msgspec.Meta(min_length=1)], list[int]]
)


def decode_frame(raw: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Frame:
    """Decode one whole frame. Raises ``FrameError``, and only that, on anything invalid."""
    size = raw.nbytes if isinstance(raw, memoryview) else len(raw)
    if size > limits.max_frame_bytes:
        raise FrameError(
            f"frame of {size} bytes is over max_frame_bytes ({limits.max_frame_bytes})"
        )
    prefix = raw[:2]
    if prefix in (_MSGS_SEQS_PREFIX, _MSGS_PREFIX):
        msgs = _decode_msgs_typed(raw, limits)
        if msgs is not None:
            return msgs
    return _decode_careful(raw, limits)


def _decode_msgs_typed(raw: bytes | bytearray | memoryview, limits: Limits) -> Msgs | None:
    """The MSGS fast path: the frame's messages, or None to let the careful path decide."""
    seqs: list[int] | None = None
    try:
        if raw[:2] == _MSGS_SEQS_PREFIX:
            _, msgs, seqs = _MSGS_SEQS_DECODER.decode(raw)
        else:
            _, msgs = _MSGS_DECODER.decode(raw)
    except msgspec.DecodeError:
        return None
    if len(msgs) > limits.max_batch or (seqs is not None and len(seqs) != len(msgs)):
        return None
    max_data = limits.max_message_bytes
    for msg in msgs:
        if len(msg.data) > max_data:
            return None
    for msg_type in {msg.type for msg in msgs}:  # a batch holds few distinct types
        if not is_valid_type(msg_type):
            return None
    return Msgs(msgs, seqs)


def _decode_careful(raw: bytes | bytearray | memoryview, limits: Limits) -> Frame:
    """Any frame, generically unpacked and checked field by field; ``FrameError`` says why."""
    try:
        obj = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=limits.max_array_len,
            max_map_len=MAX_HEADERS,
            max_ext_len=0,
        )
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        reason = str(exc) or type(exc).__name__
        raise FrameError(f"frame is not valid msgpack within limits: {reason}") from exc
    if type(obj) is not list or not obj:
        raise FrameError("a frame must be a non-empty msgpack array")
    kind = obj[0]
    decoder = _DECODERS.get(kind) if type(kind) is int else None
    if decoder is None:
        raise FrameError(f"unknown frame kind {kind!r}")
    return decoder(obj, limits)


def _arity(obj: list[Any], n: int) -> None:
    if len(obj) != n:
        name = FrameKind(obj[0]).name
        raise FrameError(f"{name} frame must have {n} elements, not {len(obj)}")


def _str(value: object, what: str, max_len: int, *, allow_empty: bool = True) -> str:
    if type(value) is not str:
        raise FrameError(f"{what} must be a string")
    if len(value) > max_len:
        raise FrameError(f"{what} is longer than {max_len} characters")
    if not value and not allow_empty:
        raise FrameError(f"{what} must not be empty")
    return value


def _list(value: object, what: str, max_len: int) -> list[Any]:
    if type(value) is not list:
        raise FrameError(f"{what} must be an array")
    if len(value) > max_len:
        raise FrameError(f"{what} has {len(value)} entries, over the limit of {max_len}")
    return value


def _decode_hello(obj: list[Any], limits: Limits) -> Hello:
    # Forward compatibility: later versions keep these eight elements and may append more.
    if len(obj) < 8:
        raise FrameError(f"HELLO frame must have at least 8 elements, not {len(obj)}")
    _, version, node_uuid, role, belongs_to, endpoint, nonce, keyed = obj[:8]
    if type(version) is not int or not 0 <= version <= 0xFFFF:
        raise FrameError("HELLO version must be an int in 0..65535")
    if type(nonce) is not bytes or not MIN_NONCE_LENGTH <= len(nonce) <= MAX_NONCE_LENGTH:
        raise FrameError(f"HELLO nonce must be {MIN_NONCE_LENGTH}..{MAX_NONCE_LENGTH} bytes")
    if type(keyed) is not bool:
        raise FrameError("HELLO keyed must be a boolean")
    # another version's extra elements are not ours to judge: it is refused by version anyway
    extra = obj[8:13] if version == PROTOCOL_VERSION else []
    public_key, has_token = [*extra[:2], b"", False][:2]
    name = extra[2] if len(extra) > 2 else ""  # optional (later in version 5); see frames.Hello
    origin_seq = extra[3] if len(extra) > 3 else 0  # optional, after name
    upgrade_token = extra[4] if len(extra) > 4 else b""  # optional, after origin_seq
    if type(public_key) is not bytes or len(public_key) not in (0, PUBLIC_KEY_LENGTH):
        raise FrameError(f"HELLO public_key must be empty or {PUBLIC_KEY_LENGTH} bytes")
    if type(has_token) is not bool:
        raise FrameError("HELLO has_token must be a boolean")
    name = _str(name, "HELLO name", MAX_APP_NAME_LENGTH)
    if not name.isprintable():
        raise FrameError("HELLO name must be printable text")
    if type(origin_seq) is not int or not 0 <= origin_seq < 1 << 63:
        raise FrameError("HELLO origin_seq must be an int in 0..2**63-1")
    if type(upgrade_token) is not bytes or len(upgrade_token) > MAX_UPGRADE_TOKEN_LENGTH:
        raise FrameError(f"HELLO upgrade_token must be 0..{MAX_UPGRADE_TOKEN_LENGTH} bytes")
    return Hello(
        node_uuid=_str(node_uuid, "HELLO node_uuid", MAX_UUID_LENGTH, allow_empty=False),
        role=_str(role, "HELLO role", MAX_NAME_LENGTH, allow_empty=False),
        belongs_to=_str(belongs_to, "HELLO belongs_to", MAX_NAME_LENGTH, allow_empty=False),
        endpoint=_str(endpoint, "HELLO endpoint", MAX_ENDPOINT_LENGTH),
        nonce=nonce,
        keyed=keyed,
        version=version,
        public_key=public_key,
        has_token=has_token,
        name=name,
        origin_seq=origin_seq,
        upgrade_token=upgrade_token,
    )


def _decode_auth(obj: list[Any], limits: Limits) -> Auth:
    _arity(obj, 4)
    _, proof, signature, token = obj
    if type(proof) is not bytes or len(proof) not in (0, PROOF_LENGTH):
        raise FrameError(f"AUTH proof must be empty or {PROOF_LENGTH} bytes")
    if type(signature) is not bytes or len(signature) not in (0, SIGNATURE_LENGTH):
        raise FrameError(f"AUTH signature must be empty or {SIGNATURE_LENGTH} bytes")
    return Auth(proof, signature, _str(token, "AUTH token", MAX_TOKEN_LENGTH))


def _decode_reason(obj: list[Any], limits: Limits) -> Reject | Close:
    _arity(obj, 3)
    cls = Reject if obj[0] == FrameKind.REJECT else Close
    name = cls.kind.name
    reason = _str(obj[1], f"{name} reason", MAX_REASON_LENGTH, allow_empty=False)
    return cls(reason, _str(obj[2], f"{name} detail", MAX_DETAIL_LENGTH))


def _decode_msgs(obj: list[Any], limits: Limits) -> Msgs:
    if len(obj) != 3:
        _arity(obj, 2)
    wires = _list(obj[1], "MSGS batch", limits.max_batch)
    seqs = _seqs(obj[2], len(wires)) if len(obj) == 3 else None
    if not wires:
        raise FrameError("MSGS batch must hold at least one message")
    max_data = limits.max_message_bytes
    from_wire = Message.from_wire
    messages: list[Message] = []
    for i, wire in enumerate(wires):
        try:
            msg = from_wire(wire)
        # TypeError: Message.from_wire looks an unhashable type field up in a dict.
        except (MessageError, TypeError) as exc:
            raise FrameError(f"MSGS message {i}: {exc}") from exc
        if len(msg.data) > max_data:
            raise FrameError(
                f"MSGS message {i} has {len(msg.data)} bytes of data, over max_message_bytes "
                f"({max_data})"
            )
        messages.append(msg)
    return Msgs(messages, seqs)


def _seqs(value: object, count: int) -> list[int]:
    """A MSGS frame's origin numbers: an array of ints, one per message."""
    if type(value) is not list:
        raise FrameError("MSGS origin numbers must be an array")
    if len(value) != count:
        raise FrameError(f"MSGS carries {len(value)} origin numbers for {count} messages")
    if any(type(n) is not int for n in value):
        raise FrameError("MSGS origin numbers must be integers")
    return value


def _decode_interests(obj: list[Any], limits: Limits) -> Interests:
    _arity(obj, 3)
    patterns = _list(obj[1], "INTERESTS patterns", limits.max_interests)
    for pattern in patterns:
        if not is_valid_pattern(pattern):
            raise FrameError(f"INTERESTS holds an invalid type pattern {pattern!r:.80}")
    entries = _list(obj[2], "INTERESTS groups", limits.max_interests)
    return Interests(tuple(patterns), tuple(_group_entry(e) for e in entries))


def _group_entry(entry: object) -> tuple[str, str, int]:
    """One ``[group, pattern, members]`` entry of INTERESTS, checked."""
    if type(entry) is not list or len(entry) != 3:
        raise FrameError("INTERESTS group entries must be [group, pattern, members] arrays")
    group, pattern, members = entry
    if not is_valid_pattern(group) or "*" in group or ">" in group:
        raise FrameError(f"INTERESTS holds an invalid group name {group!r:.80}")
    if not is_valid_pattern(pattern):
        raise FrameError(f"INTERESTS holds an invalid type pattern {pattern!r:.80}")
    if type(members) is not int or not 1 <= members <= MAX_GROUP_MEMBERS:
        raise FrameError(f"INTERESTS group members must be an int in 1..{MAX_GROUP_MEMBERS}")
    return group, pattern, members


def _decode_peers(obj: list[Any], limits: Limits) -> Peers:
    _arity(obj, 2)
    pairs: list[tuple[str, str]] = []
    for pair in _list(obj[1], "PEERS list", limits.max_peers):
        if type(pair) is not list or len(pair) != 2:
            raise FrameError("PEERS entries must be [node_uuid, endpoint] arrays")
        node = _str(pair[0], "PEERS node_uuid", MAX_UUID_LENGTH, allow_empty=False)
        endpoint = _str(pair[1], "PEERS endpoint", MAX_ENDPOINT_LENGTH, allow_empty=False)
        pairs.append((node, endpoint))
    return Peers(tuple(pairs))


def _decode_nonce(obj: list[Any], limits: Limits) -> Ping | Pong:
    _arity(obj, 2)
    cls = Ping if obj[0] == FrameKind.PING else Pong
    if type(obj[1]) is not int or not 0 <= obj[1] <= MAX_PING_NONCE:
        raise FrameError(f"{cls.kind.name} nonce must be an int in 0..2**64-1")
    return cls(obj[1])


def _decode_bare(obj: list[Any], limits: Limits) -> Accept | Withdraw | WithdrawAck | Moved:
    _arity(obj, 1)
    if obj[0] == FrameKind.ACCEPT:
        return Accept()
    if obj[0] == FrameKind.MOVED:
        return Moved()
    return Withdraw() if obj[0] == FrameKind.WITHDRAW else WithdrawAck()


_DECODERS: Final[dict[int, Callable[[list[Any], Limits], Frame]]] = {
    FrameKind.HELLO: _decode_hello,
    FrameKind.AUTH: _decode_auth,
    FrameKind.ACCEPT: _decode_bare,
    FrameKind.REJECT: _decode_reason,
    FrameKind.MSGS: _decode_msgs,
    FrameKind.INTERESTS: _decode_interests,
    FrameKind.PEERS: _decode_peers,
    FrameKind.WITHDRAW: _decode_bare,
    FrameKind.WITHDRAW_ACK: _decode_bare,
    FrameKind.PING: _decode_nonce,
    FrameKind.PONG: _decode_nonce,
    FrameKind.CLOSE: _decode_reason,
    FrameKind.MOVED: _decode_bare,
}
