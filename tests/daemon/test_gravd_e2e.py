"""End-to-end tests of gravd: real processes on 127.0.0.1, stopped by each test's own handle."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import gravpy
from gravpy.daemon.monitor import METRIC_NAMES
from gravpy.filter import Pattern
from gravpy.mesh import PeerInfo
from gravpy.message import Message
from gravpy.plugins import Link, available_discovery
from gravpy.proto import HelloReceived, LinkState, NodeInfo, PeerProtocol
from gravpy.testing.gravd import (
    GRAVCTL,
    GRAVD,
    Gravd,
    Process,
    loopback_multicast_problem,
    run,
    running_gravd,
)
from transports.websocket import WebSocketTransport


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_listening_event_reports_bound_ports_and_health() -> None:
    """Asked for port 0, gravd logs the real endpoint and monitor address, and /healthz is 200."""
    async with running_gravd() as node:
        assert node.endpoint.startswith("ws://127.0.0.1:")
        assert not node.endpoint.startswith("ws://127.0.0.1:0/")
        assert node.endpoint.endswith("/meta/message")
        status, body = await node.get("/healthz")
        assert status == 200
        pid = node.process.proc.pid
        assert json.loads(body) == {"status": "serving", "uuid": node.uuid, "pid": pid}
        doc = await node.node()
        assert doc["uuid"] == node.uuid
        assert doc["version"] == gravpy.__version__
        ws, tcp = doc["listen"]["endpoints"]  # TCP beside WebSocket by default (auto)
        assert ws == node.endpoint
        assert tcp.startswith("tcp://127.0.0.1:")
        assert not tcp.endswith(":0")
        assert doc["state"] == "serving"
        result = await node.stop()
    assert result.code == 0
    assert any(e["event"] == "stopped" and e["exit_code"] == 0 for e in node.process.events())


async def test_config_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    """A flag beats GRAVD_*, which beats the TOML file, which beats the defaults, in a real gravd."""
    config = tmp_path / "gravd.toml"
    config.write_text('mesh = "from-toml"\ndrain_timeout = 1.5\nlog_level = "debug"\n')
    env = {"GRAVD_CONFIG": str(config), "GRAVD_MESH": "from-env"}
    async with running_gravd(env=env) as node:
        doc = await node.node()
        assert doc["mesh"] == "from-env"
        assert node.listening["mesh"] == "from-env"
        assert (await node.stop()).code == 0
    checked = await run([*GRAVD, "--check-config", "--mesh", "from-flag"], env=env)
    assert checked.code == 0, checked.stderr
    effective = json.loads(checked.stdout)
    assert effective["mesh"] == "from-flag"
    assert effective["drain_timeout"] == 1.5  # only the file sets it
    assert effective["log_level"] == "debug"
    assert effective["listen"] == "0.0.0.0:8080"  # nobody sets it: the default


@pytest.mark.parametrize(
    ("args", "env", "toml", "expected"),
    [
        ([], {"GRAVD_LISTEN": "nowhere"}, None, "invalid listen (from environment GRAVD_LISTEN)"),
        (["--log-level", "loud"], {}, None, "invalid log_level (from flag --log-level)"),
        ([], {}, "monitor = 5\n", "invalid monitor (from {toml} key 'monitor')"),
        ([], {}, 'colour = "blue"\n', "invalid colour (from {toml}): unknown setting"),
        (["--discovery", "dns"], {}, None, "invalid discovery (from flag --discovery): 'dns'"),
        (
            [],
            {"GRAVD_MDNS_INTERFACES": "127.0.0.1,eth0"},
            None,
            "invalid mdns_interfaces (from environment GRAVD_MDNS_INTERFACES): 'eth0'",
        ),
        (["--mesh-key-file", "/nonexistent/key"], {}, None, "invalid mesh_key_file (from flag"),
        (
            ["--peer", "127.0.0.1:9"],
            {"GRAVD_DISCOVERY": "none"},
            None,
            "invalid peers (from flag --peer): peers are listed but discovery is 'none' "
            "(from environment GRAVD_DISCOVERY)",
        ),
    ],
    ids=[
        "env-listen",
        "flag-level",
        "toml-monitor",
        "toml-unknown",
        "discovery",
        "mdns-interface",
        "key-file",
        "none",
    ],
)
async def test_bad_config_is_refused_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], toml: str | None, expected: str
) -> None:
    """gravd refuses a bad value with exit 2 and one line naming the setting and its source."""
    config = tmp_path / "gravd.toml"
    if toml is not None:
        config.write_text(toml)
        args = [*args, "--config", str(config)]
    result = await run([*GRAVD, *args], env=env)
    assert result.code == 2
    assert result.stderr.startswith("gravd: " + expected.format(toml=config)), result.stderr
    assert "Traceback" not in result.stderr


async def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    """--check-config prints the effective settings and exits 0 without starting a node."""
    key = tmp_path / "mesh.key"
    key.write_text("k" * 32 + "\n")
    config = tmp_path / "gravd.toml"
    config.write_text(
        '[gravd]\nlisten = ":9000"\npeers = ["10.0.0.2:8080"]\nmesh_key_file = "mesh.key"\n'
    )
    result = await run([*GRAVD, "--config", str(config), "--check-config"])
    assert result.code == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["listen"] == "0.0.0.0:9000"
    assert effective["peers"] == ["ws://10.0.0.2:8080/meta/message"]
    assert effective["mesh_key_file"] == str(key)
    assert "k" * 32 not in result.stdout


async def test_mdns_discovery_links_two_nodes_on_loopback() -> None:
    """Two gravd with --discovery mdns on 127.0.0.1 find each other and link without --peer."""
    problem = loopback_multicast_problem()
    if problem is not None:
        pytest.skip(problem)
    if "mdns" not in available_discovery():
        pytest.skip("no mdns discovery plugin in this build")
    service = f"_g{secrets.token_hex(4)}._tcp.local."  # our own service type: no stray records
    args = ("--discovery", "mdns", "--mdns-interface", "127.0.0.1", "--mdns-service", service)
    async with running_gravd(*args) as a, running_gravd(*args) as b:
        doc_a, doc_b = await a.wait_peers(1), await b.wait_peers(1)
        assert [p["uuid"] for p in doc_a["peers"]] == [b.uuid]
        assert [p["uuid"] for p in doc_b["peers"]] == [a.uuid]
        assert a.listening["discovery"] == "mdns"
        assert (await a.stop()).code == 0
        assert (await b.stop()).code == 0


async def test_listen_failure_exits_1_with_a_clear_event() -> None:
    """A gravd that cannot bind its port logs start_failed and exits 1 instead of hanging."""
    async with running_gravd() as first:
        port = first.listening["listen"].rsplit(":", 1)[1]
        second = await Process.start([*GRAVD, "--listen", f"127.0.0.1:{port}", "--monitor", "off"])
        try:
            result = await second.wait()
        finally:
            await second.close()
        assert result.code == 1
        failed = [e for e in second.events() if e["event"] == "start_failed"]
        assert failed
        assert port in failed[0]["error"]
        assert (await first.stop()).code == 0


async def test_monitor_counts_match_the_messages_sent() -> None:
    """/v1/node and /metrics on both nodes count exactly what a leaf published across the mesh."""
    n = 25
    async with running_gravd() as a, running_gravd("--peer", a.endpoint) as b:
        await a.wait_peers(1)
        async with gravpy.connect(b.endpoint) as sub_node, gravpy.connect(a.endpoint) as pub_node:
            got: asyncio.Queue[Message] = asyncio.Queue()
            sub_node.connect().on_type("count.>", got.put_nowait)
            await pub_node.wait_for(lambda links: _reaches(links, "count.x"))
            pod = pub_node.connect()
            for i in range(n):
                await pod.publish(Message.new("count.x", str(i)))
            received = [(await got.get()).text() for _ in range(n)]
            assert received == [str(i) for i in range(n)]
            await _check_counts(a, b, pub_node.node_uuid, sub_node.node_uuid, n)
        assert (await b.stop()).code == 0
        assert (await a.stop()).code == 0


def _reaches(links: list[PeerInfo], msg_type: str) -> bool:
    """True if one of a leaf's links says ``msg_type`` can be reached through it."""
    return any(Pattern(p).matches(msg_type) for link in links for p in link.interests)


async def _check_counts(a: Gravd, b: Gravd, pub: str, sub: str, n: int) -> None:
    doc_a, doc_b = await a.node(), await b.node()
    leaves_a = {leaf["uuid"]: leaf for leaf in doc_a["leaves"]}
    peers_a = {peer["uuid"]: peer for peer in doc_a["peers"]}
    assert leaves_a[pub]["messages_in"] == n
    assert peers_a[b.uuid]["messages_out"] == n
    assert doc_a["messages"]["in"] == n
    assert doc_a["messages"]["out"] == n
    assert doc_a["messages"]["dropped"] == dict.fromkeys(doc_a["messages"]["dropped"], 0)
    leaves_b = {leaf["uuid"]: leaf for leaf in doc_b["leaves"]}
    peers_b = {peer["uuid"]: peer for peer in doc_b["peers"]}
    assert peers_b[a.uuid]["messages_in"] == n
    assert leaves_b[sub]["messages_out"] == n
    assert "count.>" in leaves_b[sub]["interests"]

    status, text = await a.get("/metrics")
    assert status == 200
    samples = _samples(text)
    assert samples[("gravd_link_messages_received_total", (("role", "leaf"),))] == n
    assert samples[("gravd_link_messages_sent_total", (("role", "peer"),))] == n
    assert samples[("gravd_links", (("role", "leaf"),))] == 1
    assert samples[("gravd_serving", ())] == 1
    assert samples[("gravd_peer_messages_dropped_total", (("peer", b.uuid),))] == 0
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {m.removesuffix("_total") for m in METRIC_NAMES} <= names
    assert all(name.startswith(("gravd_", "process_", "python_")) for name in names)
    assert all(pub not in dict(labels).values() for _, labels in samples)  # leaves aggregated
    _, text_b = await b.get("/metrics")
    samples_b = _samples(text_b)
    assert samples_b[("gravd_link_messages_sent_total", (("role", "leaf"),))] == n
    assert samples_b[("gravd_link_messages_received_total", (("role", "peer"),))] == n


async def test_sigterm_ends_an_in_flight_request_with_a_clear_error_and_exits_0() -> None:
    """SIGTERM while a request waits on an unanswering pod: the asker fails at once, gravd exits 0."""
    async with running_gravd() as node, gravpy.connect(node.endpoint) as responder:
        asked = asyncio.Event()
        responder.connect().on_type("slow.op", lambda msg: asked.set())  # never answers
        await node.wait_interest("slow.op")
        argv = [*GRAVCTL, "--url", node.endpoint, "req", "slow.op", "x", "--timeout", "60"]
        req = await Process.start(argv)
        try:
            await asked.wait()
            node.process.signal(signal.SIGTERM)
            result = await req.wait()
        finally:
            await req.close()
        assert result.code == 4, result
        assert "the link to the node was lost" in result.stderr
        stopped = await node.process.wait()
        assert stopped.code == 0
        events = [e["event"] for e in node.process.events()]
        assert (
            events.index("shutdown_requested") < events.index("draining") < events.index("stopped")
        )


async def test_second_signal_exits_at_once_and_health_is_503_while_draining() -> None:
    """While a drain waits on a silent link, /healthz answers 503 and a second signal exits now."""
    async with running_gravd("--drain-timeout", "60") as node:
        # an app that completes its handshake, then never says a word (no WITHDRAW_ACK)
        link = await WebSocketTransport().dial(node.endpoint, timeout=10)
        try:
            await silent_leaf(link)
            node.process.signal(signal.SIGTERM)
            await node.process.wait_event("draining")
            status, body = await node.get("/healthz")
            assert (status, json.loads(body)["status"]) == (503, "draining")
            node.process.signal(signal.SIGINT)
            result = await node.process.wait()
        finally:
            await link.close()
    assert result.code == 128 + signal.SIGINT
    forced = [e for e in node.process.events() if e["event"] == "forced_exit"]
    assert forced
    assert forced[0]["signal"] == "SIGINT"
    assert not any(e["event"] == "stopped" for e in node.process.events())


async def silent_leaf(link: Link) -> None:
    """Drive a leaf's handshake on ``link`` to OPEN, then leave the link alone."""
    proto = PeerProtocol(
        NodeInfo("silent-leaf", role="leaf"), initiator=True, now=0.0, nonce=os.urandom(16)
    )
    async with asyncio.timeout(10):
        while proto.state is not LinkState.OPEN:
            for frame in proto.data_to_send():
                await link.send(frame)
            for event in proto.receive_frame(await link.recv(), 0.0):
                if isinstance(event, HelloReceived):
                    proto.accept()
        for frame in proto.data_to_send():
            await link.send(frame)
