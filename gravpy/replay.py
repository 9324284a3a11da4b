"""Leaf replay: a pod on an app attached to gravd first receives gravd's replay buffer.

Theory of operation
-------------------
A leaf's own replay buffer holds only what the leaf saw; the node it is attached to (gravd) holds
what the mesh sent. ``Grav.connect_with_replay()`` on a leaf therefore asks the node, on the wire,
with ordinary messages of reserved types (docs/protocol.md, "Leaf replay"):

1. When the pod starts receiving, it is put on hold: live messages for it are kept aside, in
   order. The leaf advertises the pod's interests as usual, then sends a *replay request* (type
   ``gravpy.replay``, data: a request id) on its link to the node. The INTERESTS frame goes first,
   so by the time the node reads the request it already sends the leaf every new message.
2. The node answers in the same loop turn: a copy of each buffered message the leaf admits, marked
   with the header ``gravpy-replay`` (the request id), oldest first and each once (a gravd
   restarted after a kill can hold a message twice: restored from its file, and resent by its
   origin because its saved position was a tick behind), then a *replay end* (type
   ``gravpy.replay.end``, same header). The node never forwards a request or an answer.
3. The leaf strips the mark and gives the pod what was replayed, then what it held, less the
   messages it already got in the replay (a message that reached the node between the INTERESTS
   and the request was sent live and is also in the buffer). The pod sees the buffer in order,
   then the live stream, with no gap and no duplicate at the seam. What the pod sent itself
   (before it started receiving) is in the node's buffer too and is left out, as a pod never
   receives its own messages: the leaf's own buffer says which of its pods sent what, so this
   holds for what the pod sent among the leaf's last ``buffer_size`` messages (128 by default).

If the leaf has no open link, or the link ends, or the node does not answer within
``ANSWER_TIMEOUT`` (an older node), the pod is released with what it has and the leaf's own buffer
is replayed instead: a replay never blocks a pod for good.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from gravpy import _log as logs
from gravpy.message import Message, new_id
from gravpy.pod import Pod

__all__ = [
    "REPLAY_END_TYPE",
    "REPLAY_HEADER",
    "REPLAY_TYPE",
    "LeafReplays",
    "replay_answer",
]

REPLAY_TYPE: Final = "gravpy.replay"
REPLAY_END_TYPE: Final = "gravpy.replay.end"
REPLAY_HEADER: Final = "gravpy-replay"
ANSWER_TIMEOUT: Final = 10.0

_log = logs.get_logger("gravpy.replay")


def replay_request(request_id: str) -> Message:
    """The message a leaf sends its node to ask for the node's replay buffer."""
    return Message(new_id(), "", "", REPLAY_TYPE, time.time(), request_id.encode(), None)


def replay_answer(
    request: Message, buffered: Iterable[Message], wants: Callable[[str], bool]
) -> list[Message]:
    """The node's answer to ``request``: marked copies of what the leaf admits, each once (the
    first copy: a gravd restarted after a kill can hold a message twice, restored from its file
    and resent by its origin), then the end."""
    rid = request.data.decode(errors="replace")[:64]
    answer: list[Message] = []
    given: set[str] = set()
    for msg in buffered:
        if msg.uuid in given or not wants(msg.type) or msg.reply_to:
            continue
        given.add(msg.uuid)
        answer.append(
            msgspec.structs.replace(msg, headers={**(msg.headers or {}), REPLAY_HEADER: rid})
        )
    end = Message(new_id(), "", "", REPLAY_END_TYPE, time.time(), b"", {REPLAY_HEADER: rid})
    answer.append(end)
    return answer


class _Session:
    __slots__ = ("pod", "replayed", "timer")

    def __init__(self, pod: Pod, timer: asyncio.TimerHandle) -> None:
        self.pod = pod
        self.replayed: list[Message] = []
        self.timer = timer


class LeafReplays:
    """A leaf's replays under way, by request id. Owned by the leaf's hub."""

    def __init__(self, fallback: Callable[[Pod], list[Message]]) -> None:
        self._sessions: dict[str, _Session] = {}
        self._fallback = fallback  # the leaf's own buffer, for a replay the node cannot answer
        self.answered = 0
        self.unanswered = 0

    def start(self, pod: Pod) -> Message:
        """Hold ``pod`` and return the request to send to the node (after the interests)."""
        rid = new_id()
        pod.hold()
        timer = asyncio.get_running_loop().call_later(ANSWER_TIMEOUT, self._give_up, rid)
        self._sessions[rid] = _Session(pod, timer)
        return replay_request(rid)

    def arrived(self, msg: Message) -> None:
        """A message marked as part of a replay (the caller checked the header)."""
        headers = msg.headers or {}
        session = self._sessions.get(headers.get(REPLAY_HEADER, ""))
        if session is None:
            return  # a replay that timed out or whose pod left: nothing to do
        if msg.type == REPLAY_END_TYPE:
            self._finish(headers[REPLAY_HEADER], answered=True)
            return
        rest = {k: v for k, v in headers.items() if k != REPLAY_HEADER}
        plain = msgspec.structs.replace(msg, headers=rest or None)
        if session.pod.admits(plain):
            session.replayed.append(plain)

    def link_lost(self) -> None:
        """The link to the node ended: release every held pod with its own buffer."""
        for rid in list(self._sessions):
            self._finish(rid, answered=False)

    def _give_up(self, rid: str) -> None:
        _log.warning("replay_unanswered", request=rid, timeout=ANSWER_TIMEOUT)
        self._finish(rid, answered=False)

    def _finish(self, rid: str, *, answered: bool) -> None:
        session = self._sessions.pop(rid, None)
        if session is None:
            return
        session.timer.cancel()
        if answered:
            self.answered += 1
            session.pod.release(_not_sent_by(session.pod, session.replayed))
        else:
            self.unanswered += 1
            session.pod.release(self._fallback(session.pod))

    def __len__(self) -> int:
        return len(self._sessions)


def _not_sent_by(pod: Pod, replayed: list[Message]) -> list[Message]:
    """``replayed`` less what ``pod`` sent itself (a pod never receives its own messages): the
    node's buffer holds them too, and the leaf's own buffer says which pod sent what."""
    own = {msg.uuid for msg, origin in pod.bus.buffer.entries() if origin is pod}
    if not own:
        return replayed
    return [msg for msg in replayed if msg.uuid not in own]
