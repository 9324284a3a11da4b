"""Benchmarks of structured events: persisting, a filtered query over 1,000,000, broadcast fan-out.

Run from the repository root::

    .venv/bin/python benchmarks/bench_events.py              # full run (about two minutes)
    .venv/bin/python benchmarks/bench_events.py --quick      # small sizes, a smoke test
    .venv/bin/python benchmarks/bench_events.py --db /tmp/ev.sqlite3   # keep (and reuse) the 1M file
    .venv/bin/python benchmarks/bench_events.py --dir /dev/shm   # persist to memory, not the disk

- persist: ``await store.persist(ev)`` into a SQLite file (WAL) by one writer (one event per
  transaction), by 16 concurrent writers (they share transactions: group commit), and
  ``persist_many`` in batches of 500; target >= 5,000 events/s.
- query: 1,000,000 stored events (100 users, 8 severities, 30 days); ``query(user=U,
  severity=error, page=3, page_size=50)`` with its total, median and p95 of 50 users; target < 50 ms.
- broadcast: 100 subscribers of one user on one node, each reading in its own task; events per
  second delivered to subscribers (and published); target >= 20,000 events/s delivered.

Every figure is checked: the query page is compared with what the filter must give, each subscriber
must receive every event in order with no drop. A failed check exits 1; a missed target does not.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from gravpy import Grav
from gravpy.events import Event, EventBroadcaster, EventStatus, EventStore, Severity, Subscription

PERSIST_TARGET = 5_000
WRITERS = 16
QUERY_TARGET_MS = 50.0
BROADCAST_TARGET = 20_000
USERS = [str(uuid.UUID(int=i + 1)) for i in range(100)]
DAY = 86_400.0
failures: list[str] = []


def built(user: str, severity: Severity, created_at: float, n: int) -> Event:
    """An event made as the builder would (checked), at ``created_at``."""
    builder = Event.builder().from_user(user).with_category("connection").with_action("ping")
    builder.with_severity(severity).with_description(f"ping {n}")
    builder.with_metadata({"err": "timeout", "n": n} if severity.is_error else {"n": n})
    event = builder.build()
    return Event(**{**_fields(event), "created_at": created_at})


def _fields(event: Event) -> dict[str, object]:
    return {f: getattr(event, f) for f in Event.__dataclass_fields__}


def bulk(n: int, start: float) -> list[Event]:
    """``n`` events quickly (trusted construction; the store does not re-check)."""
    rng = random.Random(n)
    severities = list(Severity)
    return [
        Event(
            id=str(uuid.uuid4()),
            operation_id=str(uuid.uuid4()),
            acted_upon=None,
            user_id=rng.choice(USERS),
            system_id=None,
            category="connection",
            action="ping",
            severity=rng.choice(severities),
            description=f"ping {i}",
            metadata_json='{"err":"timeout"}',
            status=EventStatus.UNREAD,
            created_at=start + rng.random() * 30 * DAY,
        )
        for i in range(n)
    ]


async def bench_persist(path: Path, n: int) -> None:
    events = [built(USERS[i % 100], Severity.SUCCESS, time.time(), i) for i in range(2 * n)]
    async with await EventStore.open(path) as store:
        began = time.perf_counter()
        for ev in events[:n]:
            await store.persist(ev)
        one = n / (time.perf_counter() - began)
        began = time.perf_counter()
        for i in range(n, 2 * n, 500):
            await store.persist_many(events[i : i + 500])
        many = n / (time.perf_counter() - began)
        extra = [built(USERS[i % 100], Severity.SUCCESS, time.time(), i) for i in range(n)]
        began = time.perf_counter()
        await asyncio.gather(*(_persist_all(store, extra[w::WRITERS]) for w in range(WRITERS)))
        shared = n / (time.perf_counter() - began)
        if await store.count() != 3 * n:
            failures.append("persist: the store does not hold every event")
    for name, rate in (
        ("persist, one writer", one),
        (f"persist, {WRITERS} writers", shared),
    ):
        mark = "ok" if rate >= PERSIST_TARGET else "BELOW TARGET"
        print(f"{name:<22}{rate:>10,.0f} events/s   target {PERSIST_TARGET:,}  {mark}")
    print(f"{'persist_many (500)':<22}{many:>10,.0f} events/s")


async def _persist_all(store: EventStore, events: list[Event]) -> None:
    for ev in events:
        await store.persist(ev)


async def bench_query(path: Path, n: int) -> None:
    async with await EventStore.open(path) as store:
        have = await store.count()
        if have < n:
            print(f"(storing {n - have:,} events for the query benchmark...)", flush=True)
            for i in range(have, n, 20_000):
                await store.persist_many(bulk(min(20_000, n - i), 1.7e9))
        times: list[float] = []
        for user in USERS[:50]:
            began = time.perf_counter()
            page = await store.query(user=user, severity="error", page=3, page_size=50)
            times.append((time.perf_counter() - began) * 1000)
            await _check_page(store, user, page.total, [e.id for e in page.events])
    med, p95 = statistics.median(times), sorted(times)[int(len(times) * 0.95)]
    mark = "ok" if med < QUERY_TARGET_MS else "BELOW TARGET"
    print(
        f"query of {n:,} (user+severity+page 3, with total)  median {med:.2f} ms  p95 {p95:.2f} ms"
        f"   target < {QUERY_TARGET_MS:.0f} ms  {mark}"
    )


async def _check_page(store: EventStore, user: str, total: int, ids: list[str]) -> None:
    """The page must be items 101-150 of the user's error events, newest first."""
    every = await store.query(user=user, page_size=1000, order="newest")
    pages = [every]
    while len(pages) * 1000 < every.total:
        pages.append(await store.query(user=user, page_size=1000, page=len(pages) + 1))
    errors = [e.id for p in pages for e in p.events if e.severity is Severity.ERROR]
    if total != len(errors) or ids != errors[100:150]:
        failures.append(f"query: page 3 for user {user} differs from the reference")


async def bench_broadcast(events: int, subscribers: int) -> None:
    user = USERS[0]
    async with Grav() as grav:
        broadcaster = EventBroadcaster(grav, queue_limit=events)
        subs = [broadcaster.subscribe(user) for _ in range(subscribers)]
        sent = [built(user, Severity.SUCCESS, time.time(), i) for i in range(events)]
        readers = [asyncio.ensure_future(_read(sub, events)) for sub in subs]
        began = time.perf_counter()
        for ev in sent:
            await broadcaster.publish(user, ev)
        got = await asyncio.gather(*readers)
        elapsed = time.perf_counter() - began
        ids = [e.id for e in sent]
        if any(g != ids for g in got) or broadcaster.statistics().dropped:
            failures.append("broadcast: a subscriber missed, reordered or dropped events")
        broadcaster.close()
    delivered = events * subscribers / elapsed
    mark = "ok" if delivered >= BROADCAST_TARGET else "BELOW TARGET"
    print(
        f"broadcast to {subscribers} subscribers  {delivered:>10,.0f} events/s delivered  "
        f"({events / elapsed:,.0f} published/s)   target {BROADCAST_TARGET:,}  {mark}"
    )


async def _read(sub: Subscription, n: int) -> list[str]:
    got: list[str] = []
    async for ev in sub:
        got.append(ev.id)
        if len(got) == n:
            break
    return got


async def main(args: argparse.Namespace) -> int:
    quick = args.quick
    with tempfile.TemporaryDirectory(prefix="bench-events-", dir=args.dir) as tmp:
        await bench_persist(Path(tmp) / "persist.sqlite3", 2_000 if quick else 20_000)
        db = Path(args.db) if args.db else Path(tmp) / "query.sqlite3"
        await bench_query(db, 20_000 if quick else 1_000_000)
    await bench_broadcast(500 if quick else 2_000, 100)
    if failures:
        print("CORRECTNESS FAILURES:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--db", help="a file to keep the 1M-event store in (reused if present)")
    parser.add_argument("--dir", help="where to make the temporary files (default: the system's)")
    sys.exit(asyncio.run(main(parser.parse_args())))
