"""gravd's SQLite files in its data dir: opened, or set aside when unreadable and made anew.

A file that SQLite cannot read (corrupt, or not a database) is never a reason for gravd not to
start: it is renamed to ``<name>.corrupt-<unix time>`` (its ``-wal`` and ``-shm`` companions
removed), a warning says so (``store_unreadable``, with ``store``, ``path``, ``error`` and
``moved_to`` as fields), and an empty file takes its place. Anything else stops gravd, with the
caller's own error type saying why: a data dir that cannot hold a file at all, and a good file
that gravd cannot use as it is (another process holds it locked, gravd may not write it, an I/O
error), which moving aside would only lose.

A file that SQLite reads but that is not what gravd writes (another program's file, a schema of
another version, a value of the wrong type: ``check_columns``) counts as unreadable too: gravd
would otherwise stop on the first value it cannot take.

A file gravd makes is readable by its own user only (mode 0600, whatever the umask:
``gravpy._private_file.create_private``, which ``open_or_set_aside`` calls first, and the event
store itself), and so are its ``-wal`` and ``-shm`` (SQLite gives them the database's mode): the
replay buffer holds the data of every message gravd relayed, the event store its users' events,
and the data dir is usually readable by every local user. A file that exists keeps its mode.

A file is also stamped with whom it was written for (``Stamp``: gravd's mesh, and the node uuid
where that matters), in a one-row ``stamp`` table that ``write_stamp`` makes and fills in the
caller's opening transaction (``stamp_file`` for a store that keeps its connection to itself,
after it opened). Before opening, ``set_aside_foreign`` reads the stamp of the file found: one
written for another mesh or node is renamed to ``<name>.other-mesh-<unix time>`` (or
``.other-node-``, its ``-wal`` with it), and the caller logs why, so a data dir reused in another
mesh, or a file copied from another node, never shows that mesh's or node's data as its own. A
file that names no mesh or node (written before they were kept, or one that cannot be read:
opening decides) is taken as this one's.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gravpy._private_file import create_private
from gravpy.errors import GravError

__all__ = [
    "STAMP_COLUMNS",
    "Foreign",
    "Stamp",
    "check_columns",
    "move_aside",
    "open_or_set_aside",
    "reason",
    "set_aside_foreign",
    "stamp_file",
    "stamp_of",
    "unreadable",
    "write_stamp",
]

# one row: the mesh (and node) a file was written for; a NULL names none
_STAMP_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS stamp (id INTEGER PRIMARY KEY CHECK (id = 1), mesh TEXT, node TEXT)"
)
# what the stamp table holds, for the caller's ``check_columns``
STAMP_COLUMNS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "stamp": {"id": ("integer",), "mesh": ("text", "null"), "node": ("text", "null")},
}


@dataclass(frozen=True, slots=True)
class Stamp:
    """Whom a file in the data dir was written for: gravd's mesh and node uuid (None: not named;
    in what ``set_aside_foreign`` is given, not checked)."""

    mesh: str | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Foreign:
    """A file found written for another mesh or node: where it was moved, and why."""

    moved_to: Path
    reason: str


def open_or_set_aside(
    path: Path,
    connect: Callable[[Path], sqlite3.Connection],
    error: type[GravError],
    what: str,
    log: Any,
) -> tuple[sqlite3.Connection, Path | None]:
    """``(connection, where an unreadable file was moved or None)``; ``error`` if impossible.

    ``log`` is the caller's structured logger (``gravpy._log``)."""
    try:
        create_private(path)
        return connect(path), None
    except sqlite3.DatabaseError as exc:
        if not unreadable(exc):
            raise error(f"cannot use {path}: {reason(exc)}") from exc
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.warning(
            "store_unreadable", store=what, path=str(path), error=str(exc), moved_to=str(aside)
        )
        try:
            path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            create_private(path)
            return connect(path), aside
        except (OSError, sqlite3.Error) as again:
            raise error(f"cannot recreate {path}: {again}") from again
    except OSError as exc:
        raise error(f"cannot open {path}: {exc}") from exc


def check_columns(
    conn: sqlite3.Connection, tables: Mapping[str, Mapping[str, tuple[str, ...]]]
) -> None:
    """Raise a plain ``sqlite3.DatabaseError`` (so the file counts as unreadable) unless each
    table has exactly these columns, in order, each holding only values of its SQLite types
    (``typeof``: ``integer``, ``real``, ``text``, ``blob``)."""
    for table, columns in tables.items():
        names = [str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")]
        if names != list(columns):
            raise sqlite3.DatabaseError(f"table {table} has columns {names}, not {list(columns)}")
        for column, types in columns.items():
            allowed = ", ".join(f"'{t}'" for t in types)
            query = f"SELECT count(*) FROM {table} WHERE typeof({column}) NOT IN ({allowed})"
            wrong = conn.execute(query).fetchone()[0]
            if wrong:
                raise sqlite3.DatabaseError(f"{table}.{column}: {wrong} value(s) not {types}")


def unreadable(exc: sqlite3.DatabaseError) -> bool:
    """True if SQLite found the file corrupt or not a database (or the caller's own check, which
    raises a plain ``sqlite3.DatabaseError``, failed); False for a locked, read-only or unopenable
    file and for I/O errors."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return type(exc) is sqlite3.DatabaseError
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def reason(exc: sqlite3.Error) -> str:
    """SQLite's error, and what it likely means for a file in the data dir."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"{text} (another process holds it)"
    if "readonly" in text or "unable to open" in text:
        return f"{text} (gravd may not write it: check its owner and mode)"
    if "full" in text:
        return f"{text} (free some space on the data dir's disk)"
    return text


def set_aside_foreign(
    path: Path, mine: Stamp, *, legacy: str | None = None, timeout: float = 5.0
) -> Foreign | None:
    """Move ``path`` aside (``move_aside``) if its stamp names a mesh, or a node, other than
    ``mine`` (a field ``mine`` leaves None is not checked); None if it was left. ``legacy``: a
    one-row table of the file's own that kept its mesh before the stamp did. Blocking. Raises
    ``OSError`` if the file cannot be moved."""
    found = stamp_of(path, legacy=legacy, timeout=timeout)
    if _differ(mine.mesh, found.mesh):
        label, why = "other-mesh", f"written in mesh {found.mesh!r}, not this node's {mine.mesh!r}"
    elif _differ(mine.node, found.node):
        label, why = "other-node", f"written by node {found.node}, not by this one ({mine.node})"
    else:
        return None
    return Foreign(move_aside(path, label), why)


def _differ(mine: str | None, found: str | None) -> bool:
    """Both are named, and they differ."""
    return mine is not None and found is not None and mine != found


def stamp_of(path: Path, *, legacy: str | None = None, timeout: float = 5.0) -> Stamp:
    """What ``path``'s stamp says (see ``set_aside_foreign`` for ``legacy``); an empty ``Stamp``
    if there is no file, no stamp, or the file cannot be read (then opening it decides).
    Blocking."""
    if not path.exists():
        return Stamp()
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=timeout)) as conn:
            tables = {
                str(name)
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if "stamp" in tables:
                row = conn.execute("SELECT mesh, node FROM stamp WHERE id = 1").fetchone()
            elif legacy is not None and legacy in tables:
                row = conn.execute(f"SELECT mesh, NULL FROM {legacy} WHERE id = 1").fetchone()
            else:
                row = None
    except sqlite3.Error:
        return Stamp()
    if row is None:
        return Stamp()
    return Stamp(*(value if isinstance(value, str) else None for value in row))


def write_stamp(conn: sqlite3.Connection, stamp: Stamp) -> None:
    """Create the stamp table if needed and stamp the file with what ``stamp`` names (what it
    leaves None stays as it was), in the caller's transaction. A stamp table that is not
    gravd's raises a plain ``sqlite3.DatabaseError``, as ``check_columns`` does."""
    conn.execute(_STAMP_SCHEMA)
    check_columns(conn, STAMP_COLUMNS)  # (before writing: another program's table fails here)
    if stamp.mesh is None and stamp.node is None:
        return
    conn.execute(
        "INSERT INTO stamp (id, mesh, node) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "mesh = coalesce(excluded.mesh, mesh), node = coalesce(excluded.node, node)",
        (stamp.mesh, stamp.node),
    )


def stamp_file(path: Path, stamp: Stamp, *, timeout: float = 5.0) -> None:
    """``write_stamp`` in a transaction of its own, on a connection of its own, for a store that
    keeps its connection to itself. Blocking. Raises ``sqlite3.Error``."""
    with contextlib.closing(sqlite3.connect(path, timeout=timeout, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            write_stamp(conn, stamp)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def move_aside(path: Path, label: str) -> Path:
    """Move ``path`` and its WAL to ``<path>.<label>-<unix time>`` (``.<n>`` added if that is
    taken; its shared memory file is dropped); where it went. Blocking. Raises ``OSError``."""
    stem = f"{path.name}.{label}-{int(time.time())}"
    aside, taken = path.with_name(stem), 0
    while aside.exists():  # set aside twice in one second: never over the first
        taken += 1
        aside = path.with_name(f"{stem}.{taken}")
    with contextlib.suppress(FileNotFoundError):
        Path(f"{path}-wal").replace(f"{aside}-wal")
    path.replace(aside)
    Path(f"{path}-shm").unlink(missing_ok=True)
    return aside
