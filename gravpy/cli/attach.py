"""How gravctl attaches to its node, and what it says when it cannot or when the link drops.

``attached(args)`` yields a started leaf ``Grav`` (``gravpy.connect``), or raises ``Failure`` with
an exit code and one line for the operator: the mesh key file is checked before dialling (a key
that is too short would otherwise fail inside the link and leave gravctl waiting for the connect
timeout), and a refused handshake is told in words, from the reason code the node sent.

``LinkWatch`` is for the long-running commands (``sub``, ``reply``): it prints a line on stderr
when the link to the node drops and another when the leaf's redial brings it back. The leaf's
pods are re-announced by the library on every new link, so the subscription carries on.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from gravpy.cli.parser import EXIT_CONNECT, EXIT_USAGE

if TYPE_CHECKING:
    from gravpy.errors import HandshakeRejectedError
    from gravpy.grav import Grav
    from gravpy.mesh import PeerInfo
    from gravpy.plugins import Transport

__all__ = ["Failure", "LinkWatch", "attached", "refusal", "say"]

MIN_KEY_BYTES = 16  # gravpy.proto.handshake.MIN_KEY_LENGTH, without importing the protocol

_REFUSALS = {
    "version": "it speaks another protocol version (upgrade gravpy on one side)",
    "mesh": "it belongs to another mesh",
    "role": "it does not accept an app (leaf) link here",
    "duplicate": "it already has a link with this uuid",
    "self": "the URL leads back to this very process",
    "uuid_mismatch": "the node there is not the one expected",
    "deadline": "the handshake took too long",
    "unknown_key": "it does not list this identity (gravctl's --identity key)",
    "not_allowed": "it accepts only listed identities (give gravctl --identity KEY)",
    "bad_signature": "the identity's signature does not verify (a wrong or damaged key file)",
}


class Failure(Exception):
    """A command failed: print ``message`` and exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def say(line: str) -> None:
    """One line for the operator on stderr, flushed (tests and pipes read it at once)."""
    print(line, file=sys.stderr, flush=True)


def refusal(exc: HandshakeRejectedError, *, keyed: bool) -> str:
    """The reason a node gave for refusing the link, in words."""
    if exc.reason == "proof":
        text = (
            "the mesh key proof is wrong (gravctl's --mesh-key-file differs from the node's key)"
            if keyed
            else "this node needs a mesh key (give gravctl --mesh-key-file PATH)"
        )
    else:
        text = _REFUSALS.get(exc.reason, f"reason {exc.reason!r}")
    return f"{text}: {exc.detail}" if exc.detail else text


@asynccontextmanager
async def attached(args: argparse.Namespace) -> AsyncIterator[Grav]:
    """A leaf attached to ``args.url``; raises ``Failure`` if it cannot be."""
    import gravpy
    from gravpy.errors import HandshakeRejectedError, TransportError, UsageError

    key = read_key(args.mesh_key_file) if args.mesh_key_file else None
    tls = tls_context(args)
    try:
        options: dict[str, object] = {"transport": _websocket()} if _is_websocket(args.url) else {}
        grav = gravpy.connect(
            args.url,
            timeout=args.connect_timeout,
            mesh_key=key,
            ssl=tls,
            identity_file=args.identity,
            name=f"gravctl {args.command}",  # how the node lists this link (gravctl peers)
            **options,
        )
    except UsageError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    prefix = f"cannot connect to {args.url}"
    try:
        await grav.start()
    except HandshakeRejectedError as exc:
        raise Failure(
            EXIT_CONNECT, f"{prefix}: the node refused the link: {refusal(exc, keyed=bool(key))}"
        ) from None
    except TransportError as exc:
        raise Failure(EXIT_CONNECT, f"{prefix}: {exc}") from None
    except TimeoutError:
        raise Failure(
            EXIT_CONNECT, f"{prefix}: no handshake within {args.connect_timeout} s"
        ) from None
    except UsageError as exc:
        raise Failure(EXIT_USAGE, f"{prefix}: {exc}") from None
    try:
        if not is_open(grav.peers()):
            raise Failure(EXIT_CONNECT, f"the link to {args.url} closed right after the handshake")
        yield grav
    finally:
        await grav.stop()


def _is_websocket(url: str) -> bool:
    return url.partition("://")[0] in ("ws", "wss") or "://" not in url


def _websocket() -> Transport:
    """The websocket plugin, loaded by name: finding a plugin by scheme loads every plugin
    until one matches, and the http one imports aiohttp (about 0.14 s) for nothing."""
    from gravpy.plugins import load_transport

    transport: Transport = load_transport("websocket")()
    return transport


def read_key(path: str) -> bytes:
    """The mesh key in ``path``, trimmed; ``Failure(EXIT_USAGE)`` if unreadable or too short."""
    try:
        key = Path(path).expanduser().read_bytes().strip()
    except OSError as exc:
        raise Failure(EXIT_USAGE, f"cannot read the mesh key file {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise Failure(
            EXIT_USAGE,
            f"the mesh key file {path} holds {len(key)} bytes; a mesh key has at least "
            f"{MIN_KEY_BYTES} (the same file as gravd's --mesh-key-file)",
        )
    return key


def is_open(peers: list[PeerInfo]) -> bool:
    return any(link.state == "open" for link in peers)


class LinkWatch:
    """Says on stderr when the link to the node drops and when it is back (``sub``, ``reply``)."""

    def __init__(self, grav: Grav, url: str) -> None:
        self.grav = grav
        self.url = url
        self.drops = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LinkWatch:
        self._task = asyncio.create_task(self._watch(), name="gravctl-link-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # never raises; our own cancellation still propagates

    async def _watch(self) -> None:
        up = True
        while True:
            await self.grav.wait_for(_changed_from(up))
            up = not up
            if up:
                say(f"gravctl: reconnected to {self.url}")
            else:
                self.drops += 1
                say(f"gravctl: disconnected from {self.url}; reconnecting")


def _changed_from(up: bool) -> Callable[[list[PeerInfo]], bool]:
    """A ``wait_for`` predicate: the link to the node is no longer open (``up``) or closed."""
    return lambda peers: is_open(peers) != up


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client context --tls-ca/--tls-cert/--tls-key describe, or None if none is given."""
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None:
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise Failure(EXIT_USAGE, "--tls-cert and --tls-key go together")
    from gravpy.tls import client_context

    try:
        return client_context(args.tls_ca, args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise Failure(EXIT_USAGE, f"cannot use the TLS files: {exc}") from None
