"""gravd's durable replay buffer: the in-memory ``MsgBuffer`` mirrored to SQLite in the data dir.

Theory of operation
-------------------
The bus pushes into its ``MsgBuffer`` (bounded by count, data bytes and age) as before, at no
extra cost per push. One writer task wakes every ``GATHER_SECONDS``, takes from the
buffer what was pushed since its last turn (and is still held) and hands it to a single-thread
executor, which appends it to ``replay.sqlite3`` as one row (one msgpack array of ``[pushed at,
message, number]``, one encode) in one transaction. The same transaction deletes the rows whose
messages have all left the buffer, and notes in ``replay_head`` how many of the oldest remaining
row's messages have left it too: memory and disk evict from the same end, so the file holds what
the buffer held at the writer's last turn. Under load a transaction carries thousands of messages
and the cost per message stays small; what was pushed but not yet written when gravd is SIGKILLed
(up to ``GATHER_SECONDS`` plus one write) is missing from the file, while a SIGTERM writes it all
before exiting.

A transaction that fails (the disk is full, another process holds the file) is retried with the
next: its messages still held go into the next turn's row, up to ``RETRY_LIMIT`` of the newest;
older ones are given up on. Both are counted (``statistics()``: ``write_failures``,
``unwritten``), and ``replay_write_failed`` is logged when writes start failing,
``replay_write_recovered`` when they succeed again.

At start the file is read back (oldest first, without what its head says had left) into the
buffer, within the buffer's bounds, before the node links to anything, so a restarted gravd
replays what it had. Then the file is trimmed to what the buffer took: a start with a smaller
``--buffer-size`` (or bytes, or age) keeps only the newest that fit, and what it let go never
comes back at a later start. Each entry keeps its origin sequence number: a gravd that kept its
uuid (``gravpy.daemon.node_identity``) restores them, so a peer that missed them can still ask,
and continues numbering above the highest (``highest_seq``); a gravd with a new uuid restores them
unnumbered (nobody will ask the new uuid for the old numbers). Each entry's time comes back no
later than now (nor than the next entry's): an entry written before the clock was set back would
otherwise hold up the buffer's eviction by age behind it (``_no_later``).

The file is stamped (``sqlite_file.Stamp``) with the mesh its messages were relayed in and the
uuid of the node that wrote (and numbered) them. A file of another mesh is moved aside
(``replay.sqlite3.other-mesh-<time>``), and so is, for a gravd that kept its uuid, one another
node wrote (``.other-node-<time>``, a file copied between data dirs): restored numbered, its
messages would be resent as this node's own. A file SQLite cannot read, or whose tables hold
what gravd does not write, is renamed aside (``replay.sqlite3.corrupt-<time>``), reported, and
replaced by an empty one: a bad file never stops gravd. A file gravd cannot write does: a
read-only file, or one another process holds for ``LOCK_TIMEOUT``, raises ``ReplayStoreError``
at start rather than failing every write later. A row that does not decode (or holds a number
out of range) is skipped, counted and deleted. A gravd whose buffer is not durable
(``--buffer-durable off``) moves the file an earlier run left aside (``set_aside_unused``), so it
never comes back as current at a later durable start.

The file itself (its tables, a batch as one row, each transaction, the checks at open, why
SQLite) is ``gravpy.daemon.replay_file``'s; this module decides what goes in it, and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from gravpy import _log as logs
from gravpy.buffer import MsgBuffer
from gravpy.daemon.replay_file import (
    LOCK_TIMEOUT,
    PAGE_BYTES,
    REPLAY_FILE,
    Entry,
    Head,
    ReplayStoreError,
    append,
    decode_batch,
    open_file,
    read_rows,
    set_aside_if_foreign,
    set_aside_unused,
    trim,
)
from gravpy.daemon.sqlite_file import Stamp, reason

__all__ = [
    "LOCK_TIMEOUT",
    "PAGE_BYTES",
    "REPLAY_FILE",
    "ReplayStore",
    "ReplayStoreError",
    "ReplayStoreStatistics",
    "set_aside_unused",
]

_log = logs.get_logger("gravpy.daemon.replay_store")
# the writer gathers pushes this long before each transaction: fewer, larger transactions under
# load (and at most this much of the newest buffer is missing from the file after a SIGKILL)
GATHER_SECONDS: Final = 0.1
# at most this many messages a failed write carries into the next: each retry encodes them all
RETRY_LIMIT: Final = 65_536

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReplayStoreStatistics:
    """What the store did since it opened."""

    written: int  # messages written to the file
    write_failures: int  # write transactions that failed (their messages went into the next)
    unwritten: int  # messages never written though the buffer held them (past RETRY_LIMIT)
    skipped_rows: int  # rows of the file that did not decode at start


@dataclass(frozen=True, slots=True)
class _Row:
    """A batch row in the file: its id, and where its messages are in the buffer's pushes
    (``MsgBuffer.pushed`` counts them): ``first`` is the oldest one's."""

    id: int
    first: int
    count: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1


@dataclass(frozen=True, slots=True)
class _Saved:
    """A batch row read back at start: its entries (None: it did not decode), the first
    ``gone`` of which had left the buffer."""

    id: int
    entries: list[Entry] | None
    gone: int

    @property
    def live(self) -> list[Entry]:
        return self.entries[self.gone :] if self.entries is not None else []


class ReplayStore:
    """Keeps a ``MsgBuffer`` in ``replay.sqlite3``; see the module docstring."""

    def __init__(self, path: Path, conn: sqlite3.Connection, buffer: MsgBuffer) -> None:
        self.path = path
        self.buffer = buffer
        self.written = 0
        self.write_failures = 0
        self.unwritten = 0
        self.skipped_rows = 0
        self.retry_limit = RETRY_LIMIT
        self.set_aside: Path | None = None
        self.set_aside_why = ""  # why the file found at start was moved to ``set_aside``
        self.highest_seq = 0  # the highest origin number the file held at start
        self._conn = conn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gravd-replay")
        self._task: asyncio.Task[None] | None = None
        self._rows: deque[_Row] = deque()  # in the file, oldest first
        self._head: Head = (0, 0)  # as the file says
        self._pending: list[Entry] = []  # taken from the buffer, not written (a write failed)
        self._failing = False  # the last write failed
        self._next_id = 1

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        buffer: MsgBuffer,
        *,
        numbered: bool = False,
        mesh: str | None = None,
        node: str | None = None,
        lock_timeout: float = LOCK_TIMEOUT,
        retry_limit: int = RETRY_LIMIT,
    ) -> ReplayStore:
        """Open (or set aside and recreate) the file, restore the buffer, trim the file to what
        it took, start writing. Raises ``ReplayStoreError`` if the file cannot be written (or
        another process holds it for ``lock_timeout`` seconds).

        ``numbered``: the node kept its uuid, so restored messages keep their origin numbers
        (peers may ask for them again); otherwise they are restored unnumbered. ``mesh`` and
        ``node`` (the node's uuid) are kept in the file (``sqlite_file.Stamp``). A file written
        in another mesh is moved aside (``replay.sqlite3.other-mesh-<time>``, ``set_aside_why``
        says so), so its messages are never replayed to this mesh's apps; so is one written by
        another node when ``numbered`` (``.other-node-<time>``): its numbers are that node's,
        and this one would resend its messages as its own. (Unnumbered, a node takes any file:
        the default data dir's gravd has a new uuid at every start.) A file that names no mesh
        or node (written before they were kept) is taken as this one's.
        """
        path = data_dir / REPLAY_FILE
        foreign = await asyncio.to_thread(
            set_aside_if_foreign, path, Stamp(mesh, node if numbered else None)
        )
        stamp = Stamp(mesh, node)
        conn, aside = await asyncio.to_thread(open_file, data_dir, path, lock_timeout, stamp)
        store = cls(path, conn, buffer)
        if foreign is not None:
            store.set_aside, store.set_aside_why = foreign.moved_to, foreign.reason
        if aside is not None:
            store.set_aside = aside
            store.set_aside_why = "it cannot be read, or holds what gravd does not write"
        store.retry_limit = retry_limit
        try:
            await store._restore(numbered)
        except BaseException as exc:
            await store._close_file()
            if isinstance(exc, sqlite3.Error):
                raise ReplayStoreError(f"cannot use {path}: {reason(exc)}") from exc
            raise
        store._task = asyncio.get_running_loop().create_task(
            store._write_loop(), name="gravd-replay"
        )
        return store

    async def _restore(self, numbered: bool) -> None:
        """Put what the file holds into the buffer, then keep in the file only what it took."""
        rows, head = await self._run(read_rows, self._conn)
        saved = self._decode(rows, head)
        restored = _no_later([entry for row in saved for entry in row.live], time.time())
        self.highest_seq = max((seq for row in saved for _, _, seq in row.entries or ()), default=0)
        self.buffer.restore(restored if numbered else [(at, m, 0) for at, m, _ in restored])
        kept = min(len(self.buffer), len(restored))
        deleted = self._keep_newest(saved, len(restored) - kept)
        await self._run(trim, self._conn, deleted, self._head)

    def _decode(self, rows: list[tuple[int, bytes]], head: Head) -> list[_Saved]:
        """Every batch row, oldest first; one that does not decode is counted (and deleted).

        (``replay_file.decode_batch``)."""
        out: list[_Saved] = []
        for row_id, wire in rows:
            self._next_id = row_id + 1
            entries = decode_batch(wire)
            if entries is None:
                self.skipped_rows += 1
            count = len(entries or ())
            gone = count if row_id < head[0] else min(head[1], count) if row_id == head[0] else 0
            out.append(_Saved(row_id, entries, gone))
        return out

    def _keep_newest(self, saved: list[_Saved], drop: int) -> list[int]:
        """Note the rows that hold the newest messages restored (all but the ``drop`` oldest)
        as the file's rows and head; return the ids of the others, to delete."""
        deleted: list[int] = []
        first = self.buffer.pushed - sum(len(row.live) for row in saved) + drop
        for row in saved:
            live = len(row.live)
            if row.entries is None or (not self._rows and drop >= live):
                deleted.append(row.id)
                drop -= live
                continue
            if not self._rows:
                self._head = (row.id, row.gone + drop)
                first -= row.gone + drop
                drop = 0
            self._rows.append(_Row(row.id, first, len(row.entries)))
            first += len(row.entries)
        return deleted

    async def _write_loop(self) -> None:
        while True:
            await asyncio.sleep(GATHER_SECONDS)
            await self._write_queued()

    def statistics(self) -> ReplayStoreStatistics:
        """A snapshot of the store's counters."""
        return ReplayStoreStatistics(
            self.written, self.write_failures, self.unwritten, self.skipped_rows
        )

    async def _write_queued(self) -> None:
        """One transaction: what was pushed since the last written turn and is still held, as
        one row; the rows whose messages have all left the buffer deleted; the head noted."""
        batch = self._unwritten()
        pushed = self.buffer.pushed
        row = _Row(self._next_id, pushed - len(batch), len(batch)) if batch else None
        dropped, head = self._evicted(row)
        if row is None and not dropped and head == self._head:
            return
        self._next_id += 1
        drop_upto = self._rows[dropped - 1].id if dropped else 0
        try:
            added = (row.id, batch) if row is not None else None
            await self._run(append, self._conn, added, drop_upto, head)
        except sqlite3.Error as exc:
            self._failed(batch, exc)
            return
        self._pending = []
        for _ in range(dropped):
            self._rows.popleft()
        if row is not None:
            self._rows.append(row)
            self.written += row.count
        self._head = head
        if self._failing:
            self._failing = False
            _log.info("replay_write_recovered", failures=self.write_failures)

    def _unwritten(self) -> list[Entry]:
        """What a failed write carried over and what was pushed since, as far as the buffer
        still holds it: the newest pushes, in order (what left meanwhile need not be written)."""
        batch = self._pending + self.buffer.take_new()
        held = len(self.buffer)
        return batch[len(batch) - held :] if len(batch) > held else batch

    def _failed(self, batch: list[Entry], exc: sqlite3.Error) -> None:
        """Keep ``batch`` for the next turn, but only the newest ``retry_limit`` (the others
        are counted); say so when writes start failing."""
        self.write_failures += 1
        excess = len(batch) - self.retry_limit
        if excess > 0:
            self.unwritten += excess
            batch = batch[excess:]
        self._pending = batch
        if not self._failing:
            self._failing = True
            _log.warning(
                "replay_write_failed", messages=len(batch), error=str(exc), retried="next turn"
            )

    def _evicted(self, new: _Row | None) -> tuple[int, Head]:
        """How many of the oldest rows have left the buffer whole, and the head after them
        (and ``new``): the file and the buffer evict from the same end."""
        held_from = self.buffer.pushed - len(self.buffer)  # the oldest message held
        rows, dropped = self._rows, 0
        while dropped < len(rows) and rows[dropped].last < held_from:
            dropped += 1
        oldest = rows[dropped] if dropped < len(rows) else new
        if oldest is None:
            return dropped, (0, 0)
        return dropped, (oldest.id, max(0, held_from - oldest.first))

    async def close(self) -> None:
        """Write what is queued, then close the file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._write_queued()
        if self._pending:  # the last write failed too: these are not in the file
            self.unwritten += len(self._pending)
            _log.warning("replay_messages_unwritten", messages=len(self._pending))
            self._pending = []
        await self._close_file()

    async def _close_file(self) -> None:
        await self._run(self._conn.close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the store's one thread (the connection is only used there)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _no_later(entries: list[Entry], now: float) -> list[Entry]:
    """``entries`` (oldest first) with each time made no later than ``now`` and than the time
    of the entry after it (pushed after it, so not before it), and a time that is not a number
    made that too.

    A time ahead of the clock (the clock was set back since it was written) would hold up the
    buffer's eviction by age of everything behind it until the clock caught up: the buffer
    evicts by age from its oldest end only, and stops at the first entry not old enough. So the
    fix is here, where entries come back, not in the buffer's push."""
    out: list[Entry] = []
    latest = now
    for at, msg, seq in reversed(entries):
        if at < latest:  # (False for NaN: it takes the later entry's time)
            latest = at
        out.append((latest, msg, seq))
    out.reverse()
    return out
