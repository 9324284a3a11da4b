"""The event store over the mesh at its edges: answers too large to send, a gravd out of reach."""

from __future__ import annotations

import uuid

import pytest

import gravpy
from gravpy import Grav
from gravpy.errors import UsageError
from gravpy.events import Event, EventError, EventStore, EventStoreError, Severity
from gravpy.events.remote import EventStoreService
from tests.mesh.conftest import NodeFactory, linked_to, node

__all__ = ["node"]  # the fixture, imported for these tests

USER = str(uuid.uuid4())
GUARD = 10.0  # seconds: a hang guard, never a timing expectation


def event(n: int, blob: int = 0) -> Event:
    """An event for USER whose metadata holds ``blob`` bytes of text."""
    builder = Event.builder().from_user(USER).with_category("deploy").with_action("finish")
    builder.with_severity(Severity.SUCCESS).with_description(f"deploy {n} finished")
    return builder.with_metadata({"n": n, "blob": "x" * blob}).build()


async def test_a_page_too_large_to_send_is_refused_and_the_store_answers_on(
    node: NodeFactory,
) -> None:
    """A query whose page is over the mesh's message limit raises EventStoreError saying so and
    to ask for fewer; more such queries than the pod's failure limit leave the store answering."""
    g = await node(failure_limit=2)
    async with await EventStore.open() as store:
        await store.persist_many([event(i, blob=15_000) for i in range(100)])  # ~1.5 MB
        service = EventStoreService(g, store)
        service.start()
        remote = EventStore.remote(g, node=g.node_uuid, timeout=GUARD)
        for _ in range(3):
            with pytest.raises(EventStoreError) as caught:
                await remote.query(user=USER, page_size=100)
            assert "page is too large" in str(caught.value)
            assert "ask for fewer events" in str(caught.value)
        page = await remote.query(user=USER, page_size=10)
        assert (page.total, len(page.events)) == (100, 10)
        assert (service.answered, service.refused, service.failed) == (1, 3, 0)
        service.stop()
        remote.close_pod()


async def test_a_leaf_whose_node_is_gone_gets_event_store_error(node: NodeFactory) -> None:
    """With the node it is attached to stopped (a gravd restarting), a leaf's persist and query
    raise EventStoreError, as for any store out of reach, not a UsageError."""
    server = await node()
    async with await EventStore.open() as store:
        service = EventStoreService(server, store)
        service.start()
        async with gravpy.connect(server.endpoints()[0]) as app:
            remote = EventStore.remote(app, timeout=GUARD)
            await remote.persist(event(1))
            assert (await remote.query(user=USER)).total == 1
            service.stop()
            await server.stop()
            await app.wait_for(lambda peers: not any(p.state == "open" for p in peers), GUARD)
            with pytest.raises(EventStoreError, match="no link to its gravd is open now"):
                await remote.persist(event(2))
            with pytest.raises(EventStoreError):
                await remote.query(user=USER)
            remote.close_pod()


async def test_a_node_that_cannot_say_which_store_it_means_gets_usage_error(
    node: NodeFactory,
) -> None:
    """node=None on a node without a transport, one that links to and dials nothing, or one
    with two open peer links is a UsageError (a misuse), not an unreachable store."""
    async with Grav() as alone:
        with pytest.raises(UsageError, match="links to no gravd"):
            await EventStore.remote(alone).query()
    unlinked = await node()
    with pytest.raises(UsageError, match="links to no gravd"):
        await EventStore.remote(unlinked).query()
    a, b = await node(), await node()
    await unlinked.connect_endpoint(a.endpoints()[0])
    await unlinked.connect_endpoint(b.endpoints()[0])
    await unlinked.wait_for(linked_to(a, b), GUARD)
    with pytest.raises(UsageError, match="2 open peer links"):
        await EventStore.remote(unlinked).query()
    with pytest.raises(EventError) as caught:
        await EventStore.remote(unlinked, node=a.node_uuid).persist(None)  # type: ignore[arg-type]
    assert caught.value.field == "event"
