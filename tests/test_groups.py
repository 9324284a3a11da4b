"""Groups in one process: each message a group admits goes to exactly one live member."""

from __future__ import annotations

import asyncio

import pytest

from gravpy import Grav, Message, Pod
from gravpy.errors import NoResponders, UsageError
from gravpy.groups import GROUP_HEADER, WeightedTurns, check_group, marked, unmarked
from tests._bus_helpers import settle


def received(pod: Pod) -> int:
    return pod.statistics().received


def ignore(msg: Message) -> None:
    return None


async def test_each_message_goes_to_one_member_and_every_ungrouped_pod() -> None:
    """300 messages to a group of three: each member gets exactly 100; an ungrouped pod gets all."""
    async with Grav() as g:
        members = [g.connect() for _ in range(3)]
        for pod in members:
            pod.on_type("jobs.*", ignore, group="workers")
        watcher = g.connect()
        watcher.on_type("jobs.*", ignore)
        sender = g.connect()
        for i in range(300):
            sender.send(Message.new("jobs.run", str(i)))
        assert [received(p) for p in members] == [100, 100, 100]
        assert received(watcher) == 300


async def test_a_message_reaches_one_member_of_each_group() -> None:
    """Two groups admitting the same type each get one copy of every message."""
    async with Grav() as g:
        a = [g.connect() for _ in range(2)]
        b = [g.connect() for _ in range(3)]
        for pod in a:
            pod.on(ignore, group="a")
        for pod in b:
            pod.on(ignore, group="b")
        receipt = g.connect().send(Message.new("any.type"))
        assert not receipt.no_responders
        assert sum(received(p) for p in a) == 1
        assert sum(received(p) for p in b) == 1


async def test_iterated_pods_join_a_group() -> None:
    """Pods iterated with async for share a group joined with join_group."""
    async with Grav() as g:
        pods = [g.connect() for _ in range(2)]
        got: asyncio.Queue[int] = asyncio.Queue()

        async def consume(index: int, pod: Pod) -> None:
            async for _ in pod:
                got.put_nowait(index)

        for pod in pods:
            pod.join_group("iter")
            aiter(pod)  # iterating makes it a receiver at once
        assert all(p.receiving for p in pods)
        tasks = [asyncio.create_task(consume(i, p)) for i, p in enumerate(pods)]
        async with asyncio.timeout(5):
            sender = g.connect()
            for i in range(10):
                sender.send(Message.new("it.x", str(i)))
            who = [await got.get() for _ in range(10)]
        assert (who.count(0), who.count(1)) == (5, 5)
        for pod in pods:
            pod.disconnect()
        await asyncio.gather(*tasks)


async def test_a_congested_member_is_skipped_while_another_has_room() -> None:
    """A member whose inbox is over its high-water mark gets nothing while another has room."""
    async with Grav() as g:
        slow = g.connect(inbox_limit=4)
        slow.on(ignore, group="w")
        fast = g.connect()
        fast.on(ignore, group="w")
        sender = g.connect()
        for _ in range(4):  # no drain runs between sends: slow fills to its high-water mark
            sender.send(Message.new("c.x"))
        assert slow.congested
        assert received(slow) == 2
        for _ in range(10):
            sender.send(Message.new("c.x"))
        assert (received(slow), received(fast)) == (2, 12)


async def test_closed_members_are_skipped_and_an_empty_group_is_not_delivered() -> None:
    """After members leave, the rest share all; with none left, a request has no responders."""
    async with Grav() as g:
        pods = [g.connect() for _ in range(2)]
        for pod in pods:
            pod.on_type("svc.q", ignore, group="svc")
        pods[0].disconnect()
        sender = g.connect()
        for _ in range(4):
            sender.send(Message.new("svc.q"))
        assert received(pods[1]) == 4
        pods[1].disconnect()
        receipt = sender.send(Message.new("svc.q"))
        with pytest.raises(NoResponders):
            await receipt.wait_until(1.0)
        assert g.bus.statistics().undelivered == 1


async def test_a_request_to_a_group_gets_exactly_one_reply() -> None:
    """Three grouped responders: a request is answered once, by one of them."""
    async with Grav() as g:
        for i in range(3):
            pod = g.connect()

            def answer(msg: Message, pod: Pod = pod, i: int = i) -> None:
                if not msg.reply_to:
                    pod.reply_to(msg, Message.new("svc.answer", str(i)))

            pod.on_type("svc.ask", answer, group="svc")
        asker = g.connect()
        receipt = asker.send(Message.new("svc.ask"))
        replies = [r async for r in receipt.replies(timeout=0.5)]
        assert len(replies) == 1


async def test_the_sender_never_gets_its_own_message_from_its_group() -> None:
    """A member that sends to its own group's type: another member gets it, never the sender."""
    async with Grav() as g:
        a, b = g.connect(), g.connect()
        a.on(ignore, group="self")
        b.on(ignore, group="self")
        for _ in range(5):
            a.send(Message.new("s.x"))
        assert (received(a), received(b)) == (0, 5)


async def test_replies_are_not_given_to_groups() -> None:
    """A reply nobody waits for goes to ungrouped pods, never to a group member."""
    async with Grav() as g:
        member = g.connect()
        member.on(ignore, group="g")
        plain = g.connect()
        plain.on(ignore)
        request = Message.new("r.x")
        g.connect().send(Message.new_reply(request, "r.x"))
        assert (received(member), received(plain)) == (0, 1)


async def test_leaving_a_group_restores_own_copies() -> None:
    """After leave_group a pod gets every message again."""
    async with Grav() as g:
        a, b = g.connect(), g.connect()
        a.on(ignore, group="g")
        b.on(ignore, group="g")
        sender = g.connect()
        sender.send(Message.new("l.x"))
        a.leave_group()
        b.leave_group()
        sender.send(Message.new("l.x"))
        assert received(a) + received(b) == 3


@pytest.mark.parametrize("how", ["join_group", "on(group=)"])
async def test_a_replay_pod_that_received_as_a_member_is_never_replayed(how: str) -> None:
    """A connect_with_replay pod that received as a group member, then left the group, gets its
    own copies from then on but no replay: it would hand the pod again what it already had."""
    async with Grav() as g:
        sender = g.connect()
        pod = g.connect_with_replay()
        got: list[str] = []
        if how == "join_group":
            pod.join_group("g1")
            pod.on(lambda m: got.append(m.text()))
        else:
            pod.on(lambda m: got.append(m.text()), group="g1")
        for i in range(5):
            sender.send(Message.new("r.x", str(i)))
        await settle(g)
        assert got == ["0", "1", "2", "3", "4"]
        pod.leave_group()
        pod.on(lambda m: got.append(m.text()))
        sender.send(Message.new("r.x", "5"))
        await settle(g)
        assert got == ["0", "1", "2", "3", "4", "5"]
        assert received(pod) == 6


async def test_a_replay_pod_that_left_its_group_before_receiving_is_replayed() -> None:
    """A replay pod that joined a group and left it before it ever received still gets its replay."""
    async with Grav() as g:
        sender = g.connect()
        for i in range(3):
            sender.send(Message.new("r.x", str(i)))
        pod = g.connect_with_replay()
        pod.join_group("g1")
        pod.leave_group()
        got: list[str] = []
        pod.on(lambda m: got.append(m.text()))
        await settle(g)
        assert got == ["0", "1", "2"]


@pytest.mark.parametrize("bad", ["", "has space", "a.*", "a.>", "a..b", 7])
async def test_a_bad_group_name_is_refused(bad: object) -> None:
    """Group names follow the message-type rules; anything else is a UsageError at once."""
    async with Grav() as g:
        pod = g.connect()
        with pytest.raises(UsageError, match="group name"):
            pod.on(ignore, group=bad)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="group name"):
            pod.join_group(bad)  # type: ignore[arg-type]
        assert pod.group is None


async def test_pods_may_not_send_the_reserved_group_header() -> None:
    """A message carrying the mesh's group mark is refused at send (it would forge a choice)."""
    async with Grav() as g:
        with pytest.raises(UsageError, match="reserved"):
            g.connect().send(Message.new("h.x", headers={GROUP_HEADER: "g"}))


def test_the_mark_round_trips_and_leaves_other_headers() -> None:
    """marked then unmarked gives back the message, its own headers and the group names."""
    msg = Message.new("m.x", b"d", headers={"trace": "1"})
    copy = marked(msg, ["a", "b.c"])
    assert copy.headers == {"trace": "1", GROUP_HEADER: "a b.c"}
    assert msg.headers == {"trace": "1"}
    plain, names = unmarked(copy)
    assert names == ("a", "b.c")
    assert plain == msg
    assert check_group("gravctl.reply") == "gravctl.reply"


def test_weighted_turns_follow_the_weights_evenly() -> None:
    """Options of weight 1, 2 and 3 are picked 100, 200 and 300 times in 600 picks."""
    turns = WeightedTurns()
    picks = [turns.pick("g", [("a", 1), ("b", 2), ("c", 3)]) for _ in range(600)]
    assert [picks.count(k) for k in "abc"] == [100, 200, 300]
    assert turns.pick("g", []) is None
