"""The Router's group placement, pure: fake links, no sockets, no event loop."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from gravpy.filter import Pattern
from gravpy.mesh.permissions import Identity, TypeRules
from gravpy.mesh.routing import Placement, Router
from gravpy.message import Message


@dataclass(eq=False)
class FakeLink:
    """A link as the router reads it: interests, groups, state."""

    uuid: str
    groups: tuple[tuple[str, str, int], ...] = ()
    patterns: tuple[str, ...] = ()
    is_open: bool = True
    is_leaf: bool = False
    congested: bool = False
    neighbours: frozenset[str] | None = field(default=None)
    identity: Identity | None = None

    @property
    def is_peer(self) -> bool:
        return not self.is_leaf

    def wants(self, msg_type: str) -> bool:
        return any(Pattern(p).matches(msg_type) for p in self.patterns)

    def group_weights(self, msg_type: str) -> Mapping[str, int]:
        weights: dict[str, int] = {}
        for group, pattern, n in self.groups:
            if Pattern(pattern).matches(msg_type):
                weights[group] = max(n, weights.get(group, 0))
        return weights


def router(*links: FakeLink) -> Router[FakeLink]:
    r: Router[FakeLink] = Router(rng=random.Random(7))
    for link in links:
        r.add(link)
    return r


def where(p: Placement[FakeLink], group: str) -> str:
    """ "here", a link's uuid, or "nowhere" for ``group`` in a placement."""
    if group in p.local:
        return "here"
    for link, groups in p.links:
        if group in groups:
            return link.uuid
    assert group in p.unplaced
    return "nowhere"


def spread(r: Router[FakeLink], local: Mapping[str, int], n: int = 300) -> Counter[str]:
    return Counter(where(r.place(Message.new("jobs.run"), None, local), "w") for _ in range(n))


def test_three_equal_members_on_three_nodes_share_evenly() -> None:
    """One member here, one behind B, one behind C: 300 messages give each exactly 100."""
    b = FakeLink("B", groups=(("w", "jobs.*", 1),))
    c = FakeLink("C", groups=(("w", "jobs.>", 1),))
    assert spread(router(b, c), {"w": 1}) == {"here": 100, "B": 100, "C": 100}


def test_placement_is_weighted_by_member_count() -> None:
    """Two members behind B and one behind C: B gets two thirds of the messages."""
    b = FakeLink("B", groups=(("w", "jobs.*", 2),))
    c = FakeLink("C", groups=(("w", "jobs.*", 1),))
    assert spread(router(b, c), {}) == {"B": 200, "C": 100}


def test_congested_and_closed_links_are_skipped() -> None:
    """A congested link is passed over while another has room; a closed one never chosen."""
    b = FakeLink("B", groups=(("w", "jobs.*", 1),), congested=True)
    c = FakeLink("C", groups=(("w", "jobs.*", 1),))
    d = FakeLink("D", groups=(("w", "jobs.*", 5),), is_open=False)
    r = router(b, c, d)
    assert spread(r, {}, 50) == {"C": 50}
    c.congested = True
    assert set(spread(r, {}, 50)) == {"B", "C"}  # all crowded: still placed, never dropped


def test_a_group_with_no_member_anywhere_is_unplaced_and_counted() -> None:
    """A marked message naming a group nobody here or behind has is counted, not delivered."""
    b = FakeLink("B", groups=(("other", "jobs.*", 1),))
    r = router(b)
    msg = Message.new("jobs.run")
    r.arrived(msg, b)
    p = r.place(msg, b, {}, ("w",))
    assert (p.local, p.links, p.unplaced) == ((), (), ("w",))
    assert r.unplaced == 1


def test_ungrouped_types_cost_no_placement() -> None:
    """has_groups is false for a type no link has group members for (the hot path skips place)."""
    r = router(FakeLink("B", patterns=("jobs.>",), groups=(("w", "other.*", 1),)))
    assert not r.has_groups("jobs.run")
    assert r.has_groups("other.x")


def test_an_arrived_message_is_placed_behind_this_node_only() -> None:
    """From peer B: the group may go to a local member or a leaf, never to another peer."""
    b = FakeLink("B")
    c = FakeLink("C", groups=(("w", "jobs.*", 9),), neighbours=None)
    leaf = FakeLink("L", is_leaf=True, groups=(("w", "jobs.*", 1),))
    r = router(b, c, leaf)
    b.neighbours = frozenset({"C"})  # B links to C itself: no relaying for it
    seen = Counter()
    for _ in range(20):
        msg = Message.new("jobs.run")
        assert r.arrived(msg, b) is not None
        seen[where(r.place(msg, b, {"w": 1}, ("w",)), "w")] += 1
    assert seen == {"here": 10, "L": 10}


def test_a_leaf_message_may_go_to_peers_but_never_back() -> None:
    """From a leaf: its group copy goes to a peer or another leaf, never to the leaf it came from."""
    leaf = FakeLink("L", is_leaf=True, groups=(("w", "jobs.*", 5),))
    b = FakeLink("B", groups=(("w", "jobs.*", 1),))
    r = router(leaf, b)
    for _ in range(5):
        msg = Message.new("jobs.run")
        r.arrived(msg, leaf)
        assert where(r.place(msg, leaf, {}, ("w",)), "w") == "B"


def test_a_link_chosen_for_two_groups_is_told_both() -> None:
    """With one node holding both groups, its copy names both, once."""
    b = FakeLink("B", groups=(("g1", "jobs.*", 1), ("g2", "jobs.*", 1)))
    p = router(b).place(Message.new("jobs.run"), None, {})
    assert [(link.uuid, groups) for link, groups in p.links] == [("B", ("g1", "g2"))]


def test_a_request_placed_on_one_link_fails_when_that_link_is_lost() -> None:
    """A grouped request sent only to B is among the requests B's loss leaves unanswerable."""
    b = FakeLink("B", groups=(("w", "jobs.*", 1),))
    r = router(b)
    msg = Message.new("jobs.run")
    assert r.from_local(msg) == ()
    r.place(msg, None, {})
    assert r.requests_lost(b) == [(msg.uuid, None)]


NO_JOBS = Identity("no-jobs", subscribe=TypeRules(allow=(">",), deny=("jobs.>",)))


def test_members_on_a_link_that_may_not_receive_the_type_are_never_chosen() -> None:
    """A link whose identity may not subscribe to the type is no candidate: its group goes to
    the members elsewhere, or nowhere (counted) when it held the only ones."""
    b = FakeLink("B", groups=(("w", "jobs.*", 5), ("v", "jobs.*", 1)), identity=NO_JOBS)
    c = FakeLink("C", groups=(("w", "jobs.*", 1),))
    r = router(b, c)
    assert spread(r, {}, 50) == {"C": 50}
    p = r.place(Message.new("jobs.run"), None, {})
    assert "v" not in {g for _, groups in p.links for g in groups}
    assert spread(r, {"w": 1}, 50) == {"here": 25, "C": 25}
    leaf = FakeLink("L", is_leaf=True, groups=(("w", "jobs.*", 9),), identity=NO_JOBS)
    r = router(b, leaf)
    msg = Message.new("jobs.run")
    assert r.arrived(msg, b) is not None
    assert where(r.place(msg, b, {}, ("w",)), "w") == "nowhere"
    assert r.unplaced == 1
    b.identity = None  # the same links with no auth file: B may be chosen again
    r.routes_changed()
    assert "B" in spread(r, {}, 10)
