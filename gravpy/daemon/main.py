"""``gravd``: run one node of the mesh, with monitoring, until a signal stops it.

Start-up: read the config (flags > ``GRAVD_*`` > TOML > defaults; ``--check-config`` stops there),
configure logging, start the node (the WebSocket transport, the HTTP transport too with
``listen_http``, the TCP transport with ``listen_tcp``, each with TLS when ``tls_cert`` is set;
discovery) on the event loop ``--loop`` picks (uvloop when installed, by default), the ``gravd.info`` responder and the monitoring server, then log one
``listening`` event with every real endpoint and the monitor address (tests and scripts read it
to learn ports bound as 0).

The WebSocket transport comes first, so the endpoint this node states in its handshakes, and that
peers pass on to each other, is its WebSocket one; the HTTP endpoint is for the peers and apps
that name it (``--peer http://...``, ``gravpy.connect("http://...")``), and for mDNS, which
advertises every endpoint.

Shutdown: the first SIGTERM or SIGINT makes ``/healthz`` answer 503, withdraws the node from the
mesh and drains what is in flight (``Grav.stop``, bounded by ``drain_timeout``), then exits 0. A
second signal exits at once with 128 + the signal number.

Exit codes: 0 stopped cleanly; 1 could not start or could not drain in time; 2 bad command line
or configuration; 128+N forced by a second signal N.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import ipaddress
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

import structlog

import gravpy
from discovery.static import StaticDiscovery
from gravpy.buffer import MsgBuffer
from gravpy.daemon import loop as event_loop
from gravpy.daemon.advertise import advertised
from gravpy.daemon.auth import AuthReloader, read_auth_file
from gravpy.daemon.bridging import bridges_for, check_bridges
from gravpy.daemon.config import (
    SETTINGS,
    Address,
    ConfigError,
    DaemonConfig,
    load_config_with_sources,
)
from gravpy.daemon.dashboard.mesh import INFO_TYPE, serve_info
from gravpy.daemon.events_node import DaemonEvents
from gravpy.daemon.logging import configure_logging
from gravpy.daemon.monitor import Monitor, NodeStatus
from gravpy.daemon.node_identity import UUID_FILE, NodeIdentityError, open_identity
from gravpy.daemon.parsers import default_data_dir
from gravpy.daemon.positions import PositionsError, PositionStore, open_positions
from gravpy.daemon.replay_store import ReplayStore, ReplayStoreError, set_aside_unused
from gravpy.daemon.settings import add_flags
from gravpy.errors import GravError
from gravpy.events import EventStoreError
from gravpy.grav import Grav
from gravpy.mesh import HubConfig
from gravpy.plugins import Discovery, Transport, load_discovery
from gravpy.proto import ProtocolConfig
from gravpy.tls import node_tls
from transports.http import HttpTransport
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

__all__ = ["INFO_TYPE", "build_parser", "main", "serve"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
STOP_GRACE = 10.0  # seconds beyond drain_timeout that closing links and listeners may take
CLOSE_TIMEOUT = 1.0  # seconds a closing link waits for the remote's close (the libraries' 5 s
# default made a shutdown next to a frozen peer take drain_timeout + 5 s)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gravd",
        description="Run a gravpy node: peers link to it, apps attach to it (gravpy.connect).",
        epilog=(
            "Every setting can also come from the environment (GRAVD_<SETTING>, e.g. "
            "GRAVD_LISTEN) or the TOML file; flags win over the environment, which wins over "
            "the file. The variable is named after the setting (GRAVD_PEERS for --peer); a "
            "GRAVD_* variable or TOML key that names no setting is refused, never ignored. "
            "Exit codes: 0 stopped cleanly, 1 failed, 2 bad configuration, "
            "128+N forced exit by a second signal N."
        ),
    )
    parser.add_argument("--version", action="version", version=f"gravd {gravpy.__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="a TOML file of settings (also GRAVD_CONFIG); --config '' reads no file, even if "
        "GRAVD_CONFIG names one",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print it as JSON and exit",
    )
    add_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``gravd`` entry point."""
    args = build_parser().parse_args(argv)
    flags: dict[str, object] = {s.name: getattr(args, s.name) for s in SETTINGS}
    flags["config"] = args.config
    try:
        config, sources = load_config_with_sources(flags, os.environ)
        check_bridges(config)  # --nats without nats-py: said at once, not as a traceback
    except ConfigError as exc:
        print(f"gravd: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if args.check_config:
        print(json.dumps({**config.public(), "sources": sources}, indent=2))
        print("gravd: configuration is valid", file=sys.stderr)
        raise SystemExit(EXIT_OK)
    configure_logging(config.log_format, config.log_level)
    raise SystemExit(event_loop.run(serve(config), config.loop))


def open_to_network(config: DaemonConfig) -> bool:
    """True if gravd listens beyond loopback and authenticates no one (no mesh key, no TLS
    client verification, no auth file)."""
    if config.mesh_key is not None or config.tls_verify_clients:
        return False
    if getattr(config, "auth_file", None) is not None:
        return False
    listeners = [config.listen, config.listen_http, config.listen_tcp]
    return any(a is not None and not _loopback(a.host) for a in listeners)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def build_transports(config: DaemonConfig) -> list[Transport]:
    """WebSocket on ``listen``, then HTTP on ``listen_http`` and TCP on ``listen_tcp`` if set.

    With ``tls_cert`` every one of them listens with TLS; ``tls_ca`` and the certificate are
    what they dial TLS peers with (see :func:`gravpy.tls.node_tls`). With ``advertise``, the
    WebSocket transport states that address first (handshakes, gossip).
    """
    tls = node_tls(
        config.tls_cert, config.tls_key, config.tls_ca, verify_clients=config.tls_verify_clients
    )
    listen = config.listen
    websocket = WebSocketTransport(
        listen.host,
        listen.port,
        config.path,
        ssl=tls,
        close_timeout=CLOSE_TIMEOUT,
        max_connections=config.max_connections,
        max_upgrading=config.max_upgrading,
    )
    transports: list[Transport] = [advertised(websocket, config.advertise)]
    if config.listen_http is not None:
        http = config.listen_http
        transports.append(
            HttpTransport(
                http.host,
                http.port,
                config.http_path,
                ssl=tls,
                close_timeout=CLOSE_TIMEOUT,
                max_connections=config.max_connections,
            )
        )
    if config.listen_tcp is not None:
        tcp = config.listen_tcp
        transports.append(
            TcpTransport(tcp.host, tcp.port, ssl=tls, max_pending=config.max_upgrading)
        )
    return transports


def build_node(config: DaemonConfig, node_uuid: str | None = None) -> Grav:
    """The node ``config`` describes (not started), with ``node_uuid`` if given."""
    discovery: list[Discovery] = []
    if config.discovery == "mdns":
        options: dict[str, object] = {"interfaces": list(config.mdns_interfaces) or None}
        if config.mdns_service:
            options["service_type"] = config.mdns_service
        discovery.append(load_discovery("mdns")(**options))
    if config.peers:
        discovery.append(StaticDiscovery(config.peers))
    return Grav(
        node_uuid=node_uuid,
        transport=build_transports(config),
        discovery=discovery,
        belongs_to=config.mesh,
        mesh_key=config.mesh_key,
        buffer=_replay_buffer(config),
        inbox_limit=max(10_000, config.buffer_size),
        bridges=bridges_for(config),
        identity_file=config.identity,
        authority=read_auth_file(config.auth_file) if config.auth_file else None,
        name="gravd",
        timings=True,  # request and handler histograms of gravd's own pods, for /metrics
        hub_config=HubConfig(
            drain_timeout=config.drain_timeout,
            max_connections=config.max_connections,
            protocol=ProtocolConfig(
                ping_interval=config.ping_interval, dead_after=config.dead_after
            ),
        ),
    )


def _replay_buffer(config: DaemonConfig) -> MsgBuffer:
    """The replay buffer: in ``replay.sqlite3`` (gravpy.daemon.replay_store) unless turned off."""
    return MsgBuffer(config.buffer_size, max_bytes=config.buffer_bytes, max_age=config.buffer_age)


async def _open_replay(
    grav: Grav, config: DaemonConfig, log: Any, numbered: bool = False, keep_files: bool = True
) -> ReplayStore | None:
    """Restore the durable replay buffer before the node links to anything; raises
    ``ReplayStoreError`` if the data dir cannot hold it (a corrupt file is set aside). Not
    durable: the file an earlier run left is set aside (if the data dir's files are this
    gravd's), so that a later durable start does not restore it as current."""
    buffer = grav.bus.buffer
    if not config.buffer_durable:
        if keep_files:
            await asyncio.to_thread(set_aside_unused, config.data_dir)
        return None
    store = await ReplayStore.open(
        config.data_dir, buffer, numbered=numbered, mesh=config.mesh, node=grav.node_uuid
    )
    if store.set_aside is not None:
        log.warning(
            "replay_store_set_aside",
            path=str(store.path),
            moved_to=str(store.set_aside),
            reason=store.set_aside_why,
        )
    log.info(
        "replay_restored", path=str(store.path), messages=len(buffer), skipped=store.skipped_rows
    )
    return store


async def serve(config: DaemonConfig) -> int:
    """Run a node until SIGTERM/SIGINT; return the exit code."""
    try:  # the uuid kept in a data dir of its own (gravpy.daemon.node_identity)
        identity = await open_identity(config.data_dir, default_data_dir())
    except NodeIdentityError as exc:
        structlog.get_logger("gravd").error("start_failed", error=str(exc))
        return EXIT_FAILURE
    grav = build_node(config, identity.uuid)
    log: Any = structlog.get_logger("gravd").bind(node=grav.node_uuid)
    if identity.set_aside is not None:  # node.uuid held no uuid: this is a new node
        log.warning(
            "node_uuid_set_aside",
            path=str(config.data_dir / UUID_FILE),
            moved_to=str(identity.set_aside),
        )
    if not identity.files:  # another gravd keeps its files in the default data dir
        log.warning(
            "data_dir_in_use",
            data_dir=str(config.data_dir),
            detail="another gravd keeps its files there: this one keeps its replay buffer and "
            "events in memory only",
            hint="give each gravd a --data-dir of its own",
        )
        config = dataclasses.replace(config, buffer_durable=False)
    positions: PositionStore | None = None
    try:
        replay = await _open_replay(
            grav, config, log, numbered=identity.kept, keep_files=identity.files
        )
        if identity.kept and grav.hub is not None:  # resume across restarts (positions.py)
            highest = replay.highest_seq if replay is not None else 0
            positions = await open_positions(grav.hub, config.data_dir, highest, log)
    except (ReplayStoreError, PositionsError) as exc:
        log.error("start_failed", data_dir=str(config.data_dir), error=str(exc))
        identity.close()
        return EXIT_FAILURE
    try:
        return await _serve(grav, config, log, keep_files=identity.files, replay=replay)
    finally:
        if positions is not None:
            await positions.close(grav.hub)
        if replay is not None:
            await replay.close()
        identity.close()


async def _serve(
    grav: Grav, config: DaemonConfig, log: Any, *, keep_files: bool, replay: ReplayStore | None
) -> int:
    shutdown = _Shutdown(log)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown.on_signal, signum)
    if config.auth_file is not None:
        loop.add_signal_handler(signal.SIGHUP, AuthReloader(grav, config.auth_file, log).reload)
    else:  # (SIGHUP's default action ends the process: an operator reloading must not stop it)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: log.warning("sighup_ignored", reason="no auth file to re-read")
        )
    status = NodeStatus(grav, config)
    status.replay = replay
    monitor = Monitor(status, config.monitor) if config.monitor is not None else None
    monitor_address = await _start(grav, status, monitor, log, keep_files)
    if monitor_address is None:
        return EXIT_FAILURE
    # what start built (modules, the node) lives as long as gravd: a full collection during a
    # connection flood walked it all, stopping the loop for 100-300 ms at a time
    gc.freeze()
    endpoints = grav.endpoints()
    log.info(
        "listening",
        version=gravpy.__version__,
        pid=os.getpid(),
        listen=_bound(config.listen, endpoints, WebSocketTransport.schemes),
        listen_http=(
            _bound(config.listen_http, endpoints, HttpTransport.schemes)
            if config.listen_http is not None
            else "off"
        ),
        listen_tcp=(
            _bound(config.listen_tcp, endpoints, TcpTransport.schemes)
            if config.listen_tcp is not None
            else "off"
        ),
        tls=config.tls_cert is not None,
        mtls=config.tls_verify_clients,
        loop=event_loop.loop_name(config.loop),
        endpoints=endpoints,
        monitor=monitor_address,
        mesh=config.mesh,
        keyed=config.mesh_key is not None,
        identity=str(config.identity) if config.identity else None,
        auth_file=str(config.auth_file) if config.auth_file else None,
        discovery=config.discovery,
        peers=list(config.peers),
        mdns_interfaces=list(config.mdns_interfaces) or "all",
    )
    if open_to_network(config):
        log.warning(
            "unauthenticated",
            detail="listening beyond loopback with no mesh key and no TLS client verification: "
            "anyone who can reach these ports can attach, publish and subscribe",
            endpoints=endpoints,
        )
    await shutdown.requested.wait()
    return await _drain(grav, status, monitor, config, log)


async def _start(
    grav: Grav, status: NodeStatus, monitor: Monitor | None, log: Any, keep_files: bool
) -> str | None:
    """Start the node, its gravd.info responder and the monitor; the monitor's address or None.
    The event store is in the data dir if ``keep_files``, else in memory."""
    config = status.config
    try:
        await grav.start()
    except GravError as exc:
        log.error(
            "start_failed",
            listen=str(config.listen),
            listen_http=str(config.listen_http or "off"),
            listen_tcp=str(config.listen_tcp or "off"),
            error=str(exc),
        )
        return None
    try:
        status.events = await DaemonEvents.open(grav, config, in_memory=not keep_files)
    except EventStoreError as exc:
        log.error("start_failed", data_dir=str(config.data_dir), error=str(exc))
        await grav.stop()
        return None
    try:
        serve_info(grav, status.snapshot)
        address = await monitor.start() if monitor is not None else "off"
        status.ready = True  # listening, discovery started: /readyz turns 200
        return address
    except (OSError, GravError) as exc:
        await status.events.close()
        log.error("start_failed", monitor=str(config.monitor), error=str(exc))
        await grav.stop()
        return None


async def _drain(
    grav: Grav, status: NodeStatus, monitor: Monitor | None, config: DaemonConfig, log: Any
) -> int:
    status.set_draining()
    log.info("draining", timeout=config.drain_timeout, links=len(grav.peers()))
    if status.events is not None:
        await status.events.begin_drain(config.drain_timeout)
    code = EXIT_OK
    try:
        async with asyncio.timeout(config.drain_timeout + STOP_GRACE):
            await grav.stop()
    except TimeoutError:
        log.error("drain_timed_out", timeout=config.drain_timeout + STOP_GRACE)
        code = EXIT_FAILURE
    if monitor is not None:
        await monitor.stop()
    if status.events is not None:
        await status.events.close()
    log.info("stopped", exit_code=code, uptime_seconds=round(status.uptime(), 3))
    return code


def _bound(address: Address, endpoints: list[str], schemes: Sequence[str]) -> str:
    """``address`` as configured, with the port its transport (the one with ``schemes``) bound.

    The port differs from the configured one when 0 was asked.
    """
    ports = [urlsplit(ep).port for ep in endpoints if urlsplit(ep).scheme in schemes]
    port = ports[0] if ports and ports[0] is not None else address.port
    return str(Address(address.host, port))


class _Shutdown:
    """The first signal asks for a drain; the second exits at once."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.requested = asyncio.Event()

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.requested.is_set():
            self.log.info("shutdown_requested", signal=name)
            self.requested.set()
            return
        self.log.warning("forced_exit", signal=name, exit_code=128 + signum)
        sys.stderr.flush()
        os._exit(128 + signum)


if __name__ == "__main__":
    main()
