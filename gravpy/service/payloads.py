"""Payload classes and handler signatures for the ServiceBus. Pure: no I/O.

A payload is an instance of a dataclass or a ``msgspec.Struct``. Its ``PayloadSpec`` says how it
travels: the wire type (``event.<Name>``, ``command.<Name>``, ``query.<Name>``, or the class's own
``__grav_type__``), and a msgspec msgpack encoder and a typed decoder, so what arrives is checked
against the class's annotations before any handler sees it. A class with a ``result`` or
``results`` field is dispatched as a *query*: its handler fills that in and the dispatcher gets
the filled-in object back; any other dispatched class is a *command*.

``Signature.of(fn)`` reads a listener's or handler's first parameter annotation (the payload class)
and whether it takes a second parameter (``Context``); anything else is refused at registration
with a ``UsageError`` that says what is wrong.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from gravpy.errors import UsageError
from gravpy.message import validate_type

__all__ = ["Context", "Kind", "PayloadSpec", "Signature"]

_QUERY_FIELDS = ("result", "results")


class Kind(enum.Enum):
    """What a payload is on the bus: the prefix of its wire type."""

    EVENT = "event"
    COMMAND = "command"
    QUERY = "query"


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler may learn about the message besides its payload (an optional second
    parameter, like Grafana's ``DispatchCtx`` context): the headers the sender set (user,
    trace), the message's type and uuid, and the node the handler runs on."""

    headers: Mapping[str, str]
    msg_type: str
    uuid: str
    node: str


def _field_names(cls: type) -> tuple[str, ...]:
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return tuple(cls.__struct_fields__)
    return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


def is_payload_class(cls: object) -> bool:
    """True if ``cls`` is a dataclass or ``msgspec.Struct`` class."""
    if not isinstance(cls, type):
        return False
    return issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls)


class PayloadSpec:
    """How instances of one payload class travel as one kind; see the module docstring."""

    __slots__ = ("cls", "decoder", "encode", "kind", "wire_type")

    def __init__(self, cls: type, kind: Kind, encoder: msgspec.msgpack.Encoder) -> None:
        if not is_payload_class(cls):
            raise UsageError(f"{cls!r} is not a payload class: use a dataclass or a msgspec.Struct")
        if kind is not Kind.EVENT:
            kind = Kind.QUERY if any(n in _QUERY_FIELDS for n in _field_names(cls)) else kind
        own = getattr(cls, "__grav_type__", None)
        wire_type = own if own is not None else f"{kind.value}.{cls.__name__}"
        try:
            validate_type(wire_type)
        except UsageError as exc:
            raise UsageError(f"{cls.__name__} cannot travel: {exc}") from None
        self.cls = cls
        self.kind = kind
        self.wire_type: str = wire_type
        self.encode: Callable[[Any], bytes] = encoder.encode
        try:
            self.decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(cls)
        except TypeError as exc:  # a field type msgspec cannot decode
            raise UsageError(f"{cls.__name__} cannot travel: {exc}") from None

    def decode(self, data: bytes) -> Any:
        """The payload in ``data``; raises ``msgspec.ValidationError`` or ``DecodeError``."""
        return self.decoder.decode(data)


@dataclass(frozen=True, slots=True)
class Signature:
    """A listener or handler: the payload class it takes and whether it takes a ``Context``."""

    cls: type
    takes_context: bool
    is_async: bool

    @classmethod
    def of(cls, fn: Callable[..., Any], role: str) -> Signature:
        """Read ``fn``'s annotations; ``UsageError`` if it cannot say which payload it takes."""
        if not callable(fn):
            raise UsageError(f"a {role} must be callable, got {fn!r}")
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError) as exc:
            raise UsageError(f"cannot read the parameters of {role} {fn!r}: {exc}") from None
        positional = [
            p
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if len(positional) not in (1, 2):
            raise UsageError(
                f"a {role} takes the payload and optionally a Context: "
                f"{_name(fn)} takes {len(positional)} required positional parameters"
            )
        try:
            hints = typing.get_type_hints(fn)
        except Exception as exc:  # NameError and others: an annotation that does not resolve
            raise UsageError(f"cannot resolve the annotations of {_name(fn)}: {exc}") from None
        payload = hints.get(positional[0].name)
        if payload is None:
            raise UsageError(
                f"{_name(fn)} has no annotation on its first parameter "
                f"{positional[0].name!r}: annotate it with the payload class"
            )
        if not is_payload_class(payload):
            raise UsageError(
                f"{_name(fn)}'s first parameter is annotated {payload!r}, "
                "which is not a dataclass or msgspec.Struct class"
            )
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        return cls(payload, len(positional) == 2, is_async)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
