"""Apps attached to a node (``gravpy.connect``): what an application developer's QA pass found."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import gravpy
from gravpy import Message
from gravpy.errors import UsageError

from .conftest import FAST, NodeFactory

GUARD = 30.0 * float(os.environ.get("GRAVPY_TEST_SCALE", "1"))  # a hang guard, not a timing
URL = "ws://127.0.0.1:1/meta/message"  # never dialled: every case is refused at the call


@pytest.mark.parametrize(
    ("url", "options"),
    [
        (123, {}),
        (None, {}),
        (URL, {"bogus": 1}),
        (URL, {"replay": True}),
        (URL, {"role": "peer"}),
        (URL, {"attach_to": "ws://127.0.0.1:2/meta/message"}),
        (URL, {"attach_timeout": 3.0}),
        (URL, {"transport": "ws"}),
    ],
    ids=["url-int", "url-none", "unknown", "replay", "role", "attach_to", "attach_timeout", "str"],
)
def test_connect_refuses_a_bad_url_or_option_with_usage_error(
    url: Any, options: dict[str, Any]
) -> None:
    """``gravpy.connect`` given a url that is not a str, an option ``Grav`` does not take, one
    it sets itself, or a transport that is not one raises ``UsageError`` at the call, never a
    ``TypeError`` or ``AttributeError`` from inside."""
    with pytest.raises(UsageError):
        gravpy.connect(url, **options)


async def test_a_leaf_replay_pod_does_not_get_its_own_messages_back_from_the_node(
    node: NodeFactory,
) -> None:
    """A ``connect_with_replay`` pod on a leaf gets the node's buffer (its sibling's message
    and the node's, in order) but not what it sent itself before it started receiving."""
    n = await node()
    heard: list[str] = []
    both_heard = asyncio.Event()

    def on_node(msg: Message) -> None:
        heard.append(msg.type)
        if len(heard) == 2:
            both_heard.set()

    other = n.connect()
    other.on_type("a.>", on_node)
    async with asyncio.timeout(GUARD), gravpy.connect(n.endpoints()[0], hub_config=FAST) as leaf:
        await leaf.wait_for(lambda peers: any("a.>" in p.interests for p in peers))
        pod = leaf.connect_with_replay()
        pod.send(Message.new("a.mine", "mine"))
        leaf.connect().send(Message.new("a.sibling", "sibling"))
        await both_heard.wait()  # both are in the node's buffer now
        other.send(Message.new("a.theirs", "theirs"))
        got: list[str] = []
        last = asyncio.Event()

        def on_leaf(msg: Message) -> None:
            got.append(msg.type)
            if msg.type == "a.theirs":  # the buffer's last: any other came before it
                last.set()

        pod.on_type("a.>", on_leaf)
        await last.wait()
        assert leaf.hub is not None
        assert leaf.hub.traffic.replays.answered == 1  # the node's buffer, not the leaf's own
        assert got == ["a.sibling", "a.theirs"]
