"""gravd's SQLite files in its data dir: opened, or set aside when unreadable and made anew.

A file that SQLite cannot read (corrupt, or not a database) is never a reason for gravd not to
start: it is renamed to ``<name>.corrupt-<unix time>`` (its ``-wal`` and ``-shm`` companions
removed), a warning says so, and an empty file takes its place. Only a data dir that cannot hold a
file at all stops gravd, with the caller's own error type saying why.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from gravpy.errors import GravError

__all__ = ["open_or_set_aside"]


def open_or_set_aside(
    path: Path,
    connect: Callable[[Path], sqlite3.Connection],
    error: type[GravError],
    what: str,
    log: logging.Logger,
) -> tuple[sqlite3.Connection, Path | None]:
    """``(connection, where an unreadable file was moved or None)``; ``error`` if impossible."""
    try:
        return connect(path), None
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.warning("%s %s is unreadable (%s); set aside as %s", what, path, exc, aside)
        try:
            path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return connect(path), aside
        except (OSError, sqlite3.Error) as again:
            raise error(f"cannot recreate {path}: {again}") from again
    except OSError as exc:
        raise error(f"cannot open {path}: {exc}") from exc
