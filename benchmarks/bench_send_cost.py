"""What the sending node's guarantees cost per message, in CPU time.

A diagnosis, not a figure to compare with a peer: it answers "how fast could the sender be if it
skipped X?". Node B (one process) subscribes; for each variant a fresh sender process A links to
it over the TCP transport and publishes 128-byte messages with ``await pod.publish(msg)``, as
``bench_mesh.py`` does: a warm-up of a fifth of ``--messages``, then ``--messages`` timed. The
figure is A's process CPU time per timed message (``time.process_time``), the median of
``--runs`` rounds; each round runs every variant once, in turn, so that a slower minute of the
machine falls on all of them. B must have received every message of every variant, or the run
fails its check.

Variants (each in its own process; the switches are monkeypatches of this checkout's code, made
only here, never an option of gravpy):

- ``as shipped``: the code as it is;
- ``no send checks``: ``Traffic.check_sendable`` and the bus's header check do nothing (a message
  no link could carry, or the app may not publish, would go out);
- ``no replay buffer``: ``MsgBuffer.push`` keeps nothing (no replay for a pod that joins later);
- ``no seen-set``: the router's ``RecentMap.add`` remembers nothing (a message sent twice would
  reach every node twice, and a loop would not stop it);
- ``no tracing check``: ``Pod.send`` does not ask whether the message carries a trace context
  (one call);
- ``none of these``: all of the above.

The switches need the pure-Python build: on a compiled one (``GRAVPY_COMPILE=1``) the classes are
native and cannot be patched, and the script measures ``as shipped`` only.

    .venv/bin/python benchmarks/bench_send_cost.py
    .venv/bin/python benchmarks/bench_send_cost.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from _common import Machine, count, finish, options, say, sizes_for, table

TYPE = "bench.cost"
VARIANTS: dict[str, tuple[str, ...]] = {
    "as shipped": (),
    "no send checks": ("checks",),
    "no replay buffer": ("buffer",),
    "no seen-set": ("seen",),
    "no tracing check": ("tracing",),
    "none of these": ("checks", "buffer", "seen", "tracing"),
}


@dataclass(frozen=True)
class Sizes:
    messages: int = 100_000
    runs: int = 5


@dataclass
class Variant:
    name: str
    cpu_us: list[float]  # per round, CPU µs per message on the sender
    median_us: float
    sent: int


@dataclass
class Report:
    machine: Machine
    build: str
    sizes: Sizes
    variants: list[Variant] = field(default_factory=list)
    received: int = 0
    failures: list[str] = field(default_factory=list)


def _switch_off(switches: tuple[str, ...]) -> None:
    """Patch this process's gravpy so that it skips ``switches`` (see the module docstring)."""
    import gravpy.buffer
    import gravpy.bus
    import gravpy.mesh.traffic
    import gravpy.recent
    import gravpy.tracing

    def nothing(*_: object, **__: object) -> None:
        return None

    def always_new(*_: object) -> bool:
        return True

    patches: dict[str, tuple[object, str, object]] = {
        "checks": (gravpy.mesh.traffic.Traffic, "check_sendable", nothing),
        "buffer": (gravpy.buffer.MsgBuffer, "push", nothing),
        "seen": (gravpy.recent.RecentMap, "add", always_new),
        "tracing": (gravpy.tracing, "ENABLED", False),
    }
    for switch in switches:
        owner, name, value = patches[switch]
        if not hasattr(owner, name):  # renamed since: say so rather than measure nothing
            raise SystemExit(f"bench_send_cost: {owner!r} has no {name!r} to switch off")
        setattr(owner, name, value)
        if switch == "checks":
            gravpy.bus._check_headers = nothing


def _build() -> str:
    import gravpy.bus

    return "compiled" if (gravpy.bus.__file__ or "").endswith(".so") else "pure Python"


async def _receiver() -> None:
    """Node B: count ``TYPE``; print the endpoint, then the count for each line read."""
    from gravpy import Grav
    from transports.tcp import TcpTransport

    grav = Grav(transport=TcpTransport(host="127.0.0.1", port=0))
    received = 0

    def on_message(_: object) -> None:
        nonlocal received
        received += 1

    async with grav:
        grav.connect().on_type(TYPE, on_message)
        print(grav.endpoints()[0], flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(received, flush=True)


async def _sender(endpoint: str, switches: tuple[str, ...], messages: int) -> None:
    """Node A: link to B, publish a warm-up and ``messages``; print what it sent and the CPU µs
    per timed message."""
    _switch_off(switches)
    from gravpy import Grav, Message, Pattern
    from transports.tcp import TcpTransport

    grav = Grav(transport=TcpTransport(host="127.0.0.1", port=0))
    async with grav:
        await grav.connect_endpoint(endpoint)
        await _until(
            lambda: any(
                peer.state == "open" and any(Pattern(p).matches(TYPE) for p in peer.interests)
                for peer in grav.peers()
            )
        )
        publish, new = grav.connect().publish, Message.new
        body = bytes(128)
        for timed in (False, True):
            start = time.process_time()
            n = messages if timed else max(1, messages // 5)
            for _ in range(n):
                await publish(new(TYPE, body))
            cpu = time.process_time() - start
            await _until(lambda: not any(peer.queued for peer in grav.peers()))
        print(
            json.dumps({"sent": messages + max(1, messages // 5), "cpu_us": cpu / messages * 1e6})
        )


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` (what a node shows in ``peers()``, with no event to wait on)."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _ask_count(receiver: subprocess.Popen[str]) -> int:
    assert receiver.stdin is not None
    assert receiver.stdout is not None
    receiver.stdin.write("count\n")
    receiver.stdin.flush()
    return int(receiver.stdout.readline())


def measure(sizes: Sizes, build: str) -> Report:
    report = Report(Machine.here(), build, sizes)
    names = list(VARIANTS) if build == "pure Python" else ["as shipped"]
    cpu_us: dict[str, list[float]] = {name: [] for name in names}
    receiver = _spawn("--role", "receiver")
    try:
        assert receiver.stdout is not None
        endpoint = receiver.stdout.readline().strip()
        sent = 0
        for _ in range(sizes.runs):
            for name in names:
                sender = _spawn(
                    "--role", "sender", "--endpoint", endpoint,
                    "--switches", ",".join(VARIANTS[name]), "--messages", str(sizes.messages),
                )  # fmt: skip
                out, _ = sender.communicate(timeout=600)
                if sender.returncode != 0:
                    report.failures.append(f"{name}: the sender exited with {sender.returncode}")
                    return report
                result = json.loads(out.strip().splitlines()[-1])
                sent += int(result["sent"])
                cpu_us[name].append(float(result["cpu_us"]))
                got = _received(receiver, sent)
                if got != sent:
                    report.failures.append(f"{name}: B received {got:,} of the {sent:,} sent")
                    return report
        report.received = sent
    finally:
        if receiver.stdin is not None:
            receiver.stdin.close()
        try:
            receiver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait()
    report.variants = [
        Variant(name, runs, statistics.median(runs), sizes.messages * len(runs))
        for name, runs in cpu_us.items()
    ]
    return report


def _received(receiver: subprocess.Popen[str], expected: int, timeout: float = 30.0) -> int:
    """B's count once it reaches ``expected``, or whatever it is after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while (got := _ask_count(receiver)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def main() -> int:
    parser = options(__doc__, processes=False)
    parser.add_argument("--messages", type=int, help="timed messages per sender")
    parser.add_argument("--runs", type=int, help="rounds (each runs every variant once)")
    parser.add_argument("--role", choices=("receiver", "sender"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--switches", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = sizes_for(args, Sizes(), Sizes(messages=20_000, runs=1))
    if args.role == "receiver":
        asyncio.run(_receiver())
        return 0
    if args.role == "sender":
        switches = tuple(s for s in args.switches.split(",") if s)
        asyncio.run(_sender(args.endpoint, switches, sizes.messages))
        return 0
    build = _build()
    say(
        f"gravpy sending cost, {build}: {sizes.messages:,} x 128 B timed per sender, {sizes.runs} "
        "rounds of a fresh sender process per variant, one receiving node, TCP on 127.0.0.1",
    )
    report = measure(sizes, build)
    shipped = report.variants[0].median_us if report.variants else float("nan")
    rows = [
        [
            v.name,
            f"{v.median_us:.2f}",
            " ".join(f"{x:.2f}" for x in v.cpu_us),
            f"{v.median_us / shipped:.2f}",
            count(1e6 / v.median_us),
        ]
        for v in report.variants
    ]
    say(
        "",
        table(["variant", "CPU us/msg", "runs", "vs shipped", "msgs/s one CPU allows"], rows),
        "",
        "(the last column is 1 / CPU time: the sender's ceiling, were it alone on its CPU)",
    )
    if build != "pure Python":
        say("(compiled: the switches need the pure-Python build; only 'as shipped' measured)")
    return finish(report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
