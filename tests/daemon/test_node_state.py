"""gravd's state across restarts without processes: the kept uuid, the data dir's lock, the saved
positions and numbering (real files in a temporary directory)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import time
import uuid
from pathlib import Path

import pytest

from gravpy import Grav, Message
from gravpy.daemon.node_identity import UUID_FILE, NodeIdentity, NodeIdentityError
from gravpy.daemon.positions import POSITION_TTL, POSITIONS_FILE, PositionStore
from gravpy.mesh import Hub
from gravpy.mesh.resume import RESTART_GAP, resend_answer
from transports.websocket import WebSocketTransport


def test_a_data_dir_of_its_own_keeps_the_uuid_in_a_private_file(tmp_path: Path) -> None:
    """The uuid written at the first open (mode 0600) is the one read back at the next."""
    first = NodeIdentity.open(tmp_path, explicit=True)
    first.close()
    again = NodeIdentity.open(tmp_path, explicit=True)
    again.close()
    assert first.kept
    assert not first.restored
    assert again.restored
    assert again.uuid == first.uuid
    assert stat.S_IMODE((tmp_path / UUID_FILE).stat().st_mode) == 0o600


def test_without_a_data_dir_of_its_own_the_uuid_is_random_per_start(tmp_path: Path) -> None:
    """The default data dir (where every gravd of a user looks) keeps no uuid."""
    one = NodeIdentity.open(tmp_path, explicit=False)
    one.close()
    two = NodeIdentity.open(tmp_path, explicit=False)
    two.close()
    assert one.uuid != two.uuid
    assert not one.kept
    assert one.files
    assert two.files
    assert not (tmp_path / UUID_FILE).exists()


def test_a_second_gravd_on_the_default_data_dir_keeps_no_files_there(tmp_path: Path) -> None:
    """While one holds the default data dir, another opening it starts (no error) with
    ``files`` False; once the first lets go, the next one has the files again."""
    holder = NodeIdentity.open(tmp_path, explicit=False)
    try:
        second = NodeIdentity.open(tmp_path, explicit=False)
        assert not second.files
        assert second.lock_fd is None
        assert second.uuid != holder.uuid
    finally:
        holder.close()
    again = NodeIdentity.open(tmp_path, explicit=False)
    again.close()
    assert again.files


def test_a_second_gravd_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """While one holds the data dir, opening it again raises NodeIdentityError naming it."""
    holder = NodeIdentity.open(tmp_path, explicit=True)
    try:
        with pytest.raises(NodeIdentityError, match="in use by another gravd"):
            NodeIdentity.open(tmp_path, explicit=True)
    finally:
        holder.close()
    NodeIdentity.open(tmp_path, explicit=True).close()  # free again once it let go


def test_a_uuid_file_that_holds_no_uuid_is_set_aside(tmp_path: Path) -> None:
    """A node.uuid that is not a uuid is moved aside (content kept) and a new uuid written."""
    (tmp_path / UUID_FILE).write_text("not a uuid\n")
    identity = NodeIdentity.open(tmp_path, explicit=True)
    identity.close()
    assert identity.set_aside is not None
    assert identity.set_aside.read_text() == "not a uuid\n"
    assert uuid.UUID((tmp_path / UUID_FILE).read_text().strip())


def _hub() -> tuple[Grav, Hub]:
    grav = Grav(transport=WebSocketTransport("127.0.0.1", 0))  # never started: its hub only
    assert grav.hub is not None
    return grav, grav.hub


async def test_positions_and_numbering_saved_at_stop_come_back_exactly(tmp_path: Path) -> None:
    """After a clean close the next start has the same per-origin positions and continues
    numbering from the same number (no jump)."""
    _, hub = _hub()
    store = await PositionStore.open(tmp_path)
    await store.restore(hub, 0)
    hub.traffic.resumption.seen("origin-a", 41)
    hub.traffic.continue_numbering(7, clean=True)
    await store.close(hub)
    _, again = _hub()
    store = await PositionStore.open(tmp_path)
    await store.restore(again, 5)
    await store.close(None)
    assert again.traffic.resumption.last == {"origin-a": 41}
    assert again.traffic.origin_seq == 7
    assert again.traffic.origin_skipped == ()


async def test_after_an_unclean_end_the_numbering_jumps_and_the_jump_is_never_given(
    tmp_path: Path,
) -> None:
    """A store never closed cleanly (a SIGKILL) makes the next start number from RESTART_GAP
    above the highest number known (here the replay file's), and tells the hub those were
    skipped."""
    _, hub = _hub()
    store = await PositionStore.open(tmp_path)
    await store.restore(hub, 0)
    await store.close(None)  # as a killed gravd: the run stays marked unclean
    _, again = _hub()
    store = await PositionStore.open(tmp_path)
    await store.restore(again, 300)
    await store.close(None)
    assert again.traffic.origin_seq == 300 + RESTART_GAP
    assert again.traffic.origin_skipped == (range(301, 301 + RESTART_GAP),)


async def test_every_jump_of_earlier_unclean_ends_is_still_known_as_never_given(
    tmp_path: Path,
) -> None:
    """Four runs, each killed after numbering ten: the fourth start knows every jump, so a
    receiver that asks from before the first counts none of them lost (it counted 2^20 per
    kill), only the numbers given and fallen out of the buffer. (The first start found a replay
    file numbered to 300 and no positions file: it cannot know how that run ended, so it jumps
    too.)"""
    highest = 300
    for _ in range(4):
        _, hub = _hub()
        store = await PositionStore.open(tmp_path)
        await store.restore(hub, highest)
        highest = hub.traffic.origin_seq + 10  # numbered ten more before it was killed
        await store.close(None)
    skipped = hub.traffic.origin_skipped
    assert [len(r) for r in skipped] == [RESTART_GAP] * 4
    assert skipped[0].start == 301
    entries = [(n, Message.new("r.x", b"")) for n in range(highest - 9, highest + 1)]
    _, lost = resend_answer(300, highest, (entries, highest - 9), lambda _: True, skipped)
    assert lost == 30  # the ten numbered in each of the first three runs, fallen out


async def test_an_unreadable_positions_file_is_set_aside_as_a_first_start(tmp_path: Path) -> None:
    """positions.sqlite3 that is not a database is moved aside; nothing is restored."""
    (tmp_path / POSITIONS_FILE).write_bytes(b"garbage" * 200)
    _, hub = _hub()
    store = await PositionStore.open(tmp_path)
    await store.restore(hub, 0)
    await store.close(hub)
    assert store.set_aside is not None
    assert await asyncio.to_thread(store.set_aside.read_bytes) == b"garbage" * 200
    assert hub.traffic.resumption.last == {}


async def test_an_origin_not_heard_from_for_a_week_is_forgotten(tmp_path: Path) -> None:
    """A saved position whose origin last moved more than POSITION_TTL ago is not restored (the
    uuids of peers that restarted as new nodes do not pile up); a recent one is."""
    _, hub = _hub()
    store = await PositionStore.open(tmp_path)
    await store.restore(hub, 0)
    hub.traffic.resumption.seen("gone", 5)
    hub.traffic.resumption.seen("here", 6)
    await store.close(hub)
    with contextlib.closing(sqlite3.connect(tmp_path / POSITIONS_FILE)) as conn:
        conn.execute(
            "UPDATE position SET heard_at = ? WHERE origin = 'gone'",
            (time.time() - POSITION_TTL - 60,),
        )
        conn.commit()
    _, again = _hub()
    store = await PositionStore.open(tmp_path)
    await store.restore(again, 0)
    await store.close(None)
    assert again.traffic.resumption.last == {"here": 6}
