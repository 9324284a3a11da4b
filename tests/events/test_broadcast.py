"""Per-user broadcast on a real 3-node mesh, bounded subscriber queues, and the store over the mesh."""

from __future__ import annotations

import asyncio
import uuid

import msgpack
import pytest

from gravpy import Grav
from gravpy.errors import UsageError
from gravpy.events import (
    Event,
    EventBroadcaster,
    EventError,
    EventStore,
    EventStoreError,
    Severity,
    Subscription,
    event_type,
)
from gravpy.events.remote import EventStoreService, request_type
from gravpy.message import Message
from tests.mesh.conftest import NodeFactory, linked_to, node

__all__ = ["node"]  # the fixture, imported for these tests

ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())
GUARD = 10.0  # seconds: a hang guard, never a timing expectation


def event(n: int = 0, user: str | None = None) -> Event:
    builder = Event.builder().with_category("deploy").with_action("finish")
    builder.with_severity(Severity.SUCCESS).with_description(f"deploy {n} finished")
    builder.with_metadata({"n": n})
    if user is not None:
        builder.from_user(user)
    return builder.build()


def poisoned(ev: Event) -> bytes:
    """``ev`` as msgpack, its metadata nested deeper than JSON encodes (written by hand: the
    packer refuses such depth)."""
    fields = ev.to_dict()
    del fields["metadata"]
    body = msgpack.packb(fields)
    assert body[0] == 0x80 | len(fields)  # a fixmap: one more entry fits its header
    deep = b"\x81\xa1a" * 1010 + b"\x80"  # (JSON stops near 1000 levels, msgpack at 1024)
    return bytes([0x80 | (len(fields) + 1)]) + body[1:] + b"\xa8metadata" + deep


async def take(subscription: Subscription, n: int) -> list[Event]:
    """The next ``n`` events of a subscription (with a hang guard)."""
    got: list[Event] = []
    async with asyncio.timeout(GUARD):
        async for ev in subscription:
            got.append(ev)
            if len(got) == n:
                break
    return got


async def three_nodes(node: NodeFactory) -> tuple[Grav, Grav, Grav]:
    a = await node()
    b = await node()
    c = await node()
    await b.connect_endpoint(a.endpoints()[0])
    await c.connect_endpoint(a.endpoints()[0])  # a tells each about the other: a full mesh
    for this, others in ((a, (b, c)), (b, (a, c)), (c, (a, b))):
        await this.wait_for(linked_to(*others), timeout=GUARD)
    return a, b, c


async def test_broadcast_reaches_only_that_users_subscribers_on_every_node(
    node: NodeFactory,
) -> None:
    """An event for Alice reaches Alice's subscribers on all three nodes and none of Bob's."""
    a, b, c = await three_nodes(node)
    on = {g: EventBroadcaster(g) for g in (a, b, c)}
    alice = [on[a].subscribe(ALICE), on[b].subscribe(ALICE), on[c].subscribe(ALICE)]
    bob = [on[b].subscribe(BOB), on[c].subscribe(BOB)]
    wanted = event_type(ALICE)
    await a.wait_for(linked_to(b, c, interest=wanted), timeout=GUARD)
    await c.wait_for(linked_to(b, interest=event_type(BOB)), timeout=GUARD)
    sent = [event(i, ALICE) for i in range(5)]
    for ev in sent:
        await on[a].publish(ALICE, ev)
    for_bob = event(99)  # no user yet: publish stamps Bob
    await on[c].publish(BOB, for_bob)
    stamped = [ev.with_system(a.node_uuid) for ev in sent]
    for sub in alice:
        assert await take(sub, 5) == stamped
    for sub in bob:
        [got] = await take(sub, 1)
        assert got.id == for_bob.id
        assert got.user_id == BOB
        assert got.system_id == c.node_uuid
    for g in (a, b, c):
        stats = on[g].statistics()
        assert stats.dropped == 0
        on[g].close()
    assert all(s.closed for s in alice + bob)
    assert on[b].statistics().delivered == 6


async def test_publish_refuses_an_event_for_another_user(node: NodeFactory) -> None:
    """Publishing Bob's event to Alice raises EventError naming user_id and sends nothing."""
    g = await node()
    broadcaster = EventBroadcaster(g)
    with pytest.raises(EventError) as caught:
        await broadcaster.publish(ALICE, event(1, BOB))
    assert caught.value.field == "user_id"
    assert broadcaster.statistics().published == 0
    broadcaster.close()


async def test_subscriber_that_stops_reading_loses_only_counted_events() -> None:
    """A stalled subscriber keeps its queue's worth, drops the rest counted; a reader gets all."""
    async with Grav() as g:
        broadcaster = EventBroadcaster(g, queue_limit=8)
        stalled = broadcaster.subscribe(ALICE)
        reading = broadcaster.subscribe(ALICE, queue_limit=1000)
        sent = [event(i, ALICE) for i in range(50)]
        for ev in sent:
            await broadcaster.publish(ALICE, ev)  # never waits on the stalled subscriber
        sent = [ev.with_system(g.node_uuid) for ev in sent]
        assert await take(reading, 50) == sent
        s = stalled.statistics()
        assert s.queued == 8
        assert s.dropped == 42
        assert s.received + s.dropped == len(sent)
        assert await take(stalled, 8) == sent[:8]  # what it kept is the oldest, in order
        assert broadcaster.statistics().dropped == 42
        broadcaster.close()
        assert broadcaster.statistics().dropped == 42  # closed subscriptions stay counted


async def test_undecodable_message_on_a_user_type_is_skipped_and_counted() -> None:
    """Garbage sent on a user's type is skipped (counted); the next real event still arrives."""
    async with Grav() as g:
        broadcaster = EventBroadcaster(g)
        sub = broadcaster.subscribe(ALICE)
        g.connect().send(Message.new(event_type(ALICE), {"not": "an event"}))
        real = event(1, ALICE)
        await broadcaster.publish(ALICE, real)
        assert await take(sub, 1) == [real.with_system(g.node_uuid)]
        assert sub.statistics().undecodable == 1
        g.connect().send(Message.new(event_type(ALICE), poisoned(event(2, ALICE))))
        after = event(3, ALICE)
        await broadcaster.publish(ALICE, after)
        assert await take(sub, 1) == [after.with_system(g.node_uuid)]  # the stream goes on
        assert sub.statistics().undecodable == 2
        broadcaster.close()


async def test_the_store_service_refuses_poison_and_keeps_answering() -> None:
    """A hundred requests no event can be made of (metadata nested too deep, a page number
    that is a digit only to str.isdigit) each get a refusal; the service answers on."""
    async with Grav() as g, await EventStore.open() as store:
        service = EventStoreService(g, store)
        service.start()
        asker = g.connect()
        deep = b"\x81\xa5event" + poisoned(event(1, ALICE))
        for i in range(100):
            request = (
                Message.new(request_type(g.node_uuid, "persist"), deep)
                if i % 2
                else Message.new(request_type(g.node_uuid, "query"), {"query": {"page": "²"}})
            )
            reply = (await asker.send(request).wait_until(GUARD)).unmarshal_data()
            assert (reply["ok"], reply["field"]) == (False, "metadata" if i % 2 else "page"), reply
        assert (service.refused, service.failed) == (100, 0)
        assert (await EventStore.remote(g, node=g.node_uuid).query()).total == 0
        service.stop()


async def test_remote_store_persists_and_queries_through_another_node(node: NodeFactory) -> None:
    """An app node persists (publish with persist=True), queries, marks and deletes in the
    store of the node it is linked to, over the mesh."""
    server = await node()
    app = await node()
    async with await EventStore.open() as store:
        service = EventStoreService(server, store)
        service.start()
        await app.connect_endpoint(server.endpoints()[0])
        await app.wait_for(linked_to(server, interest=f"gravd.events.{server.node_uuid}.*"), GUARD)
        remote = EventStore.remote(app)
        broadcaster = EventBroadcaster(app)
        ev = event(7, ALICE)
        await broadcaster.publish(ALICE, ev, persist=True)
        page = await remote.query(user=ALICE)
        assert page.total == 1
        [stored] = page.events
        assert stored.id == ev.id
        assert stored.system_id == app.node_uuid  # stamped by the publishing node
        assert (await store.get(ev.id)) == stored
        marked = await remote.mark(ev.id, "read")
        assert marked is not None
        assert marked.status.value == "read"
        asker = app.connect()
        bad = Message.new(request_type(server.node_uuid, "query"), {"query": {"page_size": 5000}})
        reply = await asker.send(bad).wait_until(GUARD)
        assert reply.unmarshal_data() == {
            "ok": False,
            "error": "5000 is over the limit of 1000",
            "field": "page_size",
        }
        assert await remote.delete(ev.id) is True
        assert await remote.get(ev.id) is None
        assert service.answered >= 5
        assert service.refused == 1
        service.stop()
        wanted = f"gravd.events.{server.node_uuid}.*"
        await app.wait_for(lambda peers: all(wanted not in p.interests for p in peers), GUARD)
        with pytest.raises(EventStoreError, match="no event store"):
            await remote.query()
        broadcaster.close()
        remote.close_pod()


async def test_an_event_of_another_user_on_a_users_type_is_skipped_and_counted() -> None:
    """Bob's event sent straight on Alice's type never reaches Alice's subscriber (counted
    undecodable); Alice's own next event does."""
    async with Grav() as g:
        broadcaster = EventBroadcaster(g)
        sub = broadcaster.subscribe(ALICE)
        g.connect().send(Message.new(event_type(ALICE), event(1, BOB).to_dict()))
        g.connect().send(Message.new(event_type(ALICE), event(2).to_dict()))  # (for no user)
        real = event(3, ALICE)
        await broadcaster.publish(ALICE, real)
        assert await take(sub, 1) == [real.with_system(g.node_uuid)]
        assert sub.statistics().undecodable == 2
        broadcaster.close()


async def test_publish_and_the_broadcaster_refuse_wrong_arguments() -> None:
    """A non-event, a persist flag that is not a bool, a bool queue_limit, a broadcaster on
    something that is not a Grav: EventError or UsageError naming it, and nothing is sent."""
    async with Grav() as g:
        broadcaster = EventBroadcaster(g)
        for bad in (None, "not an event", event(1, ALICE).to_dict()):
            with pytest.raises(EventError) as caught:
                await broadcaster.publish(ALICE, bad)  # type: ignore[arg-type]
            assert caught.value.field == "event"
        with pytest.raises(UsageError, match="persist"):
            await broadcaster.publish(ALICE, event(1, ALICE), persist="yes")  # type: ignore[arg-type]
        assert broadcaster.statistics().published == 0
        with pytest.raises(UsageError, match="queue_limit"):
            EventBroadcaster(g, queue_limit=True)
        with pytest.raises(UsageError, match="needs a Grav node, got Bus"):
            EventBroadcaster(g.bus)  # type: ignore[arg-type]
        broadcaster.close()
