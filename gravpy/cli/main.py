"""``gravctl``: publish, subscribe, request and reply through a running gravd, like ``nats``.

Each command attaches to the node at ``--url`` as a leaf (``gravpy.connect``), does its work and
detaches (the detach drains what it sent). ``peers`` reads the node's monitoring port instead.

Attaching returns once the node has told the leaf which message types can be reached through it
(its first INTERESTS), so ``pub`` and ``req`` route correctly from their first message: a leaf only
forwards what some pod on the mesh wants, and ``req`` reports "no responders" when nothing does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import NoReturn

import aiohttp

import gravpy
from gravpy.cli.events import add_events_command, run_events
from gravpy.cli.output import format_message, format_peers
from gravpy.daemon.logging import configure_logging
from gravpy.errors import (
    HandshakeRejectedError,
    LinkClosedError,
    NoResponders,
    PodDisconnected,
    TransportError,
    UsageError,
    WaitTimeout,
)
from gravpy.filter import Pattern
from gravpy.grav import Grav
from gravpy.groups import check_group
from gravpy.identity import keygen
from gravpy.leaf import DEFAULT_URL
from gravpy.message import DEFAULT_TYPE, Message, validate_type
from gravpy.tls import client_context

__all__ = ["EXIT_CONNECT", "EXIT_NO_RESPONDERS", "EXIT_TIMEOUT", "build_parser", "main"]

EXIT_OK = 0
EXIT_TIMEOUT = 1
EXIT_USAGE = 2
EXIT_NO_RESPONDERS = 3
EXIT_CONNECT = 4
DEFAULT_MONITOR = "http://127.0.0.1:8222"

EPILOG = """\
exit codes:
  0  success
  1  timed out waiting for a reply (req)
  2  bad usage (arguments, message type or pattern)
  3  no responders: no pod on the mesh wants the request's type (req)
  4  cannot connect: refused, unreachable, rejected by the node, or the link was lost

DATA '-' reads the data from standard input. The node URL comes from --url, else GRAVCTL_URL,
else ws://127.0.0.1:8080/meta/message; the monitor URL of 'peers' from --monitor, else
GRAVCTL_MONITOR, else http://127.0.0.1:8222.
"""


class Failure(Exception):
    """A command failed: print ``message`` and exit with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gravctl",
        description="Talk to a running gravd: pub, sub, req, reply, peers, events.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gravctl {gravpy.__version__}")
    parser.add_argument(
        "--url",
        default=os.environ.get("GRAVCTL_URL", DEFAULT_URL),
        help="the node to attach to (env GRAVCTL_URL)",
    )
    parser.add_argument(
        "--mesh-key-file",
        default=os.environ.get("GRAVCTL_MESH_KEY_FILE"),
        metavar="PATH",
        help="the mesh key, when the node uses one (env GRAVCTL_MESH_KEY_FILE)",
    )
    parser.add_argument(
        "--identity",
        default=os.environ.get("GRAVCTL_IDENTITY"),
        metavar="PATH",
        help="an Ed25519 key from 'gravctl keygen' to sign the handshake with (env GRAVCTL_IDENTITY)",
    )
    for name, what in (
        (
            "ca",
            "PEM CA certificates the node's TLS certificate must be signed by (wss://, "
            "https://, tls://; default: the system's trust store)",
        ),
        ("cert", "a PEM client certificate to show a node that requires one (mTLS)"),
        ("key", "the PEM private key of --tls-cert"),
    ):
        parser.add_argument(
            f"--tls-{name}",
            default=os.environ.get(f"GRAVCTL_TLS_{name.upper()}"),
            metavar="FILE",
            help=f"{what} (env GRAVCTL_TLS_{name.upper()})",
        )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log link events (connects, drops) to stderr"
    )
    parser.add_argument(
        "--connect-timeout", type=_seconds, default=5.0, metavar="S", help="default 5"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pub = commands.add_parser("pub", help="publish a message", epilog=EPILOG)
    pub.add_argument("type", metavar="TYPE", type=_msg_type)
    pub.add_argument("data", metavar="DATA")
    pub.add_argument("--count", type=_positive, default=1, metavar="N", help="send it N times")

    sub = commands.add_parser("sub", help="print the messages matching a pattern", epilog=EPILOG)
    sub.add_argument("pattern", metavar="PATTERN", type=_pattern)
    sub.add_argument("--count", type=_positive, metavar="N", help="exit after N messages")
    sub.add_argument("--json", action="store_true", help="print one JSON object per message")
    sub.add_argument(
        "--group", type=_group, metavar="NAME", help="share messages with the group (one each)"
    )

    req = commands.add_parser("req", help="send a request, print the reply", epilog=EPILOG)
    req.add_argument("type", metavar="TYPE", type=_msg_type)
    req.add_argument("data", metavar="DATA")
    req.add_argument("--timeout", type=_seconds, default=5.0, metavar="S", help="default 5")

    reply = commands.add_parser("reply", help="answer every request with DATA", epilog=EPILOG)
    reply.add_argument("pattern", metavar="PATTERN", type=_pattern)
    reply.add_argument("data", metavar="DATA")
    reply.add_argument("--count", type=_positive, metavar="N", help="exit after N requests")
    reply.add_argument(
        "--group",
        type=_group,
        default="gravctl.reply",
        metavar="NAME",
        help="responders in one group share requests (default gravctl.reply)",
    )

    peers = commands.add_parser("peers", help="show the node and its links", epilog=EPILOG)
    peers.add_argument(
        "--monitor",
        default=os.environ.get("GRAVCTL_MONITOR", DEFAULT_MONITOR),
        help="the node's monitoring URL",
    )
    add_events_command(commands)
    keys = commands.add_parser("keygen", help="write a new identity key pair", epilog=EPILOG)
    keys.add_argument("path", metavar="PATH", help="the private key (mode 0600); PATH.pub: public")
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``gravctl`` entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging("console", "info" if args.verbose else "warning")
    try:
        if getattr(args, "data", None) == "-":
            args.data = sys.stdin.buffer.read()
        code = _keygen(args) if args.command == "keygen" else asyncio.run(_run(args))
    except Failure as exc:
        print(f"gravctl: {exc}", file=sys.stderr)
        code = exc.code
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    raise SystemExit(code)


async def _run(args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[argparse.Namespace], Awaitable[None]]] = {
        "pub": _pub,
        "sub": _sub,
        "req": _req,
        "reply": _reply,
        "peers": _peers,
        "events": run_events,
    }
    await commands[args.command](args)
    return EXIT_OK


# -- attaching -------------------------------------------------------------------------------------


@asynccontextmanager
async def attached(args: argparse.Namespace) -> AsyncIterator[Grav]:
    """A leaf attached to ``args.url``; raises ``Failure(EXIT_CONNECT)`` if it cannot be."""
    key = _read_key(args.mesh_key_file) if args.mesh_key_file else None
    tls = _tls_context(args)
    try:
        grav = gravpy.connect(
            args.url,
            timeout=args.connect_timeout,
            mesh_key=key,
            ssl=tls,
            identity_file=args.identity,
        )
    except UsageError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None
    try:
        await grav.start()
    except (TransportError, HandshakeRejectedError) as exc:
        raise Failure(EXIT_CONNECT, f"cannot connect to {args.url}: {exc}") from None
    except TimeoutError:
        raise Failure(
            EXIT_CONNECT,
            f"cannot connect to {args.url}: no handshake within {args.connect_timeout} s",
        ) from None
    except UsageError as exc:
        raise Failure(EXIT_USAGE, f"cannot connect to {args.url}: {exc}") from None
    try:
        if not any(link.state == "open" for link in grav.peers()):
            raise Failure(EXIT_CONNECT, f"the link to {args.url} closed right after the handshake")
        yield grav
    finally:
        await grav.stop()


def _keygen(args: argparse.Namespace) -> int:
    """Write a key pair and print the public key line (what an auth file lists)."""
    try:
        line = keygen(Path(args.path).expanduser())
    except (UsageError, OSError) as exc:
        raise Failure(EXIT_USAGE, f"keygen: {exc}") from None
    print(line)
    return EXIT_OK


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client context --tls-ca/--tls-cert/--tls-key describe, or None if none is given."""
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None:
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise Failure(EXIT_USAGE, "--tls-cert and --tls-key go together")
    try:
        return client_context(args.tls_ca, args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise Failure(EXIT_USAGE, f"cannot use the TLS files: {exc}") from None


def _read_key(path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes().strip()
    except OSError as exc:
        raise Failure(EXIT_USAGE, f"cannot read the mesh key file {path}: {exc.strerror}") from None


# -- commands --------------------------------------------------------------------------------------


async def _pub(args: argparse.Namespace) -> None:
    async with attached(args) as grav:
        pod = grav.connect()
        wanted = 0
        for _ in range(args.count):
            receipt = await pod.publish(Message.new(args.type, args.data))
            wanted += not receipt.no_responders
        if wanted < args.count:
            print(
                f'gravctl: no pod on the mesh wants "{args.type}"; not delivered', file=sys.stderr
            )
        print(f'Published {args.count} message(s) to "{args.type}"', file=sys.stderr)


async def _req(args: argparse.Namespace) -> None:
    async with attached(args) as grav:
        pod = grav.connect()
        receipt = pod.send(Message.new(args.type, args.data))
        try:
            reply: Message = await receipt.wait_until(args.timeout)
        except NoResponders:
            raise Failure(
                EXIT_NO_RESPONDERS, f'no responders: no pod on the mesh wants "{args.type}"'
            ) from None
        except WaitTimeout:
            raise Failure(
                EXIT_TIMEOUT, f'timeout: no reply to "{args.type}" within {args.timeout} s'
            ) from None
        except (LinkClosedError, PodDisconnected) as exc:
            raise Failure(EXIT_CONNECT, f"the link to the node was lost: {exc}") from None
        _write_data(reply.data)


async def _sub(args: argparse.Namespace) -> None:
    async with attached(args) as grav:
        pod = grav.connect()
        done = asyncio.Event()
        seen = 0

        def show(msg: Message) -> None:
            nonlocal seen
            if done.is_set():
                return
            seen += 1
            print(format_message(msg, seen, as_json=args.json), flush=True)
            if args.count is not None and seen >= args.count:
                done.set()

        pod.on_type(args.pattern, show, group=args.group)
        with _until_signal(done):
            print(f'Subscribing on "{args.pattern}"', file=sys.stderr, flush=True)
            await done.wait()


async def _reply(args: argparse.Namespace) -> None:
    data: bytes | str = args.data
    async with attached(args) as grav:
        pod = grav.connect()
        done = asyncio.Event()
        answered = 0

        def answer(request: Message) -> None:
            nonlocal answered
            if done.is_set() or request.reply_to:
                return  # never answer a reply: two responders would ping-pong forever
            answered += 1
            print(format_message(request, answered, as_json=False), flush=True)
            pod.reply_to(request, Message.new(DEFAULT_TYPE, data))
            if args.count is not None and answered >= args.count:
                done.set()

        pod.on_type(args.pattern, answer, group=args.group)
        with _until_signal(done):
            print(f'Listening on "{args.pattern}"', file=sys.stderr, flush=True)
            await done.wait()


async def _peers(args: argparse.Namespace) -> None:
    url = args.monitor.rstrip("/") + "/v1/node"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.connect_timeout)) as s,
            s.get(url) as response,
        ):
            response.raise_for_status()
            node = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Failure(EXIT_CONNECT, f"cannot read {url}: {exc or type(exc).__name__}") from None
    print(format_peers(node))


# -- helpers ---------------------------------------------------------------------------------------


@contextmanager
def _until_signal(done: asyncio.Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``done`` (a clean exit 0) instead of interrupting."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _write_data(data: bytes) -> None:
    out = sys.stdout.buffer
    out.write(data)
    if not data.endswith(b"\n"):
        out.write(b"\n")
    out.flush()


def _msg_type(text: str) -> str:
    try:
        return validate_type(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pattern(text: str) -> str:
    try:
        return Pattern(text).text
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _group(text: str) -> str:
    try:
        return check_group(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


if __name__ == "__main__":
    main()
