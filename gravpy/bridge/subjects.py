"""How gravpy messages look on NATS: subjects, headers, payload. Pure: no I/O.

Theory of operation
-------------------
A message of type ``a.b.c`` sent in mesh ``M`` travels on the subject ``<prefix>.M.a.b.c``: the
mesh token says where it came from, so a bridge subscribes to ``<prefix>.*.<pattern>`` to hear
every other mesh and drops its own mesh's echo. A mesh named ``*`` (it joins any mesh) is
``ANY_MESH_TOKEN`` on NATS. Each token is escaped reversibly: every character outside printable
ASCII, and ``%`` ``.`` ``*`` ``>`` themselves, become ``%XX`` (the UTF-8 bytes), so a type that
NATS would refuse or split still round-trips and an ordinary type maps to itself.

The payload is the message's data, untouched, so a plain NATS client reads and writes plain
payloads. The gravpy fields travel in ONE NATS header, ``Grav-Meta: <uuid> <timestamp>`` followed
by `` p=<parent_id>``, `` r=<reply_to>`` and `` t=<type>`` (for replies sent to an inbox) when
set, and last `` s=<tag>:<n>`` on what an exporter numbers (``gravpy.bridge.sequence``): each extra header costs nats-py a measurable share of its throughput on both ends, and no
field can hold a space (ids are checked, types have no whitespace). A message's own headers travel
as ``Grav-H-<escaped key>: <escaped value>``. A NATS message without ``Grav-Meta`` (a plain
publisher) becomes a new ``Message`` with a fresh uuid, marked ``PLAIN_HEADER`` (so a standby
bridge recognises it by content: ``gravpy.bridge.shadow``); a malformed one is a ``MessageError``.

The timestamp is written as the float's 8 bytes (IEEE 754, big-endian) in 16 hex digits: exact,
and a third of the time Python takes to print a float as a decimal, the largest single cost of
formatting ``Grav-Meta``. A decimal number of seconds is read too (``stamp_of``), as a plain
publisher would write it; a time that is not one (NaN, infinite, a negative decimal) makes the
``Grav-Meta`` malformed. What comes from NATS comes from whoever may publish under the prefix:
a message's own headers never replace the bridge's (``ORIGIN_HEADER``, ``PLAIN_HEADER``), and
an empty header key is malformed too.

Bridges announce their mesh's interests on ``_GRAV_BRIDGE.<prefix>.interest`` (``Announcement``,
JSON), a subject no type subscription can match.
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, cast
from urllib.parse import quote, unquote

from gravpy.bridge.sequence import number_of
from gravpy.errors import MessageError, UsageError
from gravpy.groups import check_group
from gravpy.message import (
    DEFAULT_TYPE,
    MAX_HEADERS,
    MAX_ID_LENGTH,
    Message,
    new_id,
    validate_type,
)
from gravpy.proto import ANY_MESH, DEFAULT_LIMITS, is_valid_pattern
from gravpy.proto.frames import MAX_GROUP_MEMBERS

__all__ = [
    "ANY_MESH_TOKEN",
    "ORIGIN_HEADER",
    "PLAIN_HEADER",
    "Announcement",
    "SubjectMap",
    "escape_token",
    "unescape_token",
    "valid_pattern",
]

ANY_MESH_TOKEN: Final = "_any"
ORIGIN_HEADER: Final = "grav-bridge-origin"  # set on messages that came in from NATS
PLAIN_HEADER: Final = "grav-bridge-plain"  # and on those a plain NATS client published
_BRIDGE_HEADERS: Final = frozenset((ORIGIN_HEADER, PLAIN_HEADER))  # never carried back to NATS
H_META: Final = "Grav-Meta"
H_USER: Final = "Grav-H-"
_DOUBLE: Final = struct.Struct(">d")  # a Grav-Meta time
_INFINITY: Final = math.inf
_SPLIT_LIMIT: Final = 4096  # subjects whose (mesh, type) is kept
# patterns, and group entries, one announcement may carry: what one INTERESTS frame may
MAX_ANNOUNCED: Final = DEFAULT_LIMITS.max_interests
STATUS_HEADER: Final = "Status"
NO_RESPONDERS_STATUS: Final = "503"
# printable ASCII but the NATS separator, wildcards and our escape character
_SAFE_TOKEN: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%.*>")
_SAFE_VALUE: Final = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
_SAFE_FIELD: Final = "".join(c for c in _SAFE_TOKEN if c not in ",:=")
_SAFE_KEY: Final = "".join(c for c in _SAFE_TOKEN if c not in ':"()<>@,;\\/[]?={}')


def escape_token(token: str) -> str:
    """``token`` as one NATS subject token (reversible; a plain token maps to itself)."""
    return quote(token, safe=_SAFE_TOKEN).replace(".", "%2E")  # quote never escapes "."


def unescape_token(token: str) -> str:
    """The inverse of ``escape_token``."""
    return unquote(token, errors="strict")


@dataclass(frozen=True, slots=True)
class SubjectMap:
    """Subjects and headers for one bridge: its ``prefix`` and its ``mesh`` name."""

    prefix: str
    mesh: str
    mesh_token: str = field(init=False)
    _split: dict[str, tuple[str, str]] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in " \t\r\n*>") or ".." in self.prefix:
            raise UsageError(f"invalid NATS subject prefix {self.prefix!r}")
        token = ANY_MESH_TOKEN if self.mesh == ANY_MESH else escape_token(self.mesh)
        object.__setattr__(self, "mesh_token", token)

    @property
    def interest_subject(self) -> str:
        return f"_GRAV_BRIDGE.{self.prefix}.interest"

    @property
    def echo_subject(self) -> str:
        """Every type subject this mesh publishes on."""
        return f"{self.prefix}.{self.mesh_token}.>"

    def subject(self, msg_type: str) -> str:
        """Where this mesh publishes a message of ``msg_type``."""
        return f"{self.prefix}.{self.mesh_token}.{type_tokens(msg_type)}"

    def subscription(self, pattern: str) -> str:
        """What to subscribe to for messages of ``pattern`` from every mesh."""
        tokens = ".".join(t if t in ("*", ">") else escape_token(t) for t in pattern.split("."))
        return f"{self.prefix}.*.{tokens}"

    def split(self, subject: str) -> tuple[str, str]:
        """The mesh token and the message type of a type subject (cached); raises
        ``MessageError``."""
        known = self._split.get(subject)
        if known is None:
            known = self._split_new(subject)
            if len(self._split) >= _SPLIT_LIMIT:
                self._split.clear()
            self._split[subject] = known
        return known

    def _split_new(self, subject: str) -> tuple[str, str]:
        head = self.prefix + "."
        rest = subject[len(head) :] if subject.startswith(head) else ""
        mesh, _, tokens = rest.partition(".")
        if not mesh or not tokens:
            raise MessageError(f"subject {subject!r} is not {self.prefix}.<mesh>.<type>")
        return mesh, type_of_tokens(tokens)

    def is_own(self, mesh_token: str) -> bool:
        return mesh_token == self.mesh_token


def type_tokens(msg_type: str) -> str:
    """``msg_type`` as escaped subject tokens (``a.b`` stays ``a.b``)."""
    return ".".join(escape_token(t) for t in msg_type.split("."))


def type_of_tokens(tokens: str) -> str:
    """The type that ``type_tokens`` made ``tokens`` of; raises ``MessageError``."""
    if "%" not in tokens:  # nothing escaped (the usual case): the tokens are the type
        return _valid_type(tokens)
    try:
        return _valid_type(".".join(unescape_token(t) for t in tokens.split(".")))
    except UnicodeDecodeError as exc:
        raise MessageError(f"{tokens!r} names no valid type: {exc}") from None


def _valid_type(text: str) -> str:
    try:
        return validate_type(text)
    except UsageError as exc:
        raise MessageError(f"{text!r} is no valid type: {exc}") from None


def to_headers(
    msg: Message, *, with_type: bool = False, placed: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    """The NATS headers that carry ``msg``'s gravpy fields (``Grav-Meta``, and ``Grav-H-*``);
    ``placed``: (mesh token, group) pairs, the mesh each group's copy was placed in."""
    headers = {H_META: meta_of(msg, with_type=with_type, placed=placed)}
    headers.update(_user_pairs(msg))
    return headers


def meta_of(
    msg: Message, *, with_type: bool = False, placed: Sequence[tuple[str, str]] = ()
) -> str:
    """The ``Grav-Meta`` value of ``msg`` (see ``to_headers``)."""
    meta = f"{msg.uuid} {_DOUBLE.pack(msg.timestamp).hex()}"  # (exact, see the module)
    if msg.parent_id:
        meta += " p=" + msg.parent_id
    if msg.reply_to:
        meta += " r=" + msg.reply_to
    if with_type:
        meta += " t=" + msg.type
    if placed:
        meta += " g=" + ",".join(f"{_field(m)}:{_field(g)}" for m, g in placed)
    return meta


def header_lines(msg: Message) -> str:
    """``msg``'s own headers as NATS header lines (``Grav-H-<key>: <value>\r\n`` each)."""
    if not msg.headers:
        return ""
    return "".join(f"{key}: {value}\r\n" for key, value in _user_pairs(msg))


def _user_pairs(msg: Message) -> list[tuple[str, str]]:
    if not msg.headers:
        return []
    return [
        (H_USER + quote(key, safe=_SAFE_KEY), _value(value))
        for key, value in msg.headers.items()
        if key not in _BRIDGE_HEADERS
    ]


def _value(text: str) -> str:
    """A header value, escaped; a space at either end too (NATS strips those)."""
    value = quote(text, safe=_SAFE_VALUE)
    if value[:1] == " " or value[-1:] == " ":
        inner = value.strip(" ")
        head = len(value) - len(value.lstrip(" "))
        tail = len(value) - len(value.rstrip(" ")) if inner else 0
        value = "%20" * head + inner + "%20" * tail
    return value


def _field(text: str) -> str:
    return quote(text, safe=_SAFE_FIELD)


def stamp_of(text: str) -> float:
    """A ``Grav-Meta`` time: 16 hex digits (the float's bytes, big-endian: any finite float,
    exactly as a gravpy exporter's message carried it), or a decimal number of seconds since
    the epoch (as a plain publisher writes it: not negative); raises ``ValueError``, also for a
    time that is not one (NaN, infinite), as for any other malformed ``Grav-Meta``."""
    if len(text) == 16 and "." not in text:
        stamp: float = _DOUBLE.unpack(bytes.fromhex(text))[0]
        if -_INFINITY < stamp < _INFINITY:  # (False for NaN too)
            return stamp
    else:
        stamp = float(text)
        if 0.0 <= stamp < _INFINITY:
            return stamp
    raise ValueError(f"time {stamp!r}")


def read_meta(meta: str) -> tuple[str, float, dict[str, str]]:
    """The uuid, timestamp and optional fields (``p``, ``r``, ``t``, ``g``, ``s``) of a
    ``Grav-Meta`` value (an ``s=`` alone is not read: ``gravpy.bridge.sequence`` reads it);
    raises ``MessageError`` if it is not one."""
    uuid, _, rest = meta.partition(" ")
    stamp, _, tail = rest.partition(" ")
    extra: dict[str, str] = {}
    try:
        if tail and not tail.startswith("s="):  # (``s=`` alone, always last: the usual case)
            extra = {p[0]: p[2:] for p in tail.split(" ") if p[1] == "="}
            if len(extra.get("p", "")) > MAX_ID_LENGTH or len(extra.get("r", "")) > MAX_ID_LENGTH:
                raise ValueError("ids")
        if not 0 < len(uuid) <= MAX_ID_LENGTH:
            raise ValueError("uuid")
        return uuid, stamp_of(stamp), extra
    except (IndexError, ValueError):
        raise MessageError(
            f"malformed {H_META} header {meta[:80]!r}: want '<uuid> <time> [p=|r=|t=|g=...]', "
            f"ids of 1 to {MAX_ID_LENGTH} characters"
        ) from None


def plain_meta(meta: str | None) -> tuple[str, float, str, int] | None:
    """The uuid, time and exporter's (tag, number) (``""``, 0 if unnumbered) of a ``Grav-Meta``
    with no other field: the usual message, read without building anything else; None for any
    other (``read_meta`` reads it, or says what is wrong)."""
    if meta is None:
        return None
    uuid, _, rest = meta.partition(" ")
    stamp, _, tail = rest.partition(" ")
    if not 0 < len(uuid) <= MAX_ID_LENGTH:
        return None
    try:
        if not tail:
            return uuid, stamp_of(stamp), "", 0
        if tail[:2] != "s=":
            return None
        tag, _, number = tail[2:].partition(":")
        n = number_of(number)
        if n is None:  # not a number: none, as ``sequence_of`` reads it
            tag, n = "", 0
        return uuid, stamp_of(stamp), tag, n
    except ValueError:
        return None


def placed_in(field: str, mesh_token: str) -> tuple[str, ...]:
    """The groups a ``g=`` field placed in the mesh ``mesh_token``."""
    here = _field(mesh_token) + ":"
    return tuple(unquote(p[len(here) :]) for p in field.split(",") if p.startswith(here))


def from_nats(
    msg_type: str | None,
    data: bytes,
    headers: dict[str, str] | None,
    origin: str,
    reply_to: str = "",
    here: str = "",
    make_id: Callable[[], str] = new_id,
) -> tuple[Message, tuple[str, ...] | None]:
    """The ``Message`` a NATS message stands for, marked with its ``origin`` mesh token, and
    the groups its exporter placed in the mesh ``here`` (None for a plain NATS publisher's: it
    placed nothing, so every group of each mesh that takes it gets one copy). A plain NATS
    publisher's message gets an id from ``make_id``.

    ``msg_type`` is already valid (``SubjectMap.split``); None (a reply on an inbox) takes the
    type from ``Grav-Meta``'s ``t=``. The rest is checked here; raises ``MessageError``."""
    user = {ORIGIN_HEADER: origin}
    if msg_type is not None and headers is not None and len(headers) == 1:
        plain = plain_meta(headers.get(H_META))
        if plain is not None:  # the usual message: no fields but uuid, time and number
            return Message(plain[0], "", reply_to, msg_type, plain[1], data, user), ()
    if not headers:
        msg_type = DEFAULT_TYPE if msg_type is None else msg_type
        user[PLAIN_HEADER] = "1"
        return Message(make_id(), "", reply_to, msg_type, time.time(), data, user), None
    meta = headers.get(H_META)
    extra: dict[str, str] = {}
    if meta is None:
        user[PLAIN_HEADER] = "1"
        uuid, stamp = make_id(), time.time()
    else:
        uuid, stamp, extra = read_meta(meta)
    if msg_type is None:
        msg_type = _valid_type(extra.get("t", DEFAULT_TYPE))
    if len(headers) > 1 or meta is None:
        _user_headers(headers, user)
    parent = extra.get("p", "")
    msg = Message(uuid, parent, extra.get("r", reply_to), msg_type, stamp, data, user)
    if meta is None:
        return msg, None
    field = extra.get("g")
    return msg, placed_in(field, here) if field else ()


def _user_headers(headers: dict[str, str], into: dict[str, str]) -> None:
    """Add the message's own headers (``Grav-H-*``) to ``into``, but never over the bridge's
    own (``ORIGIN_HEADER``, ``PLAIN_HEADER``: an exporter never sends them); raises
    ``MessageError``, also for an empty key."""
    for key, value in headers.items():
        if key.startswith(H_USER):
            name = unquote(key[len(H_USER) :])
            if not name:
                raise MessageError(f"an empty header key ({key!r})")
            if name not in _BRIDGE_HEADERS:
                into[name] = unquote(value)
    if len(into) > MAX_HEADERS:
        raise MessageError(f"a message may carry at most {MAX_HEADERS} headers")


@dataclass(frozen=True, slots=True)
class Announcement:
    """What one bridge tells the others: its mesh, node, what its mesh wants, whether it is ready
    to export; ``query`` asks every bridge to announce now; ``bye`` says it is leaving; ``sent``
    is its wall-clock time of sending (0: not said, from an older bridge)."""

    mesh: str
    node: str
    patterns: tuple[str, ...]
    ready: bool
    query: bool = False
    bye: bool = False
    groups: tuple[tuple[str, str, int], ...] = ()  # (group, pattern, members) in its mesh
    sent: float = 0.0

    def lag(self, now: float) -> float:
        """How long ago (wall clock ``now``) it was sent; 0 if not said or if the sender's clock
        is ahead of ours."""
        return max(0.0, now - self.sent) if self.sent > 0 else 0.0

    def encode(self) -> bytes:
        body = {
            "mesh": self.mesh,
            "node": self.node,
            "patterns": list(self.patterns),
            "ready": self.ready,
            "query": self.query,
            "bye": self.bye,
            "groups": [list(g) for g in self.groups],
            "sent": self.sent,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Announcement:
        """Parse and check an announcement; raises ``MessageError`` on anything else, and on one
        whose patterns or groups the mesh protocol would refuse (``valid_pattern``,
        ``gravpy.groups.check_group``, at most ``MAX_ANNOUNCED`` of each): anyone who may
        publish under the prefix can send one, and the bridge subscribes to its patterns and
        advertises them to its mesh."""
        try:
            body = json.loads(raw)
            if type(body) is not dict:
                raise TypeError("not an object")
            mesh, node, sent = body["mesh"], body["node"], float(body.get("sent", 0.0))
            if type(mesh) is not str or type(node) is not str or not node:
                raise TypeError("mesh and node must be strings")
            if not math.isfinite(sent):
                raise ValueError(f"sent {sent!r}")
            return cls(
                mesh,
                node,
                _patterns(body["patterns"]),
                _flag(body["ready"]),
                _flag(body.get("query", False)),
                _flag(body.get("bye", False)),
                _groups(body.get("groups", [])),
                sent,
            )
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # (JSON nested deep)
            raise MessageError(f"not a bridge announcement: {str(exc)[:200]}") from None


def valid_pattern(text: object) -> bool:
    """True if ``text`` is a type pattern a node may advertise (``gravpy.proto``'s INTERESTS
    rule, and valid Unicode: a JSON string may hold a lone surrogate)."""
    return is_valid_pattern(text) and (cast(str, text).isascii() or _encodable(cast(str, text)))


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _patterns(items: object) -> tuple[str, ...]:
    if type(items) is not list or len(items) > MAX_ANNOUNCED:
        raise TypeError(f"patterns must be a list of at most {MAX_ANNOUNCED}")
    for pattern in items:
        if not valid_pattern(pattern):
            raise ValueError(f"invalid pattern {pattern!r:.80}")
    return tuple(items)


def _groups(items: object) -> tuple[tuple[str, str, int], ...]:
    """(group, pattern, members) entries, checked as the mesh protocol checks INTERESTS."""
    if type(items) is not list or len(items) > MAX_ANNOUNCED:
        raise TypeError(f"groups must be a list of at most {MAX_ANNOUNCED}")
    groups = []
    for entry in items:
        if type(entry) is not list or len(entry) != 3:
            raise TypeError("a group is [group, pattern, members]")
        group, pattern, members = entry
        if not valid_pattern(pattern) or type(members) is not int:
            raise ValueError(f"invalid group entry {entry!r:.80}")
        if not 1 <= members <= MAX_GROUP_MEMBERS:
            raise ValueError(f"invalid group members {members!r:.80}")
        try:
            check_group(group)
        except UsageError:
            raise ValueError(f"invalid group name {group!r:.80}") from None
        groups.append((group, pattern, members))
    return tuple(groups)


def _flag(value: object) -> bool:
    if type(value) is not bool:
        raise TypeError(f"{value!r:.20} is not true or false")
    return value
