"""Wrong arguments to the events API are refused at the call, naming the argument and what was
expected, before anything is built, subscribed or sent (in memory: no sockets)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from gravpy import Grav
from gravpy.errors import UsageError
from gravpy.events import Event, EventBroadcaster, EventError

ALICE = str(uuid.uuid4())
GUARD = 10.0  # seconds: a hang guard, never a timing expectation


def event(user: str | None = None) -> Event:
    builder = Event.builder().with_category("deploy").with_action("finish")
    builder.with_description("deploy finished")
    if user is not None:
        builder.from_user(user)
    return builder.build()


@pytest.mark.parametrize("bad", [[], [("err", "x")], None, "err=x"], ids=repr)
def test_with_metadata_refuses_what_is_not_a_mapping_at_the_call(bad: object) -> None:
    """with_metadata given a list, None or a str raises EventError naming metadata, the
    mapping expected and the type it got, at the call rather than at build()."""
    builder = Event.builder()
    with pytest.raises(EventError) as caught:
        builder.with_metadata(bad)  # type: ignore[arg-type]
    assert caught.value.field == "metadata"
    assert caught.value.problem == f"expected a mapping with str keys, got {type(bad).__name__}"


def test_metadata_from_the_wire_that_is_not_a_mapping_says_what_it_got() -> None:
    """Event.from_dict with metadata [] or with a non-str key names what it got."""
    fields: dict[str, Any] = event().to_dict()
    with pytest.raises(EventError, match="expected a mapping with str keys, got list"):
        Event.from_dict({**fields, "metadata": []})
    with pytest.raises(EventError, match="got the key 1"):
        Event.from_dict({**fields, "metadata": {1: "x"}})


@pytest.mark.parametrize("bad", [0, -1, True, "5", 1.5], ids=repr)
async def test_a_subscriptions_queue_limit_is_checked_under_its_own_name(bad: object) -> None:
    """subscribe and subscribe_all refuse a queue_limit that is not an int >= 1 with a
    UsageError naming queue_limit (not the pod's inbox_limit), and leave no pod behind."""
    async with Grav() as g:
        broadcaster = EventBroadcaster(g)
        before = len(g.bus.pods())
        with pytest.raises(UsageError, match=r"^queue_limit must be an int >= 1"):
            broadcaster.subscribe(ALICE, queue_limit=bad)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match=r"^queue_limit must be an int >= 1"):
            broadcaster.subscribe_all(queue_limit=bad)  # type: ignore[arg-type]
        assert len(g.bus.pods()) == before
        assert broadcaster.statistics().subscriptions == 0


@pytest.mark.parametrize("bad", [5, "events.sqlite3", object()], ids=["int", "str", "object"])
async def test_a_broadcaster_refuses_a_store_that_cannot_persist(bad: object) -> None:
    """EventBroadcaster(grav, store=...) given something without a persist method raises
    UsageError naming store at construction, not AttributeError at the first persist."""
    async with Grav() as g:
        with pytest.raises(UsageError, match=r"^store must be an event store .* got "):
            EventBroadcaster(g, store=bad)  # type: ignore[arg-type]


async def test_subscribe_none_receives_the_events_for_no_user_only() -> None:
    """subscribe(None) gets what publish(None, ...) sends, and not a user's events."""
    async with Grav() as g:
        broadcaster = EventBroadcaster(g)
        async with broadcaster.subscribe(None) as system:
            await broadcaster.publish(ALICE, event(ALICE))
            await broadcaster.publish(None, event())
            async with asyncio.timeout(GUARD):
                got = await anext(system)
            assert got.user_id is None
            assert system.statistics().received == 1
        broadcaster.close()
