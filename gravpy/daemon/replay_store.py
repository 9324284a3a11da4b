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
messages would be resent as this node's own. A file SQLite cannot read
(``quick_check`` fails, not a database), or whose tables hold what gravd does not write (another
program's, another version's: ``sqlite_file.check_columns``), is renamed aside
(``replay.sqlite3.corrupt-<time>``), reported, and replaced by an empty one: a bad file never
stops gravd. A file gravd cannot write does: opening takes the write lock and writes once, so a
read-only file, or one another process holds for ``LOCK_TIMEOUT``, raises ``ReplayStoreError``
at start rather than failing every write later. A row that does not decode (or holds a number
out of range) is skipped, counted and deleted. A gravd whose buffer is not
durable (``--buffer-durable off``) moves the file an earlier run left aside
(``set_aside_unused``), so it never comes back as current at a later durable start.

The file uses WAL with ``synchronous=OFF`` (see ``_connect``): it survives a killed gravd, not
necessarily a power cut.

Why SQLite rather than an append-only file: a transaction makes each batch all-or-nothing (no torn
tail to repair after a crash), deleting the evicted head is one statement instead of a file
rewrite, corruption is detected by SQLite itself, and gravd already keeps its events that way.
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
from functools import partial
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from gravpy import _log as logs
from gravpy.buffer import MsgBuffer
from gravpy.daemon.sqlite_file import (
    STAMP_COLUMNS,
    Foreign,
    Stamp,
    check_columns,
    move_aside,
    open_or_set_aside,
    reason,
    set_aside_foreign,
    write_stamp,
)
from gravpy.errors import GravError, MessageError
from gravpy.message import Message

__all__ = [
    "REPLAY_FILE",
    "ReplayStore",
    "ReplayStoreError",
    "ReplayStoreStatistics",
    "set_aside_unused",
]

_log = logs.get_logger("gravpy.daemon.replay_store")
REPLAY_FILE: Final = "replay.sqlite3"
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS replay_batch "
    "(id INTEGER PRIMARY KEY, count INTEGER NOT NULL, wire BLOB NOT NULL)",
    # one row: the oldest batch, and how many of its messages (the first) have left the buffer
    "CREATE TABLE IF NOT EXISTS replay_head "
    "(id INTEGER PRIMARY KEY CHECK (id = 1), batch INTEGER NOT NULL, gone INTEGER NOT NULL)",
    # and the stamp (sqlite_file.write_stamp): the mesh the messages were relayed in, the node
    # that numbered them
)
# where files written before the stamp kept their mesh (read when a file has no stamp)
_LEGACY_STAMP: Final = "replay_mesh"
# what the tables hold (a file that holds anything else is set aside: sqlite_file.check_columns)
_COLUMNS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "replay_batch": {"id": ("integer",), "count": ("integer",), "wire": ("blob",)},
    "replay_head": {"id": ("integer",), "batch": ("integer",), "gone": ("integer",)},
    **STAMP_COLUMNS,
}
# 2: the stamp (1: replay_head; 0: files written before it; all read the same way)
_SCHEMA_VERSION: Final = 2
_ENCODER: Final = msgspec.msgpack.Encoder()
# the writer gathers pushes this long before each transaction: fewer, larger transactions under
# load (and at most this much of the newest buffer is missing from the file after a SIGKILL)
GATHER_SECONDS: Final = 0.1
PAGE_BYTES: Final = 16384
LOCK_TIMEOUT: Final = 5.0  # how long opening (and each write) waits while another process holds it
# at most this many messages a failed write carries into the next: each retry encodes them all
RETRY_LIMIT: Final = 65_536

_Entry = tuple[float, Message, int]  # (pushed at, message, origin number)
_Head = tuple[int, int]  # (oldest batch id, how many of its first messages left the buffer)
T = TypeVar("T")


class ReplayStoreError(GravError):
    """The data directory cannot hold the replay buffer (not creatable or not writable), or
    another process holds the file."""


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
    entries: list[_Entry] | None
    gone: int

    @property
    def live(self) -> list[_Entry]:
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
        self._head: _Head = (0, 0)  # as the file says
        self._pending: list[_Entry] = []  # taken from the buffer, not written (a write failed)
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
            _set_aside_foreign, path, Stamp(mesh, node if numbered else None)
        )
        stamp = Stamp(mesh, node)
        conn, aside = await asyncio.to_thread(_open_in, data_dir, path, lock_timeout, stamp)
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
        rows, head = await self._run(_read_rows, self._conn)
        saved = self._decode(rows, head)
        restored = _no_later([entry for row in saved for entry in row.live], time.time())
        self.highest_seq = max((seq for row in saved for _, _, seq in row.entries or ()), default=0)
        self.buffer.restore(restored if numbered else [(at, m, 0) for at, m, _ in restored])
        kept = min(len(self.buffer), len(restored))
        deleted = self._keep_newest(saved, len(restored) - kept)
        await self._run(_trim, self._conn, deleted, self._head)

    def _decode(self, rows: list[tuple[int, bytes]], head: _Head) -> list[_Saved]:
        """Every batch row, oldest first; one that does not decode is counted (and deleted).

        An entry is ``[pushed at, message, origin number]`` (``[pushed at, message]`` in files
        written before numbers were kept: number 0)."""
        out: list[_Saved] = []
        for row_id, wire in rows:
            self._next_id = row_id + 1
            try:
                entries: list[_Entry] | None = [_entry(*e) for e in msgspec.msgpack.decode(wire)]
            except (msgspec.DecodeError, MessageError, TypeError, ValueError, OverflowError):
                self.skipped_rows += 1
                entries = None
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
            await self._run(_append, self._conn, added, drop_upto, head)
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

    def _unwritten(self) -> list[_Entry]:
        """What a failed write carried over and what was pushed since, as far as the buffer
        still holds it: the newest pushes, in order (what left meanwhile need not be written)."""
        batch = self._pending + self.buffer.take_new()
        held = len(self.buffer)
        return batch[len(batch) - held :] if len(batch) > held else batch

    def _failed(self, batch: list[_Entry], exc: sqlite3.Error) -> None:
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

    def _evicted(self, new: _Row | None) -> tuple[int, _Head]:
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


def set_aside_unused(data_dir: Path) -> Path | None:
    """Move aside the file an earlier run left in ``data_dir`` (to ``replay.sqlite3.unused-
    <time>``, with its WAL), for a gravd whose buffer is not durable: a later durable start would
    restore it as its latest. Where it went, or None if there was none. Blocking file I/O: call
    it from a thread. Raises ``ReplayStoreError``."""
    path = data_dir / REPLAY_FILE
    if not path.exists():
        return None
    try:
        aside = move_aside(path, "unused")
    except OSError as exc:
        raise ReplayStoreError(f"cannot move {path} aside (unused): {exc}") from exc
    _log.warning(
        "replay_store_set_aside",
        path=str(path),
        moved_to=str(aside),
        reason="the buffer is not durable (buffer_durable off)",
    )
    return aside


def _set_aside_foreign(path: Path, mine: Stamp) -> Foreign | None:
    """``sqlite_file.set_aside_foreign`` for the replay file. Blocking. Raises
    ``ReplayStoreError``."""
    try:
        return set_aside_foreign(path, mine, legacy=_LEGACY_STAMP, timeout=LOCK_TIMEOUT)
    except OSError as exc:
        raise ReplayStoreError(f"cannot move {path} aside: {exc}") from exc


def _no_later(entries: list[_Entry], now: float) -> list[_Entry]:
    """``entries`` (oldest first) with each time made no later than ``now`` and than the time
    of the entry after it (pushed after it, so not before it), and a time that is not a number
    made that too.

    A time ahead of the clock (the clock was set back since it was written) would hold up the
    buffer's eviction by age of everything behind it until the clock caught up: the buffer
    evicts by age from its oldest end only, and stops at the first entry not old enough. So the
    fix is here, where entries come back, not in the buffer's push."""
    out: list[_Entry] = []
    latest = now
    for at, msg, seq in reversed(entries):
        if at < latest:  # (False for NaN: it takes the later entry's time)
            latest = at
        out.append((latest, msg, seq))
    out.reverse()
    return out


def _entry(at: float, wire: object, seq: int = 0) -> _Entry:
    return float(at), Message.from_wire(wire), int(seq)


def _open_in(
    data_dir: Path, path: Path, lock_timeout: float, stamp: Stamp
) -> tuple[sqlite3.Connection, Path | None]:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReplayStoreError(f"cannot make the data directory {data_dir}: {exc}") from exc
    connect = partial(_connect, lock_timeout=lock_timeout, stamp=stamp)
    return open_or_set_aside(path, connect, ReplayStoreError, "replay store", _log)


def _connect(
    path: Path, lock_timeout: float = LOCK_TIMEOUT, stamp: Stamp | None = None
) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=lock_timeout, check_same_thread=False, isolation_level=None
    )
    try:
        # a batch is one large blob: 16 KiB pages make its overflow chain (written to the WAL,
        # copied at checkpoints, walked when the row is deleted) a quarter as long as 4 KiB
        # pages, about half the cost per message (benchmarks/bench_flap.py). Takes effect on a
        # new file only; an older file keeps its page size.
        conn.execute(f"PRAGMA page_size={PAGE_BYTES}")
        conn.execute("PRAGMA journal_mode=WAL")
        # OFF: SQLite never waits for the disk. A killed or crashed gravd loses nothing written
        # (the OS has it); an OS crash may lose the newest rows or damage the file, which the
        # next start finds (quick_check) and sets aside. A replay buffer is worth that trade:
        # NORMAL made every checkpoint wait for the disk, nearly 3x the cost per message.
        conn.execute("PRAGMA synchronous=OFF")
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
        # the write lock and a write, once: a file another process holds (for lock_timeout) or
        # gravd may not write fails here and stops the start, rather than every write later
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            conn.execute(statement)
        # (a file of another mesh or node was moved aside before: ReplayStore.open)
        write_stamp(conn, stamp or Stamp())
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        conn.execute("COMMIT")
        check_columns(conn, _COLUMNS)
    except BaseException:
        conn.close()
        raise
    return conn


def _read_rows(conn: sqlite3.Connection) -> tuple[list[tuple[int, bytes]], _Head]:
    rows = conn.execute("SELECT id, wire FROM replay_batch ORDER BY id").fetchall()
    head = conn.execute("SELECT batch, gone FROM replay_head WHERE id = 1").fetchone()
    return [(int(i), bytes(w)) for i, w in rows], (int(head[0]), int(head[1])) if head else (0, 0)


def _trim(conn: sqlite3.Connection, deleted: list[int], head: _Head) -> None:
    """One transaction: the rows the restored buffer did not take deleted, the head noted."""

    def change() -> None:
        conn.executemany("DELETE FROM replay_batch WHERE id = ?", [(i,) for i in deleted])

    _transaction(conn, change, head)


def _append(
    conn: sqlite3.Connection,
    row: tuple[int, list[_Entry]] | None,
    drop_upto: int,
    head: _Head,
) -> None:
    """One transaction: the batch as one row (one msgpack array of [at, message, origin
    number]), the rows whose messages have all left the buffer deleted, the head noted."""

    def change() -> None:
        if row is not None:
            conn.execute(
                "INSERT INTO replay_batch (id, count, wire) VALUES (?, ?, ?)",
                (row[0], len(row[1]), _ENCODER.encode(row[1])),
            )
        if drop_upto:
            conn.execute("DELETE FROM replay_batch WHERE id <= ?", (drop_upto,))

    _transaction(conn, change, head)


def _transaction(conn: sqlite3.Connection, change: Callable[[], object], head: _Head) -> None:
    conn.execute("BEGIN")
    try:
        change()
        conn.execute("INSERT OR REPLACE INTO replay_head (id, batch, gone) VALUES (1, ?, ?)", head)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
