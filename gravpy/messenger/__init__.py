"""Messenger: publish, stream, request and serve by subject, over interchangeable backends.

``m = await open_messenger(url)`` picks the backend from the URL's scheme; the same code then runs on
any of them (``docs/messenger.md`` has the table of what each guarantees)::

    memory://                              InMemoryMessenger: one process
    ws://127.0.0.1:8080/meta/message       GravMessenger: a leaf attached to gravd (http:// too)
    nats://127.0.0.1:4222                  NatsMessenger: a NATS server (pip install gravpy[nats])
    sqlite:///var/lib/app/bus.db           SQLiteMessenger: a file shared by the processes of a machine

Subjects are gravpy message types (``updates.topic``); ``stream`` and ``serve`` also take gravpy
patterns (``updates.*``, ``updates.>``). ``check_messenger`` in ``gravpy.testing`` is the conformance
check every backend passes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gravpy.errors import (
    MessengerClosed,
    MessengerError,
    NoResponders,
    PublishFailed,
    RequestFailed,
    RequestTimeout,
    StreamSubscriptionFailed,
    UsageError,
)
from gravpy.messenger.base import (
    Handler,
    Messenger,
    MessengerBase,
    Subscription,
    SubscriptionStatistics,
)
from gravpy.messenger.grav import GravMessenger
from gravpy.messenger.memory import InMemoryMessenger
from gravpy.messenger.sqlite import SQLiteMessenger

if TYPE_CHECKING:
    from gravpy.messenger.nats import NatsMessenger

__all__ = [
    "GravMessenger",
    "Handler",
    "InMemoryMessenger",
    "Messenger",
    "MessengerBase",
    "MessengerClosed",
    "MessengerError",
    "NatsMessenger",
    "NoResponders",
    "PublishFailed",
    "RequestFailed",
    "RequestTimeout",
    "StreamSubscriptionFailed",
    "Subscription",
    "SubscriptionStatistics",
    "open_messenger",
]

_GRAV_SCHEMES = ("ws", "wss", "http", "https")
_NATS_SCHEMES = ("nats", "tls")


async def open_messenger(url: str, **options: Any) -> Messenger:
    """An open messenger for ``url`` (see the module docstring); use it with ``async with``.

    ``options`` go to the backend's constructor or ``open``/``connect`` classmethod (for example
    ``retention_rows=`` for SQLite, ``reconnect_time_wait=`` for NATS). Raises ``UsageError`` for
    an unknown scheme or option or a bad option value (naming it), and ``TransportError`` (or, on
    ``ws://``, ``WaitTimeout``) for a server or file the backend cannot open.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        _check_options(scheme, options, _named(InMemoryMessenger))
        return InMemoryMessenger(**options)
    if scheme == "sqlite":
        _check_options(scheme, options, _named(SQLiteMessenger.open) - {"path", "connection"})
        return await SQLiteMessenger.open(url.split("://", 1)[1], **options)
    if scheme in _GRAV_SCHEMES:
        _check_options(scheme, options, _grav_options())
        return await GravMessenger.connect(url, **options)
    if scheme in _NATS_SCHEMES:
        from nats.aio.client import Client

        from gravpy.messenger.nats import NatsMessenger

        fixed = {"servers", "allow_reconnect"}  # the URL, and always on (reconnect after outages)
        nats_options = _named(NatsMessenger.connect) | (_named(Client.connect) - fixed)
        _check_options(scheme, options, nats_options)
        return await NatsMessenger.connect(url, **options)
    raise UsageError(
        f"no messenger backend for {url!r}: use memory://, ws:// or http:// (gravd), "
        "nats:// or sqlite:///path"
    )


def _named(fn: Callable[..., object]) -> set[str]:
    """The keyword arguments ``fn`` names (not its ``**`` catch-all, not ``self``/``url``)."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind in kinds} - {"self", "url"}


def _grav_options() -> set[str]:
    """What ``GravMessenger.connect`` takes: its own and, through ``gravpy.connect``, ``Grav``'s."""
    from gravpy.grav import Grav

    leaf_fixed = {"role", "attach_to", "attach_timeout"}  # gravpy.connect sets these itself
    return _named(GravMessenger.connect) | (_named(Grav) - leaf_fixed) | {"transport"}


def _check_options(scheme: str, options: dict[str, Any], accepted: set[str]) -> None:
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UsageError(
            f"open_messenger({scheme}://...): unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )


def __getattr__(name: str) -> Any:
    if name == "NatsMessenger":  # imported on demand: nats-py is the optional extra gravpy[nats]
        from gravpy.messenger.nats import NatsMessenger

        return NatsMessenger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
