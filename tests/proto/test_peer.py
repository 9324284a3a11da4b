"""An open link: messages, interests, gossip, withdraw, liveness, violations and misuse."""

from __future__ import annotations

import msgpack
import pytest

from gravpy.errors import UsageError
from gravpy.message import Message
from gravpy.proto import (
    REASON_BAD_FRAME,
    REASON_DEAD,
    REASON_SHUTDOWN,
    REASON_UNEXPECTED_FRAME,
    Closed,
    InterestsReceived,
    Limits,
    LinkDead,
    LinkState,
    MessagesReceived,
    PeersReceived,
    ProtocolConfig,
    ProtocolViolation,
    WithdrawAcked,
    WithdrawReceived,
    decode_frame,
    encode_frame,
    encode_msgs,
)
from gravpy.proto.frames import Close, FrameKind, Ping, Pong

from .wiring import START, link, open_link


def received_messages(events: list[object]) -> list[Message]:
    """Every message in the MessagesReceived events, in order."""
    return [m for e in events if isinstance(e, MessagesReceived) for m in e.messages]


def test_messages_round_trip_in_order_with_every_field() -> None:
    """A batch arrives whole, in order, with uuid, parent, reply_to, type, time, data, headers."""
    pair = open_link()
    request = Message.new("sensor.kitchen.temp", {"c": 21.5}, headers={"traceparent": "00-ab"})
    batch = [request, Message.new_reply(request, "sensor.ack", b"ok")]
    batch += [Message.new("bulk.item", f"item {i}") for i in range(100)]
    assert pair.a.send_messages(batch) == len(batch)
    frames = pair.a.data_to_send()
    assert len(frames) == 1  # one MSGS frame for the whole batch
    events = [e for f in frames for e in pair.b.receive_frame(f, START)]
    got = received_messages(events)
    assert got == batch
    assert got[1].reply_to == request.uuid
    assert got[0].headers == {"traceparent": "00-ab"}
    assert got[0].timestamp == request.timestamp
    assert pair.a.statistics().messages_out == pair.b.statistics().messages_in == len(batch)


def test_big_batch_is_split_into_frames_within_limits() -> None:
    """A batch over max_batch or max_frame_bytes goes as several frames, order kept."""
    limits = Limits(max_frame_bytes=8192, max_message_bytes=4096, max_batch=5)
    pair = open_link(config=ProtocolConfig(limits=limits))
    batch = [Message.new("t", bytes([i]) * 1500) for i in range(12)]
    pair.a.send_messages(batch)
    frames = pair.a.data_to_send()
    assert len(frames) >= 3
    assert all(len(f) <= limits.max_frame_bytes for f in frames)
    events = [e for f in frames for e in pair.b.receive_frame(f, START)]
    assert received_messages(events) == batch


def test_message_over_the_data_limit_is_refused_locally() -> None:
    """send_messages raises UsageError for oversized data and queues nothing of the batch."""
    limits = Limits(max_frame_bytes=4096, max_message_bytes=1024)
    pair = open_link(config=ProtocolConfig(limits=limits))
    with pytest.raises(UsageError, match="max_message_bytes"):
        pair.a.send_messages([Message.new("t", b"ok"), Message.new("t", b"x" * 1025)])
    assert pair.a.data_to_send() == []


def test_interests_and_peers_arrive_as_sent() -> None:
    """INTERESTS and PEERS reach the remote as tuples equal to what was sent."""
    pair = open_link()
    pair.a.send_interests(["sensor.>", "reply.*.done", "exact.type"], [("workers", "jobs.*", 3)])
    pair.a.send_peers([("node-c", "ws://c:8080/meta/message")])
    _, new_b = pair.pump()
    assert new_b == [
        InterestsReceived(("sensor.>", "reply.*.done", "exact.type"), (("workers", "jobs.*", 3),)),
        PeersReceived((("node-c", "ws://c:8080/meta/message"),)),
    ]


@pytest.mark.parametrize("bad", ["sensor.>.x", "a..b", "", "has space", "*>"])
def test_invalid_interest_pattern_is_a_usage_error(bad: str) -> None:
    """send_interests refuses a malformed type pattern before anything is queued."""
    pair = open_link()
    with pytest.raises(UsageError):
        pair.a.send_interests(["ok.type", bad])
    assert pair.a.data_to_send() == []


def test_withdraw_is_acknowledged_and_stops_sending_to_the_withdrawn_side() -> None:
    """WITHDRAW gets an automatic ACK; messages for a withdrawn remote are dropped and counted."""
    pair = open_link()
    pair.a.withdraw()
    new_a, new_b = pair.pump()
    assert new_b == [WithdrawReceived()]
    assert new_a == [WithdrawAcked()]
    assert pair.b.remote_withdrawn
    assert pair.a.local_withdrawn
    assert pair.b.send_messages([Message.new("t", b"late")]) == 0
    assert pair.b.data_to_send() == []
    assert pair.b.statistics().messages_dropped == 1
    # The withdrawing side may still drain its own messages.
    pair.a.send_messages([Message.new("t", b"drain")])
    _, new_b = pair.pump()
    assert [m.data for m in received_messages(list(new_b))] == [b"drain"]


def test_withdraw_ack_without_withdraw_is_a_violation() -> None:
    """An unsolicited WITHDRAW_ACK closes the link as an unexpected frame."""
    pair = open_link()
    events = pair.a.receive_frame(msgpack.packb([FrameKind.WITHDRAW_ACK]), START)
    assert [(type(e), e.reason) for e in events if isinstance(e, ProtocolViolation)] == [
        (ProtocolViolation, REASON_UNEXPECTED_FRAME)
    ]


def test_ping_pong_keeps_an_idle_link_alive() -> None:
    """Ticking both sides of an idle link sends PINGs and PONGs, and neither declares it dead."""
    config = ProtocolConfig(ping_interval=2.0, dead_after=6.0)
    pair = open_link(config=config)
    now = START
    for _ in range(20):  # 20 s of idling, ticking every second
        now += 1.0
        assert pair.a.tick(now) == []
        assert pair.b.tick(now) == []
        pair.pump(now)
    assert pair.a.state is pair.b.state is LinkState.OPEN
    assert pair.a.statistics().pings_sent >= 5
    assert pair.a.statistics().rtt == 0.0


def test_silence_beyond_dead_after_yields_link_dead() -> None:
    """A remote that sends nothing for dead_after is declared dead on tick, with a CLOSE queued."""
    config = ProtocolConfig(ping_interval=2.0, dead_after=6.0)
    pair = open_link(config=config)
    assert pair.a.tick(START + 2.0) == []  # sends a PING that is never delivered
    assert pair.a.next_timer() == START + 4.0  # the next PING is due before the deadline
    assert pair.a.tick(START + 4.0) == []
    assert pair.a.next_timer() == START + 6.0
    assert pair.a.tick(START + 5.9) == []
    events = pair.a.tick(START + 6.0)
    assert [type(e) for e in events] == [LinkDead]
    assert events[0] == LinkDead(REASON_DEAD, events[0].detail)
    assert pair.a.state is LinkState.CLOSED
    sent = [decode_frame(f) for f in pair.a.data_to_send()]
    assert sent[-1] == Close(REASON_DEAD, events[0].detail)


def test_tick_pings_only_after_ping_interval_of_sending_nothing() -> None:
    """No PING goes out while frames were sent within ping_interval; one goes out after."""
    pair = open_link(config=ProtocolConfig(ping_interval=2.0, dead_after=6.0))
    pair.a.receive_frame(encode_frame(Ping(7)), START + 1.5)  # answering counts as sending
    assert [decode_frame(f) for f in pair.a.data_to_send()] == [Pong(7)]
    assert pair.a.tick(START + 3.0) == []
    assert pair.a.data_to_send() == []
    pair.a.tick(START + 3.5)
    assert [type(decode_frame(f)) for f in pair.a.data_to_send()] == [Ping]


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",  # reserved msgpack byte
        b"not msgpack at all",
        msgpack.packb({"kind": 5}),
        msgpack.packb([99]),
        msgpack.packb([FrameKind.MSGS, "not a list"]),
        msgpack.packb([FrameKind.PING, -1]),
    ],
    ids=["reserved", "garbage", "map", "unknown-kind", "msgs-shape", "ping-nonce"],
)
def test_bad_frame_closes_with_reason_and_never_raises(frame: bytes) -> None:
    """Garbage yields ProtocolViolation and a CLOSE frame with the reason; later input is ignored."""
    pair = open_link()
    events = pair.b.receive_frame(frame, START)
    assert [type(e) for e in events] == [ProtocolViolation]
    assert events[0].reason == REASON_BAD_FRAME
    assert pair.b.state is LinkState.CLOSED
    pair.pump()
    closed = [e for e in pair.events_a if isinstance(e, Closed)]
    assert [(e.reason, e.by_remote) for e in closed] == [(REASON_BAD_FRAME, True)]
    assert pair.b.receive_frame(encode_msgs([Message.new("t")]), START) == []


def test_oversized_frame_and_batch_are_violations() -> None:
    """A frame over max_frame_bytes, or a batch over max_batch, is refused without raising."""
    limits = Limits(max_frame_bytes=2048, max_message_bytes=1024, max_batch=4)
    pair = open_link(config=ProtocolConfig(limits=limits))
    too_big = encode_msgs([Message.new("t", b"x" * 3000)])
    events = pair.b.receive_frame(too_big, START)
    assert "max_frame_bytes" in events[0].detail  # type: ignore[attr-defined]
    other = open_link(config=ProtocolConfig(limits=limits))
    events = other.b.receive_frame(encode_msgs([Message.new("t")] * 5), START)
    assert [type(e) for e in events] == [ProtocolViolation]
    assert "over the limit of 4" in events[0].detail  # type: ignore[attr-defined]
    sent = [decode_frame(f) for f in other.b.data_to_send()]
    assert isinstance(sent[-1], Close)
    assert sent[-1].reason == REASON_BAD_FRAME


def test_message_frame_before_handshake_is_a_violation() -> None:
    """MSGS before the handshake completes closes the link as an unexpected frame."""
    pair = link()
    pair.a.data_to_send()
    events = pair.b.receive_frame(encode_msgs([Message.new("t")]), START)
    assert [(type(e), e.reason) for e in events if isinstance(e, ProtocolViolation)] == [
        (ProtocolViolation, REASON_UNEXPECTED_FRAME)
    ]
    assert "MSGS" in events[0].detail  # type: ignore[attr-defined]


def test_sending_before_open_or_after_close_is_a_usage_error() -> None:
    """send_* and withdraw() raise UsageError unless the link is OPEN; close() is idempotent."""
    pair = link()
    with pytest.raises(UsageError):
        pair.a.send_messages([Message.new("t")])
    pair = open_link()
    pair.a.close(REASON_SHUTDOWN, "bye")
    pair.a.close()
    with pytest.raises(UsageError):
        pair.a.send_interests([])
    with pytest.raises(UsageError):
        pair.a.withdraw()
    _, new_b = pair.pump()
    assert new_b == [Closed(REASON_SHUTDOWN, "bye", by_remote=True)]


def test_messages_that_arrive_after_this_side_closed_are_counted_not_delivered() -> None:
    """MSGS frames that reach a side after it closed the link yield nothing, and the messages
    in them are counted in messages_ignored (a frame that cannot be read counts nothing)."""
    pair = open_link()
    pair.a.send_messages([Message.new("late.n", str(i)) for i in range(3)])
    in_flight = pair.a.data_to_send()  # sent before a hears b's CLOSE
    pair.b.close(REASON_SHUTDOWN)
    assert [e for f in in_flight for e in pair.b.receive_frame(f, START)] == []
    assert pair.b.receive_frame(b"not a frame", START) == []
    assert pair.b.statistics().messages_ignored == 3
    assert pair.b.statistics().messages_in == 0


def test_statistics_count_frames_and_bytes_both_ways() -> None:
    """Frames and bytes out on one side equal frames and bytes in on the other."""
    pair = open_link()
    pair.a.send_messages([Message.new("t", b"x" * 100)])
    pair.pump()
    sa, sb = pair.a.statistics(), pair.b.statistics()
    assert (sa.frames_out, sa.bytes_out) == (sb.frames_in, sb.bytes_in)
    assert (sb.frames_out, sb.bytes_out) == (sa.frames_in, sa.bytes_in)
    assert sa.bytes_out > 100
    assert sa.state is LinkState.OPEN


def test_a_link_that_holds_reading_is_not_declared_dead_and_resumes_counting() -> None:
    """While the caller holds reading no LinkDead is reported; silence counts again on resume."""
    config = ProtocolConfig(ping_interval=2.0, dead_after=6.0)
    pair = open_link(config=config)
    pair.a.hold_reading()
    assert pair.a.tick(START + 30.0) == []  # a PING goes out, no verdict
    assert pair.a.state is LinkState.OPEN
    pair.a.resume_reading(START + 30.0)
    assert not any(isinstance(e, LinkDead) for e in pair.a.tick(START + 35.0))
    assert [type(e) for e in pair.a.tick(START + 36.0)] == [LinkDead]
