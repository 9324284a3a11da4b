"""``replay.sqlite3``: the file gravd's replay buffer is kept in, and the transactions on it.

Theory of operation
-------------------
Everything here is blocking and runs on ``ReplayStore``'s one thread (``gravpy.daemon.
replay_store``), which decides what to write and when; this module knows how it is written.

A batch of the buffer's pushes is one row of ``replay_batch``: its id (rising), its message
count, and one msgpack array of ``[pushed at, message, origin number]`` entries, encoded once
(``append``; ``decode_batch`` reads it back, taking ``[pushed at, message]`` from files written
before numbers were kept as number 0, and None for a row that does not decode). The one row of
``replay_head`` says which batch is the oldest and how many of its first messages have left the
buffer. Each write is one transaction (``append``, ``trim``): rows added and deleted, the head
noted, all or nothing.

Opening (``open_file``) takes the write lock and writes once, so a read-only file, or one
another process holds for ``LOCK_TIMEOUT``, raises ``ReplayStoreError`` at start rather than
failing every write later. A file SQLite cannot read (``quick_check`` fails, not a database), or
whose tables hold what gravd does not write (``sqlite_file.check_columns``), is renamed aside
(``replay.sqlite3.corrupt-<time>``) and replaced by an empty one (``sqlite_file.
open_or_set_aside``). The file is stamped (``sqlite_file.Stamp``) with the mesh its messages
were relayed in and the node that numbered them; before opening, ``set_aside_if_foreign`` moves
aside a file of another mesh or node (files written before the stamp kept their mesh in
``replay_mesh``), and ``set_aside_unused`` the file an earlier run left, for a gravd whose buffer
is not durable.

The file uses WAL with ``synchronous=OFF`` (see ``_connect``): it survives a killed gravd, not
necessarily a power cut.

Why SQLite rather than an append-only file: a transaction makes each batch all-or-nothing (no torn
tail to repair after a crash), deleting the evicted head is one statement instead of a file
rewrite, corruption is detected by SQLite itself, and gravd already keeps its events that way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final

import msgspec

from gravpy import _log as logs
from gravpy.daemon.sqlite_file import (
    STAMP_COLUMNS,
    Foreign,
    Stamp,
    check_columns,
    move_aside,
    open_or_set_aside,
    set_aside_foreign,
    write_stamp,
)
from gravpy.errors import GravError, MessageError
from gravpy.message import Message

__all__ = [
    "LOCK_TIMEOUT",
    "PAGE_BYTES",
    "REPLAY_FILE",
    "Entry",
    "Head",
    "ReplayStoreError",
    "append",
    "decode_batch",
    "open_file",
    "read_rows",
    "set_aside_if_foreign",
    "set_aside_unused",
    "trim",
]

_log = logs.get_logger("gravpy.daemon.replay_store")  # (the store's: one logger for both)
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
PAGE_BYTES: Final = 16384
LOCK_TIMEOUT: Final = 5.0  # how long opening (and each write) waits while another process holds it

Entry = tuple[float, Message, int]
"""A buffer entry as the file keeps it: (pushed at, message, origin number)."""

Head = tuple[int, int]
"""(the oldest batch's id, how many of its first messages have left the buffer)."""


class ReplayStoreError(GravError):
    """The data directory cannot hold the replay buffer (not creatable or not writable), or
    another process holds the file."""


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


def set_aside_if_foreign(path: Path, mine: Stamp) -> Foreign | None:
    """``sqlite_file.set_aside_foreign`` for the replay file. Blocking. Raises
    ``ReplayStoreError``."""
    try:
        return set_aside_foreign(path, mine, legacy=_LEGACY_STAMP, timeout=LOCK_TIMEOUT)
    except OSError as exc:
        raise ReplayStoreError(f"cannot move {path} aside: {exc}") from exc


def decode_batch(wire: bytes) -> list[Entry] | None:
    """A batch row's entries, oldest first; None if the row does not decode (or holds a number
    out of range). An entry is ``[pushed at, message, origin number]`` (``[pushed at, message]``
    in files written before numbers were kept: number 0)."""
    try:
        return [_entry(*e) for e in msgspec.msgpack.decode(wire)]
    except (msgspec.DecodeError, MessageError, TypeError, ValueError, OverflowError):
        return None


def _entry(at: float, wire: object, seq: int = 0) -> Entry:
    return float(at), Message.from_wire(wire), int(seq)


def open_file(
    data_dir: Path, path: Path, lock_timeout: float, stamp: Stamp
) -> tuple[sqlite3.Connection, Path | None]:
    """A connection to ``path`` in ``data_dir`` (made if missing), checked, locked once and
    stamped, and where an unreadable file found there was moved (None: none was). Raises
    ``ReplayStoreError``."""
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


def read_rows(conn: sqlite3.Connection) -> tuple[list[tuple[int, bytes]], Head]:
    """Every batch row (id, wire), oldest first, and the head ((0, 0) if none is noted)."""
    rows = conn.execute("SELECT id, wire FROM replay_batch ORDER BY id").fetchall()
    head = conn.execute("SELECT batch, gone FROM replay_head WHERE id = 1").fetchone()
    return [(int(i), bytes(w)) for i, w in rows], (int(head[0]), int(head[1])) if head else (0, 0)


def trim(conn: sqlite3.Connection, deleted: list[int], head: Head) -> None:
    """One transaction: the rows the restored buffer did not take deleted, the head noted."""

    def change() -> None:
        conn.executemany("DELETE FROM replay_batch WHERE id = ?", [(i,) for i in deleted])

    _transaction(conn, change, head)


def append(
    conn: sqlite3.Connection,
    row: tuple[int, list[Entry]] | None,
    drop_upto: int,
    head: Head,
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


def _transaction(conn: sqlite3.Connection, change: Callable[[], object], head: Head) -> None:
    conn.execute("BEGIN")
    try:
        change()
        conn.execute("INSERT OR REPLACE INTO replay_head (id, batch, gone) VALUES (1, ?, ?)", head)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
