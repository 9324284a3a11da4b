"""The event store over the mesh: ``RemoteEventStore`` (asks) and ``EventStoreService`` (answers).

Theory of operation. A node that keeps a store (gravd) answers requests of the types
``gravd.events.<node uuid>.<op>`` (``persist``, ``query``, ``get``, ``mark``, ``delete``); the
node's uuid is in the type so that, however many gravd share a mesh, a request reaches the one
store it names and is stored once. An app attached to one gravd (a leaf) finds that uuid in
``grav.peers()``. Requests and replies are msgpack maps: the request holds the op's arguments,
the reply (type ``gravd.events.reply``) is ``{"ok": true, "result": ...}`` or ``{"ok": false,
"error": text, "field": name or None}``. A reply with ``field`` raises ``EventError`` (the caller
sent a bad event or filter); one without raises ``EventStoreError`` (the store failed).

The service handles requests in a pod with an async handler, a few at once; the store's one
thread orders the writes. Any request, however malformed, gets a reply and never breaks the pod:
an answer that cannot be sent (a page over the mesh's message limit) is replaced by a refusal
without ``field`` that says so (``EventStoreError``: "the page is too large to send ...; ask for
fewer events"), and the handler itself never raises, so the pod is never disconnected for it.

Which store ``node=None`` means is decided at each call (``RemoteEventStore.target``): the one
open peer link's node. No open link while the node keeps one (a leaf whose gravd restarts) is
``EventStoreError``, as any unreachable store; only a node that can never say which store it means
(no transport, nothing linked or dialled, several peers) is a ``UsageError``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from gravpy.errors import GravError, NoResponders, UsageError, WaitTimeout
from gravpy.events.event import Event, EventError, EventStatus, check_uuid
from gravpy.events.query import EventQuery, Page
from gravpy.events.store import EventStore, EventStoreError
from gravpy.message import Message
from gravpy.proto import ROLE_PEER

if TYPE_CHECKING:
    from gravpy.grav import Grav
    from gravpy.pod import Pod

__all__ = ["REPLY_TYPE", "TYPE_PREFIX", "EventStoreService", "RemoteEventStore", "request_type"]

_log = logging.getLogger("gravpy.events.remote")
TYPE_PREFIX: Final = "gravd.events"
REPLY_TYPE: Final = "gravd.events.reply"
_OPS: Final = ("persist", "query", "get", "mark", "delete")
_ERROR_LIMIT: Final = 2000  # characters of a refusal's text


def request_type(node: str, op: str) -> str:
    """The message type of ``op`` on the store of node ``node``."""
    return f"{TYPE_PREFIX}.{node}.{op}"


class RemoteEventStore:
    """The same calls as ``EventStore``, answered by a gravd's store over the mesh.

    ``node`` is that gravd's uuid; None means the one node this app is attached to (checked at
    each call, so a relink to a restarted gravd is followed). Raises ``EventError`` for bad input,
    ``EventStoreError`` when the store fails or no store answers within ``timeout``.
    """

    def __init__(self, grav: Grav, node: str | None = None, *, timeout: float = 5.0) -> None:
        self.grav = grav
        self.node = node
        self.timeout = timeout
        self._pod: Pod | None = None

    async def persist(self, event: Event) -> None:
        if not isinstance(event, Event):
            raise EventError("event", f"expected an Event, got {type(event).__name__}")
        await self._ask("persist", {"event": event.with_system(self.grav.node_uuid).to_dict()})

    async def query(self, query: EventQuery | None = None, **filters: Any) -> Page:
        query = EventQuery.from_arguments(query, filters)
        return Page.from_dict(await self._ask("query", {"query": query.to_params()}))

    async def get(self, event_id: str) -> Event | None:
        found = await self._ask("get", {"id": check_uuid("id", event_id)})
        return None if found is None else Event.from_dict(found)

    async def mark(self, event_id: str, status: EventStatus | str) -> Event | None:
        args = {"id": check_uuid("id", event_id), "status": EventStatus.parse(status).value}
        found = await self._ask("mark", args)
        return None if found is None else Event.from_dict(found)

    async def delete(self, event_id: str) -> bool:
        return bool(await self._ask("delete", {"id": check_uuid("id", event_id)}))

    def close_pod(self) -> None:
        """Let go of the pod this store asks through (a later call makes a new one)."""
        if self._pod is not None:
            self._pod.disconnect()
            self._pod = None

    def target(self) -> str:
        """The uuid of the node whose store answers.

        With ``node`` None: the one node this node has an open peer link to. None open while it
        keeps a link to some node (a leaf whose gravd restarts, a network down) is
        ``EventStoreError``: the store is out of reach for now, and the call can be retried.
        ``UsageError`` only when the node can never tell which store is meant: it has no
        transport, or links to or dials no node at all, or has several open peer links."""
        if self.node is not None:
            return self.node
        peers = [p for p in self.grav.peers() if p.role == ROLE_PEER]
        linked = [p.uuid for p in peers if p.state == "open"]
        if len(linked) == 1:
            return linked[0]
        if len(linked) > 1:
            raise UsageError(
                f"this node has {len(linked)} open peer links; name the gravd whose store to use "
                "(EventStore.remote(grav, node=uuid))"
            )
        hub = self.grav.hub
        dialled = [] if hub is None else hub.dialers()
        if peers or dialled:
            place = f"at {', '.join(dialled)}" if dialled else "of the gravd this node linked to"
            raise EventStoreError(
                place, "no link to its gravd is open now (it may be restarting; it is redialled)"
            )
        raise UsageError(
            "this node links to no gravd and dials none: attach it (gravpy.connect(url)) or name "
            "the node whose store to use (EventStore.remote(grav, node=uuid))"
        )

    async def _ask(self, op: str, args: dict[str, Any]) -> Any:
        node = self.target()
        if self._pod is None or self._pod.closed:
            self._pod = self.grav.connect()
        receipt = self._pod.send(Message.new(request_type(node, op), args))
        try:
            reply: Message = await receipt.wait_until(self.timeout)
        except NoResponders:
            raise EventStoreError(f"node {node}", "no event store answers there") from None
        except WaitTimeout:
            raise EventStoreError(f"node {node}", f"no answer within {self.timeout} s") from None
        answer = reply.unmarshal_data()
        if not isinstance(answer, dict) or "ok" not in answer:
            raise EventStoreError(f"node {node}", "its answer is not an event store reply")
        if answer["ok"]:
            return answer.get("result")
        if answer.get("field"):
            raise EventError(str(answer["field"]), str(answer.get("error", "")))
        raise EventStoreError(f"node {node}", str(answer.get("error", "failed")))


class EventStoreService:
    """Answers the store requests addressed to ``grav``'s node from ``store``. ``start()``."""

    def __init__(self, grav: Grav, store: EventStore, *, concurrency: int = 4) -> None:
        self.grav = grav
        self.store = store
        self.concurrency = concurrency
        self.answered = 0
        self.refused = 0
        self.failed = 0  # requests that raised what no check foresaw (logged)
        self._pod: Pod | None = None

    def start(self) -> None:
        pod = self._pod = self.grav.connect()
        pod.on_type(
            f"{TYPE_PREFIX}.{self.grav.node_uuid}.*", self._answer, concurrency=self.concurrency
        )

    def stop(self) -> None:
        if self._pod is not None:
            self._pod.disconnect()
            self._pod = None

    async def _answer(self, request: Message) -> None:
        pod = self._pod
        if request.reply_to or pod is None:
            return  # never answer a reply
        op = request.type.rsplit(".", 1)[-1]
        try:
            result = await self._do(op, request.unmarshal_data())
        except EventError as exc:
            self._refuse(pod, request, exc.problem, exc.field)
            return
        except GravError as exc:
            self._refuse(pod, request, str(exc), None)
            return
        except Exception:  # a request no check foresaw: answered and counted, the service stays
            _log.exception("event store request %s (%s) failed", request.uuid, request.type)
            self.failed += 1
            self._send(pod, request, _refusal("the event store failed on this request", None))
            return
        unsent = self._send(pod, request, {"ok": True, "result": result})
        if unsent is None:
            self.answered += 1
        elif not pod.closed:  # the answer cannot travel (over the mesh's message limit)
            self._refuse(pod, request, _too_large(op, unsent), None)

    def _refuse(self, pod: Pod, request: Message, error: str, field: str | None) -> None:
        self.refused += 1
        unsent = self._send(pod, request, _refusal(error, field))
        if unsent is not None and not pod.closed:  # (a tiny mesh limit: say less)
            self._send(pod, request, _refusal("the refusal is too large to send", None))

    def _send(self, pod: Pod, request: Message, answer: dict[str, Any]) -> Exception | None:
        """Reply ``answer`` to ``request``; the error if it cannot be sent. Never raises: a
        handler that fails keeps its message, and enough failures would disconnect the pod."""
        try:
            pod.reply_to(request, Message.new(REPLY_TYPE, answer))
        except GravError as exc:  # over the mesh's message limit, or the service was stopped
            return exc
        except Exception as exc:  # an answer no check foresaw (logged; the asker is told)
            _log.exception("event store answer to %s (%s) failed", request.uuid, request.type)
            return exc
        return None

    async def _do(self, op: str, args: object) -> Any:
        if op not in _OPS:
            raise EventError("op", f"unknown operation {op!r} (known: {', '.join(_OPS)})")
        if not isinstance(args, dict):
            raise EventError("request", "expected a map of arguments")
        store = self.store
        if op == "persist":
            event = Event.from_dict(args.get("event")).with_system(self.grav.node_uuid)
            await store.persist(event)
            return event.id
        if op == "query":
            params = args.get("query")
            if not isinstance(params, dict):
                raise EventError("query", "expected a map of filters")
            return (await store.query(EventQuery.from_params(params))).to_dict()
        event_id = check_uuid("id", args.get("id"))
        if op == "delete":
            return await store.delete(event_id)
        if op == "mark":
            found = await store.mark(event_id, EventStatus.parse(args.get("status")))
        else:
            found = await store.get(event_id)
        return None if found is None else found.to_dict()


def _refusal(error: str, field: str | None) -> dict[str, Any]:
    """A refusing reply; its text bounded, so that it fits in any message."""
    if len(error) > _ERROR_LIMIT:
        error = error[:_ERROR_LIMIT] + "..."
    return {"ok": False, "error": error, "field": field}


def _too_large(op: str, why: Exception) -> str:
    """What the asker is told when the answer to its ``op`` cannot be sent."""
    if not isinstance(why, GravError):
        return "the event store failed to encode its answer"
    if op == "query":
        return f"the page is too large to send ({why}); ask for fewer events (a smaller page_size)"
    return f"the answer is too large to send ({why})"
