"""The file ``EventStore.open`` makes is readable by its own user only (mode 0600, whatever the
umask), its ``-wal`` and ``-shm`` too, whoever opens it (gravd or an app, directly); a file that
exists keeps its mode."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from gravpy.events import Event, EventStore


def _event() -> Event:
    builder = Event.builder().with_category("connection").with_action("ping")
    return builder.with_description("something happened").build()


def _modes(*paths: Path) -> dict[str, int | None]:
    """The permission bits of each file (None: no such file)."""
    return {p.name: stat.S_IMODE(p.stat().st_mode) if p.exists() else None for p in paths}


async def test_a_store_opened_directly_makes_its_files_private(tmp_path: Path) -> None:
    """A store opened in code under a permissive umask (000) makes its file, and the -wal and
    -shm SQLite adds beside it, mode 0600: no other local user reads the events."""
    path = tmp_path / "events.sqlite3"
    files = (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
    permissive = os.umask(0)
    try:
        async with await EventStore.open(path) as store:
            await store.persist(_event())
            modes = await asyncio.to_thread(_modes, *files)
    finally:
        os.umask(permissive)
    assert modes == {p.name: 0o600 for p in files}


async def test_a_file_that_exists_keeps_its_mode(tmp_path: Path) -> None:
    """A file made mode 0640 beforehand (for a backup group, say) keeps that mode when a store
    opens it and writes to it."""
    path = tmp_path / "events.sqlite3"
    path.touch()
    path.chmod(0o640)
    async with await EventStore.open(path) as store:
        await store.persist(_event())
    assert await asyncio.to_thread(_modes, path) == {path.name: 0o640}


async def test_a_store_in_memory_makes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``:memory:`` (the default) is no file name: opening it leaves the working directory empty."""
    monkeypatch.chdir(tmp_path)
    async with await EventStore.open() as store, await EventStore.open(":memory:") as other:
        await store.persist(_event())
        await other.persist(_event())
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []
