"""``NatsBridge``: a node's mesh joined to a NATS server or cluster (nats-py).

Theory of operation
-------------------
The hub hands the bridge every message new to its node (``offer``) and tells it what the mesh
wants (``mesh_interests``); the bridge hands the hub what came from NATS (``BridgeHost.inject``,
original uuid kept, so seen-sets drop any copy). ``gravpy.bridge.port`` draws the port.

- **One active bridge per mesh** (``InterestTable.exporter``; ``gravpy.bridge.crossing`` keeps
  what each bridge heard and sets the roles: ``Crossing``) exports and imports; the others
  stand by until it says bye or is silent for ``ttl``. A standby subscribes and announces as the
  active one does, but holds what it hears (``gravpy.bridge.importer``, ``gravpy.bridge.shadow``)
  and advertises the mesh's wants to its peers, so the active bridge's deliveries reach it and
  are struck; on taking over it delivers the rest first. So a crash of the active bridge loses
  nothing NATS carried for the mesh (beyond the shadow's bound, counted ``shadow_overflow``).
  Likewise it holds what it would export until it hears the active bridge's copy on NATS, and
  publishes the rest once its link to the active bridge closes or it takes over.
- **Out** (mesh to NATS): ``offer`` hands every message to the ``Exporter``
  (``gravpy.bridge.exporter``), which decides whether it crosses and queues it on its bounded
  ``Outbox``; one task per connection publishes from it. This class tells the exporter whether
  it is connected and its inbox; ``Crossing`` whether it is ready (the announce loop says when)
  and who is active.
- **In** (NATS to mesh): one subscription per pattern the mesh wants (ungrouped or for a group:
  ``Crossing.mesh_wants``, ``mesh_groups``, and what the mesh's other bridges' nodes want)
  on every bridge of the mesh; only the active one delivers (``Importer``), and a copy two
  bridges both deliver around a takeover keeps its uuid, so each node's seen-set drops the second.
  Messages from the own mesh are echoes and skipped. A request's reply subject is kept
  (``Importer.reply_subject``) for its replies.
- **Announcements** (``gravpy.bridge.subjects.Announcement``) on connect (with a query, so the
  others answer at once), after each change of subscriptions, and every ``announce_interval``;
  what the others announce goes to ``Crossing.heard``.
- **Faults**: connecting retries with capped backoff while the node serves its LAN; nats-py
  reconnects within a cluster (publishing into its bounded pending buffer meanwhile); a closed
  connection starts connecting again (what nats-py still held unwritten is counted lost,
  ``not_reconnected``: ``WireClient.unwritten``). ``statistics()`` reports state and losses by
  reason. Once ``stop`` begins the bridge is ``closing`` and no connection starts, whatever
  nats-py does meanwhile (``_enter``); it is ``closed`` when ``stop`` returns.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from gravpy import _log as logs
from gravpy._tasks import TaskSupervisor
from gravpy.bridge.config import NatsBridgeConfig, NatsBridgeStatistics
from gravpy.bridge.connection import Connector
from gravpy.bridge.crossing import Crossing
from gravpy.bridge.exporter import Exporter
from gravpy.bridge.importer import Importer
from gravpy.bridge.interest import fitted, reduce_patterns
from gravpy.bridge.port import BridgeHost, Groups, MeshInterests
from gravpy.bridge.shadow import Shadow
from gravpy.bridge.subjects import Announcement, SubjectMap
from gravpy.bridge.wire import WireClient
from gravpy.errors import UsageError
from gravpy.message import Message

__all__ = ["NatsBridge"]

_log = logs.get_logger("gravpy.bridge")
_STOPPING = ("closing", "closed")  # once ``stop`` begins, the only states left


class NatsBridge:
    """Join this node's mesh to NATS: ``Grav(..., bridges=[NatsBridge("nats://host:4222")])``."""

    def __init__(self, config: NatsBridgeConfig | str) -> None:
        self.config = NatsBridgeConfig(servers=(config,)) if isinstance(config, str) else config
        self.state = "idle"
        self._connected_since = 0.0  # when ``state`` last became "connected" (Unix time)
        self._host: BridgeHost | None = None
        self._subjects = SubjectMap(self.config.prefix, "*")
        self._nc: WireClient | None = None
        self._tasks = TaskSupervisor(_log)
        self._subscribed: tuple[tuple[str, ...], Groups] = ((), ())  # what is announced
        self._closed = asyncio.Event()
        self._subs: dict[str, Subscription] = {}
        self._cut_logged = False  # announced less than the mesh wants (``fitted``)
        c = self.config
        shadow = Shadow(c.shadow_limit, 2 * c.ttl)
        self._importer = Importer(c.request_limit, shadow, self._count, time.monotonic)
        self._exporter = Exporter(c, self._importer)  # (its state: who exports, the outbox)
        self._importer.home_admits = self._exporter.home_admits  # (NATS's no-responders status)
        self._crossing = Crossing(c, self._exporter, self._importer)  # (who exports, what crosses)
        self._connects = 0
        self.errors = 0  # connections ended by an unexpected error (``bridge_failed``)
        self._connector = Connector(self.config, self._on_error)

    # -- the hub's port (BridgePort) -------------------------------------------------------------

    def bind(self, host: BridgeHost) -> None:
        self._host = host
        self._subjects = SubjectMap(self.config.prefix, host.mesh_name)
        self._crossing.bind(host, self._subjects.mesh_token)
        self._exporter.bind(host, self._subjects)
        self._importer.host = host
        self._importer.subjects = self._subjects

    def mesh_interests(self, interests: MeshInterests) -> None:
        """What this node's pods and peers want changed: recompute what this mesh wants."""
        self._crossing.mesh_interests(interests)

    def advertised(self) -> tuple[str, ...]:
        return self._crossing.advertised

    def offer(self, msg: Message) -> bool:
        """A message new to this node: queue it for NATS if it crosses (``Exporter.offer``)."""
        return self._exporter.offer(msg)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; the node serves its LAN meanwhile."""
        if self._host is None:
            raise UsageError("a bridge must be attached to a node (Grav(bridges=[...])) first")
        self.state = "connecting"
        self._tasks.spawn(self._run(), "nats-bridge")

    async def stop(self) -> None:
        """Say goodbye to the other bridges, flush (bounded), close, end every task. The bridge
        is ``closing`` from the start, whatever nats-py does meanwhile (``_enter``), and
        ``closed`` once it returns."""
        nc = self._nc
        self.state = "closing"
        if nc is not None and nc.is_connected:
            try:
                await self._announce(bye=True)
                await asyncio.wait_for(nc.flush(), self.config.connect_timeout)
            except (NatsError, TimeoutError) as exc:
                _log.info("bridge_flush_failed", error=str(exc))
        await self._tasks.close()
        await self._close()
        self.state = "closed"

    async def _run(self) -> None:
        """Connect, with backoff, until stopped; serve each connection until it closes. Once
        ``stop`` began, no connection is made or served again: it may end before this task is
        cancelled (a connection nats-py gave up on meanwhile), and nats-py may swallow that
        cancellation (its ``close`` does while it waits for its reconnecting task)."""
        backoff = self.config.backoff.new_backoff()
        while not self._stopping():
            self._enter("connecting")
            try:
                await self._connect()
            except Exception:  # (counted by the connector; whatever it was, try again)
                delay = backoff.next_delay()
                error = self._connector.last_error
                _log.warning("bridge_connect_failed", error=error, retry_in=delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if self._stopping():  # (connected as ``stop`` began: it closes ``_nc``)
                return
            try:
                await self._serve()
            except Exception as exc:  # a bug, here or in nats-py: reconnect, never a dead bridge
                cause = exc  # (one of the connection's tasks: the error, not its group)
                while isinstance(cause, ExceptionGroup) and len(cause.exceptions) == 1:
                    cause = cause.exceptions[0]
                self._connector.record(f"{type(cause).__name__}: {cause}")
                _log.error("bridge_failed", error=self._connector.last_error, exc_info=exc)
                self.errors += 1
                await self._close()
                await asyncio.sleep(backoff.next_delay())
                continue
            await self._close()

    async def _connect(self) -> None:
        callbacks = {
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
        }
        self._closed.clear()
        table = self._crossing.table
        name = f"gravd {table.node} ({table.mesh})"
        self._nc = await self._connector.open(name, callbacks)
        self._exporter.inbox = self._nc.new_inbox()
        self._exporter.outbox.max_payload = self._nc.max_payload  # (the server's INFO)
        self._exporter.connected = True

    async def _serve(self) -> None:
        """One connection: subscribe, announce, publish, until nats-py gives up on it."""
        nc = self._nc
        assert nc is not None
        self._connects += 1  # ("connected" once the server has the subscriptions: _subscribed)
        await nc.subscribe(self._subjects.interest_subject, cb=self._on_announcement)
        await nc.subscribe_direct(f"{self._exporter.inbox}.>", self._on_reply)
        self._crossing.subs_dirty.set()
        await self._announce(query=True)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._exporter.outbox.publish_all(nc)),
                group.create_task(self._subscription_loop(nc)),
                group.create_task(self._announce_loop()),
            ]
            await self._closed.wait()  # nats-py gave up reconnecting
            for task in tasks:
                task.cancel()
        _log.warning("bridge_connection_closed", error=self._connector.last_error)

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        self._exporter.connected = False
        self._exporter.outbox.drop_all("disconnected")
        self._subs.clear()
        self._subscribed = ((), ())
        self._crossing.disconnected()
        if nc is None:
            return
        try:
            if not nc.is_closed:
                await nc.close()
        except OSError as exc:  # (without ``wire.FAST``, nats-py writes what it held into the
            _log.warning("bridge_close_failed", error=str(exc))  # dead socket as it closes)
        finally:  # (what nats-py still held when the lost connection closed: never written)
            unwritten, nc.unwritten = nc.unwritten, 0
            if unwritten:
                self._count("not_reconnected", unwritten)

    # -- in: NATS to mesh ------------------------------------------------------------------------

    def _on_reply(self, subject: str, _: str, data: bytes, headers: dict[str, str] | None) -> None:
        """A reply on ``<inbox>.<request uuid>.<request type tokens>``."""
        self._importer.reply(subject[len(self._exporter.inbox) + 1 :], data, headers or {})

    async def _subscription_loop(self, nc: WireClient) -> None:
        """Keep one subscription per pattern the mesh wants (active or standby: the importer
        decides whether to deliver or hold)."""
        crossing = self._crossing
        while True:
            await crossing.subs_dirty.wait()
            crossing.subs_dirty.clear()
            wants, groups = crossing.mesh_wants, crossing.mesh_groups  # a change meanwhile: again
            patterns = {*wants, *crossing.bridge_wants, *(p for _, p, _ in groups)}
            wanted = {self._subjects.subscription(p) for p in reduce_patterns(patterns)}
            echo = self._subjects.echo_subject
            if not self._exporter.active:  # what the active bridge publishes (export shadow)
                wanted.add(echo)
            for subject in set(self._subs) - wanted:
                await nc.unsubscribe_direct(self._subs.pop(subject))
            for subject in wanted - set(self._subs):
                sink = self._exporter.on_echo if subject == echo else self._importer.message
                self._subs[subject] = await nc.subscribe_direct(subject, sink)
            self._subscribed = (wants, groups)  # what is subscribed, not what changed since
            crossing.announce_now.set()  # after the SUBs: whoever hears it may publish at once
            if self.state == "connecting":
                await self._mark_connected(nc)

    async def _mark_connected(self, nc: WireClient) -> None:
        """The first subscriptions are written: once the server has them (a round trip), the
        bridge says it is connected, so whoever waits for that and then publishes with a plain
        NATS client is heard. A round trip that fails is tried again while the connection
        lasts; once nats-py reconnects (``_on_reconnected``) or ``_run`` connects again, those
        say so instead."""
        while self.state == "connecting" and nc.is_connected:
            try:
                await asyncio.wait_for(nc.flush(), self.config.connect_timeout)
            except (NatsError, TimeoutError) as exc:
                _log.info("bridge_flush_failed", error=str(exc))
                await asyncio.sleep(self.config.announce_interval)  # (never a busy loop)
                continue
            if self.state == "connecting":  # (not closing meanwhile)
                self._enter("connected")
                self._connected_since = time.time()
                url = nc.connected_url
                server = f"{url.hostname}:{url.port}" if url is not None else ""  # (no password)
                _log.info("bridge_connected", server=server)
            return

    # -- announcements ---------------------------------------------------------------------------

    async def _announce(self, *, query: bool = False, bye: bool = False) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        t, ready = self._crossing.table, self._exporter.ready
        wants, groups = self._subscribed  # (a standby subscribes too)
        ann = Announcement(t.mesh, t.node, wants, ready, query, bye, groups, time.time())
        data, cut = fitted(ann, nc.max_payload)  # (what the others and nats-py accept)
        if cut and not self._cut_logged:  # (logged once: the others hear less than it wants)
            self._cut_logged = True
            _log.warning("bridge_announcement_cut", patterns=len(wants), groups=len(groups))
        await nc.publish(self._subjects.interest_subject, data)

    async def _announce_loop(self) -> None:
        """Announce on every change and at least every ``announce_interval``; keep the table.

        The bridge is ready once an interval passes with nothing to announce (the others
        answered the query ``_serve`` sent), or at the latest a ``ttl`` after connecting: by
        then every live bridge has announced (the table forgets any silent longer). Silent
        bridges are forgotten at least once an interval. Neither waits for a quiet interval,
        which a mesh whose interests keep changing may never have."""
        interval, ttl = self.config.announce_interval, self.config.ttl
        crossing = self._crossing
        started = checked = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(interval):
                    await crossing.announce_now.wait()
                quiet = False
            except TimeoutError:
                quiet = True
            now = time.monotonic()
            if not self._exporter.ready and (quiet or now - started >= ttl):
                crossing.mark_ready()
            if quiet or now - checked >= interval:
                checked = now
                crossing.expire(now)
            crossing.announce_now.clear()
            await self._announce()

    async def _on_announcement(self, m: Msg) -> None:
        """nats-py's callback for the interest subject (``Crossing.heard``)."""
        self._crossing.heard(m.data)

    # -- callbacks and statistics ----------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        if "slow consumer" in str(exc).lower():
            self._count("slow_consumer")

    def _stopping(self) -> bool:
        """True once ``stop`` began."""
        return self.state in _STOPPING

    def _enter(self, state: str) -> None:
        """The bridge is ``state`` now, unless ``stop`` began: then it stays ``closing`` until
        ``stop`` ends (``closed``), whatever nats-py reports meanwhile (it may give up, close
        or reconnect the connection under ``stop``) and whatever ``_run`` makes of that."""
        if not self._stopping():
            self.state = state

    async def _on_disconnected(self) -> None:
        if self.state == "connected":
            self._enter("reconnecting")
            _log.warning("bridge_disconnected", error=self._connector.last_error)

    async def _on_closed(self) -> None:
        self._closed.set()  # (``_close`` counts what nats-py held unwritten: ``unwritten``)

    async def _on_reconnected(self) -> None:
        if self._nc is not None:
            self._nc.handed_reconnecting = 0  # nats-py wrote its pending buffer on reconnecting
            self._exporter.outbox.max_payload = self._nc.max_payload  # (another server's)
        if self._stopping():  # nats-py reconnected while ``stop`` runs: it closes the
            return  # connection; the bridge is not connected again
        self._enter("connected")
        self._connected_since = time.time()
        self._connects += 1
        _log.info("bridge_reconnected")
        self._crossing.announce_now.set()

    def _count(self, reason: str, n: int = 1) -> None:
        self._exporter.outbox.count(reason, n)

    def statistics(self) -> NatsBridgeStatistics:
        exports = self._exporter.shadow  # (what a standby holds for export)
        crossing, table = self._crossing, self._crossing.table
        return NatsBridgeStatistics(
            state=self.state,
            servers=self.config.servers,
            exporter=self._exporter.active,
            connects=self._connects,
            exported=self._exporter.outbox.published,
            imported=self._importer.imported,
            queued=len(self._exporter.outbox),
            lost=self._lost(),
            mesh_wants=reduce_patterns({*crossing.mesh_wants, *crossing.bridge_wants}),
            remote_wants=table.remote_patterns(),
            remote_meshes=table.remote_meshes(),
            mesh_groups=tuple(f"{g} {p}" for g, p, _ in crossing.mesh_groups),
            remote_groups=tuple(sorted(f"{g} {p}" for g, p in table.remote_groups())),
            last_error=self._connector.last_error,
            last_error_at=self._connector.last_error_at,
            connected_since=self._connected_since if self.state == "connected" else None,
            failed_connects=self._connector.failed,
            ready=self._exporter.ready,
            held=len(self._importer.shadow),
            recovered=self._importer.recovered,
            struck=self._importer.shadow.struck,
            shadow_expired=self._importer.shadow.expired,
            standby_exported=self._exporter.standby_exported,
            remote_expired=table.expired,
            errors=self.errors,
            export_held=len(exports),
            export_struck=exports.struck,
            failures_unsent=self._exporter.failures_unsent,
            export_recovered=self._exporter.recovered,
            export_expired=exports.expired,
        )

    def _lost(self) -> dict[str, int]:
        lost = dict(self._exporter.outbox.lost)
        overflow = self._exporter.shadow.overflow  # held for export, dropped to stay in bounds
        if overflow:
            lost["export_overflow"] = overflow
        return lost
