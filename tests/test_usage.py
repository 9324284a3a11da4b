"""Wrong arguments to the core API are refused when they are given, with a UsageError saying what is
wrong, never an AttributeError or TypeError from deep inside (nor later, in a bus task)."""

from __future__ import annotations

import pytest

from gravpy import Grav, Message
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
