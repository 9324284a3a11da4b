"""gravctl's messaging commands: ``pub``, ``sub``, ``req``, ``reply``.

Each attaches a leaf (``attached``), uses one pod and detaches; the detach drains what was sent.
``pub`` and ``req`` know at once whether any pod on the mesh wants their type (the node tells the
leaf its interests before ``attached`` returns), so a message nobody wants is reported, exit 3,
and never mixed with "Published".

Several replies to one request (``req --replies N`` / ``--replies-all``) are collected here, with
one wait on the receipt whose wait function keeps each reply and asks for more (a
``receipt.replies()`` iterator in the library will replace this).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gravpy.cli.attach import Failure, LinkWatch, attached, is_open, say
from gravpy.cli.parser import (
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    EXIT_NO_RESPONDERS,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    from gravpy.message import Message
    from gravpy.pod import Pod
    from gravpy.receipt import MsgReceipt

__all__ = ["pub", "reply", "req", "sub"]


def _message(msg_type: str, data: object, headers: list[tuple[str, str]]) -> Message:
    from gravpy.errors import UsageError
    from gravpy.message import Message

    try:
        return Message.new(msg_type, data, headers=dict(headers) or None)
    except UsageError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None


def _send(pod: Pod, msg: Message) -> MsgReceipt:
    """``pod.send``, with data over the mesh's message limit told as a usage error."""
    from gravpy.errors import UsageError

    try:
        return pod.send(msg)
    except UsageError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None


async def _publish(pod: Pod, msg: Message) -> MsgReceipt:
    """``pod.publish`` (waits while receivers are congested), errors as in ``_send``."""
    from gravpy.errors import UsageError

    try:
        return await pod.publish(msg)
    except UsageError as exc:
        raise Failure(EXIT_USAGE, str(exc)) from None


async def pub(args: argparse.Namespace) -> int:
    async with attached(args) as grav:
        pod = grav.connect()
        unwanted = 0
        for i in range(args.count):
            if i and args.sleep:
                await asyncio.sleep(args.sleep)
            receipt = await _publish(pod, _message(args.type, args.data, args.headers))
            unwanted += receipt.no_responders
    if unwanted:
        say(
            f'gravctl: no pod on the mesh wants "{args.type}": {unwanted} of {args.count} '
            "message(s) not delivered"
        )
        return EXIT_NO_RESPONDERS
    say(f'Published {args.count} message(s) to "{args.type}"')
    return EXIT_OK


async def req(args: argparse.Namespace) -> int:
    from gravpy.cli.output import write_data

    async with attached(args) as grav:
        pod = grav.connect()
        receipt = _send(pod, _message(args.type, args.data, args.headers))
        wanted = None if args.replies_all else args.replies
        replies = await collect_replies(receipt, args, wanted, lambda: is_open(grav.peers()))
    for reply_msg in replies:
        write_data(reply_msg.data)
    return EXIT_OK


async def collect_replies(
    receipt: MsgReceipt,
    args: argparse.Namespace,
    wanted: int | None,
    attached: Callable[[], bool],
) -> list[Message]:
    """Up to ``wanted`` replies (None: all): the first within --timeout, each next one within
    --reply-timeout of the one before (and all of them within --timeout). ``attached`` says
    whether gravctl's own link to its node is open (a failed wait blames it only if not).

    One wait stays registered on the receipt throughout, its wait function keeping every reply
    and asking for more (``MsgNotWanted``): a reply that came while a wait was ending would be
    lost with that wait's mailbox, so the wait is never ended and restarted.
    """
    from gravpy.errors import MsgNotWanted

    replies: list[Message] = []
    arrived = asyncio.Event()

    def keep(msg: Message) -> bool:
        replies.append(msg)
        arrived.set()
        if wanted is not None and len(replies) >= wanted:
            return True
        raise MsgNotWanted

    waiter = asyncio.create_task(receipt.wait_until(args.timeout, keep))
    try:
        await _until_quiet(waiter, arrived, replies, args)
    finally:
        if not waiter.done():
            waiter.cancel()
        await asyncio.wait([waiter])
    _check_wait(waiter, bool(replies), args, attached())
    return replies


async def _until_quiet(
    waiter: asyncio.Task[object],
    arrived: asyncio.Event,
    replies: list[Message],
    args: argparse.Namespace,
) -> None:
    """Return when ``waiter`` ends, or no reply came for --reply-timeout after the first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout
    while not waiter.done():
        left = deadline - loop.time()
        step = min(left, args.reply_timeout) if replies else left
        if step <= 0:
            return
        arrived.clear()
        news = asyncio.create_task(arrived.wait())
        done, _ = await asyncio.wait({waiter, news}, timeout=step, return_when="FIRST_COMPLETED")
        news.cancel()
        await asyncio.wait([news])
        if not done:
            return  # quiet for a whole step


def _check_wait(
    waiter: asyncio.Task[object], any_reply: bool, args: argparse.Namespace, attached: bool
) -> None:
    """Turn how the wait ended into gravctl's failures; a timeout after replies is success.

    A closed link while gravctl is still ``attached`` is one elsewhere in the mesh, the only
    one that could carry the reply (its responder left): no reply, as a timeout, not a lost
    connection to gravd."""
    from gravpy.errors import LinkClosedError, NoResponders, PodDisconnected, WaitTimeout

    if waiter.cancelled() or (exc := waiter.exception()) is None:
        if any_reply:
            return
        exc = WaitTimeout("no reply")
    if isinstance(exc, NoResponders):
        raise Failure(EXIT_NO_RESPONDERS, f'no responders: no pod on the mesh wants "{args.type}"')
    if isinstance(exc, WaitTimeout):
        if any_reply:
            return
        raise Failure(EXIT_TIMEOUT, f'timeout: no reply to "{args.type}" within {args.timeout} s')
    if isinstance(exc, LinkClosedError) and attached:
        raise Failure(
            EXIT_TIMEOUT, f'no reply to "{args.type}": the link that could answer closed ({exc})'
        )
    if isinstance(exc, (LinkClosedError, PodDisconnected)):
        raise Failure(EXIT_CONNECT, f"the link to the node was lost: {exc}")
    raise exc


async def sub(args: argparse.Namespace) -> int:
    from gravpy.cli.output import format_message

    async with attached(args) as grav, LinkWatch(grav, args.url):
        pod = grav.connect_with_replay() if args.replay else grav.connect()
        stop = _Stop()
        seen = 0

        def show(msg: Message) -> None:
            nonlocal seen
            if stop.done.is_set():
                return
            seen += 1
            text = format_message(msg, seen, as_json=args.json, raw=args.raw, headers=args.headers)
            print(text, flush=True)
            if args.count is not None and seen >= args.count:
                stop.set(EXIT_OK)

        pod.on_type(args.pattern, show, group=args.group)
        with stop.on_signals():
            say(f'Subscribing on "{args.pattern}"')
            return await stop.wait()


async def reply(args: argparse.Namespace) -> int:
    from gravpy.cli.output import format_message
    from gravpy.message import DEFAULT_TYPE

    if (args.data is None) == (args.shell_command is None):
        raise Failure(EXIT_USAGE, "reply needs DATA or --command CMD (one of them)")
    if args.shell_command is not None:
        check_command(args.shell_command)
    async with attached(args) as grav, LinkWatch(grav, args.url):
        pod = grav.connect()
        stop = _Stop()
        answered = 0

        async def answer(request: Message) -> None:
            nonlocal answered
            if stop.done.is_set() or request.reply_to:
                return  # never answer a reply: two responders would ping-pong forever
            answered += 1
            print(format_message(request, answered, as_json=False), flush=True)
            data = (
                args.data
                if args.shell_command is None
                else await run_command(args.shell_command, request)
            )
            answer_msg = _message(DEFAULT_TYPE, data, args.headers)
            pod.reply_to(request, answer_msg)
            if args.count is not None and answered >= args.count:
                stop.set(EXIT_OK)

        pod.on_type(args.pattern, answer, group=args.group)
        with stop.on_signals():
            say(f'Listening on "{args.pattern}"')
            return await stop.wait()


def check_command(template: str) -> None:
    """Refuse at start a ``--command`` that could never run (each request would fail)."""
    try:
        words = shlex.split(template)
    except ValueError as exc:  # an unclosed quote, say
        raise Failure(EXIT_USAGE, f"--command {template!r}: {exc}") from None
    if not words:
        raise Failure(EXIT_USAGE, "--command is empty")
    program = words[0]
    if "{{" not in program and shutil.which(program) is None:
        raise Failure(
            EXIT_USAGE, f"--command: no program {program!r} (not found or not executable)"
        )


async def run_command(template: str, request: Message) -> bytes:
    """``template`` run with the request's data on stdin; its stdout. ``{{N}}``: type token N."""
    tokens = request.type.split(".")
    argv = []
    for word in shlex.split(template):
        for n, token in enumerate(tokens, start=1):
            word = word.replace("{{%d}}" % n, token)  # noqa: UP031 (braces would need escaping)
        argv.append(word)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        say(f"gravctl: cannot run {argv[0]!r}: {exc.strerror}")
        return b""
    try:
        out, _ = await process.communicate(request.data)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode:
        say(f"gravctl: {argv[0]} exited {process.returncode}; replying with its output")
    return out


class _Stop:
    """How a long-running command ends: ``--count`` reached (0), SIGTERM (0), Ctrl-C (130)."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.code = EXIT_OK

    def set(self, code: int) -> None:
        if not self.done.is_set():
            self.code = code
            self.done.set()

    async def wait(self) -> int:
        await self.done.wait()
        return self.code

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.set, EXIT_INTERRUPTED)
        loop.add_signal_handler(signal.SIGTERM, self.set, EXIT_OK)
        try:
            yield
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
