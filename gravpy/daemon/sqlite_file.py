"""gravd's SQLite files in its data dir: opened, or set aside when unreadable and made anew.

A file that SQLite cannot read (corrupt, or not a database) is never a reason for gravd not to
start: it is renamed to ``<name>.corrupt-<unix time>`` (its ``-wal`` and ``-shm`` companions
removed), a warning says so (``store_unreadable``, with ``store``, ``path``, ``error`` and
``moved_to`` as fields), and an empty file takes its place. Anything else stops gravd, with the
caller's own error type saying why: a data dir that cannot hold a file at all, and a good file
that gravd cannot use as it is (another process holds it locked, gravd may not write it, an I/O
error), which moving aside would only lose.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gravpy.errors import GravError

__all__ = ["open_or_set_aside", "reason", "unreadable"]


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
            return connect(path), aside
        except (OSError, sqlite3.Error) as again:
            raise error(f"cannot recreate {path}: {again}") from again
    except OSError as exc:
        raise error(f"cannot open {path}: {exc}") from exc


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
    return text
