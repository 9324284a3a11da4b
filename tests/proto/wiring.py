"""Two ``PeerProtocol`` objects wired to each other in memory, for synchronous tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from gravpy.proto import (
    Event,
    HelloReceived,
    LinkState,
    NodeInfo,
    PeerProtocol,
    ProtocolConfig,
)

KEY = b"k" * 32
START = 100.0


def make(
    node_uuid: str,
    *,
    initiator: bool,
    now: float = START,
    mesh_key: bytes | None = None,
    expected_uuid: str | None = None,
    belongs_to: str = "*",
    role: str = "peer",
    config: ProtocolConfig | None = None,
) -> PeerProtocol:
    """A protocol for ``node_uuid`` with a nonce derived from its uuid (deterministic)."""
    return PeerProtocol(
        NodeInfo(node_uuid, role=role, belongs_to=belongs_to, endpoint=f"ws://{node_uuid}"),
        initiator=initiator,
        now=now,
        nonce=node_uuid.encode().ljust(16, b"#")[:64],
        mesh_key=mesh_key,
        expected_uuid=expected_uuid,
        config=config,
    )


@dataclass
class Link:
    """Both ends of one link and every event each end has reported so far."""

    a: PeerProtocol
    b: PeerProtocol
    events_a: list[Event] = field(default_factory=list)
    events_b: list[Event] = field(default_factory=list)

    def pump(self, now: float = START) -> tuple[list[Event], list[Event]]:
        """Move frames both ways until neither side has anything to send; return new events."""
        new_a: list[Event] = []
        new_b: list[Event] = []
        for _ in range(1000):
            out_a, out_b = self.a.data_to_send(), self.b.data_to_send()
            if not out_a and not out_b:
                self.events_a += new_a
                self.events_b += new_b
                return new_a, new_b
            for frame in out_a:
                new_b += self.b.receive_frame(frame, now)
            for frame in out_b:
                new_a += self.a.receive_frame(frame, now)
        raise AssertionError("the link never went quiet")

    def handshake(self, now: float = START) -> None:
        """Exchange hellos, accept on both sides and check both ends are OPEN."""
        new_a, new_b = self.pump(now)
        assert any(isinstance(e, HelloReceived) for e in new_a), new_a
        assert any(isinstance(e, HelloReceived) for e in new_b), new_b
        self.events_a += self.a.accept()
        self.events_b += self.b.accept()
        self.pump(now)
        assert self.a.state is LinkState.OPEN
        assert self.b.state is LinkState.OPEN


def link(**kwargs: object) -> Link:
    """A link between node-a (the initiator) and node-b; ``a_*``/``b_*`` kwargs go to one side."""
    side_a = {k[2:]: v for k, v in kwargs.items() if k.startswith("a_")}
    side_b = {k[2:]: v for k, v in kwargs.items() if k.startswith("b_")}
    shared = {k: v for k, v in kwargs.items() if not k.startswith(("a_", "b_"))}
    a = make("node-a", initiator=True, **{**shared, **side_a})  # type: ignore[arg-type]
    b = make("node-b", initiator=False, **{**shared, **side_b})  # type: ignore[arg-type]
    return Link(a, b)


def open_link(**kwargs: object) -> Link:
    """A link whose handshake is complete."""
    pair = link(**kwargs)
    pair.handshake()
    return pair
