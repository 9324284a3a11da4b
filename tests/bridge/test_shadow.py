"""The Shadow a standby bridge keeps for a takeover: pure, no clock, no NATS."""

from __future__ import annotations

from gravpy.bridge.shadow import Held, Shadow
from gravpy.bridge.subjects import from_nats
from gravpy.message import Message


def imported(i: int) -> Message:
    return Message.new("stream.n", str(i).encode(), headers={"grav-bridge-origin": "a"})


def held(msg: Message, at: float = 0.0) -> Held:
    return Held(msg, (), "", at)


def numbers(taken: list[Held]) -> list[int]:
    return [int(h.msg.data) for h in taken]


def test_takeover_delivers_what_was_not_seen_delivered_in_order() -> None:
    """What the active bridge was seen to deliver and settled is dropped; the rest comes back in
    the order NATS gave it."""
    shadow = Shadow(100, 10.0)
    msgs = [imported(i) for i in range(6)]
    for msg in msgs:
        shadow.hold(held(msg, 1.0))
    for msg in msgs[:3]:
        shadow.delivered(msg, 2.0)
    shadow.settled(3.0)
    assert numbers(shadow.take(4.0)) == [3, 4, 5]
    assert len(shadow) == 0


def test_struck_but_not_settled_messages_come_back_too() -> None:
    """A message seen delivered shortly before the active bridge died may not have reached every
    node, so a takeover delivers it again (each node's seen-set drops a second copy)."""
    shadow = Shadow(100, 10.0)
    msgs = [imported(i) for i in range(4)]
    for msg in msgs:
        shadow.hold(held(msg, 1.0))
    shadow.delivered(msgs[0], 1.0)
    shadow.delivered(msgs[1], 2.5)
    shadow.settled(2.0)
    assert numbers(shadow.take(3.0)) == [1, 2, 3]
    assert shadow.struck == 2


def test_a_delivery_seen_before_the_nats_copy_strikes_it_on_arrival() -> None:
    """If the active bridge's copy reaches this node before NATS's, the NATS copy is struck as
    it arrives."""
    shadow = Shadow(100, 10.0)
    early = imported(1)
    shadow.delivered(early, 1.0)
    shadow.hold(held(early, 1.0))
    shadow.hold(held(imported(2), 1.0))
    shadow.settled(5.0)
    assert numbers(shadow.take(5.0)) == [2]


def test_plain_nats_messages_are_recognised_by_content() -> None:
    """Two bridges give a plain NATS publisher's message different uuids, so it is struck by
    origin, type and data; identical ones are struck one at a time."""
    shadow = Shadow(100, 10.0)
    mine = [from_nats("sensor.t", b"21", None, "outside")[0] for _ in range(2)]
    theirs = from_nats("sensor.t", b"21", None, "outside")[0]
    assert theirs.uuid not in {m.uuid for m in mine}
    for msg in mine:
        shadow.hold(held(msg, 1.0))
    shadow.delivered(theirs, 1.0)
    shadow.settled(2.0)
    assert [h.msg.uuid for h in shadow.take(2.0)] == [mine[1].uuid]


def test_overflow_and_age_are_counted() -> None:
    """Past its limit the shadow drops its oldest (counted overflow); a message never seen
    delivered within max_age is dropped and counted expired."""
    shadow = Shadow(3, 5.0)
    for i in range(5):
        shadow.hold(held(imported(i), 1.0))
    assert shadow.overflow == 2
    assert numbers(shadow.take(2.0)) == [2, 3, 4]
    shadow.hold(held(imported(9), 1.0))
    shadow.hold(held(imported(10), 7.0))
    assert shadow.expired == 1
    assert numbers(shadow.take(7.0)) == [10]
