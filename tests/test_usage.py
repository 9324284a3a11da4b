"""Wrong arguments to the core API are refused when they are given, with a UsageError saying what is
wrong, never an AttributeError or TypeError from deep inside (nor later, in a bus task)."""

from __future__ import annotations

import pytest

from gravpy import Grav, Message, Overflow
from gravpy.errors import UsageError

# -- replies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["request", "reply"])
async def test_reply_to_needs_two_messages(which: str) -> None:
    """pod.reply_to with a request or a reply that is not a Message is a UsageError naming it."""
    async with Grav() as g:
        pod = g.connect()
        request, reply = Message.new("test.ask"), Message.new("test.reply")
        args: list[object] = ["not a message", reply] if which == "request" else [request, "x"]
        with pytest.raises(UsageError, match=f"{which} must be a Message, got 'str'"):
            pod.reply_to(*args)  # type: ignore[arg-type]
        assert reply.reply_to == ""  # refused before anything was changed


def test_new_reply_needs_a_message_to_answer() -> None:
    """Message.new_reply answers a Message; anything else is a UsageError."""
    with pytest.raises(UsageError, match="answers a Message, got 'str'"):
        Message.new_reply("not a message")  # type: ignore[arg-type]


# -- overflow -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["bogus", 5, None])
async def test_an_unknown_overflow_policy_is_a_usage_error(bad: object) -> None:
    """Grav(overflow=...) and connect(overflow=...) take an Overflow or its name, nothing else."""
    with pytest.raises(UsageError, match="overflow must be"):
        Grav(overflow=bad)  # type: ignore[arg-type]
    async with Grav() as g:
        for connect in (g.connect, g.connect_with_replay):
            if bad is not None:  # connect(overflow=None) is the node's policy
                with pytest.raises(UsageError, match="overflow must be"):
                    connect(overflow=bad)  # type: ignore[arg-type]
        assert g.statistics().pods == 0


async def test_an_overflow_policy_may_be_named() -> None:
    """An overflow policy may be given by its value, as gravd's config does."""
    async with Grav(overflow="drop_oldest") as g:
        assert g.connect().overflow is Overflow.DROP_OLDEST
        assert g.connect(overflow="drop_newest").overflow is Overflow.DROP_NEWEST
