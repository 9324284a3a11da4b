"""Failure replies: how a node tells an asker that its request will get no answer.

A node that relays a leaf's request over a link that then dies knows at once that the leaf's wait
is doomed; the leaf does not (its own link is fine). The node sends the leaf a *failure reply*: an
ordinary message of type ``gravpy.error`` whose ``reply_to`` is the request and whose headers say
why (``gravpy-error``: a code, ``gravpy-error-detail``: text). The leaf's bus never hands such a
reply to a handler or a wait function: it ends the wait with the matching exception
(``failure_of``). Plain reply headers never start with ``gravpy-error``, so nothing else is mistaken
for one.

A node tracks only the leaf's messages that someone waits on: when a pod on the leaf starts
waiting for replies, the leaf's node-side link gets a *wait notice* (type ``gravpy.waiting``,
data: the request's uuid), which the node consumes and never forwards. A leaf that publishes a
stream of plain messages thus never gets failure replies for them.
"""

from __future__ import annotations

import time
from typing import Final

from gravpy.errors import GravError, LinkClosedError, MessageDropped, NoResponders
from gravpy.message import Message, new_id

__all__ = [
    "DROPPED",
    "ERROR_HEADER",
    "FAILURE_TYPE",
    "WAITING_TYPE",
    "dropped_reply",
    "failure_of",
    "link_closed_reply",
    "no_responders_reply",
    "too_large_reply",
    "wait_notice",
]

FAILURE_TYPE: Final = "gravpy.error"
WAITING_TYPE: Final = "gravpy.waiting"
ERROR_HEADER: Final = "gravpy-error"
DETAIL_HEADER: Final = "gravpy-error-detail"
LINK_CLOSED: Final = "link_closed"
NO_RESPONDERS: Final = "no_responders"
TOO_LARGE: Final = "too_large"
# why a NATS bridge did not send a message (the reasons it counts it lost under, and
# ``MessageDropped.reason``): a failure reply with one of these codes raises ``MessageDropped``
DROPPED: Final = frozenset(
    (TOO_LARGE, "queue_full", "subject_too_long", "bad_subject", "bad_id", "disconnected")
)


def link_closed_reply(request_uuid: str, detail: str) -> Message:
    """A failure reply to ``request_uuid``: the only link that could answer it closed."""
    headers = {ERROR_HEADER: LINK_CLOSED, DETAIL_HEADER: detail[:512]}
    return Message(new_id(), request_uuid, request_uuid, FAILURE_TYPE, time.time(), b"", headers)


def no_responders_reply(request_uuid: str, msg_type: str) -> Message:
    """A failure reply to ``request_uuid``: nothing beyond a bridge admits ``msg_type``."""
    headers = {ERROR_HEADER: NO_RESPONDERS, DETAIL_HEADER: msg_type}
    return Message(new_id(), request_uuid, request_uuid, FAILURE_TYPE, time.time(), b"", headers)


def too_large_reply(request_uuid: str, detail: str) -> Message:
    """A failure reply to ``request_uuid``: a bridge could not carry it, too large for NATS
    (``detail`` says how large, and the type); its wait raises ``MessageDropped``."""
    return dropped_reply(request_uuid, TOO_LARGE, detail)


def dropped_reply(request_uuid: str, reason: str, detail: str) -> Message:
    """A failure reply to ``request_uuid``: a bridge did not send it (or its reply) for
    ``reason``, one of ``DROPPED`` (``detail`` says more); its wait raises ``MessageDropped``."""
    headers = {ERROR_HEADER: reason, DETAIL_HEADER: detail[:512]}
    return Message(new_id(), request_uuid, request_uuid, FAILURE_TYPE, time.time(), b"", headers)


def wait_notice(request_uuid: str) -> Message:
    """A wait notice: a pod on this leaf waits for replies to ``request_uuid``."""
    return Message(new_id(), "", "", WAITING_TYPE, time.time(), request_uuid.encode(), None)


def failure_of(msg: Message) -> GravError | None:
    """The exception a failure reply stands for, or None for an ordinary message."""
    headers = msg.headers
    if not headers or msg.type != FAILURE_TYPE:
        return None
    code = headers.get(ERROR_HEADER)
    if code is None:
        return None
    detail = headers.get(DETAIL_HEADER, "")
    if code == LINK_CLOSED:
        return LinkClosedError(detail or "the link that could answer closed")
    if code == NO_RESPONDERS:
        return NoResponders(detail)
    if code in DROPPED:
        return MessageDropped("", msg.reply_to, reason=code, detail=detail)
    return GravError(f"request failed ({code}): {detail}")
