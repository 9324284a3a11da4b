"""Link flaps and durability: messages lost per flap, time to relink, the cost of --buffer-durable.

Run from the repository root::

    .venv/bin/python benchmarks/bench_flap.py            # 5 flaps, 3 throughput runs per mode
    .venv/bin/python benchmarks/bench_flap.py --quick    # 2 flaps, 1 run per mode
    PYTHONPATH=/path/to/older/checkout .venv/bin/python benchmarks/bench_flap.py --flap-only
        # the same flap against an older gravpy ("before"): gravd and the receiver both use it

1. Flap: a real gravd (the origin) with a publisher app attached streams 6,000 messages (4-byte
   sequence) to a receiver node (a ``Grav`` peer in this process) that dialled it through a TCP
   forwarder process (``tests/daemon/tcp_proxy.py``). A third of the way in, the forwarder is
   SIGKILLed and started again on the same port. Measured per flap: messages the receiver never got
   (lost), got twice, or got out of order; *detect*: kill until the receiver saw the link gone;
   *relink*: forwarder back until the link is open again (the receiver redials with a 50-200 ms
   backoff); *complete*: forwarder back until the last message arrived.
2. Durability cost: gravd A (publisher app) linked to gravd B (subscriber app), 20,000 x 128 B
   messages; messages/s at the subscriber, with ``--buffer-durable on`` on both gravd against
   ``off`` (both with a fresh ``--data-dir``), runs alternating, median of each. Aim: under 15 %.
   Also the CPU time both gravd used per message (from /proc), steadier than messages/s on a
   shared machine. ``--buffer-size 65536`` makes every message of the run stay in the buffer
   (with the default 4,096 the writer skips what was evicted before its turn).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import say, table

import gravpy
from gravpy import Grav, Message
from gravpy.backoff import BackoffPolicy
from gravpy.mesh import HubConfig
from transports.websocket import WebSocketTransport

ROOT = Path(__file__).resolve().parents[1]
PROXY = (sys.executable, str(ROOT / "tests" / "daemon" / "tcp_proxy.py"))
GRAVD = (sys.executable, "-m", "gravpy.daemon.main", "--listen", "127.0.0.1:0", "--monitor", "off")
TOTAL = 6000


async def _lines_until(proc: asyncio.subprocess.Process, word: str, stream: str) -> str:
    reader = proc.stdout if stream == "stdout" else proc.stderr
    assert reader is not None
    async with asyncio.timeout(30):
        while line := (await reader.readline()).decode():
            if word in line:
                return line
    raise RuntimeError(f"process ended before saying {word!r}")


@contextlib.asynccontextmanager
async def _gravd(*args: str) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-gravd-") as state:
        env = {**os.environ, "XDG_STATE_HOME": state}
        proc = await asyncio.create_subprocess_exec(
            *GRAVD,
            *args,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        drain: asyncio.Task[None] | None = None
        try:
            line = await _lines_until(proc, '"listening"', "stderr")
            drain = asyncio.create_task(_drain(proc))
            endpoint = str(json.loads(line)["endpoints"][0])
            _PIDS[endpoint] = proc.pid
            yield endpoint
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if drain is not None:
                await drain


_PIDS: dict[str, int] = {}  # endpoint -> pid of the gravd listening there


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.readline():
        pass


async def _proxy(listen: int, target: int) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        *PROXY, str(listen), str(target), stdout=asyncio.subprocess.PIPE
    )
    return proc, int((await _lines_until(proc, "listening", "stdout")).split()[1])


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


@dataclasses.dataclass
class FlapRun:
    lost: int
    twice: int
    out_of_order: int
    detect_ms: float
    relink_ms: float
    complete_ms: float


def _supports_buffer_size() -> bool:
    from gravpy.daemon.config import DaemonConfig

    return "buffer_size" in {f.name for f in dataclasses.fields(DaemonConfig)}


async def flap_once() -> FlapRun:
    extra = ("--buffer-size", "8192") if _supports_buffer_size() else ()
    async with _gravd(*extra) as endpoint:
        target = urlsplit(endpoint)
        proxy, port = await _proxy(0, target.port or 0)
        got: list[int] = []
        done = asyncio.Event()
        third = asyncio.Event()

        def keep(msg: Message) -> None:
            got.append(int.from_bytes(msg.data[:4], "big"))
            if len(got) == TOTAL // 3:
                third.set()
            if got[-1] == TOTAL - 1:
                done.set()

        fast = HubConfig(backoff=BackoffPolicy(initial=0.05, maximum=0.2))
        receiver = Grav(transport=WebSocketTransport("127.0.0.1", 0), hub_config=fast)
        try:
            async with receiver, gravpy.connect(endpoint) as app:
                receiver.connect().on_type("flap.x", keep)
                await receiver.connect_endpoint(f"ws://127.0.0.1:{port}{target.path}")
                await app.wait_for(lambda ps: any("flap.x" in p.interests for p in ps), 10)
                sender = app.connect()

                async def stream() -> None:
                    for i in range(TOTAL):
                        await sender.publish(Message.new("flap.x", i.to_bytes(4, "big")))
                        if i % 50 == 0:
                            await asyncio.sleep(0.001)

                streaming = asyncio.create_task(stream())
                await asyncio.wait_for(third.wait(), 30)
                cut = time.perf_counter()
                await _stop(proxy)
                await receiver.wait_for(lambda ps: not ps, 30)
                detected = time.perf_counter()
                proxy, _ = await _proxy(port, target.port or 0)
                back = time.perf_counter()
                await receiver.wait_for(lambda ps: any(p.state == "open" for p in ps), 30)
                relinked = time.perf_counter()
                await streaming
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 10)
                complete = time.perf_counter()
        finally:
            await _stop(proxy)
    ordered = sum(1 for a, b in itertools.pairwise(got) if b < a)
    return FlapRun(
        lost=TOTAL - len(set(got)),
        twice=len(got) - len(set(got)),
        out_of_order=ordered,
        detect_ms=(detected - cut) * 1000,
        relink_ms=(relinked - back) * 1000,
        complete_ms=(complete - back) * 1000,
    )


async def throughput(durable: bool, messages: int, buffer: int = 0) -> tuple[float, float]:
    """Messages/s from an app on gravd A to an app on gravd B, and the CPU time both gravd
    spent per message meanwhile (microseconds; less sensitive to other load on the machine)."""
    # an older gravd (PYTHONPATH, "before") has no such flag: both modes then run it as it is
    switch: tuple[str, ...] = ()
    if _supports_buffer_size():
        switch = ("--buffer-durable", "on" if durable else "off")
    if buffer:
        switch += ("--buffer-size", str(buffer))
    with tempfile.TemporaryDirectory() as da, tempfile.TemporaryDirectory() as db:
        async with (
            _gravd("--data-dir", db, *switch) as b,
            _gravd("--data-dir", da, "--peer", b, *switch) as a,
            gravpy.connect(b) as sub_app,
            gravpy.connect(a) as pub_app,
        ):
            n = 0
            done = asyncio.Event()
            last = [0.0]

            def count(msg: Message) -> None:
                nonlocal n
                n += 1
                if n == messages:
                    last[0] = time.perf_counter()
                    done.set()

            sub_app.connect().on_type("tp.x", count)
            await pub_app.wait_for(lambda ps: any("tp.x" in p.interests for p in ps), 30)
            sender = pub_app.connect()
            payload = os.urandom(120)
            pids = (_PIDS[a], _PIDS[b])
            cpu = sum(_cpu_seconds(p) for p in pids)
            start = time.perf_counter()
            for i in range(messages):
                await sender.publish(Message.new("tp.x", i.to_bytes(8, "big") + payload))
            await asyncio.wait_for(done.wait(), 120)
            rate = messages / (last[0] - start)
            await asyncio.sleep(0.3)  # the writers' last gathered batch is part of the cost
            return rate, (sum(_cpu_seconds(p) for p in pids) - cpu) / messages * 1e6


async def main(args: argparse.Namespace) -> int:
    flaps = 0 if args.throughput_only else 2 if args.quick else 5
    runs: list[FlapRun] = [await flap_once() for _ in range(flaps)]
    rows = [
        [
            str(i + 1),
            str(r.lost),
            str(r.twice),
            str(r.out_of_order),
            f"{r.detect_ms:.0f}",
            f"{r.relink_ms:.0f}",
            f"{r.complete_ms:.0f}",
        ]
        for i, r in enumerate(runs)
    ]
    say(f"flap of a link during a stream of {TOTAL} (gravpy from {Path(gravpy.__file__).parent})")
    say(
        table(["flap", "lost", "twice", "reordered", "detect ms", "relink ms", "complete ms"], rows)
    )
    report: dict[str, Any] = {"flaps": [dataclasses.asdict(r) for r in runs]}
    if not args.flap_only:
        n = args.messages or (5000 if args.quick else 20_000)
        rates: dict[bool, list[float]] = {True: [], False: []}
        cpus: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(1 if args.quick else args.runs):
            for durable in (False, True):
                rate, cpu = await throughput(durable, n, args.buffer_size)
                rates[durable].append(rate)
                cpus[durable].append(cpu)
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        cpu_off, cpu_on = statistics.median(cpus[False]), statistics.median(cpus[True])
        cost = (off - on) / off * 100
        cpu_cost = (cpu_on - cpu_off) / cpu_off * 100
        size = args.buffer_size or "default"
        say(f"node-to-node throughput, {n} x 128 B, app on gravd A -> app on gravd B (median)")
        say(f"replay buffer size: {size}")
        say(
            table(
                ["buffer", "msg/s", "gravd CPU us/msg", "runs (msg/s)"],
                [
                    [
                        "in memory",
                        f"{off:,.0f}",
                        f"{cpu_off:.1f}",
                        " ".join(f"{r:,.0f}" for r in rates[False]),
                    ],
                    [
                        "durable (SQLite)",
                        f"{on:,.0f}",
                        f"{cpu_on:.1f}",
                        " ".join(f"{r:,.0f}" for r in rates[True]),
                    ],
                ],
            )
        )
        say(
            f"cost of durability: {cost:.1f} % of throughput, {cpu_cost:.1f} % more gravd CPU per message (aim: under 15 %)"
        )
        report["throughput"] = {
            "off": rates[False],
            "on": rates[True],
            "cpu_us_off": cpus[False],
            "cpu_us_on": cpus[True],
            "cost_percent": cost,
            "cpu_cost_percent": cpu_cost,
        }
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--flap-only", action="store_true")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per mode")
    parser.add_argument("--messages", type=int, default=0, help="per throughput run (20,000)")
    parser.add_argument(
        "--buffer-size", type=int, default=0, help="gravd --buffer-size (0: its default, 4096)"
    )
    parser.add_argument("--json")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
