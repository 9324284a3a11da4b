"""Shutdown benchmark: how long gravd takes to exit after SIGTERM, next to a live or frozen peer.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/bench_shutdown.py                 # 5 trials, drain_timeout 2
    .venv/bin/python benchmarks/bench_shutdown.py --trials 9 --drain-timeout 1

Each trial starts gravd A and gravd B (B lists A as its peer) on 127.0.0.1 with ports 0 and waits
for both to log the link. In the *live* case A gets SIGTERM at once; in the *frozen* case B first
gets SIGSTOP, so A's WITHDRAW is never acknowledged and its close is never answered. The figure is
from sending SIGTERM to A's exit, on this process's monotonic clock. gravd promises to finish
within ``drain_timeout`` plus a small bound (closing a link waits at most 1 s for the remote).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import time

from gravpy.testing.gravd import running_gravd


async def trial(frozen: bool, drain_timeout: float) -> float:
    """Seconds from SIGTERM to gravd A's exit."""
    drain = ("--drain-timeout", str(drain_timeout))
    async with running_gravd(*drain) as a, running_gravd("--peer", a.endpoint, *drain) as b:
        await a.wait_peers(1)
        await b.wait_peers(1)
        if frozen:
            b.process.signal(signal.SIGSTOP)
        start = time.monotonic()
        result = await a.stop()
        elapsed = time.monotonic() - start
        if frozen:
            b.process.signal(signal.SIGCONT)
        assert result.code == 0, result.stderr
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--drain-timeout", type=float, default=2.0)
    args = parser.parse_args()
    print(f"drain_timeout = {args.drain_timeout} s, {args.trials} trials each")
    print(f"{'peer':8} {'median s':>9} {'max s':>7} {'max - drain_timeout':>20}")
    for frozen in (False, True):
        times = [await trial(frozen, args.drain_timeout) for _ in range(args.trials)]
        name = "frozen" if frozen else "live"
        worst = max(times)
        print(
            f"{name:8} {statistics.median(times):9.2f} {worst:7.2f} "
            f"{worst - args.drain_timeout:+20.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
