"""``DaemonEvents``: gravd's event store, its mesh service, its broadcaster and its own records.

Theory of operation. ``DaemonEvents.open`` runs once at start, after the node is up: it makes the
data directory, opens ``events.sqlite3`` in it (a corrupt or locked file fails the start with
``EventStoreError``, before gravd says it is listening; in memory instead when another gravd holds
the default data dir: ``gravpy.daemon.node_identity``), answers the store's mesh requests
(``gravd.events.<uuid>.*``), and starts the ``NodeWatcher`` task. ``record`` stores one of gravd's
own events and publishes it on ``grav.events.system`` (``gravctl events --follow`` shows them);
a failure to store is logged, never raised into the daemon. ``begin_drain`` records the drain and
stops the watcher; ``close`` ends the rest after the node has stopped.

The file is stamped with gravd's mesh (``sqlite_file.Stamp``, as ``replay.sqlite3`` is): one
written in another mesh (the data dir reused with another ``--mesh``) is moved aside before the
store opens (``events.sqlite3.other-mesh-<time>``, logged as ``events_store_set_aside`` with the
reason), so that mesh's events never show in this one's inbox. Not its node: the events are the
data dir's record, kept across a start with a new uuid (the default data dir's gravd has one at
every start). A file that names no mesh (written before it was kept) is taken as this mesh's.

A file gravd makes is readable by its own user only (mode 0600, and so are its ``-wal`` and
``-shm``: ``EventStore.open`` makes it so, as ``replay.sqlite3`` is made): it holds users' events,
and the data dir is usually readable by every local user. A file that exists keeps its mode.

gravd keeps at most ``RETAIN_COUNT`` events and none older than ``RETAIN_AGE``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gravpy import _log as logs
from gravpy.daemon.events_watch import NodeWatcher
from gravpy.daemon.sqlite_file import Stamp, reason, set_aside_foreign, stamp_file
from gravpy.events import Event, EventBroadcaster, EventStore, EventStoreError, Severity
from gravpy.events.remote import EventStoreService
from gravpy.grav import Grav

if TYPE_CHECKING:
    from gravpy.daemon.config import DaemonConfig

__all__ = ["EVENTS_FILE", "RETAIN_AGE", "RETAIN_COUNT", "DaemonEvents"]

_log = logs.get_logger("gravpy.daemon.events")
EVENTS_FILE: Final = "events.sqlite3"
RETAIN_COUNT: Final = 1_000_000
RETAIN_AGE: Final = 90 * 24 * 3600.0


class DaemonEvents:
    """What gravd runs for events; see the module docstring."""

    def __init__(self, grav: Grav, store: EventStore) -> None:
        self.grav = grav
        self.store = store
        self.broadcaster = EventBroadcaster(grav, store=store)
        self.service = EventStoreService(grav, store)
        self.watcher = NodeWatcher(grav, self.record)
        self.record_failures = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, grav: Grav, config: DaemonConfig, *, in_memory: bool = False
    ) -> DaemonEvents:
        """Open the store in ``config.data_dir`` (or in memory) and start serving; raises
        ``EventStoreError``. A file of another mesh is moved aside first."""
        if in_memory:
            store = await EventStore.open(":memory:", max_count=RETAIN_COUNT, max_age=RETAIN_AGE)
        else:
            store = await _open_file(_events_path(config.data_dir), Stamp(mesh=config.mesh))
        events = cls(grav, store)
        events.service.start()
        events._task = asyncio.get_running_loop().create_task(
            events._watch(), name="gravd-events-watch"
        )
        await events.record(_config_loaded(grav.node_uuid, config))
        return events

    async def record(self, event: Event) -> None:
        """Store and publish one of gravd's own events (a store failure is logged and counted)."""
        event = event.with_system(self.grav.node_uuid)
        try:
            await self.broadcaster.publish(None, event, persist=True)
        except EventStoreError as exc:
            self.record_failures += 1
            _log.warning(
                "event_record_failed",
                category=event.category,
                action=event.action,
                error=str(exc),
            )

    async def begin_drain(self, timeout: float) -> None:
        """Record that the node is draining and stop watching it."""
        await self._stop_watching()
        drain = (
            Event.builder()
            .acted_upon(self.grav.node_uuid)
            .with_category("node")
            .with_action("drain")
            .with_description(f"draining: withdrawing from the mesh (at most {timeout} s)")
            .with_metadata({"timeout": timeout, "links": len(self.grav.peers())})
        )
        await self.record(drain.build())

    async def close(self) -> None:
        """Stop answering and close the store (after the node has stopped)."""
        await self._stop_watching()
        self.service.stop()
        self.broadcaster.close()
        await self.store.close()

    async def _watch(self) -> None:
        try:
            await self.watcher.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # the daemon goes on without its own link events
            _log.exception("node_watcher_failed")

    async def _stop_watching(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _open_file(path: Path, stamp: Stamp) -> EventStore:
    """The store in ``path``, stamped; a file stamped for another mesh is moved aside (and
    logged) first. A file made here is mode 0600 (``EventStore.open`` makes it so). Raises
    ``EventStoreError``."""
    try:
        foreign = await asyncio.to_thread(set_aside_foreign, path, stamp)
    except OSError as exc:
        raise EventStoreError(str(path), f"cannot move it aside: {exc}") from exc
    if foreign is not None:
        _log.warning(
            "events_store_set_aside",
            path=str(path),
            moved_to=str(foreign.moved_to),
            reason=foreign.reason,
        )
    store = await EventStore.open(path, max_count=RETAIN_COUNT, max_age=RETAIN_AGE)
    try:  # (after the store's own checks: a corrupt or locked file is its error to report)
        await asyncio.to_thread(stamp_file, path, stamp)
    except sqlite3.Error as exc:
        await store.close()
        raise EventStoreError(str(path), f"cannot write its mesh: {reason(exc)}") from exc
    return store


def _events_path(data_dir: Path) -> Path:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EventStoreError(str(data_dir), f"cannot make the data directory: {exc}") from exc
    return data_dir / EVENTS_FILE


def _config_loaded(node: str, config: DaemonConfig) -> Event:
    settings: dict[str, Any] = config.public()
    return (
        Event.builder()
        .acted_upon(node)
        .with_category("config")
        .with_action("loaded")
        .with_severity(Severity.INFORMATIONAL)
        .with_description(f"gravd started with its configuration (mesh {config.mesh!r})")
        .with_metadata({"settings": settings})
        .build()
    )
