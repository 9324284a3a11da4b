"""Files gravpy makes that hold its users' data are readable by their own user only.

The event store's SQLite file (``gravpy.events.store``, whoever opens it: gravd or an app) and
gravd's other SQLite files in its data dir (``gravpy.daemon.sqlite_file``) hold users' events and
the data of relayed messages, and the directory they are in is often readable by every local user.
So such a file is made mode 0600, whatever the umask, before SQLite opens it: SQLite then gives
its ``-wal`` and ``-shm`` the database's mode. A file that exists keeps its mode (an operator may
have opened it to a backup group on purpose).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["create_private"]


def create_private(path: str | Path) -> None:
    """Make ``path`` (empty, mode 0600) if it does not exist; an existing file is left as it is.
    (Opened read-only: a file the caller may not write is then refused by SQLite, saying so.)
    Blocking. Raises ``OSError``."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
