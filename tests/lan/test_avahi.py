"""gravd's mDNS records interoperate with Debian's Avahi, run in a namespace of the LAN bed.

Host 0 of a three-host bed runs avahi-daemon with a private D-Bus (tests/lan/avahi.py); gravd run
on the other hosts (and, with ``--discovery none``, on host 0 for records Avahi publishes for it).
Skipped, with the reason, where namespaces cannot be made or Avahi / D-Bus are not installed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gravpy.proto import PROTOCOL_VERSION
from gravpy.testing.lan.backends import (
    NODE_PORT,
    NetnsBackend,
    Node,
    log_digest,
    open_backend,
    unavailable,
)

from .avahi import Avahi, avahi_problem, parse_resolved

SERVICE = "_grav._tcp"  # gravd's default service type, as Avahi writes it
PATH = "/meta/message"


@dataclass
class AvahiLan:
    lan: NetnsBackend
    avahi: Avahi


@pytest.fixture
async def avahi_lan() -> AsyncIterator[AvahiLan]:
    problem = unavailable("netns") or avahi_problem()
    if problem is not None:
        pytest.skip(f"Avahi interop: {problem}")
    async with open_backend("netns", 3) as lan:
        assert isinstance(lan, NetnsBackend)
        avahi = Avahi(lan.bed.hosts[0], lan.stack)
        await avahi.start()
        yield AvahiLan(lan, avahi)
        print(log_digest(lan.nodes))  # pytest shows it only if the test failed
        print(avahi.digest())


async def test_avahi_browses_the_record_a_node_advertises(avahi_lan: AvahiLan) -> None:
    """avahi-browse in another namespace resolves a gravd's record with its address and full TXT."""
    node = await avahi_lan.lan.start(1, agent=False)
    browser = await avahi_lan.avahi.browse(SERVICE)
    line = await browser.wait_line(lambda line: is_record_of(line, node), stream="stdout")
    record = parse_resolved(line)
    assert record is not None
    assert record.host_name == f"{node.uuid}.local"
    assert (record.address, record.port) == (avahi_lan.lan.host(node).address, NODE_PORT)
    assert record.txt == {
        "uuid": node.uuid,
        "transport": "ws",
        "path": PATH,
        "mesh": "lab",
        "version": str(PROTOCOL_VERSION),
    }


def is_record_of(line: str, node: Node) -> bool:
    record = parse_resolved(line)
    return record is not None and record.name == node.uuid


async def test_node_dials_a_record_published_with_avahi(avahi_lan: AvahiLan) -> None:
    """A record published by avahi-publish for a gravd without mDNS is found, dialled and linked."""
    target, dialler = await start_pair(avahi_lan)
    await avahi_lan.avahi.publish("avahi-published", SERVICE, NODE_PORT, txt_for(target.uuid))
    await dialler.wait_until(lambda: target.uuid in dialler.peers())
    [found] = dialler.logged("mdns_peer_found", peer=target.uuid)
    assert found["record"] == f"avahi-published.{SERVICE}.local."
    assert found["endpoint"] == target.endpoint
    await target.wait_until(lambda: dialler.uuid in target.peers())


async def test_avahi_record_with_another_uuid_is_refused(avahi_lan: AvahiLan) -> None:
    """A record whose TXT uuid is not the node's at that address is dialled but never linked."""
    target, dialler = await start_pair(avahi_lan)
    claimed = str(uuid.uuid4())
    await avahi_lan.avahi.publish("avahi-impostor", SERVICE, NODE_PORT, txt_for(claimed))
    await dialler.wait_until(
        lambda: len(dialler.logged("handshake_rejected", reason="uuid_mismatch")) >= 2
    )  # refused, redialled, refused again
    rejected = dialler.logged("handshake_rejected", reason="uuid_mismatch")[0]
    assert claimed in rejected["detail"]
    assert target.uuid in rejected["detail"]
    assert rejected["by_remote"] is False
    assert dialler.peers() == set()
    assert target.peers() == set()


async def start_pair(avahi_lan: AvahiLan) -> tuple[Node, Node]:
    """A gravd on the Avahi host without mDNS (Avahi speaks for it), and one with mDNS on host 1."""
    target = await avahi_lan.lan.start(0, agent=False, discovery="none")
    dialler = await avahi_lan.lan.start(1, agent=False)
    return target, dialler


def txt_for(node_uuid: str) -> dict[str, str]:
    """The TXT a gravd advertises (discovery/mdns_record.py), for ``node_uuid``, in mesh ``"*"``."""
    return {
        "uuid": node_uuid,
        "path": PATH,
        "transport": "ws",
        "mesh": "*",
        "version": str(PROTOCOL_VERSION),
    }
