"""gravd's node uuid, kept in the data dir so that a restarted gravd is the same node to its peers.

Theory of operation
-------------------
A peer that missed messages asks their origin for them by the origin's uuid and sequence number
(``gravpy.mesh.resume``). A gravd that starts with a new uuid is a stranger: nobody asks it for
anything, and what it numbered before the restart can no longer be asked for. So gravd keeps its
uuid in ``node.uuid`` in the data dir and reads it back at start, when the data dir was given
(``--data-dir``, ``GRAVD_DATA_DIR`` or the TOML file, any path but the default one). The default
one (``~/.local/state/gravd``) is where every gravd a user runs without one looks, and two nodes
claiming one uuid would refuse each other's links as duplicates: without a data dir of its own,
gravd's uuid stays random per start. Its numbering continues across restarts with the uuid
(``gravpy.daemon.positions``), so one uuid never numbers backwards.

gravd has no setting that names a uuid; ``Grav(node_uuid=...)`` is the library's way.

The file holds the uuid as one line of text. It is written atomically: a temporary file in the
same directory (mode 0600), flushed to disk, renamed over ``node.uuid``, then the directory itself
flushed. A file that does not hold a uuid is renamed aside (``node.uuid.corrupt-<time>``,
``NodeIdentity.set_aside``, which gravd logs as ``node_uuid_set_aside``) and a new uuid is
written: a bad file never stops gravd (a data dir where it cannot be moved aside does).

While gravd runs it holds an exclusive lock (``flock``) on ``node.lock`` in a data dir it was
given, so a second gravd on the same data dir fails at start with a clear error rather than
claiming the same uuid and writing into the same files. The lock ends with the process, however it
ends (SIGKILL included).

The default data dir is locked too, by the first gravd that starts on it: the replay store and the
event store are one process's files (two writers would interleave their batches, and a restart
would replay what another node's pods sent). A second gravd started without a data dir of its own
does not fail: it keeps nothing on disk (``files`` is False; ``gravpy.daemon.main`` runs it with
its replay buffer and events in memory, and says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gravpy.errors import GravError

__all__ = [
    "LOCK_FILE",
    "UUID_FILE",
    "DataDirInUse",
    "NodeIdentity",
    "NodeIdentityError",
    "kept_uuid",
    "open_identity",
]

UUID_FILE: Final = "node.uuid"
LOCK_FILE: Final = "node.lock"


class NodeIdentityError(GravError):
    """The data dir is in use by another gravd, or cannot hold the node's uuid."""


class DataDirInUse(NodeIdentityError):
    """Another gravd holds the data dir's lock."""


@dataclass
class NodeIdentity:
    """The node's uuid, whether it was kept in the data dir, and the data dir's lock."""

    uuid: str
    kept: bool  # read from or written to node.uuid (False: random for this start)
    restored: bool = False  # read back from an earlier start
    set_aside: Path | None = None  # where an unreadable node.uuid was moved
    lock_fd: int | None = None
    files: bool = True  # False: another gravd holds the default data dir, keep nothing there

    @classmethod
    def open(cls, data_dir: Path, *, explicit: bool) -> NodeIdentity:
        """Lock ``data_dir`` and read (or make) the uuid kept in it, if it was given (else a
        random uuid; a default ``data_dir`` another gravd holds gives ``files`` False).
        Blocking file I/O: call it from a thread. Raises ``NodeIdentityError``."""
        if not explicit:
            try:
                fd = _lock(data_dir)
            except DataDirInUse:
                return cls(str(uuidlib.uuid4()), kept=False, files=False)
            return cls(str(uuidlib.uuid4()), kept=False, lock_fd=fd)
        fd = _lock(data_dir)
        try:
            uuid, restored, aside = kept_uuid(data_dir)
        except BaseException:
            os.close(fd)
            raise
        return cls(uuid, kept=True, restored=restored, set_aside=aside, lock_fd=fd)

    def close(self) -> None:
        """Let the data dir go (the process's end does it too)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


async def open_identity(data_dir: Path, default: Path) -> NodeIdentity:
    """The identity gravd runs with: kept in ``data_dir`` unless it is the ``default`` one."""
    return await asyncio.to_thread(NodeIdentity.open, data_dir, explicit=data_dir != default)


def _lock(data_dir: Path) -> int:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise NodeIdentityError(f"cannot use the data directory {data_dir}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise DataDirInUse(
            f"the data directory {data_dir} is in use by another gravd ({LOCK_FILE} is locked); "
            "give each gravd its own --data-dir"
        ) from exc
    return fd


def kept_uuid(data_dir: Path) -> tuple[str, bool, Path | None]:
    """``(uuid, restored, set aside)``: the uuid in ``node.uuid``, or a new one written there."""
    path = data_dir / UUID_FILE
    aside: Path | None = None
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as exc:
        text = f"unreadable: {exc}"
    if text is not None:
        try:
            return str(uuidlib.UUID(text)), True, None
        except ValueError:
            aside = path.with_name(f"{UUID_FILE}.corrupt-{int(time.time())}")
            try:
                path.rename(aside)
            except OSError as exc:
                raise NodeIdentityError(f"cannot move {path} aside: {exc}") from exc
    uuid = str(uuidlib.uuid4())
    _write_atomically(path, uuid + "\n")
    return uuid, False, aside


def _write_atomically(path: Path, text: str) -> None:
    """``text`` in ``path`` (mode 0600), all or nothing, on disk when this returns."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise NodeIdentityError(f"cannot write {path}: {exc}") from exc
