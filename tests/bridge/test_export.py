"""ExportRoutes: what crosses to NATS and which mesh each group's copy goes to. Pure."""

from __future__ import annotations

from collections import Counter

from gravpy.bridge.export import ExportRoutes
from gravpy.bridge.subjects import SubjectMap


def routes() -> ExportRoutes:
    return ExportRoutes(SubjectMap("gravpy", "east"), export=("metrics.>",))


def test_a_type_crosses_when_wanted_exported_or_grouped_elsewhere() -> None:
    """A type crosses for a remote ungrouped want, an export pattern, or a remote group; and
    not otherwise."""
    r = routes()
    r.remote_changed(("sensor.*",), {("workers", "job.*"): {"west": 1}})
    assert r.route("nothing.here") is None
    assert r.route("metrics.cpu") is not None
    route = r.route("sensor.temp")
    assert route is not None
    assert (route.subject, route.tokens, route.groups) == (
        "gravpy.east.sensor.temp",
        "sensor.temp",
        (),
    )
    route = r.route("job.run")
    assert route is not None
    assert route.groups == (("workers", (("west", 1),)),)


def test_a_group_with_a_member_at_home_does_not_cross() -> None:
    """Once this mesh has a member of a group, its messages stop carrying that group across;
    when the member leaves they carry it again."""
    r = routes()
    r.remote_changed((), {("workers", "job.*"): {"west": 2}})
    r.own_groups_changed((("workers", "job.>", 1),))
    assert r.route("job.run") is None
    r.own_groups_changed(())
    route = r.route("job.run")
    assert route is not None
    assert route.groups


def test_placements_follow_member_counts() -> None:
    """Each message places a group in one mesh, in proportion to the members each announced."""
    r = routes()
    r.remote_changed((), {("workers", "job.*"): {"west": 1, "north": 3}})
    route = r.route("job.run")
    assert route is not None
    picks = Counter(r.placed(route)[0] for _ in range(400))
    assert picks == {("west", "workers"): 100, ("north", "workers"): 300}
