"""gravd's resume state in the data dir: per-origin positions, its numbering, its attached apps.

Theory of operation
-------------------
A receiver remembers, per origin uuid, the highest sequence number it got (``Resumption.last``);
after a relink it asks the origin for what came after (``gravpy.mesh.resume``). This module keeps
that state in ``positions.sqlite3`` in the data dir, so a gravd that kept its uuid
(``gravpy.daemon.node_identity``) resumes across its own restart too:

- **positions**: one row per origin. Saved by a timer every ``SAVE_SECONDS`` (never per message:
  the hot path only updates the dict), one small transaction on a worker thread, and only when
  something changed. The timer saves the positions it read one tick *earlier*: after a SIGKILL the
  file is between one and two ticks behind what arrived, so what was still queued to an app when
  gravd died is asked for again (an app's seen-set drops what it already had) rather than lost
  silently. An origin first heard of in the last tick is saved as it is now (a tick earlier there
  was nothing to ask from). At stop, after the links drained, the exact positions are saved.
  An origin whose position has not moved for ``POSITION_TTL`` (a week) is no longer saved, so
  the uuids of peers that restarted as new nodes do not pile up.
  A gravd killed before its first save restarts as on a first start: it asks nothing.
- **origin number**: this node's own ``Hub.origin_seq``, saved each tick, and a *clean* flag, set
  at stop and cleared at start. At start the numbering continues from the highest number found
  (here or in ``replay.sqlite3``); after an unclean end, from ``RESTART_GAP`` above it, with the
  numbers jumped over passed to the hub as never given (``Hub.origin_skipped``). So one uuid
  never numbers backwards, and a number is never given to two messages.
- **leaves**: the apps attached at the last save, and the patterns each wanted. At start the hub's
  ``ResumeGate`` holds the resume requests until those apps are back (or ``LEAF_GRACE`` passed),
  and advertises their patterns to the peers meanwhile, so the origins resend what the apps want
  and what is published for them in the meantime still comes here.

First start (no file): no positions, nothing is asked. An unreadable file is renamed aside
(``positions.sqlite3.corrupt-<time>``), reported, and replaced (so is one whose tables hold what
gravd does not write: ``sqlite_file.check_columns``): gravd starts as on a first start,
except that a file with no numbering (new, or set aside) does not say the last run ended cleanly:
if ``replay.sqlite3`` shows this node numbered before, the numbering jumps as after a kill.
A position above the origin's current number (the origin lost its state) is settled by the
origin's answer (``gravpy.mesh.resume``, "Restarts").

A save that fails (the disk is full, an I/O error) is tried again at the next tick; it is logged
once (``positions_save_failed``, with SQLite's reason), then ``positions_save_recovered``.

The file uses WAL with ``synchronous=NORMAL``: a save is atomic, and a killed gravd keeps every
committed save; a power cut may lose the last few saves, which only makes the receiver ask from
further back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gravpy import _log as logs
from gravpy.daemon.sqlite_file import check_columns, open_or_set_aside, reason
from gravpy.errors import GravError
from gravpy.mesh import Hub

__all__ = [
    "LEAF_GRACE",
    "POSITIONS_FILE",
    "SAVE_SECONDS",
    "PositionStore",
    "PositionsError",
    "Saved",
    "open_positions",
]

_log = logs.get_logger("gravpy.daemon.positions")
POSITIONS_FILE: Final = "positions.sqlite3"
SAVE_SECONDS: Final = 0.5
LEAF_GRACE: Final = 5.0  # how long a restarted gravd waits for its apps before resuming
POSITION_TTL: Final = 7 * 86400.0  # an origin not heard from for this long is forgotten
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS position "
    "(origin TEXT PRIMARY KEY, seq INTEGER NOT NULL, heard_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leaf (uuid TEXT PRIMARY KEY, patterns TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS numbering "
    "(id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, clean INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS skipped (start INTEGER PRIMARY KEY, stop INTEGER NOT NULL)",
)
# what the tables hold (a file that holds anything else is set aside: sqlite_file.check_columns)
_COLUMNS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "position": {"origin": ("text",), "seq": ("integer",), "heard_at": ("real", "integer")},
    "leaf": {"uuid": ("text",), "patterns": ("text",)},
    "numbering": {"id": ("integer",), "seq": ("integer",), "clean": ("integer",)},
    "skipped": {"start": ("integer",), "stop": ("integer",)},
}
SKIPPED_KEPT: Final = 64  # jumps over unclean restarts remembered (the newest)


class PositionsError(GravError):
    """The data directory cannot hold the positions file."""


@dataclass(frozen=True)
class Saved:
    """What the file held at start."""

    positions: dict[str, int] = field(default_factory=dict)
    leaves: dict[str, tuple[str, ...]] = field(default_factory=dict)  # uuid: patterns it wanted
    heard_at: dict[str, float] = field(default_factory=dict)  # origin: when its position moved
    origin_seq: int = 0
    clean: bool = True  # the last gravd on this file stopped cleanly (or there was none)
    skipped: tuple[range, ...] = ()  # numbers never given: one jump per unclean restart
    numbered: bool = False  # the file held this node's numbering (False: new, or set aside)


@dataclass(frozen=True)
class _Snapshot:
    positions: dict[str, int]
    leaves: dict[str, tuple[str, ...]]
    origin_seq: int


class PositionStore:
    """Keeps a hub's resume state in ``positions.sqlite3``; see the module docstring."""

    def __init__(self, path: Path, conn: sqlite3.Connection, saved: Saved) -> None:
        self.path = path
        self.saved = saved
        self.set_aside: Path | None = None
        self.saves = 0
        self.save_failures = 0
        self._conn = conn
        self._task: asyncio.Task[None] | None = None
        self._written: _Snapshot | None = None
        self._failing = False  # the last save failed
        self._leaves = saved.leaves  # attached at the last tick before stopping
        self._heard_at = dict(saved.heard_at)  # origin -> when its position last moved

    @classmethod
    async def open(cls, data_dir: Path) -> PositionStore:
        """Open (or set aside and recreate) the file, read it, and mark this run unclean."""
        path = data_dir / POSITIONS_FILE
        conn, aside = await asyncio.to_thread(
            open_or_set_aside, path, _connect, PositionsError, "positions file", _log
        )
        saved = await asyncio.to_thread(_read, conn)
        store = cls(path, conn, saved)
        store.set_aside = aside
        return store

    async def restore(self, hub: Hub, replay_highest: int) -> None:
        """Put the saved state into ``hub`` before it links to anything, and mark this run
        unclean (until ``close``) with the number it continues from."""
        saved = self.saved
        traffic = hub.traffic
        traffic.resumption.restore(saved.positions)
        # a file that does not say how the last run ended (made anew, or set aside while the
        # replay file says this node numbered before): its last numbers may not be on disk
        clean = saved.clean and saved.numbered
        traffic.continue_numbering(max(saved.origin_seq, replay_highest), clean, saved.skipped)
        hub.resume_gate.expect(saved.leaves, LEAF_GRACE)
        await asyncio.to_thread(
            _mark_unclean, self._conn, traffic.origin_seq, traffic.origin_skipped
        )

    def start(self, hub: Hub) -> None:
        """Save ``hub``'s state every ``SAVE_SECONDS`` until ``close``."""
        self._task = asyncio.get_running_loop().create_task(self._save_loop(hub), name="positions")

    async def _save_loop(self, hub: Hub) -> None:
        previous = _snapshot(hub)
        while True:
            await asyncio.sleep(SAVE_SECONDS)
            now = _snapshot(hub)
            self._heard(previous, now)
            if not hub.stopping:
                self._leaves = now.leaves
            # positions one tick behind (see the module docstring); numbering and leaves as now
            behind = {**now.positions, **previous.positions}
            await self._save(_Snapshot(behind, now.leaves, now.origin_seq))
            previous = now

    def _heard(self, previous: _Snapshot, now: _Snapshot) -> None:
        """Note when each origin's position moved; forget those silent for ``POSITION_TTL``."""
        at = time.time()
        for origin, seq in now.positions.items():
            if previous.positions.get(origin) != seq or origin not in self._heard_at:
                self._heard_at[origin] = at
        for origin, heard in list(self._heard_at.items()):
            if heard < at - POSITION_TTL:
                del self._heard_at[origin]

    async def _save(self, snap: _Snapshot, *, clean: bool = False) -> None:
        if snap == self._written and not clean:
            return
        rows = [(o, seq, self._heard_at.get(o, time.time())) for o, seq in snap.positions.items()]
        rows = [row for row in rows if row[2] >= time.time() - POSITION_TTL]
        try:
            await asyncio.to_thread(_write, self._conn, snap, rows, clean)
        except sqlite3.Error as exc:
            self.save_failures += 1
            if not self._failing:  # once, until a save succeeds again
                self._failing = True
                _log.warning("positions_save_failed", error=str(exc), retried="next tick")
            return
        self._written = snap
        self.saves += 1
        if self._failing:
            self._failing = False
            _log.info("positions_save_recovered", failures=self.save_failures)

    async def close(self, hub: Hub | None) -> None:
        """Stop the timer, save the exact state (the links have drained) as clean, close.

        The leaves saved are those of the last tick before the node began to stop (they are
        gone by now, and will redial the restarted node)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if hub is not None:
            now = _snapshot(hub)
            await self._save(_Snapshot(now.positions, self._leaves, now.origin_seq), clean=True)
        await asyncio.to_thread(self._conn.close)


async def open_positions(hub: Hub, data_dir: Path, replay_highest: int, log: Any) -> PositionStore:
    """gravd's position store: opened, restored into ``hub`` (before it links), saving.
    Raises ``PositionsError`` if the file cannot be used (an unreadable one is set aside)."""
    try:
        store = await PositionStore.open(data_dir)
        await store.restore(hub, replay_highest)
    except sqlite3.Error as exc:
        raise PositionsError(f"cannot use {data_dir / POSITIONS_FILE}: {reason(exc)}") from exc
    if store.set_aside is not None:
        log.warning("positions_set_aside", path=str(store.path), moved_to=str(store.set_aside))
    saved = store.saved
    log.info(
        "positions_restored",
        origins=len(saved.positions),
        leaves=len(saved.leaves),
        origin_seq=hub.traffic.origin_seq,
        clean=saved.clean,
    )
    store.start(hub)
    return store


def _snapshot(hub: Hub) -> _Snapshot:
    leaves = {
        uuid: tuple(sorted(link.interests))
        for uuid, link in hub.peers.items()
        if link.is_leaf and link.is_open
    }
    return _Snapshot(dict(hub.traffic.resumption.last), leaves, hub.traffic.origin_seq)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
        for statement in _SCHEMA:
            conn.execute(statement)
        check_columns(conn, _COLUMNS)
    except BaseException:
        conn.close()
        raise
    return conn


def _read(conn: sqlite3.Connection) -> Saved:
    rows = conn.execute(
        "SELECT origin, seq, heard_at FROM position WHERE heard_at >= ?",
        (time.time() - POSITION_TTL,),
    ).fetchall()
    positions = {str(o): int(s) for o, s, _ in rows}
    heard_at = {str(o): float(h) for o, _, h in rows}
    leaves = {
        str(u): tuple(p for p in str(patterns).split("\n") if p)
        for u, patterns in conn.execute("SELECT uuid, patterns FROM leaf")
    }
    skipped = tuple(
        range(int(start), int(stop))
        for start, stop in conn.execute("SELECT start, stop FROM skipped ORDER BY start")
    )
    row = conn.execute("SELECT seq, clean FROM numbering WHERE id = 1").fetchone()
    if row is None:
        return Saved(positions, leaves, heard_at, skipped=skipped)
    return Saved(positions, leaves, heard_at, int(row[0]), bool(row[1]), skipped, numbered=True)


def _mark_unclean(
    conn: sqlite3.Connection, origin_seq: int, skipped: tuple[range, ...] = ()
) -> None:
    """Mark this run unclean (until a clean close), and keep the newest ``SKIPPED_KEPT`` jumps;
    one transaction."""
    conn.execute("BEGIN")
    try:
        conn.execute(
            "INSERT OR REPLACE INTO numbering (id, seq, clean) VALUES (1, ?, 0)", (origin_seq,)
        )
        conn.execute("DELETE FROM skipped")
        conn.executemany(
            "INSERT INTO skipped (start, stop) VALUES (?, ?)",
            [(r.start, r.stop) for r in skipped[-SKIPPED_KEPT:]],
        )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _write(
    conn: sqlite3.Connection,
    snap: _Snapshot,
    positions: list[tuple[str, int, float]],
    clean: bool,
) -> None:
    """One transaction: every position (origin, number, heard at), the leaves, the numbering."""
    conn.execute("BEGIN")
    try:
        conn.execute("DELETE FROM position")
        conn.executemany("INSERT INTO position VALUES (?, ?, ?)", positions)
        conn.execute("DELETE FROM leaf")
        conn.executemany(
            "INSERT INTO leaf VALUES (?, ?)", ((u, "\n".join(p)) for u, p in snap.leaves.items())
        )
        conn.execute(
            "INSERT OR REPLACE INTO numbering (id, seq, clean) VALUES (1, ?, ?)",
            (snap.origin_seq, int(clean)),
        )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """End a failed transaction, if SQLite has not already: on a full disk or an I/O error it
    rolls back by itself, and a second ROLLBACK would hide that error behind its own."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
