"""An app inside one host of the two-site bed (tests/bridge/netns_sites.py), driven over stdin.

The test cannot reach the namespaces' addresses, so everything it asks of gravd happens here:
each stdin line is a JSON command with an ``id``; each answer is one JSON line on stdout with the
same ``id``. Commands run as tasks (a paused stream waits while later commands are answered):

- ``attach endpoint``: connect to a gravd (``gravpy.connect``); pods are made on it.
- ``get url``: an HTTP GET of a gravd's ``/v1/node``, answered with its ``bridges``, ``peers``
  and ``leaves``.
- ``sink``: a pod on ``stream.*``; every ``stream.end`` answers (with the same id) with its tag
  and a ``summary`` of the integers received so far.
- ``stream start stop end [pause_at]``: publish ``stream.n`` start..stop-1 and ``stream.end``;
  at ``pause_at`` it answers ``paused`` and waits for ``resume``.
- ``serve type prefix``: a responder that replies ``prefix + data``.
- ``ask type n [wait]``: ``n`` requests (once the type is routed, if ``wait``), answered with
  the replies or the error's class name.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

import gravpy
from gravpy import Message
from gravpy.errors import GravError
from gravpy.filter import Pattern
from gravpy.grav import Grav
from gravpy.mesh import PeerInfo


class Agent:
    """The state of one agent: its gravd connection, and the stream's resume gate."""

    def __init__(self, stack: AsyncExitStack) -> None:
        self.stack = stack
        self.grav: Grav | None = None
        self.resume = asyncio.Event()
        self.got: list[int] = []

    def answer(self, cid: object, **fields: Any) -> None:
        print(json.dumps({"id": cid, **fields}), flush=True)

    async def run(self, cmd: dict[str, Any]) -> None:
        cid, op = cmd["id"], cmd["op"]
        if op == "attach":
            self.grav = await self.stack.enter_async_context(gravpy.connect(cmd["endpoint"]))
            self.answer(cid, ok=True)
        elif op == "get":
            async with aiohttp.ClientSession() as session, session.get(cmd["url"]) as response:
                body = await response.json()
            # what the tests read, so a line stays well under the reader's 64 KiB limit
            self.answer(cid, body={k: body.get(k, []) for k in ("bridges", "peers", "leaves")})
        elif op == "sink":
            self.sink(cid)
        elif op == "stream":
            await self.stream(cid, cmd)
        elif op == "resume":
            self.resume.set()
        elif op == "serve":
            self.serve(cmd["type"], cmd["prefix"].encode())
            self.answer(cid, ok=True)
        elif op == "ask":
            await self.ask(cid, cmd["type"], cmd["n"], cmd.get("wait", False))

    def sink(self, cid: object) -> None:
        assert self.grav is not None
        pod = self.grav.connect()

        def on(msg: Message) -> None:
            if msg.type == "stream.end":
                self.answer(cid, end=msg.text(), got=summary(self.got))
            else:
                self.got.append(int(msg.data))

        pod.on_type("stream.*", on)
        self.answer(cid, ok=True)

    async def stream(self, cid: object, cmd: dict[str, Any]) -> None:
        assert self.grav is not None
        pod = self.grav.connect()
        await self.grav.wait_for(routed("stream.n"), 20)
        for i in range(cmd["start"], cmd["stop"]):
            if i == cmd.get("pause_at"):
                self.answer(cid, paused=i)
                await self.resume.wait()
            await pod.publish(Message.new("stream.n", str(i).encode()))
        await pod.publish(Message.new("stream.end", cmd["end"]))
        self.answer(cid, streamed=cmd["stop"])

    def serve(self, msg_type: str, prefix: bytes) -> None:
        assert self.grav is not None
        pod = self.grav.connect()
        pod.on_type(msg_type, lambda m: pod.reply_to(m, Message.new("svc.ans", prefix + m.data)))

    async def ask(self, cid: object, msg_type: str, n: int, wait: bool) -> None:
        assert self.grav is not None
        pod = self.grav.connect()
        if wait:  # until the leaf knows its gravd takes the type
            await self.grav.wait_for(routed(msg_type), 20)
        answers = []
        try:
            for i in range(n):
                reply = await pod.send(Message.new(msg_type, str(i))).wait_until(5.0)
                answers.append(reply.text())
        except GravError as exc:
            self.answer(cid, error=type(exc).__name__, answers=answers)
            return
        self.answer(cid, answers=answers)


def summary(got: list[int]) -> dict[str, Any]:
    """What the test checks of the integers received (the whole list is too long for a line)."""
    return {
        "count": len(got),
        "unique": len(set(got)),
        "ordered": got == sorted(got),
        "first": got[0] if got else None,
        "last": got[-1] if got else None,
        "gaps": gaps(got),
    }


def gaps(got: list[int]) -> list[list[int]]:
    """The [first, last] ranges of numbers missing below the largest received."""
    found, expected = [], 0
    for n in sorted(set(got)):
        if n > expected:
            found.append([expected, n - 1])
        expected = n + 1
    return found


def routed(msg_type: str) -> Any:
    """A ``Grav.wait_for`` check: an open link admits ``msg_type``."""

    def check(links: list[PeerInfo]) -> bool:
        return any(
            link.state == "open" and any(Pattern(p).matches(msg_type) for p in link.interests)
            for link in links
        )

    return check


async def main() -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with AsyncExitStack() as stack, asyncio.TaskGroup() as group:
        agent = Agent(stack)
        print(json.dumps({"ready": True}), flush=True)
        while line := (await reader.readline()).decode().strip():
            group.create_task(agent.run(json.loads(line)))
        raise SystemExit(0)  # stdin closed: the test is done with this agent


if __name__ == "__main__":
    asyncio.run(main())
