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

A file gravd makes is readable by its own user only (mode 0600, whatever the umask), and so are
its ``-wal`` and ``-shm`` (SQLite gives them the database's mode): the replay buffer holds the
data of every message gravd relayed, and the data dir is usually readable by every local user.
A file that exists keeps its mode.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gravpy.errors import GravError

__all__ = ["check_columns", "open_or_set_aside", "reason", "unreadable"]


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
        _create_private(path)
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
            _create_private(path)
            return connect(path), aside
        except (OSError, sqlite3.Error) as again:
            raise error(f"cannot recreate {path}: {again}") from again
    except OSError as exc:
        raise error(f"cannot open {path}: {exc}") from exc


def _create_private(path: Path) -> None:
    """Make ``path`` (empty, mode 0600) if it does not exist; an existing file is left as it is.
    (Opened read-only: a file gravd may not write is then refused by SQLite, saying so.)"""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


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
