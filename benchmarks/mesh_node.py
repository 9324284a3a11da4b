"""One process of the mesh benchmark: a gravpy node or a nats-py client, driven over stdin/stdout.

``bench_mesh.py``, ``bench_transports.py`` and ``bench_scaling.py`` start this script (never run
it by hand, except to debug)::

    python benchmarks/mesh_node.py gravpy            # a gravpy node listening on 127.0.0.1:0
    python benchmarks/mesh_node.py gravpy --transport http   # the same over the HTTP transport
    python benchmarks/mesh_node.py nats URL          # a nats-py connection to the server at URL

``--transport`` is ``ws`` (the default: ``WebSocketTransport``), ``http`` (``HttpTransport``) or
``tcp`` (``TcpTransport``); the node listens, and dials, with that one transport only.
``GRAVPY_BENCH_LOOP=uvloop`` runs the process, gravpy node or nats-py client, on uvloop; the hello
says which loop runs and, for gravpy, which build of the hot modules was imported.

Protocol: one JSON object per line. On start the process writes ``{"event": "hello", ...}`` (for
gravpy with the endpoint it really listens on); then it reads one command per line from stdin and
answers each with exactly one line, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
Commands run one at a time, but the node keeps working between them (a subscriber keeps counting
while the parent waits on the publisher). The answers go to the stdout the parent reads; everything
else the process prints (structlog, warnings, tracebacks) goes to stderr.

Both systems run the same commands with the same payloads, so the two layouts are the same: one
publishing/requesting process, one subscribing/responding process (and, for nats, the server).
``subscribe`` takes ``pods=N`` for N receiving pods in the one process (nats: N subscriptions on
the one connection), each counting on its own; ``collect`` sums them and says how many were
complete. ``await_interest`` takes ``peers=N`` to wait for N receiving nodes.
Times are ``time.monotonic()``: CLOCK_MONOTONIC on Linux, one clock for every process, so arrival
times on the subscriber can be compared with the publish start in the other process.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

Reply = dict[str, Any]

_SEQ = struct.Struct(">Q")  # every payload starts with its sequence number
_unpack_seq = _SEQ.unpack_from


def payloads(n: int, size: int, start: int = 0) -> list[bytes]:
    """``n`` payloads of ``size`` bytes: an 8-byte big-endian sequence number, then random filler."""
    filler = os.urandom(max(0, size - _SEQ.size))
    return [_SEQ.pack(i) + filler for i in range(start, start + n)]


class Counter:
    """What a subscriber saw: how many messages, whether in order, first and last arrival times."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.next_seq = 0
        self.gaps = 0  # a sequence number higher than the next expected one (something was lost)
        self.backwards = 0  # lower than expected: out of order or duplicated
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    def on_data(self, data: bytes) -> None:
        seq = _unpack_seq(data)[0]
        if seq != self.next_seq:
            if seq > self.next_seq:
                self.gaps += 1
            else:
                self.backwards += 1
        self.next_seq = seq + 1
        now = time.monotonic()
        if not self.received:
            self.first = now
        self.last = now
        self.received += 1
        if self.received >= self.expected:
            self.done.set()

    async def wait(self, idle: float) -> None:
        """Until every expected message came, or nothing came for ``idle`` seconds."""
        seen = -1
        while not self.done.is_set() and self.received != seen:
            seen = self.received
            try:
                async with asyncio.timeout(idle):
                    await self.done.wait()
            except TimeoutError:
                pass

    def report(self) -> Reply:
        return {
            "received": self.received,
            "gaps": self.gaps,
            "backwards": self.backwards,
            "in_order": self.gaps == 0 and self.backwards == 0,
            "first": self.first,
            "last": self.last,
        }


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as out:
        out.write(text)


def _busy(seconds: float) -> None:
    """Keep the CPU busy for ``seconds`` (a handler that does some work)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def latency_summary(samples_us: list[float]) -> Reply:
    cuts = statistics.quantiles(samples_us, n=100, method="inclusive")
    return {
        "count": len(samples_us),
        "p50_us": cuts[49],
        "p90_us": cuts[89],
        "p99_us": cuts[98],
        "mean_us": statistics.fmean(samples_us),
        "min_us": min(samples_us),
        "max_us": max(samples_us),
    }


class GcClock:
    """CPU time of this process, and time in the cyclic garbage collector (per generation), since
    the last ``take``."""

    def __init__(self) -> None:
        self._cpu_since = time.process_time()
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._started
            self.counts[generation] += 1

    def take(self) -> Reply:
        now = time.process_time()
        report = {
            "cpu_seconds": now - self._cpu_since,
            "gc_seconds": sum(self.seconds),
            "gc_by_gen": [*self.seconds],
            "gc_counts": [*self.counts],
        }
        self._cpu_since = now
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        return report


class Node:
    """The commands both systems implement (see the module docstring)."""

    system = ""

    def __init__(self) -> None:
        self.counters: list[Counter] = []  # one per receiving pod (nats: per subscription)
        self.profiler: Any = None  # a cProfile.Profile or a pyinstrument Profiler
        self.gc_clock = GcClock()

    async def cmd_gc_reset(self) -> Reply:
        """Start counting the collector's time now."""
        return {"before": self.gc_clock.take()}

    async def cmd_gc(self) -> Reply:
        """The collector's time since ``gc_reset`` (or the last ``gc``)."""
        return self.gc_clock.take()

    async def start(self) -> Reply:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    # -- commands shared by both systems ------------------------------------------------------

    async def cmd_collect(self, idle: float = 5.0) -> Reply:
        """Wait for every subscription to complete (or stall), report them together, unsubscribe.

        ``received``, ``gaps`` and ``backwards`` are summed over the receiving pods, ``first`` and
        ``last`` are the earliest and the latest arrival at any of them; ``pods`` and ``complete``
        (pods that got every message, in order) let the caller check each pod, not only the sum.
        """
        counters, self.counters = self.counters, []
        if not counters:
            raise RuntimeError("collect without subscribe")
        await asyncio.gather(*(c.wait(idle) for c in counters))  # a stalled pod waits ``idle`` once
        reports = [c.report() for c in counters]
        report: Reply = {
            "received": sum(r["received"] for r in reports),
            "gaps": sum(r["gaps"] for r in reports),
            "backwards": sum(r["backwards"] for r in reports),
            "in_order": all(r["in_order"] for r in reports),
            "first": min((r["first"] for r in reports if r["received"]), default=0.0),
            "last": max((r["last"] for r in reports), default=0.0),
            "pods": len(counters),
            "complete": sum(
                c.received == c.expected and c.gaps == 0 and c.backwards == 0 for c in counters
            ),
        }
        report.update(await self.unsubscribe())
        return report

    async def cmd_profile_start(self, kind: str = "cprofile") -> Reply:
        """Start profiling this process: ``cprofile`` (stdlib) or ``pyinstrument`` (sampling)."""
        if kind == "pyinstrument":
            from pyinstrument import Profiler

            self.profiler = Profiler(interval=0.001, async_mode="disabled")
            self.profiler.start()
        else:
            self.profiler = cProfile.Profile()
            self.profiler.enable()
        return {}

    async def cmd_profile_stop(self, path: str) -> Reply:
        """Stop profiling; write pstats data (cProfile) or a text call tree (pyinstrument)."""
        profiler, self.profiler = self.profiler, None
        if profiler is None:
            raise RuntimeError("profile_stop without profile_start")
        if isinstance(profiler, cProfile.Profile):
            profiler.disable()
            profiler.dump_stats(path)
        else:
            profiler.stop()
            text = profiler.output_text(unicode=False, color=False, show_all=False)
            _write_text(path, text)
        return {"path": path}

    async def cmd_request_seq(
        self, type: str, n: int, warmup: int, size: int, timeout: float = 2.0
    ) -> Reply:
        """``warmup`` + ``n`` sequential requests; latency of the last ``n`` in microseconds."""
        bodies = payloads(warmup + n, size)
        request = self.request_function(type, timeout)
        clock = time.perf_counter_ns
        samples: list[float] = []
        wrong = 0
        for i, body in enumerate(bodies):
            t0 = clock()
            answer = await request(body)
            t1 = clock()
            if answer != body:
                wrong += 1
            if i >= warmup:
                samples.append((t1 - t0) / 1_000)
        return {"wrong_replies": wrong, **latency_summary(samples)}

    async def cmd_request_par(
        self, type: str, total: int, concurrency: int, size: int, timeout: float = 5.0
    ) -> Reply:
        """``total`` requests by ``concurrency`` concurrent requesters; requests per second."""
        request = self.request_function(type, timeout)
        per_worker = total // concurrency
        bodies = payloads(per_worker * concurrency, size)
        wrong = 0
        failed: list[str] = []

        async def worker(k: int) -> None:
            nonlocal wrong
            for body in bodies[k * per_worker : (k + 1) * per_worker]:
                try:
                    answer = await request(body)
                except Exception as exc:
                    failed.append(repr(exc))
                    continue
                if answer != body:
                    wrong += 1

        start = time.monotonic()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.monotonic() - start
        done = per_worker * concurrency
        return {
            "requests": done,
            "seconds": elapsed,
            "requests_per_s": done / elapsed,
            "wrong_replies": wrong,
            "failed": len(failed),
            "first_failure": failed[0] if failed else "",
        }

    # -- per system ---------------------------------------------------------------------------

    def request_function(self, type: str, timeout: float) -> Callable[[bytes], Awaitable[bytes]]:
        raise NotImplementedError

    async def unsubscribe(self) -> Reply:
        raise NotImplementedError


TRANSPORTS = ("ws", "http", "tcp")


def _gravpy_build() -> str:
    """``compiled`` if the hot modules were imported from mypyc extensions, else ``pure Python``."""
    import gravpy.bus

    return "compiled" if (gravpy.bus.__file__ or "").endswith(".so") else "pure Python"


class GravNode(Node):
    """A gravpy node on 127.0.0.1, port 0, with one transport: WebSocket (``ws``), ``http``, ``tcp``."""

    system = "gravpy"

    def __init__(self, transport: str = "ws") -> None:
        super().__init__()
        from gravpy import Grav

        if transport == "http":
            from transports.http import HttpTransport

            self.grav = Grav(transport=HttpTransport(host="127.0.0.1", port=0))
        elif transport == "tcp":
            from transports.tcp import TcpTransport

            self.grav = Grav(transport=TcpTransport(host="127.0.0.1", port=0))
        else:
            from transports.websocket import WebSocketTransport

            self.grav = Grav(transport=WebSocketTransport(host="127.0.0.1", port=0))
        self.transport = transport
        self.sub_pods: list[Any] = []
        self.responder: Any = None
        self.publisher: Any = None

    async def start(self) -> Reply:
        await self.grav.start()
        endpoint = self.grav.endpoints()[0]
        return {
            "endpoint": endpoint,
            "node": self.grav.node_uuid,
            "transport": self.transport,
            "build": _gravpy_build(),
        }

    async def stop(self) -> None:
        await self.grav.stop()

    async def cmd_connect(self, endpoint: str) -> Reply:
        info = await self.grav.connect_endpoint(endpoint)
        return {"peer": info.uuid, "state": info.state}

    async def cmd_await_interest(self, type: str, timeout: float = 10.0, peers: int = 1) -> Reply:
        """Until ``peers`` open peers say they want ``type`` (their advertised interests match)."""
        from gravpy import Pattern

        start = time.monotonic()
        async with asyncio.timeout(timeout):
            while True:
                wanting = [
                    peer.uuid
                    for peer in self.grav.peers()
                    if peer.state == "open"
                    and any(Pattern(p).matches(type) for p in peer.interests)
                ]
                if len(wanting) >= peers:
                    return {
                        "peer": wanting[0],
                        "peers": wanting,
                        "waited_s": time.monotonic() - start,
                    }
                await asyncio.sleep(0.005)

    async def cmd_subscribe(
        self,
        type: str,
        n: int,
        inbox_limit: int | None = None,
        work_us: float = 0.0,
        pods: int = 1,
    ) -> Reply:
        """``pods`` pods on this node, each counting the ``n`` messages of ``type`` it expects."""
        self.counters = [Counter(n) for _ in range(pods)]
        self.sub_pods = [
            self._counting_pod(type, counter, inbox_limit, work_us) for counter in self.counters
        ]
        return {"inbox_limit": self.sub_pods[0].inbox_limit, "pods": pods}

    def _counting_pod(
        self, type: str, counter: Counter, inbox_limit: int | None, work_us: float
    ) -> Any:
        on_data = counter.on_data
        pod = self.grav.connect(inbox_limit=inbox_limit)

        def on_message(msg: Any) -> None:
            on_data(msg.data)

        if work_us:  # a handler that also works for work_us per message (a slow consumer)
            fast, work_s = on_message, work_us / 1e6

            def on_message(msg: Any) -> None:
                _busy(work_s)
                fast(msg)

        pod.on_type(type, on_message)
        return pod

    async def unsubscribe(self) -> Reply:
        pods, self.sub_pods = self.sub_pods, []
        stats = [pod.statistics() for pod in pods]
        for pod in pods:
            pod.disconnect()
        return {
            "dropped_overflow": sum(s.dropped_overflow for s in stats),
            "dropped_failed": sum(s.dropped_failed for s in stats),
            "handler_failures": sum(s.failed for s in stats),
            "inbox_left": sum(s.inbox for s in stats),
        }

    async def cmd_publish(self, type: str, n: int, size: int) -> Reply:
        """Publish ``n`` messages with ``await pod.publish(msg)`` (backpressure)."""
        from gravpy import Message

        if self.publisher is None:
            self.publisher = self.grav.connect()
        bodies = payloads(n, size)
        publish, new = self.publisher.publish, Message.new
        dropped_before = sum(p.dropped for p in self.grav.peers())
        start = time.monotonic()
        for body in bodies:
            await publish(new(type, body))
        end = time.monotonic()
        # let the link queues empty, so that a drop on this side is counted before we report
        for _ in range(3000):  # at most 30 s
            if not any(p.queued for p in self.grav.peers()):
                break
            await asyncio.sleep(0.01)
        dropped = sum(p.dropped for p in self.grav.peers()) - dropped_before
        return {"published": n, "start": start, "end": end, "dropped_on_links": dropped}

    async def cmd_respond(self, type: str, reply_type: str) -> Reply:
        from gravpy import Message

        pod = self.responder = self.grav.connect()
        new = Message.new
        pod.on_type(type, lambda m: pod.reply_to(m, new(reply_type, m.data)))
        return {}

    async def cmd_unrespond(self) -> Reply:
        pod, self.responder = self.responder, None
        stats = pod.statistics()
        pod.disconnect()
        return {"handled": stats.handled, "dropped_overflow": stats.dropped_overflow}

    def request_function(self, type: str, timeout: float) -> Callable[[bytes], Awaitable[bytes]]:
        from gravpy import Message

        if self.publisher is None:
            self.publisher = self.grav.connect()
        send, new = self.publisher.send, Message.new

        async def request(body: bytes) -> bytes:
            reply = await send(new(type, body)).wait_until(timeout)
            data: bytes = reply.data
            return data

        return request

    async def cmd_stats(self) -> Reply:
        s = self.grav.statistics()
        return {
            "bus": {
                "sent": s.sent,
                "delivered": s.delivered,
                "dropped_overflow": s.dropped_overflow,
                "dropped_failed": s.dropped_failed,
                "dropped_closed": s.dropped_closed,
            },
            "peers": [
                {"uuid": p.uuid, "state": p.state, "in": p.messages_in, "out": p.messages_out}
                for p in self.grav.peers()
            ],
        }


class NatsNode(Node):
    """One nats-py connection (default options) to a local nats-server."""

    system = "nats"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.nc: Any = None
        self.subs: list[Any] = []
        self.responder: Any = None
        self.errors: list[str] = []

    async def start(self) -> Reply:
        import nats

        async def on_error(exc: Exception) -> None:
            self.errors.append(repr(exc))

        self.nc = await nats.connect(self.url, error_cb=on_error, allow_reconnect=False)
        return {"server": self.url}

    async def stop(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    async def cmd_connect(self, endpoint: str) -> Reply:
        return {}  # both clients are already connected to the server

    async def cmd_await_interest(self, type: str, timeout: float = 10.0, peers: int = 1) -> Reply:
        return {}  # each subscriber flushed before it answered: the server knows its SUBs

    async def cmd_subscribe(
        self,
        type: str,
        n: int,
        inbox_limit: int | None = None,
        work_us: float = 0.0,
        pods: int = 1,
    ) -> Reply:
        """``pods`` subscriptions to ``type`` on this connection, each counting its messages."""
        self.counters = [Counter(n) for _ in range(pods)]
        work_s = work_us / 1e6
        for counter in self.counters:
            self.subs.append(await self.nc.subscribe(type, cb=_nats_callback(counter, work_s)))
        await self.nc.flush()  # the server has every SUB when the PONG comes back
        return {"pods": pods}

    async def unsubscribe(self) -> Reply:
        subs, self.subs = self.subs, []
        pending = sum(getattr(sub, "pending_msgs", 0) for sub in subs)  # queued, not handled
        for sub in subs:
            await sub.unsubscribe()
        errors, self.errors = self.errors, []  # a slow consumer's drops are reported here
        return {"errors": errors, "inbox_left": pending}

    async def cmd_publish(self, type: str, n: int, size: int) -> Reply:
        bodies = payloads(n, size)
        publish = self.nc.publish
        start = time.monotonic()
        for body in bodies:
            await publish(type, body)
        end = time.monotonic()
        await self.nc.flush()
        return {"published": n, "start": start, "end": end, "flushed": time.monotonic()}

    async def cmd_respond(self, type: str, reply_type: str) -> Reply:
        publish = self.nc.publish

        async def on_request(msg: Any) -> None:
            await publish(msg.reply, msg.data)

        self.responder = await self.nc.subscribe(type, cb=on_request)
        await self.nc.flush()
        return {}

    async def cmd_unrespond(self) -> Reply:
        sub, self.responder = self.responder, None
        await sub.unsubscribe()
        errors, self.errors = self.errors, []
        return {"errors": errors}

    def request_function(self, type: str, timeout: float) -> Callable[[bytes], Awaitable[bytes]]:
        nc_request = self.nc.request

        async def request(body: bytes) -> bytes:
            reply = await nc_request(type, body, timeout=timeout)
            data: bytes = reply.data
            return data

        return request

    async def cmd_stats(self) -> Reply:
        return {"stats": dict(self.nc.stats), "errors": list(self.errors)}


def _nats_callback(counter: Counter, work_s: float) -> Callable[[Any], Awaitable[None]]:
    on_data = counter.on_data

    async def on_message(msg: Any) -> None:
        if work_s:
            _busy(work_s)
        on_data(msg.data)

    return on_message


async def serve(node: Node, out: Any) -> None:
    def emit(obj: Reply) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        hello = await node.start()
    except Exception as exc:
        emit({"event": "hello", "ok": False, "error": repr(exc)})
        raise
    loop_name = type(loop).__module__.partition(".")[0]  # "asyncio" or "uvloop"
    emit(
        {
            "event": "hello",
            "ok": True,
            "system": node.system,
            "pid": os.getpid(),
            "loop": loop_name,
            **hello,
        }
    )
    try:
        while line := await reader.readline():
            request = json.loads(line)
            name = request.pop("cmd")
            if name == "quit":
                emit({"ok": True})
                break
            handler = getattr(node, f"cmd_{name}", None)
            if handler is None:
                emit({"ok": False, "error": f"unknown command {name!r}"})
                continue
            try:
                result = await handler(**request)
            except Exception as exc:
                emit({"ok": False, "error": f"{name}: {exc!r}"})
            else:
                emit({"ok": True, **result})
    finally:
        await node.stop()


def main(argv: list[str]) -> int:
    # Keep fd 1 for the answers; send everything else printed to fd 1 (structlog's default) to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    gravpy_ok = argv[:1] == ["gravpy"] and (
        len(argv) == 1 or (len(argv) == 3 and argv[1] == "--transport" and argv[2] in TRANSPORTS)
    )
    if not gravpy_ok and not (argv[:1] == ["nats"] and len(argv) >= 2):
        print(
            "usage: mesh_node.py gravpy [--transport ws|http|tcp] | mesh_node.py nats URL",
            file=sys.stderr,
        )
        return 2
    node: Node = GravNode(*argv[2:3]) if gravpy_ok else NatsNode(argv[1])
    if os.environ.get("GRAVPY_BENCH_LOOP") == "uvloop":  # bench_transports.py --loop uvloop
        import uvloop

        uvloop.run(serve(node, out))
    else:
        asyncio.run(serve(node, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
