"""``PeerProtocol.receive_frame`` never raises: whatever the remote sends, in any order and in any
state, it only returns events (bad input ends the link with a terminal event and a CLOSE or REJECT).

Each example plays a script against node-b, the protocol under test, linked in memory to node-a, a
real ``PeerProtocol`` that plays the honest remote. The script starts with the first steps of an
honest handshake (none of them, some, or all: so node-b starts in every handshake state, or OPEN),
then goes on at random: node-b is sent arbitrary bytes, a msgpack array behind a plausible kind, or
a well-formed frame of a random kind (HELLOs that pass the checks among them); or node-a's queued
frames are let through; or a caller decides (accept, withdraw); or time passes and both sides
``tick``. Every frame node-b queues is checked to decode and is passed on to node-a.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gravpy.errors import FrameError
from gravpy.proto import (
    Closed,
    Event,
    HandshakeComplete,
    HelloReceived,
    Limits,
    LinkDead,
    LinkState,
    PeerProtocol,
    ProtocolConfig,
    ProtocolViolation,
    Rejected,
    decode_frame,
    encode_frame,
)
from gravpy.proto.frames import Hello
from gravpy.proto.session import TAG_LENGTH

from .strategies import any_frame, msgpack_values
from .wiring import KEY, START, Link, link

TERMINAL = (Rejected, ProtocolViolation, LinkDead, Closed)
DECIDING = (LinkState.AWAIT_DECISION, LinkState.REMOTE_ACCEPTED)

# HELLOs that pass node-b's checks (another uuid, any mesh, a known role), keyed or not.
passing_hellos = st.builds(
    Hello,
    node_uuid=st.sampled_from(["node-a", "node-c"]),
    role=st.sampled_from(["peer", "leaf"]),
    belongs_to=st.just("*"),
    endpoint=st.just("ws://node-a"),
    nonce=st.binary(min_size=16, max_size=64),
    keyed=st.booleans(),
)
frames = (any_frame | passing_hellos).map(encode_frame)
junk = st.binary(max_size=256) | st.builds(
    lambda kind, rest: msgpack.packb([kind, *rest]),
    st.integers(-1, 14),
    st.lists(msgpack_values, max_size=9),
)
# receive_frame takes any bytes-like object, as transports hand them over.
buffers = st.sampled_from([bytes, bytearray, memoryview])
control = st.tuples(st.sampled_from(["remote", "accept_a", "accept_b", "withdraw"]), st.none())
steps = st.lists(
    st.one_of(  # a strategy named twice is drawn about twice as often: links live longer
        control,
        control,
        st.tuples(st.just("frame"), st.builds(lambda f, raw: f(raw), buffers, frames)),
        st.tuples(st.just("frame"), frames),
        st.tuples(st.just("frame"), st.builds(lambda f, raw: f(raw), buffers, junk)),
        st.tuples(st.just("tick"), st.floats(0.0, 7.0)),
    ),
    max_size=25,
)


SMALL = ProtocolConfig(
    limits=Limits(
        max_frame_bytes=2048, max_message_bytes=512, max_batch=3, max_interests=3, max_peers=3
    )
)
# How node-b is set up: with or without a key, as a peer or a leaf, in a named mesh or any,
# expecting node-a's uuid or not, with default or small limits.
setups = st.fixed_dictionaries(
    {
        "mesh_key": st.sampled_from([None, KEY]),
        "config": st.sampled_from([None, SMALL]),
        "b_role": st.sampled_from(["peer", "leaf"]),
        "b_belongs_to": st.sampled_from(["*", "lab"]),
        "b_expected_uuid": st.sampled_from([None, "node-a"]),
    }
)


def honest(b_first: bool) -> list[tuple[str, None]]:
    """The steps of a complete handshake, node-b or node-a accepting first (with a key, the
    second step delivers node-a's AUTH; without a key, and the last when node-b accepted first,
    it delivers nothing)."""
    first, second = ("accept_b", "accept_a") if b_first else ("accept_a", "accept_b")
    names = ["remote", "remote", first, "remote", second, "remote"]
    return [(name, None) for name in names]


@dataclass
class Player:
    """Plays steps on a link and checks node-b's answer to every frame it is given."""

    pair: Link
    now: float = START
    seen: list[Event] = field(default_factory=list)

    def give(self, raw: bytes | bytearray | memoryview) -> None:
        """Hand node-b one frame: it must return events, and close exactly on a terminal one."""
        b = self.pair.b
        before = b.state
        events = b.receive_frame(raw, self.now)  # the property: this line never raises
        assert isinstance(events, list)
        assert all(isinstance(e, Event) for e in events), events
        self.seen += events
        if before is LinkState.CLOSED:
            assert events == []
        ended = [e for e in events if isinstance(e, TERMINAL)]
        assert len(ended) <= 1, events
        closed = before is LinkState.CLOSED or bool(ended)
        assert (b.state is LinkState.CLOSED) == closed, (before, b.state, events)
        if any(isinstance(e, HandshakeComplete) for e in events):
            assert b.state is LinkState.OPEN
        self.forward()

    def forward(self) -> None:
        """Every frame node-b queued is one it could decode itself; node-a receives them."""
        for out in self.pair.b.data_to_send():
            try:
                decode_frame(out)
            except FrameError:  # after its AUTH, a keyed node tags every frame it sends
                decode_frame(out[:-TAG_LENGTH])
            self.pair.a.receive_frame(out, self.now)

    def play(self, step: str, value: Any) -> None:
        """One step of a script (see the module docstring)."""
        if step == "frame":
            self.give(value)
        elif step == "tick":
            self.tick(value)
        elif step == "remote":
            for raw in self.pair.a.data_to_send():
                self.give(raw)
        elif step == "withdraw":
            if self.pair.b.state is LinkState.OPEN:
                self.pair.b.withdraw()
        else:
            self.decide(self.pair.a if step == "accept_a" else self.pair.b)
        self.forward()

    def decide(self, side: PeerProtocol) -> None:
        """The side's caller accepts, as the hub would, if the protocol waits for it."""
        if side.state in DECIDING:
            events = side.accept()
            if side is self.pair.b:
                self.seen += events

    def tick(self, seconds: float) -> None:
        """Time passes; both sides run their timers (pings, deadlines, a dead link)."""
        self.now += seconds
        self.pair.b.tick(self.now)
        self.pair.a.tick(self.now)


@settings(max_examples=300, deadline=None)  # deadline: no timing asserted in tests
@given(setups, st.booleans(), st.integers(0, 6), steps)
def test_any_frames_in_any_state_only_give_events(
    setup: dict[str, Any], b_first: bool, prefix: int, script: list[tuple[str, Any]]
) -> None:
    """Before, during and after the handshake, any frames in any order only ever give events."""
    player = Player(link(**setup))
    for step, value in honest(b_first)[:prefix]:
        player.play(step, value)
    event(f"node-b starts in {player.pair.b.state.name}")
    for step, value in script:
        player.play(step, value)
    player.play("remote", None)


def test_the_honest_steps_complete_the_handshake() -> None:
    """The honest prefix the property test starts from does open the link, with or without a key."""
    for keyed in (False, True):
        for b_first in (False, True):
            player = Player(link(mesh_key=KEY if keyed else None))
            for step, value in honest(b_first):
                player.play(step, value)
            assert player.pair.a.state is player.pair.b.state is LinkState.OPEN
            assert [type(e) for e in player.seen] == [HelloReceived, HandshakeComplete]
