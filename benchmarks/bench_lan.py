"""LAN benchmark: how long 5 gravd with only mDNS take to mesh, and a cut-off node to rejoin.

Run from the repository root, as root (network namespaces), with the project's virtualenv::

    .venv/bin/python benchmarks/bench_lan.py                      # 5 trials on the netns bed
    .venv/bin/python benchmarks/bench_lan.py --trials 9
    .venv/bin/python benchmarks/bench_lan.py --outage 30          # keep the node cut 30 s longer
    .venv/bin/python benchmarks/bench_lan.py --watch              # also count mDNS packets
    .venv/bin/python benchmarks/bench_lan.py --backend loopback   # 127.0.0.1, cut = SIGSTOP
    .venv/bin/python benchmarks/bench_lan.py --json out.json

Each trial builds a fresh bed (gravpy/testing/lan/bed.py: one namespace per host, joined by a bridge) and
starts 5 gravd at once, each with ``--discovery mdns`` on its host's address and nothing else
configured (the LAN tests' backends, gravpy/testing/lan/backends.py, without the attached apps). Then:

1. **start to mesh**: from launching the 5 processes until every node's log shows a link to each
   of the 4 others and their interests (``peer_connected``, ``peer_interests``). Split into
   *listening* (the slowest gravd to log ``listening``: interpreter and imports) and the rest
   (mDNS, dial, handshake).
2. **cut**: node 4's ``eth0`` goes down (loopback: its gravd gets SIGSTOP). *dead*: until the 4
   others have all logged ``link_closed`` with ``kind=LinkDead`` for it; *gone*: until they have
   all logged ``peer_disconnected``. Then, with ``--outage S``, the link stays down S seconds more.
3. **rejoin**: the link comes back up (SIGCONT); until the full mesh is back as in 1.

With ``--watch`` a sixth host runs gravpy/testing/lan/mdns_watch.py and the trial holds 3 s after the
rejoin; the table then counts the mDNS responses (announcements or answers) and the queries the
returning node sent from the moment its link came back until then, and every mDNS packet seen in
that window.

Times are read on this process's monotonic clock when the log line arrives (a few milliseconds
after gravd wrote it). The table shows each trial and the median. Nothing here is a pass/fail
check except that every phase completes within ``--guard`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial

from _common import options, table

from gravpy.testing.gravd import Process
from gravpy.testing.lan.backends import (
    NetnsBackend,
    open_backend,
    start_nodes,
    unavailable,
    wait_full_mesh,
)

NODES = 5
PATTERN = "gravd.info"  # every gravd's own pod listens to it, so its peers learn that interest


@dataclass
class Trial:
    listening: float
    mesh: float
    dead: float
    gone: float
    rejoin: float
    announced: int | None = None  # mDNS responses the returning node sent after its link came back
    queried: int | None = None  # mDNS queries it sent then
    mdns_all: int | None = None  # mDNS packets anyone sent then

    @property
    def discovery(self) -> float:
        return self.mesh - self.listening


async def run_trial(backend_name: str, outage: float, watch: bool) -> Trial:
    size = NODES + (1 if watch else 0)
    async with open_backend(backend_name, size) as backend:
        watcher = await start_watcher(backend) if watch else None
        start = time.monotonic()
        nodes = await start_nodes(backend, NODES, agent=False)
        listening = time.monotonic() - start
        await wait_full_mesh(nodes, PATTERN)
        mesh = time.monotonic() - start

        returning, others = nodes[-1], nodes[:-1]
        cut_at = time.monotonic()
        backend.cut(returning)
        for node in others:
            await node.wait_until(partial(node.declared_dead, returning.uuid))
        dead = time.monotonic() - cut_at
        for node in others:
            await node.wait_until(partial(node.unlinked, returning.uuid))
        gone = time.monotonic() - cut_at
        await asyncio.sleep(outage)  # the outage itself, as asked on the command line

        seen = len(watcher.stdout) if watcher is not None else 0
        restored_at = time.monotonic()
        backend.restore(returning)
        await wait_full_mesh(nodes, PATTERN)
        rejoin = time.monotonic() - restored_at
        trial = Trial(listening, mesh, dead, gone, rejoin)
        if watcher is not None and isinstance(backend, NetnsBackend):
            await asyncio.sleep(3.0)  # a window for announcements that come after the rejoin
            packets = [json.loads(line) for line in watcher.stdout[seen:]]
            address = backend.host(returning).address
            trial.mdns_all = len(packets)
            trial.announced = sum(p["src"] == address and p["response"] for p in packets)
            trial.queried = sum(p["src"] == address and not p["response"] for p in packets)
        return trial


async def start_watcher(backend: object) -> Process:
    assert isinstance(backend, NetnsBackend), "--watch needs the netns backend"
    host = backend.bed.hosts[NODES]
    argv = host.exec_argv([sys.executable, "-m", "gravpy.testing.lan.mdns_watch", host.address])
    watcher = await Process.start(argv)
    backend.stack.push_async_callback(watcher.close)
    await watcher.wait_line(lambda line: '"ready"' in line, stream="stdout")
    return watcher


COLUMNS = [
    ("listening", "s to 5 listening"),
    ("discovery", "s then to mesh"),
    ("mesh", "s start to mesh"),
    ("dead", "s cut to dead"),
    ("gone", "s cut to gone"),
    ("rejoin", "s up to re-mesh"),
]


def trials_table(trials: list[Trial], watch: bool) -> str:
    columns = COLUMNS + (
        [
            ("announced", "mDNS answers by it"),
            ("queried", "mDNS queries by it"),
            ("mdns_all", "mDNS pkts all"),
        ]
        if watch
        else []
    )
    head = ["trial", *(title for _, title in columns)]
    rows = [
        [str(i + 1), *(fmt(getattr(t, key)) for key, _ in columns)] for i, t in enumerate(trials)
    ]
    rows.append(
        ["median", *(fmt(statistics.median(getattr(t, key) for t in trials)) for key, _ in columns)]
    )
    return table(head, rows, indent="")


def fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.2f}"


async def main() -> int:
    parser = options(__doc__, quick=False)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--backend", choices=["netns", "loopback"], default="netns")
    parser.add_argument("--outage", type=float, default=0.0, help="extra seconds cut off")
    parser.add_argument("--watch", action="store_true", help="count mDNS packets (netns only)")
    parser.add_argument("--guard", type=float, default=180.0, help="seconds per trial at most")
    args = parser.parse_args()
    problem = unavailable(args.backend)
    if problem is not None:
        print(f"bench_lan: the {args.backend} backend cannot run here: {problem}", file=sys.stderr)
        return 2
    if args.watch and args.backend != "netns":
        parser.error("--watch needs --backend netns")
    trials: list[Trial] = []
    for i in range(args.trials):
        async with asyncio.timeout(args.guard + args.outage):
            trials.append(await run_trial(args.backend, args.outage, args.watch))
        print(f"trial {i + 1}/{args.trials}: {asdict(trials[-1])}", file=sys.stderr)
    print(
        f"bench_lan: {NODES} gravd, --discovery mdns only, backend {args.backend}, "
        f"outage +{args.outage:g} s, {args.trials} trials"
    )
    print(trials_table(trials, args.watch))
    if args.json:
        with open(args.json, "w") as out:  # noqa: ASYNC230 (one small write after the trials)
            json.dump([asdict(t) for t in trials], out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
