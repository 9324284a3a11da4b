"""gravd's durable replay buffer: the in-memory ``MsgBuffer`` mirrored to SQLite in the data dir.

Theory of operation
-------------------
The bus pushes into a ``DurableBuffer`` (a ``MsgBuffer`` bounded by count, data bytes and age) as
before; each push is also queued for the disk. One writer task wakes when something is queued,
takes everything queued so far and hands it to a single-thread executor, which appends the
messages to ``replay.sqlite3`` in one transaction and deletes the rows older than the newest
``len(buffer)``: memory and disk evict from the same end in the same order, so the file holds what
the buffer holds. Batches grow by themselves under load (one transaction per executor round
trip), so the cost per message stays small; what was queued but not yet written when gravd is
SIGKILLed (one round trip's worth) is lost, while a SIGTERM writes it all before exiting.

At start the file is read back (oldest first, within the bounds) before the node links to
anything, so a restarted gravd replays what it had. Restored messages carry no origin sequence
number (the restarted node has a new uuid; nobody will ask it for the old ones). A file SQLite
cannot read (``quick_check`` fails, not a database) is renamed aside (``replay.sqlite3.corrupt-
<time>``), reported, and replaced by an empty one: a bad file never stops gravd. A row that does
not decode as a message is skipped and counted.

Why SQLite rather than an append-only file: a transaction makes each batch all-or-nothing (no torn
tail to repair after a crash), deleting the evicted head is one statement instead of a file
rewrite, corruption is detected by SQLite itself, and gravd already keeps its events that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import msgspec

from gravpy.buffer import MsgBuffer
from gravpy.errors import GravError, MessageError
from gravpy.message import Message

__all__ = ["REPLAY_FILE", "DurableBuffer", "ReplayStore", "ReplayStoreError"]

_log = logging.getLogger("gravpy.daemon.replay_store")
REPLAY_FILE: Final = "replay.sqlite3"
_SCHEMA: Final = "CREATE TABLE IF NOT EXISTS replay (id INTEGER PRIMARY KEY, at REAL NOT NULL, wire BLOB NOT NULL)"
_ENCODER: Final = msgspec.msgpack.Encoder()


class ReplayStoreError(GravError):
    """The data directory cannot hold the replay buffer (not creatable or not writable)."""


class DurableBuffer(MsgBuffer):
    """A ``MsgBuffer`` whose pushes are also queued for the ``ReplayStore`` to write."""

    __slots__ = ("_queued", "_wake")

    def __init__(self, limit: int, *, max_bytes: int = 0, max_age: float = 0.0) -> None:
        super().__init__(limit, max_bytes=max_bytes, max_age=max_age)
        self._queued: list[tuple[float, Message]] = []
        self._wake = asyncio.Event()

    def push(self, msg: Message, origin: object = None, seq: int = 0, at: float = 0.0) -> None:
        stamp = at or time.time()
        super().push(msg, origin, seq, stamp)
        if self.limit:
            self._queued.append((stamp, msg))
            self._wake.set()

    def restore(self, rows: list[tuple[float, Message]]) -> None:
        """Put back what the file held, oldest first, without queueing it again."""
        for at, msg in rows:
            MsgBuffer.push(self, msg, None, 0, at)

    def take_queued(self) -> list[tuple[float, Message]]:
        queued, self._queued = self._queued, []
        self._wake.clear()
        return queued


class ReplayStore:
    """Keeps a ``DurableBuffer`` in ``replay.sqlite3``; see the module docstring."""

    def __init__(self, path: Path, conn: sqlite3.Connection, buffer: DurableBuffer) -> None:
        self.path = path
        self.buffer = buffer
        self.written = 0
        self.write_failures = 0
        self.skipped_rows = 0
        self.set_aside: Path | None = None
        self._conn = conn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gravd-replay")
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, data_dir: Path, buffer: DurableBuffer) -> ReplayStore:
        """Open (or set aside and recreate) the file, restore the buffer, start writing."""
        path = data_dir / REPLAY_FILE
        conn, aside = await asyncio.to_thread(_open_or_set_aside, data_dir, path)
        store = cls(path, conn, buffer)
        store.set_aside = aside
        rows = await asyncio.get_running_loop().run_in_executor(
            store._executor, _read_rows, conn, buffer.limit
        )
        store.buffer.restore(store._decode(rows))
        store._task = asyncio.get_running_loop().create_task(
            store._write_loop(), name="gravd-replay"
        )
        return store

    def _decode(self, rows: list[tuple[float, bytes]]) -> list[tuple[float, Message]]:
        out: list[tuple[float, Message]] = []
        for at, wire in rows:
            try:
                out.append((at, Message.from_wire(msgspec.msgpack.decode(wire))))
            except (msgspec.DecodeError, MessageError, TypeError):
                self.skipped_rows += 1
        return out

    async def _write_loop(self) -> None:
        while True:
            await self.buffer._wake.wait()
            await self._write_queued()

    async def _write_queued(self) -> None:
        batch = self.buffer.take_queued()
        if not batch:
            return
        keep = len(self.buffer)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, _append, self._conn, batch, keep)
            self.written += len(batch)
        except sqlite3.Error as exc:
            self.write_failures += 1
            _log.warning("replay store write failed (%d messages not kept): %s", len(batch), exc)

    async def close(self) -> None:
        """Write what is queued, then close the file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._write_queued()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)


def _open_or_set_aside(data_dir: Path, path: Path) -> tuple[sqlite3.Connection, Path | None]:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReplayStoreError(f"cannot make the data directory {data_dir}: {exc}") from exc
    try:
        return _connect(path), None
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        _log.warning("replay store %s is unreadable (%s); set aside as %s", path, exc, aside)
        try:
            path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return _connect(path), aside
        except (OSError, sqlite3.Error) as again:
            raise ReplayStoreError(f"cannot recreate {path}: {again}") from again


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
        conn.execute(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _read_rows(conn: sqlite3.Connection, limit: int) -> list[tuple[float, bytes]]:
    rows = conn.execute(
        "SELECT at, wire FROM replay ORDER BY id DESC LIMIT ?", (max(limit, 0),)
    ).fetchall()
    rows.reverse()
    return [(float(at), bytes(wire)) for at, wire in rows]


def _append(conn: sqlite3.Connection, batch: list[tuple[float, Message]], keep: int) -> None:
    encode = _ENCODER.encode
    conn.execute("BEGIN")
    try:
        conn.executemany(
            "INSERT INTO replay (at, wire) VALUES (?, ?)", [(at, encode(m)) for at, m in batch]
        )
        conn.execute("DELETE FROM replay WHERE id <= (SELECT MAX(id) FROM replay) - ?", (keep,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
