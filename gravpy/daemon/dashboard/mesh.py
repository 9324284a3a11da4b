"""``/v1/mesh``: every node of the mesh, gathered from the ``gravd.info`` answers of each.

Theory of operation. Every gravd answers a ``gravd.info`` request with its ``/v1/node`` document,
as a ``gravd.info.reply`` (``serve_info``); a survey takes no answer of any other type. (An app
that may receive ``gravd.info`` could still answer as a node: docs/security.md says how an auth
file keeps apps from doing so.)
A survey sends *one* request from a pod of this node and collects the replies that arrive within
``window`` seconds (``receipt.replies(timeout=window, max=MAX_NODES)``: bounded in time and in
count). The hub routes each reply back along the link the request came in on, so nothing else on
the mesh is asked and nothing waits on a slow node longer than the window. This node's own document is read directly, not over the bus.

Surveys are shared: while one is in flight, every caller awaits it, and a result younger than
``max_age`` is served again, so a page polling from many browsers still sends at most one request
per ``max_age``. Nodes are remembered between surveys (at most ``MAX_NODES``, forgotten after
``FORGET_AFTER`` seconds unseen): a node that no longer answers and that no open link reaches is
shown as ``dead``, which is how a killed node turns dead on the graph.

A node that an answering node has an open link to but that never answered itself (a program
embedding a full node answers no ``gravd.info``) is shown ``silent``, with its uuid only, so the
view still holds every node of the mesh and every link.

Link states are mapped to the four the page colours: the handshake states are ``linking``, an
open link whose remote announced withdrawal is ``withdrawing``, ``open``, and ``closed`` is
``dead``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from gravpy.errors import GravError
from gravpy.grav import Grav
from gravpy.message import Message
from gravpy.pod import Pod

__all__ = ["INFO_REPLY_TYPE", "INFO_TYPE", "MAX_NODES", "MeshSurvey", "link_state", "serve_info"]

INFO_TYPE = "gravd.info"
INFO_REPLY_TYPE = INFO_TYPE + ".reply"
MAX_NODES = 1024
FORGET_AFTER = 600.0
_MAX_REPLY_BYTES = 1 << 20


def serve_info(grav: Grav, document: Callable[[], dict[str, Any]]) -> Pod:
    """Answer ``gravd.info`` requests with ``document()`` (as ``gravd.info.reply``); the pod.

    The reply has another type, and replies are never answered, so two gravd never ping-pong.
    """
    pod = grav.connect()

    def answer(request: Message) -> None:
        if not request.reply_to:
            pod.reply_to(request, Message.new(INFO_REPLY_TYPE, json.dumps(document())))

    pod.on_type(INFO_TYPE, answer)
    return pod


def link_state(link: dict[str, Any]) -> str:
    """One of linking, open, withdrawing, dead for a link of a ``/v1/node`` document."""
    state = link.get("state")
    if state == "open":
        return "withdrawing" if link.get("withdrawn") else "open"
    if state == "closed":
        return "dead"
    return "linking"


class MeshSurvey:
    """Gathers the ``/v1/node`` documents of every node that answers, at most once per max_age."""

    def __init__(
        self,
        grav: Grav,
        local: Callable[[], dict[str, Any]],
        *,
        window: float = 0.4,
        max_age: float = 1.0,
    ) -> None:
        self.grav = grav
        self.local = local
        self.window = window
        self.max_age = max_age
        self.surveys = 0
        self.bad_replies = 0
        self._known: dict[str, tuple[float, dict[str, Any]]] = {}  # uuid -> (last seen, document)
        self._result: tuple[float, dict[str, Any]] | None = None
        self._inflight: asyncio.Future[dict[str, Any]] | None = None
        self._pod: Pod | None = None  # made at the first survey: no page open, no pod

    def close(self) -> None:
        """Stop: cancel a survey in flight, disconnect the pod."""
        if self._inflight is not None:
            self._inflight.cancel()
        if self._pod is not None:
            self._pod.disconnect()

    async def mesh(self) -> dict[str, Any]:
        """The ``/v1/mesh`` document (a shared, recent survey)."""
        result = self._result
        if result is not None and time.monotonic() - result[0] < self.max_age:
            return result[1]
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._survey())
            self._inflight.add_done_callback(self._surveyed)
        return await asyncio.shield(self._inflight)

    def _surveyed(self, future: asyncio.Future[dict[str, Any]]) -> None:
        self._inflight = None
        if not future.cancelled() and future.exception() is None:
            self._result = (time.monotonic(), future.result())

    async def _survey(self) -> dict[str, Any]:
        self.surveys += 1
        answers = {doc["uuid"]: doc for doc in await self._ask()}
        own = self.local()
        answers[own["uuid"]] = own
        now = time.monotonic()
        for uuid, doc in answers.items():
            self._known[uuid] = (now, doc)
        self._forget(now)
        return self._document(own, answers)

    async def _ask(self) -> list[dict[str, Any]]:
        """Send one ``gravd.info`` request; the documents that answer within the window."""
        replies: list[dict[str, Any]] = []
        if self._pod is None:
            self._pod = self.grav.connect()
        try:
            receipt = self._pod.send(Message.new(INFO_TYPE))
            if receipt.no_responders:
                return replies
            async for reply in receipt.replies(timeout=self.window, max=MAX_NODES):
                doc = self._decode(reply)
                if doc is not None:
                    replies.append(doc)
        except GravError:  # the pod or the bus closed, or the only peer left: report what came
            pass
        return replies

    def _decode(self, reply: Message) -> dict[str, Any] | None:
        doc: object = None
        if reply.type == INFO_REPLY_TYPE and len(reply.data) <= _MAX_REPLY_BYTES:
            with contextlib.suppress(ValueError):
                doc = json.loads(reply.data)
        if not _well_formed(doc):
            self.bad_replies += 1
            return None
        assert isinstance(doc, dict)
        return doc

    def _forget(self, now: float) -> None:
        for uuid in [u for u, (seen, _) in self._known.items() if now - seen > FORGET_AFTER]:
            del self._known[uuid]
        while len(self._known) > MAX_NODES:
            oldest = min(self._known, key=lambda u: self._known[u][0])
            del self._known[oldest]

    def _document(self, own: dict[str, Any], answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
        open_to = {
            link["uuid"]
            for doc in answers.values()
            for link in doc.get("peers", [])
            if link_state(link) in ("open", "withdrawing")
        }
        known = dict(self._known)
        for uuid in open_to - known.keys():  # linked, never answered (a node that is no gravd)
            known[uuid] = (0.0, {"uuid": uuid})
        nodes = []
        for uuid, (_, doc) in sorted(known.items()):
            answered = uuid in answers
            state = doc.get("state", "serving") if answered else "dead"
            if not answered and uuid in open_to:
                state = "silent"  # linked but did not answer in the window
            nodes.append(_node_json(doc, state, answered))
        return {
            "self": own["uuid"],
            "generated_at": time.time(),
            "window_seconds": self.window,
            "nodes": nodes,
            "links": _links(answers, {u: doc for u, (_, doc) in self._known.items()}),
        }


def _well_formed(doc: object) -> bool:
    """True if ``doc`` has what the survey reads of a node document, of the types the page
    draws (a peer's reply is input: one ``"endpoints": "x"`` would stop the page drawing)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("uuid"), str):
        return False
    for key in ("peers", "leaves"):
        links = doc.get(key, [])
        if not isinstance(links, list) or not all(
            isinstance(link, dict)
            and isinstance(link.get("uuid"), str)
            and isinstance(link.get("interests", []), list)
            for link in links
        ):
            return False
    pods, listen = doc.get("pods", {}), doc.get("listen", {})
    return (
        isinstance(pods, dict)
        and isinstance(listen, dict)
        and _strings(pods.get("interests", []))
        and _strings(listen.get("endpoints", []))
        and type(pods.get("count", 0)) is int
        and all(
            isinstance(doc.get(k, ""), str | None) for k in ("state", "version", "mesh", "monitor")
        )
    )


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _node_json(doc: dict[str, Any], state: str, answered: bool) -> dict[str, Any]:
    pods = doc.get("pods", {})
    return {
        "uuid": doc["uuid"],
        "state": state,
        "answered": answered,
        "version": doc.get("version"),
        "mesh": doc.get("mesh"),
        "monitor": doc.get("monitor"),
        "endpoints": doc.get("listen", {}).get("endpoints", []),
        "leaves": _leaf_count(doc),
        "leaf_names": sorted(  # what the attached apps call themselves (HELLO's name)
            {str(leaf.get("name") or "") for leaf in doc.get("leaves", [])} - {""}
        ),
        "pods": pods.get("count", 0),
        "interests": pods.get("interests", []),
        "leaf_interests": sorted(
            {str(p) for leaf in doc.get("leaves", []) for p in leaf.get("interests", [])}
        ),
        "messages": doc.get("messages", {}),
    }


def _leaf_count(doc: dict[str, Any]) -> int:
    """How many apps are attached to the node: its document lists one page of them (the first
    100), and says how many there are in ``leaves_page.total``."""
    listed = len(doc.get("leaves", []))
    page = doc.get("leaves_page")
    total = page.get("total") if isinstance(page, dict) else None
    if isinstance(total, int) and not isinstance(total, bool) and total >= listed:
        return total
    return listed


def _links(
    answers: dict[str, dict[str, Any]], known: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One entry per pair of nodes, as the answering node with the smaller uuid saw it.

    A link that only a node which no longer answers reported (its last document) is ``dead``.
    """
    links: dict[tuple[str, str], dict[str, Any]] = {}
    for uuid, doc in [*answers.items(), *((u, d) for u, d in known.items() if u not in answers)]:
        answered = uuid in answers
        for peer in doc.get("peers", []):
            pair = (min(uuid, peer["uuid"]), max(uuid, peer["uuid"]))
            if pair in links and (not answered or uuid != pair[0]):
                continue
            links[pair] = {
                "a": pair[0],
                "b": pair[1],
                "state": link_state(peer) if answered else "dead",
                "transport": peer.get("transport"),
                "rtt_seconds": peer.get("rtt_seconds"),
                "seen_by": uuid,
            }
    return list(links.values())
