"""The handshake: hellos, key proof, the caller's decision, every rejection reason, the deadline."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gravpy.errors import HandshakeRejectedError, UsageError
from gravpy.proto import (
    PROTOCOL_VERSION,
    REASON_DEADLINE,
    REASON_DUPLICATE,
    REASON_MESH,
    REASON_PROOF,
    REASON_ROLE,
    REASON_SELF,
    REASON_UNEXPECTED_FRAME,
    REASON_UUID_MISMATCH,
    REASON_VERSION,
    HandshakeComplete,
    Hello,
    HelloReceived,
    LinkState,
    NodeInfo,
    ProtocolConfig,
    ProtocolViolation,
    Rejected,
    encode_frame,
)
from gravpy.proto import handshake as hs
from gravpy.proto.frames import Accept, Auth, Frame, FrameKind, Ping, Reject

from .wiring import KEY, START, Link, link, make, open_link


def rejections(events: list[object]) -> list[Rejected]:
    """The Rejected events among ``events``."""
    return [e for e in events if isinstance(e, Rejected)]


@pytest.mark.parametrize("mesh_key", [None, KEY], ids=["no-key", "key"])
def test_handshake_completes_on_both_sides(mesh_key: bytes | None) -> None:
    """Both sides learn the other's hello and report HandshakeComplete, with or without a key."""
    pair = open_link(mesh_key=mesh_key)
    done_a = [e for e in pair.events_a if isinstance(e, HandshakeComplete)]
    done_b = [e for e in pair.events_b if isinstance(e, HandshakeComplete)]
    assert [e.remote.node_uuid for e in done_a] == ["node-b"]
    assert [e.remote.node_uuid for e in done_b] == ["node-a"]
    assert done_a[0].remote.endpoint == "ws://node-b"
    assert done_a[0].remote.keyed is (mesh_key is not None)
    assert pair.a.remote == done_a[0].remote


@pytest.mark.parametrize("first", ["initiator", "acceptor"])
def test_either_side_may_accept_first(first: str) -> None:
    """The handshake completes whichever side's caller accepts first, and only when both have."""
    pair = link()
    pair.pump()
    early, late = (pair.a, pair.b) if first == "initiator" else (pair.b, pair.a)
    assert early.accept() == []
    pair.pump()
    assert early.state is LinkState.AWAIT_ACCEPT
    assert late.state is LinkState.REMOTE_ACCEPTED
    completed = late.accept()
    assert [type(e) for e in completed] == [HandshakeComplete]
    new_a, new_b = pair.pump()
    assert [type(e) for e in (new_a if early is pair.a else new_b)] == [HandshakeComplete]
    assert pair.a.state is pair.b.state is LinkState.OPEN


def test_the_initiator_says_hello_first_and_the_acceptor_answers_it() -> None:
    """A fresh initiator has exactly its HELLO queued; a fresh acceptor has nothing queued until
    the remote's HELLO passed its checks, then its own HELLO goes first."""
    dialler = make("node-a", initiator=True)
    frames = dialler.data_to_send()
    assert len(frames) == 1
    assert frames[0][1] == FrameKind.HELLO
    acceptor = make("node-b", initiator=False)
    assert acceptor.data_to_send() == []
    assert [type(e) for e in acceptor.receive_frame(frames[0], START)] == [HelloReceived]
    answer = acceptor.data_to_send()
    assert [f[1] for f in answer] == [FrameKind.HELLO]
    assert (dialler.initiator, acceptor.initiator) == (True, False)


def assert_rejected_both_sides(pair: Link, reason: str, *, by: str) -> None:
    """Both ends end CLOSED with ``reason``; the side that did not reject hears it by_remote."""
    pair.pump()
    got_a, got_b = rejections(pair.events_a), rejections(pair.events_b)
    assert [e.reason for e in got_a] == [reason]
    assert [e.reason for e in got_b] == [reason]
    if by == "a":
        assert (got_a[0].by_remote, got_b[0].by_remote) == (False, True)
    elif by == "b":
        assert (got_a[0].by_remote, got_b[0].by_remote) == (True, False)
    else:  # a symmetric check: both sides found it
        assert (got_a[0].by_remote, got_b[0].by_remote) == (False, False)
    assert pair.a.state is pair.b.state is LinkState.CLOSED
    rejecters = {"a": [pair.events_a], "b": [pair.events_b]}.get(by, [pair.events_a, pair.events_b])
    for events in rejecters:  # a side that refuses never asks its caller to decide
        assert not any(isinstance(e, HelloReceived) for e in events)


def test_reject_version() -> None:
    """A HELLO of another protocol version is refused with "version"."""
    pair = link()
    pair.b.data_to_send()  # replace b's HELLO with one from the future
    future = Hello("node-b", "peer", "*", "", b"n" * 16, keyed=False, version=PROTOCOL_VERSION + 1)
    events = pair.a.receive_frame(encode_frame(future), START)
    assert [(e.reason, e.by_remote) for e in rejections(events)] == [(REASON_VERSION, False)]
    pair.pump()
    assert [e.reason for e in rejections(pair.events_b)] == [REASON_VERSION]


def test_reject_version_1_peer_that_knows_no_groups() -> None:
    """A version-1 HELLO (INTERESTS without groups) is refused with "version" and a clear detail."""
    pair = link()
    pair.b.data_to_send()
    old = Hello("node-b", "peer", "*", "", b"n" * 16, keyed=False, version=1)
    events = pair.a.receive_frame(encode_frame(old), START)
    refused = rejections(events)
    assert [e.reason for e in refused] == [REASON_VERSION]
    assert "version 1" in refused[0].detail
    assert f"speaks {PROTOCOL_VERSION}" in refused[0].detail
    pair.pump()
    assert [e.reason for e in rejections(pair.events_b)] == [REASON_VERSION]


def test_reject_self() -> None:
    """A node that reaches itself refuses the link with "self" (both ends see it)."""
    a = make("node-a", initiator=True)
    b = make("node-a", initiator=False)
    assert_rejected_both_sides(Link(a, b), REASON_SELF, by="b")


def test_reject_uuid_mismatch() -> None:
    """The dialler refuses a node whose uuid differs from what discovery reported."""
    pair = link(a_expected_uuid="node-c")
    assert_rejected_both_sides(pair, REASON_UUID_MISMATCH, by="a")
    detail = rejections(pair.events_b)[0].detail
    assert "node-c" in detail
    assert "node-b" in detail


def test_expected_uuid_that_matches_passes() -> None:
    """A remote that is the node discovery reported is accepted."""
    pair = open_link(a_expected_uuid="node-b")
    assert pair.a.state is LinkState.OPEN


def test_reject_mesh() -> None:
    """Nodes of two different named meshes refuse each other with "mesh"."""
    pair = link(a_belongs_to="red", b_belongs_to="blue")
    assert_rejected_both_sides(pair, REASON_MESH, by="b")


@pytest.mark.parametrize(("mesh_a", "mesh_b"), [("red", "red"), ("*", "blue"), ("red", "*")])
def test_mesh_wildcard_or_equal_names_link(mesh_a: str, mesh_b: str) -> None:
    """Equal mesh names link, and "*" on either side joins any mesh."""
    pair = open_link(a_belongs_to=mesh_a, b_belongs_to=mesh_b)
    assert pair.b.state is LinkState.OPEN


def test_reject_leaf_to_leaf() -> None:
    """Two leaves refuse each other with "role": a leaf attaches only to a peer."""
    pair = link(role="leaf")
    assert_rejected_both_sides(pair, REASON_ROLE, by="b")


def test_leaf_links_to_peer() -> None:
    """A leaf and a peer complete the handshake and see each other's role."""
    pair = open_link(a_role="leaf")
    assert pair.b.remote is not None
    assert pair.b.remote.role == "leaf"


def test_reject_wrong_key() -> None:
    """Two sides with different mesh keys refuse each other with "proof"."""
    pair = link(a_mesh_key=KEY, b_mesh_key=b"x" * 32)
    assert_rejected_both_sides(pair, REASON_PROOF, by="both")


@pytest.mark.parametrize("keyed_side", ["a", "b"])
def test_reject_key_on_one_side_only(keyed_side: str) -> None:
    """A key on one side only is refused with "proof" before any AUTH is sent: the acceptor
    answers the initiator's HELLO with REJECT alone."""
    pair = link(**{f"{keyed_side}_mesh_key": KEY})
    assert_rejected_both_sides(pair, REASON_PROOF, by="b")
    assert pair.a.statistics().frames_out == 1  # HELLO
    assert pair.b.statistics().frames_out == 1  # REJECT: no HELLO, no AUTH


def test_caller_reject_duplicate() -> None:
    """The caller's reject("duplicate") reaches the remote with its detail."""
    pair = link()
    pair.pump()
    pair.b.reject(REASON_DUPLICATE, "already linked to node-a")
    assert pair.b.state is LinkState.CLOSED
    pair.pump()
    got = rejections(pair.events_a)
    assert [(e.reason, e.detail, e.by_remote) for e in got] == [
        (REASON_DUPLICATE, "already linked to node-a", True)
    ]
    assert pair.a.state is LinkState.CLOSED


def test_handshake_deadline() -> None:
    """A handshake not complete by handshake_timeout is refused with "deadline" on tick."""
    config = ProtocolConfig(handshake_timeout=5.0)
    pair = link(config=config)
    pair.pump()  # hellos exchanged, but nobody accepts
    assert pair.a.next_timer() == START + 5.0
    assert pair.a.tick(START + 4.9) == []
    events = pair.a.tick(START + 5.0)
    assert [(e.reason, e.by_remote) for e in rejections(events)] == [(REASON_DEADLINE, False)]
    pair.pump()
    assert [e.reason for e in rejections(pair.events_b)] == [REASON_DEADLINE]
    assert pair.a.next_timer() is None


def test_rejected_converts_to_handshake_rejected_error() -> None:
    """A Rejected event becomes a HandshakeRejectedError carrying reason, peer and detail."""
    error = Rejected(REASON_MESH, "remote belongs to 'blue'", by_remote=True).as_error("ws://b")
    assert isinstance(error, HandshakeRejectedError)
    assert (error.reason, error.peer) == (REASON_MESH, "ws://b")
    assert "blue" in str(error)


def test_reflected_proof_does_not_verify() -> None:
    """A side's own AUTH proof sent back to it is not a valid proof from the remote."""
    hello_a, hello_b = b"hello-a", b"hello-b"
    proof_a = hs.auth_proof(KEY, hello_a, hello_b)
    assert hs.verify_proof(KEY, proof_a, hello_a, hello_b)
    assert not hs.verify_proof(KEY, proof_a, hello_b, hello_a)
    assert not hs.verify_proof(b"z" * 32, proof_a, hello_a, hello_b)


def test_auth_proof_matches_documented_transcript() -> None:
    """The proof is HMAC-SHA256 over the context and both length-prefixed HELLOs, prover first."""
    msg = b"gravpy/1 mesh-key proof\x00" + b"\x00\x00\x00\x01P" + b"\x00\x00\x00\x02VV"
    assert hs.auth_proof(KEY, b"P", b"VV") == hmac.new(KEY, msg, hashlib.sha256).digest()


def test_accept_and_reject_outside_the_decision_raise() -> None:
    """accept() before HelloReceived, reject() after accept() and accept() twice are UsageErrors."""
    pair = link()
    with pytest.raises(UsageError):
        pair.a.accept()
    pair.pump()
    pair.a.accept()
    with pytest.raises(UsageError):
        pair.a.reject(REASON_DUPLICATE)
    with pytest.raises(UsageError):
        pair.a.accept()


def test_remote_may_not_reject_after_accepting() -> None:
    """A REJECT after the remote's own ACCEPT is a protocol violation, not a rejection."""
    pair = link()
    pair.pump()
    pair.b.accept()
    pair.pump()
    assert pair.a.state is LinkState.REMOTE_ACCEPTED
    events = pair.a.receive_frame(encode_frame(Reject(REASON_DUPLICATE)), START)
    assert [type(e).__name__ for e in events] == ["ProtocolViolation"]
    assert pair.a.state is LinkState.CLOSED


def test_transition_table_has_no_way_out_of_closed() -> None:
    """CLOSED is final: no input leads anywhere from it, and every other state can reach it."""
    assert not [key for key in hs.TRANSITIONS if key[0] is LinkState.CLOSED]
    for state in LinkState:
        if state is not LinkState.CLOSED:
            assert hs.TRANSITIONS[state, hs.Trigger.CLOSE] is LinkState.CLOSED


@pytest.mark.parametrize(
    "frame",
    [
        Hello("node-b", "peer", "*", "", b"n" * 16, keyed=False),
        Auth(b"p" * 32),
        Ping(1),
    ],
    ids=["second-hello", "auth-unkeyed", "ping"],
)
def test_frames_out_of_place_in_the_handshake_are_violations(frame: Frame) -> None:
    """A second HELLO, AUTH on an unkeyed link or PING before OPEN closes the link."""
    pair = link()
    pair.pump()
    assert pair.a.state is LinkState.AWAIT_DECISION
    events = pair.a.receive_frame(encode_frame(frame), START)
    assert [(type(e), e.reason) for e in events if isinstance(e, ProtocolViolation)] == [
        (ProtocolViolation, REASON_UNEXPECTED_FRAME)
    ]
    assert pair.a.state is LinkState.CLOSED
    assert pair.a.receive_frame(encode_frame(Accept()), START) == []


@pytest.mark.parametrize("mesh", ["lab\x00", "lab\x1b[2J", "a\u202eb", "bad\udcff"])
def test_a_node_cannot_belong_to_a_mesh_named_with_control_characters(mesh: str) -> None:
    """A mesh name with a control or invisible character, or a lone surrogate, is refused."""
    with pytest.raises(UsageError, match="printable"):
        NodeInfo("a" * 32, belongs_to=mesh)
