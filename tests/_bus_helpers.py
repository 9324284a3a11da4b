"""What the bus, pod and receipt tests share: a hang guard, waiting on a condition or on a quiet bus,
and pods that record what they get or answer requests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from gravpy import Grav, Message, Pod
from gravpy.testing import wait_idle

# seconds; a condition not met by then fails the test instead of hanging it (scale it on a slow
# machine with GRAVPY_TEST_SCALE)
GUARD = 30.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition()`` holds (fails after GUARD seconds)."""
    async with asyncio.timeout(GUARD):
        while not condition():  # noqa: ASYNC110 - polling plain state the tests cannot hook into
            await asyncio.sleep(0)


async def settle(g: Grav) -> None:
    """Wait until every pod has handled what was delivered to it (``gravpy.testing.wait_idle``)."""
    await wait_idle(g, GUARD)


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
