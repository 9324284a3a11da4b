"""Tests for discovery.mdns: advertise, browse, report, notice removal, withdraw; mDNS on loopback.

Every test that sends mDNS binds it to 127.0.0.1 only and uses a service type of its own, so
concurrent test runs, or a gravd running on this machine, do not see each other's records.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from discovery.mdns import MdnsDiscovery, Skip, advert_for, read_record
from gravpy import Grav, Message
from gravpy.errors import TransportError, UsageError
from gravpy.mesh import PeerInfo
from gravpy.plugins import DiscoveryContext, PeerReport, Transport, load_discovery
from gravpy.testing import capture_logs
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

LOOPBACK = ["127.0.0.1"]
WAIT = 10.0  # seconds any one condition may take before the test fails (not a sleep)


def _loopback_multicast_problem() -> str | None:
    """Why multicast does not go round on 127.0.0.1 here, or None when it does."""
    group, payload = "224.0.0.251", b"gravpy-mdns-probe"
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind(("", 0))
            membership = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(LOOPBACK[0]))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            rx.settimeout(2.0)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK[0]))
            tx.sendto(payload, (group, rx.getsockname()[1]))
            while rx.recv(64) != payload:
                pass
    except OSError as exc:
        ip = shutil.which("ip")
        lo = (
            subprocess.run([ip, "link", "show", "lo"], capture_output=True, text=True)
            if ip
            else None
        )
        flags = lo.stdout.strip() if lo else "(no ip command)"
        return f"multicast on 127.0.0.1 does not work here ({exc!r}); `ip link show lo`: {flags}"
    return None


@pytest.fixture(scope="module")
def loopback_multicast() -> None:
    """Skip the test, saying why, where multicast on loopback cannot work."""
    problem = _loopback_multicast_problem()
    if problem is not None:
        pytest.skip(problem)


class LogWatch:
    """The events logged during a test, and a way to wait for one."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, entry: dict[str, Any]) -> None:
        self._changed.set()

    async def wait_for(self, **fields: Any) -> dict[str, Any]:
        """The first entry whose fields have these values, once it is logged."""
        async with asyncio.timeout(WAIT):
            while True:
                for entry in self.entries:
                    if all(entry.get(key) == value for key, value in fields.items()):
                        return entry
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    """Capture every logged event of the test (and let it wait for one)."""
    watch = LogWatch()
    with capture_logs(watch) as entries:
        watch.entries = entries
        yield watch


class Running:
    """One ``MdnsDiscovery.run`` in a task, with the reports it made."""

    def __init__(self, ctx: DiscoveryContext, discovery: MdnsDiscovery) -> None:
        self.ctx = ctx
        self.reports: list[PeerReport] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(discovery.run(ctx, self._report))

    def _report(self, found: PeerReport) -> None:
        self.reports.append(found)
        self._changed.set()

    async def wait_report(self, predicate: Callable[[PeerReport], bool]) -> PeerReport:
        """The first report for which ``predicate`` holds, once it is made."""
        async with asyncio.timeout(WAIT):
            while True:
                for found in self.reports:
                    if predicate(found):
                        return found
                if self.task.done():
                    self.task.result()  # raise what ended it
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        """Cancel the run and check it ends by re-raising CancelledError."""
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def _own_service_type() -> str:
    """A DNS-SD type no other test run or node on this machine uses."""
    return f"_g{secrets.token_hex(4)}._tcp.local."


class Start:
    """Starts discovery runs on loopback, all with one service type of their own."""

    def __init__(self) -> None:
        self.service_type = _own_service_type()
        self.runs: list[Running] = []

    def __call__(self, uuid: str, port: int, *, mesh: str = "*") -> Running:
        ctx = DiscoveryContext(uuid, mesh, (f"ws://127.0.0.1:{port}/meta/message",), 1)
        discovery = MdnsDiscovery(interfaces=LOOPBACK, service_type=self.service_type)
        run = Running(ctx, discovery)
        self.runs.append(run)
        return run


@pytest.fixture
async def start(loopback_multicast: None) -> AsyncIterator[Start]:
    """A ``Start`` whose runs are all cancelled and awaited when the test ends."""
    starter = Start()
    yield starter
    for run in starter.runs:
        run.task.cancel()
    await asyncio.gather(*(run.task for run in starter.runs), return_exceptions=True)


async def test_two_nodes_report_each_other_and_never_themselves(
    start: Start, logs: LogWatch
) -> None:
    """Each run reports the other's endpoint and uuid once, and skips its own record."""
    a, b = start("node-a", 1111), start("node-b", 2222)
    await a.wait_report(lambda r: r.node_uuid == "node-b")
    await b.wait_report(lambda r: r.node_uuid == "node-a")
    await logs.wait_for(event="mdns_record_skipped", node="node-a", reason="own")
    await logs.wait_for(event="mdns_record_skipped", node="node-b", reason="own")
    assert a.reports == [PeerReport("ws://127.0.0.1:2222/meta/message", "node-b", "mdns")]
    assert b.reports == [PeerReport("ws://127.0.0.1:1111/meta/message", "node-a", "mdns")]


async def test_a_record_withdrawn_on_cancel_is_noticed_as_removed(
    start: Start, logs: LogWatch
) -> None:
    """Cancelling one run withdraws its record; the other logs it and reports it gone."""
    a, b = start("node-a", 1111), start("node-b", 2222)
    await a.wait_report(lambda r: r.node_uuid == "node-b")
    await b.stop()
    removed = await logs.wait_for(event="mdns_peer_removed", node="node-a")
    assert removed["peer"] == "node-b"
    assert removed["endpoint"] == "ws://127.0.0.1:2222/meta/message"
    await a.wait_report(lambda r: r.gone)
    assert a.reports[-1] == PeerReport(
        "ws://127.0.0.1:2222/meta/message", "node-b", "mdns", gone=True
    )
    assert not a.task.done()


async def test_a_second_cancel_during_shutdown_still_withdraws(
    start: Start, logs: LogWatch
) -> None:
    """A run cancelled twice in a row still says goodbye and closes before it ends."""
    a, b = start("node-a", 1111), start("node-b", 2222)
    await a.wait_report(lambda r: r.node_uuid == "node-b")
    b.task.cancel()
    for _ in range(3):
        await asyncio.sleep(0)  # let b enter its shutdown, then interrupt it again
    b.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b.task
    assert any(e["event"] == "mdns_stopped" and e["node"] == "node-b" for e in logs.entries)
    removed = await logs.wait_for(event="mdns_peer_removed", node="node-a")
    assert removed["peer"] == "node-b"


async def test_a_record_of_another_mesh_is_not_reported(start: Start, logs: LogWatch) -> None:
    """A node of mesh "red" reports a "*" node but skips a "blue" one."""
    red = start("node-red", 1111, mesh="red")
    blue = start("node-blue", 2222, mesh="blue")
    start("node-any", 3333, mesh="*")
    await red.wait_report(lambda r: r.node_uuid == "node-any")
    await blue.wait_report(lambda r: r.node_uuid == "node-any")
    skipped = await logs.wait_for(event="mdns_record_skipped", node="node-red", reason="mesh")
    assert "blue" in skipped["detail"]
    await logs.wait_for(event="mdns_record_skipped", node="node-blue", reason="mesh")
    assert [r.node_uuid for r in red.reports] == ["node-any"]
    assert [r.node_uuid for r in blue.reports] == ["node-any"]


async def test_a_changed_record_is_reported_again(start: Start) -> None:
    """When a peer's record moves to another port, the new endpoint is reported too."""
    a = start("node-a", 1111)
    service_type = start.service_type
    peer = AsyncServiceInfo(
        service_type,
        f"node-p.{service_type}",
        port=4444,
        properties={"uuid": "node-p", "transport": "ws", "path": "/p", "mesh": "*", "version": "1"},
        server="node-p.local.",
        parsed_addresses=["127.0.0.1"],
    )
    aiozc = AsyncZeroconf(interfaces=LOOPBACK)
    try:
        await (await aiozc.async_register_service(peer, cooperating_responders=True))
        await a.wait_report(lambda r: r.endpoint == "ws://127.0.0.1:4444/p")
        peer.port = 5555
        await (await aiozc.async_update_service(peer))
        await a.wait_report(lambda r: r.endpoint == "ws://127.0.0.1:5555/p")
    finally:
        await aiozc.async_close()
    assert [r for r in a.reports if not r.gone] == [  # closing may add its removal
        PeerReport("ws://127.0.0.1:4444/p", "node-p", "mdns"),
        PeerReport("ws://127.0.0.1:5555/p", "node-p", "mdns"),
    ]


def _peer_record(service_type: str, port: int, **txt: str) -> AsyncServiceInfo:
    """The record of a peer "node-p" on 127.0.0.1 at ``port``; ``txt`` overrides its TXT."""
    properties = {"uuid": "node-p", "transport": "ws", "path": "/p", "mesh": "*", "version": "1"}
    return AsyncServiceInfo(
        service_type,
        f"node-p.{service_type}",
        port=port,
        properties=properties | txt,
        server="node-p.local.",
        parsed_addresses=["127.0.0.1"],
    )


@asynccontextmanager
async def _peer_reported(start: Start, node: Running) -> AsyncIterator[AsyncZeroconf]:
    """A peer's record on port 4444, registered on loopback and reported to ``node``; its
    zeroconf (to update the record), closed when the block ends."""
    aiozc = AsyncZeroconf(interfaces=LOOPBACK)
    try:
        peer = _peer_record(start.service_type, 4444)
        await (await aiozc.async_register_service(peer, cooperating_responders=True))
        await node.wait_report(lambda r: r.endpoint == "ws://127.0.0.1:4444/p")
        yield aiozc
    finally:
        await aiozc.async_close()


async def test_a_record_that_moves_withdraws_the_endpoint_it_left(start: Start) -> None:
    """When a peer's record moves to another port, the endpoint it left is reported gone (the
    hub stops redialling it) before the new one is reported."""
    a = start("node-a", 1111)
    async with _peer_reported(start, a) as aiozc:
        await (await aiozc.async_update_service(_peer_record(start.service_type, 5555)))
        await a.wait_report(lambda r: r.endpoint == "ws://127.0.0.1:5555/p")
        assert a.reports == [  # (before the block ends: its goodbye removes the record)
            PeerReport("ws://127.0.0.1:4444/p", "node-p", "mdns"),
            PeerReport("ws://127.0.0.1:4444/p", "node-p", "mdns", gone=True),
            PeerReport("ws://127.0.0.1:5555/p", "node-p", "mdns"),
        ]


async def test_a_record_that_changes_to_one_not_to_dial_withdraws_its_endpoint(
    start: Start, logs: LogWatch
) -> None:
    """A reported record updated to one that is skipped (here another protocol version) has its
    endpoint reported gone: the node no longer dials what the record no longer offers."""
    a = start("node-a", 1111)
    async with _peer_reported(start, a) as aiozc:
        changed = _peer_record(start.service_type, 4444, version="99")
        await (await aiozc.async_update_service(changed))
        await logs.wait_for(event="mdns_record_skipped", node="node-a", reason="version")
        assert a.reports == [
            PeerReport("ws://127.0.0.1:4444/p", "node-p", "mdns"),
            PeerReport("ws://127.0.0.1:4444/p", "node-p", "mdns", gone=True),
        ]


async def test_an_interface_that_does_not_exist_is_a_transport_error() -> None:
    """Binding mDNS to an address this machine does not have raises TransportError with a cause."""
    ctx = DiscoveryContext("node-a", "*", ("ws://127.0.0.1:1111/meta/message",), 1)
    discovery = MdnsDiscovery(interfaces=["203.0.113.254"])
    with pytest.raises(TransportError, match="mDNS cannot listen") as info:
        await discovery.run(ctx, lambda found: None)
    assert isinstance(info.value.__cause__, OSError)


def _mdns_node(service_type: str, *transports: Transport) -> Grav:
    """A node on 127.0.0.1 with only MdnsDiscovery, on loopback, for ``service_type``."""
    return Grav(
        transport=list(transports),
        discovery=[MdnsDiscovery(interfaces=LOOPBACK, service_type=service_type)],
    )


async def _linked(a: Grav, b: Grav) -> None:
    """Wait until ``a`` and ``b`` each have an open link to the other."""
    for one, other in ((a, b), (b, a)):
        await one.wait_for(_open_link_to(other.node_uuid), timeout=WAIT)


def _open_link_to(uuid: str) -> Callable[[list[PeerInfo]], bool]:
    return lambda peers: any(p.uuid == uuid and p.state == "open" for p in peers)


@pytest.mark.usefixtures("loopback_multicast")
async def test_two_grav_nodes_link_by_mdns_alone_and_exchange_a_message() -> None:
    """Two nodes with only MdnsDiscovery on loopback link, and a message crosses the link."""
    service_type = _own_service_type()  # a gravd running on this machine must not join in

    def node() -> Grav:
        return _mdns_node(service_type, WebSocketTransport(host="127.0.0.1", port=0))

    async with node() as a, node() as b:
        await _linked(a, b)
        received: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        b.connect().on_type("mdns.hello", received.put_nowait)
        await a.wait_for(
            lambda peers: any(p.uuid == b.node_uuid and "mdns.hello" in p.interests for p in peers),
            timeout=WAIT,
        )
        a.connect().send(Message.new("mdns.hello", b"from a"))
        async with asyncio.timeout(WAIT):
            msg = await received.get()
    assert msg.data == b"from a"


@pytest.mark.usefixtures("loopback_multicast")
async def test_nodes_with_websocket_and_tcp_link_once_over_tcp() -> None:
    """Two nodes that each advertise a WebSocket and a TCP endpoint by mDNS link over TCP, the
    fastest both speak, whichever of each other's services they resolve first."""
    service_type = _own_service_type()

    def node() -> Grav:
        return _mdns_node(
            service_type,
            WebSocketTransport(host="127.0.0.1", port=0),
            TcpTransport(host="127.0.0.1", port=0),
        )

    async with node() as a, node() as b:
        await _linked(a, b)
        ways = [(p.transport, p.state) for g in (a, b) for p in g.peers()]
    assert ways == [("tcp", "open"), ("tcp", "open")]


def test_the_plugin_is_registered_as_mdns() -> None:
    """load_discovery("mdns") finds MdnsDiscovery, whose name is "mdns"."""
    assert load_discovery("mdns") is MdnsDiscovery
    assert MdnsDiscovery().name == "mdns"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"interfaces": ["eth0"]}, "not an IP address"),
        ({"interfaces": "127.0.0.1"}, "list of IP addresses"),
        ({"interfaces": []}, "list of IP addresses"),
        ({"service_type": "_grav._tcp.local"}, "bad mDNS service type"),
        ({"service_type": "_much-too-long-name._tcp.local."}, "bad mDNS service type"),
        ({"service_type": "grav._tcp.local."}, "bad mDNS service type"),
        ({"name": "has.dot"}, "bad mDNS instance name"),
        ({"name": "x" * 60}, "bad mDNS instance name"),
        ({"ip_version": 4}, "ip_version"),
    ],
)
def test_bad_options_are_refused_on_construction(options: dict[str, Any], match: str) -> None:
    """Each bad option raises UsageError naming the problem."""
    with pytest.raises(UsageError, match=match):
        MdnsDiscovery(**options)


_CTX = DiscoveryContext("self-uuid", "home", ("ws://10.0.0.1:8080/meta/message",), 1)
_TXT = {"uuid": "peer", "transport": "ws", "path": "/meta/message", "mesh": "home", "version": "1"}


def test_the_txt_record_carries_uuid_path_transport_mesh_and_version() -> None:
    """An endpoint with an IP address is advertised with exactly the five TXT keys and its port."""
    advert = advert_for("wss://10.0.0.1:8443/grav", _CTX, "self-uuid")
    assert not isinstance(advert, Skip)
    assert (advert.host, advert.port, advert.address) == ("10.0.0.1", 8443, "10.0.0.1")
    assert advert.properties == {
        "uuid": "self-uuid",
        "transport": "wss",
        "path": "/grav",
        "mesh": "home",
        "version": "1",
    }


def test_an_endpoint_with_a_host_name_also_advertises_the_name() -> None:
    """A named host goes into TXT "host", so peers dial the name rather than an address."""
    advert = advert_for("ws://gravd.lan:8080/meta/message", _CTX, "self-uuid")
    assert not isinstance(advert, Skip)
    assert advert.address is None
    assert advert.properties["host"] == "gravd.lan"


def test_a_wildcard_endpoint_is_not_advertised() -> None:
    """0.0.0.0 is no address a peer can dial, so it is skipped with a reason."""
    assert advert_for("ws://0.0.0.0:8080/x", _CTX, "n") == Skip(
        "malformed", "'ws://0.0.0.0:8080/x' is a wildcard address, not one peers can dial"
    )


def test_a_mesh_name_too_long_for_txt_is_a_usage_error() -> None:
    """A TXT entry over 255 bytes cannot be advertised, and the error says which key."""
    ctx = DiscoveryContext("self-uuid", "m" * 251, ("ws://10.0.0.1:8080/x",), 1)
    with pytest.raises(UsageError, match="TXT 'mesh'"):
        advert_for(ctx.endpoints[0], ctx, "self-uuid")


@pytest.mark.parametrize(
    ("txt", "addresses", "endpoint"),
    [
        ({}, ["10.0.0.7"], "ws://10.0.0.7:9000/meta/message"),
        ({}, ["fe80::1%2", "2001:db8::7", "10.0.0.7"], "ws://10.0.0.7:9000/meta/message"),
        ({}, ["fe80::1%2", "2001:db8::7"], "ws://[2001:db8::7]:9000/meta/message"),
        ({}, ["fe80::1%2"], "ws://[fe80::1%252]:9000/meta/message"),
        ({"host": "gravd.lan"}, ["10.0.0.7"], "ws://gravd.lan:9000/meta/message"),
        ({"transport": "http", "path": "x"}, ["10.0.0.7"], "http://10.0.0.7:9000/x"),
        ({"mesh": "*"}, ["10.0.0.7"], "ws://10.0.0.7:9000/meta/message"),
    ],
)
def test_a_record_becomes_an_endpoint(
    txt: dict[str, str], addresses: list[str], endpoint: str
) -> None:
    """The endpoint is scheme://address-or-host:port/path, preferring IPv4, then global IPv6."""
    assert read_record(_TXT | txt, addresses, 9000, _CTX) == PeerReport(endpoint, "peer", "mdns")


@pytest.mark.parametrize(
    ("txt", "port", "reason"),
    [
        ({"uuid": "self-uuid"}, 9000, "own"),
        ({"mesh": "work"}, 9000, "mesh"),
        ({"version": "2"}, 9000, "version"),
        ({"uuid": ""}, 9000, "malformed"),
        ({"transport": "1ws"}, 9000, "malformed"),
        ({}, 0, "malformed"),
    ],
)
def test_a_record_that_must_not_be_dialled_is_skipped(
    txt: dict[str, str], port: int, reason: str
) -> None:
    """Own, other-mesh, other-version and malformed records are skipped with their reason."""
    found = read_record(_TXT | txt, ["10.0.0.7"], port, _CTX)
    assert isinstance(found, Skip)
    assert found.reason == reason


@pytest.mark.parametrize(
    ("txt", "addresses"),
    [
        ({}, ["0.0.0.0"]),  # the wildcard: dialling it reaches this very machine
        ({}, ["::"]),
        ({}, ["224.0.0.251"]),
        ({}, ["255.255.255.255"]),
        ({"host": "0.0.0.0"}, ["10.0.0.7"]),
        ({"host": "ff02::fb"}, ["10.0.0.7"]),
        ({"host": "x@10.0.0.9"}, ["10.0.0.7"]),  # a user part: the URL would name 10.0.0.9
        ({"host": "10.0.0.9/x?"}, ["10.0.0.7"]),  # the URL would dial 10.0.0.9 on port 80
        ({"host": "10.0.0.9:22#"}, ["10.0.0.7"]),
        ({"host": "bad host"}, ["10.0.0.7"]),
        ({"path": "/a b"}, ["10.0.0.7"]),
        ({"path": "/p#x"}, ["10.0.0.7"]),
    ],
)
def test_a_record_pointing_where_no_peer_can_be_dialled_is_skipped(
    txt: dict[str, str], addresses: list[str]
) -> None:
    """A record whose address or host no peer can be dialled at, or whose host or path would
    change what the URL names, is skipped as malformed."""
    found = read_record(_TXT | txt, addresses, 9000, _CTX)
    assert isinstance(found, Skip), found
    assert found.reason == "malformed"


def test_addresses_no_peer_listens_at_are_passed_over_for_one_it_does() -> None:
    """Among a record's addresses the wildcard and multicast ones are never picked."""
    found = read_record(_TXT, ["0.0.0.0", "224.0.0.251", "10.0.0.8"], 9000, _CTX)
    assert found == PeerReport("ws://10.0.0.8:9000/meta/message", "peer", "mdns")
