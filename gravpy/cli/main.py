"""``gravctl``: publish, subscribe, request and reply through a running gravd, like ``nats``.

Each messaging command attaches to the node at ``--url`` as a leaf (``gravpy.connect``), does its
work and detaches (the detach drains what it sent). ``peers`` and ``check`` read the node's
monitoring port instead; ``bench`` attaches two leaves and measures between them.

Attaching returns once the node has told the leaf which message types can be reached through it
(its first INTERESTS), so ``pub`` and ``req`` route correctly from their first message: a leaf only
forwards what some pod on the mesh wants, and ``req`` reports "no responders" when nothing does.

Every failure is one line on stderr and an exit code from ``gravpy.cli.parser.EXIT_CODES``;
never a traceback. The command modules are imported only for the command that runs, so a ``pub``
does not pay for the HTTP client or the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from gravpy.cli.attach import Failure, attached
from gravpy.cli.parser import (
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    EXIT_NO_RESPONDERS,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    build_parser,
)

__all__ = [
    "EXIT_CONNECT",
    "EXIT_INTERRUPTED",
    "EXIT_NO_RESPONDERS",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "Failure",
    "attached",
    "build_parser",
    "main",
]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``gravctl`` entry point."""
    line = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(line).parse_args(line)
    try:
        _configure_logging(args.verbose)
        if getattr(args, "data", None) == "-":
            args.data = sys.stdin.buffer.read()
        code = _keygen(args) if args.command == "keygen" else asyncio.run(_run(args))
    except Failure as exc:
        print(f"gravctl: {exc}", file=sys.stderr)
        code = exc.code
    except KeyboardInterrupt:
        print("gravctl: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except Exception as exc:  # a library error no command translated: still one line
        code = _last_resort(exc)
    raise SystemExit(code)


def _keygen(args: argparse.Namespace) -> int:
    """Write a key pair and print the public key line (what an auth file lists)."""
    from pathlib import Path

    from gravpy.errors import UsageError
    from gravpy.identity import keygen

    try:
        line = keygen(Path(args.path).expanduser())
    except (UsageError, OSError) as exc:
        raise Failure(EXIT_USAGE, f"keygen: {exc}") from None
    print(line)
    return EXIT_OK


def _last_resort(exc: Exception) -> int:
    from gravpy.errors import GravError, UsageError

    if not isinstance(exc, GravError):
        raise exc
    print(f"gravctl: {exc}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_CONNECT


def _configure_logging(verbose: bool) -> None:
    import logging

    from gravpy.daemon.logging import configure_logging

    configure_logging("console", "info" if verbose else "warning")
    if not verbose:  # asyncio's debug mode (PYTHONASYNCIODEBUG) warns of slow steps: not ours
        logging.getLogger("asyncio").setLevel(logging.ERROR)


def _command(name: str) -> Callable[[argparse.Namespace], Awaitable[int]]:
    """The coroutine function of command ``name``, importing only its module."""
    if name == "events":
        return _events
    if name in ("peers", "check"):
        from gravpy.cli import monitoring

        return monitoring.peers if name == "peers" else monitoring.check
    if name == "bench":
        from gravpy.cli.bench import bench

        return bench
    from gravpy.cli import commands

    handlers: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
        "pub": commands.pub,
        "sub": commands.sub,
        "req": commands.req,
        "reply": commands.reply,
    }
    return handlers[name]


async def _run(args: argparse.Namespace) -> int:
    return await _command(args.command)(args)


async def _events(args: argparse.Namespace) -> int:
    from gravpy.cli.events import run_events

    await run_events(args)
    return EXIT_OK


@contextmanager
def _until_signal(done: asyncio.Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``done`` instead of interrupting (``gravctl events``
    imports it from here, with ``attached`` and ``Failure``)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


if __name__ == "__main__":
    main()
