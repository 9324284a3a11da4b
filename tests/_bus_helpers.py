"""What the bus, pod and receipt tests share: a hang guard, waiting on a condition or on a quiet bus,
and pods that record what they get or answer requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gravpy import Grav, Message, Pod

GUARD = 5.0  # seconds; a condition not met by then fails the test instead of hanging it


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds (fails after GUARD seconds)."""
    async with asyncio.timeout(GUARD):
        while not condition():  # noqa: ASYNC110 - polling plain state the tests cannot hook into
            await asyncio.sleep(0)


async def settle(g: Grav) -> None:
    """Let the loop run until every inbox is empty and nothing more is about to be delivered."""
    for _ in range(5):
        await asyncio.sleep(0)
    await until(lambda: all(p.statistics().inbox == 0 for p in g.bus.pods()))
    for _ in range(20):
        await asyncio.sleep(0)


def texts(msgs: list[Message]) -> list[str]:
    """The text of each message, in order."""
    return [m.text() for m in msgs]


def recorder(pod: Pod) -> list[Message]:
    """Give ``pod`` a sync handler that appends every message to the returned list."""
    seen: list[Message] = []
    pod.on(seen.append)
    return seen


def responder(pod: Pod) -> None:
    """Make ``pod`` answer each ``test.ask`` with "hey <data>", synchronously inside its handler."""

    def answer(msg: Message) -> None:
        pod.reply_to(msg, Message.new("test.reply", "hey " + msg.text()))

    pod.on_type("test.ask", answer)
