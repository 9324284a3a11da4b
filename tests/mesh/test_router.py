"""Router decisions, pure: no sockets, no event loop (the links are plain objects)."""

from __future__ import annotations

from dataclasses import dataclass, field

from msgspec.structs import replace

from gravpy import Message
from gravpy.filter import Pattern
from gravpy.mesh.routing import Router, relays


@dataclass(eq=False)
class FakeLink:
    uuid: str
    role: str = "peer"
    patterns: tuple[str, ...] = (">",)
    is_open: bool = True
    neighbours: frozenset[str] | None = field(default_factory=frozenset)

    @property
    def is_leaf(self) -> bool:
        return self.role == "leaf"

    @property
    def is_peer(self) -> bool:
        return self.role == "peer"

    def wants(self, msg_type: str) -> bool:
        return any(Pattern(p).matches(msg_type) for p in self.patterns)


def table(*links: FakeLink) -> Router[FakeLink]:
    router: Router[FakeLink] = Router()
    for link in links:
        router.add(link)
    return router


def test_local_message_goes_to_every_open_link_that_wants_its_type() -> None:
    """A local message goes to open links whose interests admit its type, and no others."""
    b, c = FakeLink("b", patterns=("sensor.>",)), FakeLink("c", patterns=("other",))
    d = FakeLink("d", is_open=False)
    router = table(b, c, d)
    assert router.from_local(Message.new("sensor.temp")) == (b,)


def test_message_from_a_peer_goes_one_hop_only() -> None:
    """A peer's message reaches leaves here but is not forwarded to the other linked peers."""
    b, c = FakeLink("b", neighbours=frozenset({"c"})), FakeLink("c")
    leaf = FakeLink("app", role="leaf")
    router = table(b, c, leaf)
    assert router.arrived(Message.new("x"), b) == (leaf,)


def test_relays_between_peers_that_are_not_linked() -> None:
    """A peer that says it has no link to another peer gets its messages relayed there."""
    b, c = FakeLink("b", neighbours=frozenset()), FakeLink("c", neighbours=frozenset())
    router = table(b, c)
    assert relays(b, c)
    assert router.arrived(Message.new("x"), b) == (c,)


def test_no_relay_until_the_peer_said_whom_it_links_to() -> None:
    """Until a peer's PEERS list arrives, nothing it sends is relayed."""
    b, c = FakeLink("b", neighbours=None), FakeLink("c")
    assert table(b, c).arrived(Message.new("x"), b) == ()


def test_duplicates_are_dropped_and_counted() -> None:
    """A message id seen before is not routed again, and counted as a duplicate."""
    b, c = FakeLink("b"), FakeLink("c")
    router = table(b, c)
    msg = Message.new("x")
    assert router.arrived(msg, b) is not None
    assert router.arrived(msg, c) is None
    assert router.duplicates == 1


def test_a_leafs_message_goes_where_a_local_one_would_but_not_back() -> None:
    """A message from a leaf goes to every peer that wants it, never back to the leaf."""
    b = FakeLink("b")
    leaf = FakeLink("app", role="leaf")
    router = table(b, leaf)
    assert router.arrived(Message.new("x"), leaf) == (b,)


def test_reply_goes_back_only_to_the_askers_link() -> None:
    """A reply travels to the link its request came from, whatever the other links want."""
    b, c = FakeLink("b"), FakeLink("c")
    router = table(b, c)
    request = Message.new("svc.q")
    router.arrived(request, b)
    assert router.asked_elsewhere(request.uuid)
    assert router.from_local(Message.new_reply(request)) == (b,)


def test_reply_to_a_local_request_stays_local() -> None:
    """A reply to a request asked here is not forwarded anywhere."""
    b = FakeLink("b")
    router = table(b)
    request = Message.new("svc.q")
    router.from_local(request)
    assert not router.asked_elsewhere(request.uuid)
    assert router.arrived(Message.new_reply(request), b) == ()


def test_reply_whose_asker_is_gone_is_counted() -> None:
    """A reply for a link that closed is dropped and counted as having no route."""
    b, c = FakeLink("b"), FakeLink("c")
    router = table(b, c)
    request = Message.new("svc.q")
    router.arrived(request, b)
    b.is_open = False
    assert router.from_local(Message.new_reply(request)) == ()
    assert router.dropped_no_route == 1


def from_process(process: str, msg_type: str, uuid: str = "") -> Message:
    """A message another process made: ``uuid``, or an id with that process's digits."""
    return replace(Message.new(msg_type), uuid=uuid or process * 20 + next_counter())


_counter = iter(range(1, 1 << 20))


def next_counter() -> str:
    return f"{next(_counter):012x}"


def forgotten(b: FakeLink, c: FakeLink, uuid: str = "") -> tuple[Router[FakeLink], Message]:
    """A router whose seen-set holds only the last 2 to 4 ids, and a request from process "a"
    that came in on ``b`` and was forgotten: 8 messages of process "e" came in on ``c`` since."""
    router: Router[FakeLink] = Router(seen_limit=4)
    router.add(b)
    router.add(c)
    request = from_process("a", "svc.q", uuid)
    router.arrived(request, b)
    for _ in range(8):
        router.arrived(from_process("e", "other"), c)
    assert not router.seen(request.uuid)
    return router, request


def test_a_late_reply_goes_back_to_where_its_askers_process_last_sent_from() -> None:
    """Once the seen-set forgot a request, its reply still goes only to the link the asker's
    process sent from, not by type to every link that wants it."""
    b, c = FakeLink("b"), FakeLink("c")
    router, request = forgotten(b, c)
    assert router.asked_elsewhere(request.uuid)  # (the bus keeps no reply to it for a wait)
    assert router.from_local(Message.new_reply(request)) == (b,)


def test_a_request_asked_here_and_forgotten_was_not_asked_elsewhere() -> None:
    """Once forgotten, a request this node's own process sent is still known as asked here:
    a reply to it is kept for a wait that has not started."""
    b, c = FakeLink("b"), FakeLink("c")
    router, _ = forgotten(b, c)
    request = Message.new("svc.q")
    router.from_local(request)
    for _ in range(8):
        router.arrived(from_process("e", "other"), c)
    assert not router.seen(request.uuid)
    assert not router.asked_elsewhere(request.uuid)


def test_a_late_reply_whose_askers_link_closed_is_counted() -> None:
    """A reply to a forgotten request whose asker's process sent from a link now closed, or
    gone from the table, is dropped and counted as having no route."""
    b, c = FakeLink("b"), FakeLink("c")
    router, request = forgotten(b, c)
    b.is_open = False
    assert router.from_local(Message.new_reply(request)) == ()
    assert router.dropped_no_route == 1
    router.remove(b)
    assert router.from_local(Message.new_reply(request)) == ()
    assert router.dropped_no_route == 2


def test_an_app_cannot_take_the_late_replies_of_another_process() -> None:
    """An app that sends an id with the digits of a process already known behind a peer does
    not get that process's late replies: they still go to the peer."""
    b, c = FakeLink("b"), FakeLink("c")
    app = FakeLink("app", role="leaf")
    router, request = forgotten(b, c)
    router.add(app)
    router.arrived(from_process("a", "other"), app)  # the request's process digits
    assert router.from_local(Message.new_reply(request)) == (b,)


def test_a_process_claimed_by_an_app_that_left_can_be_claimed_again() -> None:
    """Once an app's link is gone, its process may attach again (a new link, a new node
    uuid): late replies to what it asks from then on go to the new link."""
    b, c = FakeLink("b"), FakeLink("c")
    first, again = FakeLink("app-1", role="leaf"), FakeLink("app-2", role="leaf")
    router, _ = forgotten(b, c)
    router.add(first)
    router.arrived(from_process("f", "other"), first)
    router.remove(first)
    router.add(again)
    request = from_process("f", "svc.q")
    router.arrived(request, again)
    for _ in range(8):
        router.arrived(from_process("e", "other"), c)
    assert router.from_local(Message.new_reply(request)) == (again,)


def test_a_late_reply_to_an_id_of_another_form_goes_by_type() -> None:
    """An id a program made itself names no process: once forgotten, its reply is routed by
    type like any message."""
    b, c = FakeLink("b"), FakeLink("c", patterns=("svc.>",))
    router, request = forgotten(b, c, uuid="order-17")
    assert router.from_local(Message.new_reply(request, "svc.answer")) == (b, c)


def test_requests_lost_names_what_only_that_link_could_answer() -> None:
    """A waited-on request sent only over one link is lost with it; one sent over two is not."""
    b, c = FakeLink("b", patterns=("only.b", "both")), FakeLink("c", patterns=("both",))
    router = table(b, c)
    to_b = Message.new("only.b")
    to_both = Message.new("both")
    router.from_local(to_b)
    router.from_local(to_both)
    assert router.requests_lost(b) == []  # nobody waits on them yet
    router.track(to_b.uuid, to_b.type)
    router.track(to_both.uuid, to_both.type)
    assert router.requests_lost(b) == [(to_b.uuid, None)]


def test_requests_lost_include_those_sent_for_a_leaf() -> None:
    """A request a leaf waits on, relayed over one link, is lost with it and names the leaf."""
    b = FakeLink("b")
    leaf = FakeLink("app", role="leaf")
    router = table(b, leaf)
    request = Message.new("svc.q")
    plain = Message.new("svc.q")
    assert router.arrived(request, leaf) == (b,)
    assert router.arrived(plain, leaf) == (b,)
    assert router.requests_lost(b) == []  # the leaf waits on neither yet
    router.waiting(request.uuid, leaf)
    assert router.requests_lost(b) == [(request.uuid, leaf)]


def test_cached_routes_follow_routes_changed() -> None:
    """After routes_changed a new interest is seen; the table follows add and remove."""
    b = FakeLink("b", patterns=())
    router = table(b)
    assert router.from_local(Message.new("x")) == ()
    b.patterns = ("x",)
    assert router.from_local(Message.new("x")) == ()  # cached
    router.routes_changed()
    assert router.from_local(Message.new("x")) == (b,)
    assert router.remove(b)
    assert not router.remove(b)
    assert router.from_local(Message.new("x")) == ()


def test_a_leafs_waited_request_records_one_relayed_round_trip() -> None:
    """From the leaf's wait notice to the first reply routed back: one round trip, by the
    router's clock; a second reply and an unwaited request record nothing."""
    now = [10.0]
    router: Router[FakeLink] = Router(clock=lambda: now[0])
    leaf, other = FakeLink("app", role="leaf"), FakeLink("svc", role="leaf")
    for link in (leaf, other):
        router.add(link)
    request, unwaited = Message.new("ask"), Message.new("ask")
    router.arrived(request, leaf)
    router.arrived(unwaited, leaf)
    router.waiting(request.uuid, leaf)
    now[0] = 10.25
    for answered in (request, request, unwaited):
        reply = Message.new("answer")
        reply.reply_to = answered.uuid
        assert router.arrived(reply, other) == (leaf,)
    snap = router.relayed.histogram.snapshot()
    assert (snap.count, snap.sum) == (1, 0.25)
