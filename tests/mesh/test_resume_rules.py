"""The resume rules for restarts, without links: skipped numbers, a position ahead of the origin,
and the gate a restarted node holds its requests at."""

from __future__ import annotations

import asyncio

from gravpy.mesh.resume import (
    Resumption,
    asked_after,
    resend_answer,
    resume_end,
    resume_request,
)
from gravpy.mesh.resume_gate import ResumeGate
from gravpy.message import Message


def _held(numbers: range) -> tuple[list[tuple[int, Message]], int]:
    entries = [(n, Message.new("r.x", b"")) for n in numbers]
    return entries, numbers.start if numbers else 0


def test_numbers_an_origin_jumped_over_are_not_counted_lost() -> None:
    """Asked after 100, holding 2,000-2,009 of which 101-1,999 were skipped: nothing is lost."""
    answer, lost = resend_answer(
        100, 2009, _held(range(2000, 2010)), lambda _: True, (range(101, 2000),)
    )
    assert lost == 0
    assert len(answer) == 11  # ten resent and the end
    assert [seq for _, seq in answer] == [-n for n in range(2000, 2010)] + [0]
    assert resume_end(answer[-1][0].data) == (0, 2009, 2000)  # lost, current, first held


def test_numbers_that_fell_out_are_counted_outside_the_skipped_range() -> None:
    """Asked after 50, skipped 101-199, holding from 250: 51-100 and 200-249 are lost (100)."""
    _, lost = resend_answer(50, 260, _held(range(250, 261)), lambda _: True, (range(101, 200),))
    assert lost == 100


def test_a_request_above_the_origins_number_is_answered_from_zero() -> None:
    """An origin asked after 500 that has numbered only 10 lost its numbering: it resends all."""
    assert asked_after(resume_request(500), 10) == 0
    assert asked_after(resume_request(7), 10) == 7


def test_the_receiver_moves_its_position_back_to_a_restarted_origins_number() -> None:
    """A resume end whose number is below the receiver's position moves the position there."""
    resumption: Resumption[object] = Resumption(lambda link, msg, seq: None)
    resumption.seen("o", 500)
    resumption.ended("o", 0, 10)
    assert resumption.last == {"o": 10}
    resumption.ended("o", 0, 20)
    assert resumption.last == {"o": 10}  # only ever moved back, never forward, by an end


def _resuming(asked: int) -> tuple[Resumption[str], list[int]]:
    delivered: list[int] = []
    resumption: Resumption[str] = Resumption(lambda link, msg, seq: delivered.append(seq))
    resumption.seen("o", asked)
    return resumption, delivered


async def test_a_resend_is_merged_with_what_came_live_in_the_origins_order() -> None:
    """Asked after 1 with 5 and 6 held live: resent 3 and 4 are delivered at once, resent 6 is
    dropped (held already), resent 7 waits with the held ones; at the end 5, 6, 7 follow."""
    resumption, delivered = _resuming(1)
    assert resumption.start("o") is not None
    msg = Message.new("r.x", b"")
    assert resumption.holds("o", "link", msg, 5, 100)
    assert resumption.holds("o", "link", msg, 6, 100)
    now = [seq for seq in (3, 4, 6, 7) if resumption.resent_now("o", "link", msg, seq, 100)]
    assert now == [3, 4]
    resumption.ended("o", 1, 7, 3)  # number 2 had left the origin's buffer
    assert delivered == [5, 6, 7]
    assert resumption.lost == {"o": 1}
    resumption.close()


async def test_numbers_that_came_live_are_not_counted_lost_when_the_resend_comes_late() -> None:
    """Asked after 1 and answered late (the origin holds 7 on, and counts 2-6 lost), while 5 and
    6 came live: only 2-4 are lost, and 5-8 are delivered in order."""
    resumption, delivered = _resuming(1)
    assert resumption.start("o") is not None
    msg = Message.new("r.x", b"")
    for seq in (5, 6):
        assert resumption.holds("o", "link", msg, seq, 100)
    for seq in (7, 8):  # (resent after the live ones: held with them)
        assert not resumption.resent_now("o", "link", msg, seq, 100)
    resumption.ended("o", *resume_end(b"5 8 7"))
    assert delivered == [5, 6, 7, 8]
    assert resumption.lost == {"o": 3}
    resumption.close()


class _Link:
    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.is_open = True
        self.got_one = asyncio.Event()

    def enqueue(self, msg: Message) -> int:
        self.sent.append(msg)
        self.got_one.set()
        return 1


async def test_the_gate_holds_requests_until_the_expected_leaves_are_back() -> None:
    """A request asked while two leaves are expected goes out on the turn after the second is
    back, after the re-advertisement that drops the leaves' patterns."""
    order: list[str] = []
    gate = ResumeGate(lambda: order.append(f"readvertise {sorted(gate.patterns)}"))
    gate.expect({"leaf-1": ("a.x",), "leaf-2": ("b.x",)}, grace=30.0)
    link = _Link()
    gate.ask(link, resume_request(3))
    gate.leaf_back("leaf-1")
    await asyncio.sleep(0)
    assert link.sent == []
    assert gate.patterns == {"a.x", "b.x"}
    gate.leaf_back("leaf-2")
    for _ in range(3):
        await asyncio.sleep(0)
    assert [m.data for m in link.sent] == [b"3"]
    assert order == ["readvertise ['a.x', 'b.x']", "readvertise []"]
    assert gate.opened_by == "leaves"
    gate.close()


async def test_the_gate_opens_after_its_grace_if_a_leaf_never_comes_back() -> None:
    """With a leaf that never returns, the held request goes out once the grace has passed."""
    gate = ResumeGate()
    gate.expect({"gone": ("a.x",)}, grace=0.01)
    link = _Link()
    gate.ask(link, resume_request(3))
    async with asyncio.timeout(5):
        await link.got_one.wait()  # sent when the grace timer fires
    assert gate.opened_by == "grace"
    gate.close()


def test_an_open_gate_sends_at_once() -> None:
    """A node that did not restart (nothing expected) sends the request as it is asked."""
    link = _Link()
    ResumeGate().ask(link, resume_request(1))
    assert len(link.sent) == 1
