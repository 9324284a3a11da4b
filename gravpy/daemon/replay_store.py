"""gravd's durable replay buffer: the in-memory ``MsgBuffer`` mirrored to SQLite in the data dir.

Theory of operation
-------------------
The bus pushes into its ``MsgBuffer`` (bounded by count, data bytes and age) as before, at no
extra cost per push. One writer task wakes every ``GATHER_SECONDS``, takes from the
buffer what was pushed since its last turn (and is still held) and hands it to a single-thread
executor, which appends it to ``replay.sqlite3`` as one row (one msgpack array of ``[pushed at,
message, number]``, one encode) in one transaction and deletes the rows whose messages have all
left the buffer: memory and disk
evict from the same end, so the file holds what the buffer holds (plus at most one row). Under
load a transaction carries thousands of messages and the cost per message stays small; what was
pushed but not yet written when gravd is SIGKILLed (up to ``GATHER_SECONDS`` plus one write) is
missing from the file, while a SIGTERM writes it all before exiting.

At start the file is read back (oldest first, within the bounds) before the node links to
anything, so a restarted gravd replays what it had. Each entry keeps its origin sequence number:
a gravd that kept its uuid (``gravpy.daemon.node_identity``) restores them, so a peer that missed
them can still ask, and continues numbering above the highest (``highest_seq``); a gravd with a
new uuid restores them unnumbered (nobody will ask the new uuid for the old numbers). A file SQLite
cannot read (``quick_check`` fails, not a database) is renamed aside (``replay.sqlite3.corrupt-
<time>``), reported, and replaced by an empty one: a bad file never stops gravd. A row that does
not decode is skipped and counted.

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
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import msgspec

from gravpy import _log as logs
from gravpy.buffer import MsgBuffer
from gravpy.daemon.sqlite_file import open_or_set_aside
from gravpy.errors import GravError, MessageError
from gravpy.message import Message

__all__ = ["REPLAY_FILE", "ReplayStore", "ReplayStoreError"]

_log = logs.get_logger("gravpy.daemon.replay_store")
REPLAY_FILE: Final = "replay.sqlite3"
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS replay_batch "
    "(id INTEGER PRIMARY KEY, count INTEGER NOT NULL, wire BLOB NOT NULL)"
)
_ENCODER: Final = msgspec.msgpack.Encoder()
# the writer gathers pushes this long before each transaction: fewer, larger transactions under
# load (and at most this much of the newest buffer is missing from the file after a SIGKILL)
GATHER_SECONDS: Final = 0.1
PAGE_BYTES: Final = 16384


class ReplayStoreError(GravError):
    """The data directory cannot hold the replay buffer (not creatable or not writable)."""


class ReplayStore:
    """Keeps a ``MsgBuffer`` in ``replay.sqlite3``; see the module docstring."""

    def __init__(self, path: Path, conn: sqlite3.Connection, buffer: MsgBuffer) -> None:
        self.path = path
        self.buffer = buffer
        self.written = 0
        self.write_failures = 0
        self.skipped_rows = 0
        self.set_aside: Path | None = None
        self.highest_seq = 0  # the highest origin number the file held at start
        self._conn = conn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gravd-replay")
        self._task: asyncio.Task[None] | None = None
        self._batches: deque[tuple[int, int]] = deque()  # (row id, messages) in the file
        self._next_id = 1

    @classmethod
    async def open(
        cls, data_dir: Path, buffer: MsgBuffer, *, numbered: bool = False
    ) -> ReplayStore:
        """Open (or set aside and recreate) the file, restore the buffer, start writing.

        ``numbered``: the node kept its uuid, so restored messages keep their origin numbers
        (peers may ask for them again); otherwise they are restored unnumbered.
        """
        path = data_dir / REPLAY_FILE
        conn, aside = await asyncio.to_thread(_open_in, data_dir, path)
        store = cls(path, conn, buffer)
        store.set_aside = aside
        rows = await asyncio.get_running_loop().run_in_executor(store._executor, _read_rows, conn)
        restored = store._decode(rows)
        store.highest_seq = max((seq for _, _, seq in restored), default=0)
        if not numbered:
            restored = [(at, msg, 0) for at, msg, _ in restored]
        store.buffer.restore(restored)
        store._task = asyncio.get_running_loop().create_task(
            store._write_loop(), name="gravd-replay"
        )
        return store

    def _decode(self, rows: list[tuple[int, int, bytes]]) -> list[tuple[float, Message, int]]:
        """The messages of every batch row, oldest first; a row that does not decode is skipped.

        An entry is ``[pushed at, message, origin number]`` (``[pushed at, message]`` in files
        written before numbers were kept: number 0)."""
        out: list[tuple[float, Message, int]] = []
        for row_id, count, wire in rows:
            try:
                entries = msgspec.msgpack.decode(wire)
                out.extend(_entry(*entry) for entry in entries)
            except (msgspec.DecodeError, MessageError, TypeError, ValueError):
                self.skipped_rows += 1
            self._batches.append((row_id, count))
            self._next_id = row_id + 1
        return out

    async def _write_loop(self) -> None:
        while True:
            await asyncio.sleep(GATHER_SECONDS)
            await self._write_queued()

    async def _write_queued(self) -> None:
        batch = self.buffer.take_new()
        if not batch:
            return
        row_id, self._next_id = self._next_id, self._next_id + 1
        self._batches.append((row_id, len(batch)))
        drop_upto = self._evicted_rows()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._executor, _append, self._conn, row_id, batch, drop_upto
            )
            self.written += len(batch)
        except sqlite3.Error as exc:
            self.write_failures += 1
            _log.warning("replay_write_failed", messages=len(batch), error=str(exc))

    def _evicted_rows(self) -> int:
        """The last row id whose messages have all left the buffer (0: none): the file and the
        buffer evict from the same end, so the oldest rows go first."""
        excess = sum(count for _, count in self._batches) - len(self.buffer)
        drop_upto = 0
        while self._batches and self._batches[0][1] <= excess:
            drop_upto, count = self._batches.popleft()
            excess -= count
        return drop_upto

    async def close(self) -> None:
        """Write what is queued, then close the file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._write_queued()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)


def _entry(at: float, wire: object, seq: int = 0) -> tuple[float, Message, int]:
    return float(at), Message.from_wire(wire), int(seq)


def _open_in(data_dir: Path, path: Path) -> tuple[sqlite3.Connection, Path | None]:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReplayStoreError(f"cannot make the data directory {data_dir}: {exc}") from exc
    return open_or_set_aside(path, _connect, ReplayStoreError, "replay store", _log)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
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
        conn.execute(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _read_rows(conn: sqlite3.Connection) -> list[tuple[int, int, bytes]]:
    rows = conn.execute("SELECT id, count, wire FROM replay_batch ORDER BY id").fetchall()
    return [(int(i), int(n), bytes(wire)) for i, n, wire in rows]


def _append(
    conn: sqlite3.Connection,
    row_id: int,
    batch: list[tuple[float, Message, int]],
    drop_upto: int,
) -> None:
    """One transaction: the batch as one row (one msgpack array of [at, message, origin
    number]), and the rows
    whose messages have all left the buffer deleted."""
    conn.execute("BEGIN")
    try:
        conn.execute(
            "INSERT INTO replay_batch (id, count, wire) VALUES (?, ?, ?)",
            (row_id, len(batch), _ENCODER.encode(batch)),
        )
        if drop_upto:
            conn.execute("DELETE FROM replay_batch WHERE id <= ?", (drop_upto,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
