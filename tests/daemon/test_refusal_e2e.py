"""A real gravd refusing an unlisted key: the REJECT is all it says, and nothing is signed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from gravpy.errors import LinkClosedError
from gravpy.identity import keygen, load_credentials
from gravpy.proto import NodeInfo, PeerProtocol, decode_frame
from gravpy.proto.frames import Auth, Frame, Hello, Reject
from gravpy.testing.gravd import running_gravd
from transports.websocket import WebSocketTransport


async def frames_for(endpoint: str, key: Path, wanted: int = 0) -> list[Frame]:
    """What gravd sends an app that says HELLO with ``key``: until it closes the link, or the
    first ``wanted`` frames."""
    proto = PeerProtocol(
        NodeInfo("app-" + os.urandom(4).hex(), role="leaf"),
        initiator=True,
        now=0.0,
        nonce=os.urandom(16),
        credentials=load_credentials(key),
    )
    link = await WebSocketTransport().dial(endpoint, timeout=10)
    received: list[Frame] = []
    try:
        for frame in proto.data_to_send():  # its HELLO
            await link.send(frame)
        async with asyncio.timeout(10):
            while not wanted or len(received) < wanted:
                received.append(decode_frame(await link.recv()))
    except LinkClosedError:
        pass
    finally:
        await link.close()
    return received


async def test_an_unlisted_key_gets_a_reject_and_nothing_else(tmp_path: Path) -> None:
    """gravd with an identity of its own answers a listed app's HELLO with its HELLO (and a
    signed AUTH), but an unlisted key's HELLO with REJECT(unknown_key) alone: no HELLO of gravd's,
    no AUTH, no signature."""
    auth = tmp_path / "auth.toml"
    auth.write_text(
        f'[[identities]]\nname = "app"\npublic_key = "{keygen(tmp_path / "app.key")}"\n'
    )
    keygen(tmp_path / "node.key")
    keygen(tmp_path / "stranger.key")
    args = ("--auth-file", str(auth), "--identity", str(tmp_path / "node.key"))
    async with running_gravd(*args) as node:
        refused = await frames_for(node.endpoint, tmp_path / "stranger.key")
        listed = await frames_for(node.endpoint, tmp_path / "app.key", wanted=2)
    assert [type(f) for f in refused] == [Reject]
    assert isinstance(refused[0], Reject)
    assert refused[0].reason == "unknown_key"
    assert isinstance(listed[0], Hello)  # the listed app hears gravd's HELLO
    assert listed[0].public_key  # gravd's own key
    assert isinstance(listed[1], Auth)
    assert listed[1].signature  # signed for the listed app only
