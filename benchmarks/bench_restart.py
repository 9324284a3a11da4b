"""A receiving gravd killed mid-stream and restarted: messages lost, time to relink.

Run from the repository root::

    .venv/bin/python benchmarks/bench_restart.py            # 3 runs of each case
    .venv/bin/python benchmarks/bench_restart.py --quick    # 1 run of each case

A publisher app on gravd A streams 6,000 numbered messages to a subscriber app on gravd B (which
dialled A with ``--peer``). When the subscriber has a sixth, B is SIGKILLed and started again on the
same port (the subscriber redials it with a 50-200 ms backoff). Cases:

- *killed, no data dir*: B restarts as a new node (random uuid, no positions): what was published
  while it was down is never asked for (the "before").
- *killed, data dir*: B keeps its uuid and positions (``--data-dir``): it asks A for the rest.
- *frozen path, data dir*: B's link to A runs through a TCP forwarder that is SIGSTOPped before B is
  killed, so A does not see the old link end: B's new link (dialled straight to A) claims a uuid
  whose link A still holds open, and is refused as a duplicate (``may_replace``: same dialler, no
  identity key) until A finds the old one dead (``dead_after``, 6 s by default).

Measured: *listening* (kill until the new B's ``listening`` line), *relinked* (kill until its
``peer_connected`` to A), *refused* (duplicate refusals meanwhile), *complete* (B's listening until
the last message arrived, or the 30 s limit), *lost* and *twice* at the subscriber. The stream runs
at about 2,000 messages a second, so it is still going when B is back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from _common import say, table

import gravpy
from gravpy import Grav, Message
from gravpy.backoff import BackoffPolicy
from gravpy.mesh import HubConfig

ROOT = Path(__file__).resolve().parents[1]
PROXY = (sys.executable, str(ROOT / "tests" / "daemon" / "tcp_proxy.py"))
GRAVD = (sys.executable, "-m", "gravpy.daemon.main", "--monitor", "off")
TOTAL = 6000
LIMIT = 30.0
FAST = HubConfig(backoff=BackoffPolicy(initial=0.05, maximum=0.2))


class Gravd:
    """A gravd process whose JSON log lines are read as they come, with the time each came."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[tuple[float, dict[str, object]]] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            with contextlib.suppress(ValueError):
                self.lines.append((time.perf_counter(), json.loads(line)))
                self.changed.set()

    async def event(self, name: str, **fields: object) -> tuple[float, dict[str, object]]:
        """The first log line of event ``name`` (with these fields): when it came, and it."""
        async with asyncio.timeout(LIMIT):
            while True:
                for at, record in self.lines:
                    if record.get("event") == name and all(
                        record.get(k) == v for k, v in fields.items()
                    ):
                        return at, record
                self.changed.clear()
                await self.changed.wait()

    def refusals(self) -> int:
        """Links of this node closed because the remote refused them as duplicates."""
        return sum(1 for _, r in self.lines if "duplicate" in json.dumps(r))


@contextlib.asynccontextmanager
async def gravd(*args: str) -> AsyncIterator[Gravd]:
    with tempfile.TemporaryDirectory(prefix="bench-gravd-") as state:
        env = {**os.environ, "XDG_STATE_HOME": state}
        proc = await asyncio.create_subprocess_exec(
            *GRAVD,
            *args,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        node = Gravd(proc)
        try:
            yield node
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            await node.reader


def endpoint(node: dict[str, object]) -> str:
    endpoints = node["endpoints"]
    assert isinstance(endpoints, list)
    return str(endpoints[0])


async def proxy_to(target: str) -> tuple[asyncio.subprocess.Process, str]:
    url = urlsplit(target)
    proc = await asyncio.create_subprocess_exec(
        *PROXY, "0", str(url.port), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    return proc, f"ws://127.0.0.1:{line.split()[1]}{url.path}"


@dataclasses.dataclass
class Run:
    case: str
    listening_ms: float
    relinked_ms: float
    refused: int
    complete_ms: float
    lost: int
    twice: int


class Subscriber:
    def __init__(self) -> None:
        self.got: list[int] = []
        self.sixth = asyncio.Event()
        self.done = asyncio.Event()

    def keep(self, msg: Message) -> None:
        if msg.data == b"warm":
            return
        self.got.append(int.from_bytes(msg.data[:4], "big"))
        if len(self.got) == TOTAL // 6:
            self.sixth.set()
        if self.got[-1] == TOTAL - 1:
            self.done.set()


async def stream(app: Grav) -> None:
    sender = app.connect()
    for i in range(TOTAL):
        await sender.publish(Message.new("rs.x", i.to_bytes(4, "big")))
        if i % 20 == 0:
            await asyncio.sleep(0.01)  # about 2,000 a second: the stream outlasts the restart


async def restart_once(case: str, keep: bool, frozen: bool) -> Run:
    with tempfile.TemporaryDirectory() as da, tempfile.TemporaryDirectory() as db:
        data_b = ("--data-dir", db) if keep else ()
        async with gravd("--listen", "127.0.0.1:0", "--data-dir", da, "--buffer-size", "8192") as a:
            a_ep = endpoint((await a.event("listening"))[1])
            proxy, via = await proxy_to(a_ep) if frozen else (None, a_ep)
            try:
                return await _measure(case, a_ep, via, data_b, proxy)
            finally:
                if proxy is not None:
                    proxy.kill()
                    await proxy.wait()


async def _measure(
    case: str,
    a_ep: str,
    via: str,
    data_b: tuple[str, ...],
    proxy: asyncio.subprocess.Process | None,
) -> Run:
    sub = Subscriber()
    async with gravd("--listen", "127.0.0.1:0", "--peer", via, *data_b) as b:
        b_ep = endpoint((await b.event("listening"))[1])
        await b.event("peer_connected", role="peer")
        port = urlsplit(b_ep).port
        async with (
            gravpy.connect(b_ep, hub_config=FAST) as sub_app,
            gravpy.connect(a_ep) as pub_app,
        ):
            sub_app.connect().on_type("rs.x", sub.keep)
            await pub_app.wait_for(lambda ps: any("rs.x" in p.interests for p in ps), LIMIT)
            if data_b:  # B has heard from A and saved that (it saves every 0.5 s)
                await pub_app.connect().publish(Message.new("rs.x", b"warm"))
                await asyncio.sleep(1.2)
            publishing = asyncio.create_task(stream(pub_app))
            try:
                await asyncio.wait_for(sub.sixth.wait(), LIMIT)
                if proxy is not None:
                    proxy.send_signal(signal.SIGSTOP)  # A keeps the old link open
                b.proc.kill()
                killed = time.perf_counter()
                await b.proc.wait()
                args = ("--listen", f"127.0.0.1:{port}", "--peer", a_ep, *data_b)
                async with gravd(*args) as b2:
                    listening, _ = await b2.event("listening")
                    linked, _ = await b2.event("peer_connected", role="peer")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(sub.done.wait(), LIMIT)
                    complete = time.perf_counter()
                    refused = b2.refusals()
            finally:
                publishing.cancel()
                await asyncio.gather(publishing, return_exceptions=True)
    return Run(
        case,
        (listening - killed) * 1000,
        (linked - killed) * 1000,
        refused,
        (complete - listening) * 1000,
        TOTAL - len(set(sub.got)),
        len(sub.got) - len(set(sub.got)),
    )


CASES = (
    ("killed, no data dir", False, False),
    ("killed, data dir", True, False),
    ("frozen path, data dir", True, True),
)


async def main(args: argparse.Namespace) -> int:
    runs = [
        await restart_once(case, keep, frozen)
        for case, keep, frozen in CASES
        for _ in range(1 if args.quick else 3)
    ]
    say(f"receiving gravd SIGKILLed during a stream of {TOTAL}, restarted on the same port")
    rows = [
        [
            r.case,
            f"{r.listening_ms:.0f}",
            f"{r.relinked_ms:.0f}",
            str(r.refused),
            f"{r.complete_ms:.0f}",
            str(r.lost),
            str(r.twice),
        ]
        for r in runs
    ]
    headers = ["case", "listening ms", "relinked ms", "refused", "complete ms", "lost", "twice"]
    say(table(headers, rows))
    for case, _, _ in CASES:
        mine = [r for r in runs if r.case == case]
        say(f"{case}: median relink {statistics.median(r.relinked_ms for r in mine):.0f} ms")
    if args.json:
        report = [dataclasses.asdict(r) for r in runs]
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
