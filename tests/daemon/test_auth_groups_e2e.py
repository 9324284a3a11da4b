"""gravd with --auth-file places deliver-to-one copies only on links allowed to receive the type."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import gravpy
from gravpy import Grav, Message
from gravpy.mesh import PeerInfo
from gravpy.testing.gravd import running_gravd

AUTH = """
[[identities]]
name = "trusted"
token = "trusted-token"

[[identities]]
name = "no-jobs"
token = "no-jobs-token"
subscribe = { allow = [">"], deny = ["jobs.>"] }

[[identities]]
name = "sensors"
token = "sensors-token"
subscribe = { allow = ["sensor.*"], deny = [] }
"""


def group_members(node: dict[str, Any], group: str) -> int:
    """Members of ``group`` the leaves of ``node`` (a ``/v1/node`` document) advertise."""
    return sum(
        entry[2]
        for leaf in node["leaves"]
        if leaf["state"] == "open"
        for entry in leaf.get("groups", ())
        if entry[0] == group
    )


async def test_a_group_member_whose_identity_may_not_receive_the_type_gets_no_copy(
    tmp_path: Path,
) -> None:
    """Two apps in group w, one may not subscribe to jobs.>: every jobs message goes to the
    other (the forbidden one is never chosen), while a type it may receive still reaches it."""
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH)
    async with running_gravd("--auth-file", str(auth)) as node:
        url = node.endpoint
        async with (
            gravpy.connect(url, token="no-jobs-token") as barred,
            gravpy.connect(url, token="trusted-token") as worker,
            gravpy.connect(url, token="trusted-token") as sender,
        ):
            # '*.*' shares types with jobs.> but is not wholly forbidden, so it may be asked for
            barred_got, worker_got = _members("w", (barred, "*.*"), (worker, "jobs.*"))
            async with asyncio.timeout(10):
                await node.wait_http(lambda n: group_members(n, "w") == 2)
                # and the sender's app has heard both members, or its first sends reach no one
                await sender.wait_for(lambda peers: _reached(peers, "w") == 2)
            pod = sender.connect()
            for i in range(40):
                pod.send(Message.new("jobs.run", str(i).encode()))
            pod.send(Message.new("x.fence", b""))  # only the barred app's group pod admits it
            async with asyncio.timeout(10):
                jobs = [await worker_got.get() for _ in range(40)]
                last = await barred_got.get()
        assert sorted(int(m.data) for m in jobs) == list(range(40))
        assert last.type == "x.fence"  # same pod, same link, in order: no jobs copy before it
        assert barred_got.empty()


def _members(group: str, *apps: tuple[Grav, str]) -> list[asyncio.Queue[Message]]:
    """A pod in ``group`` on each ``(app, pattern)``; what each receives, in order."""
    queues: list[asyncio.Queue[Message]] = []
    for app, pattern in apps:
        got: asyncio.Queue[Message] = asyncio.Queue(256)
        app.connect().on_type(pattern, got.put_nowait, group=group)
        queues.append(got)
    return queues


def _reached(peers: list[PeerInfo], group: str) -> int:
    """How many members of ``group`` the app's links say they reach."""
    return sum(n for p in peers for g, _, n in p.groups if g == group)


async def test_a_member_beside_the_sender_gets_every_copy_another_app_may_not_take(
    tmp_path: Path,
) -> None:
    """Group g on '>' has a member in an app that may receive only sensor.*, and one in the
    sending app itself: all 40 grp.job copies reach the sender's member, none is placed on
    gravd for a member that may not take it (it is offered only sensor.*), none is lost."""
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH)
    async with running_gravd("--auth-file", str(auth)) as node:
        async with (
            gravpy.connect(node.endpoint, token="sensors-token") as sensors,
            gravpy.connect(node.endpoint, token="trusted-token") as admin,
        ):
            barred_got, admin_got = _members("g", (sensors, ">"), (admin, ">"))
            async with asyncio.timeout(10):
                await node.wait_http(lambda n: group_members(n, "g") == 2)
                # the admin app hears of the sensors member, for sensor.* only
                await admin.wait_for(lambda peers: _offered(peers, "g") == ["sensor.*"])
            pod = admin.connect()
            for i in range(40):
                pod.send(Message.new("grp.job", str(i).encode()))
            async with asyncio.timeout(10):
                jobs = [await admin_got.get() for _ in range(40)]
            doc = await node.node()
        assert sorted(int(m.data) for m in jobs) == list(range(40))
        assert barred_got.empty()
        assert doc["messages"]["dropped"]["no_member"] == 0


def _offered(peers: list[PeerInfo], group: str) -> list[str]:
    """The patterns the app's links offer members of ``group`` for."""
    return sorted(p for link in peers for g, p, _ in link.groups if g == group)
