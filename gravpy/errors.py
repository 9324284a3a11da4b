"""Every exception gravpy raises, under one root.

::

    GravError
    ├── MsgNotWanted            raised *by your* wait function: "not this one, keep waiting"
    ├── WaitTimeout             a wait ran past its timeout (also a TimeoutError)
    │   └── RequestTimeout      a Messenger request got no reply in time
    ├── NoResponders            a request whose type no pod anywhere admits
    ├── NoReceipt               no receipt could be issued (only ever raised as its subclass)
    │   └── PodDisconnected     the pod is closed; ``reason`` says why
    ├── UsageError              you used the API in a way it does not allow (also a ValueError)
    │   └── ConfigError         a setting has a bad value; ``setting`` and ``source`` say which
    ├── MessageError            bytes that are not a gravpy message
    ├── ProtocolError           a peer broke the wire protocol; the link is closed
    │   └── FrameError          bytes that are not a valid frame
    ├── HandshakeRejectedError  a link was refused; ``reason`` and ``peer`` say which and why
    │   └── NodeUUIDMismatch    the node at the endpoint is not the one discovery reported
    ├── LinkClosedError         the link to a peer closed while something depended on it
    ├── TransportError          a transport plugin failed (dial, listen); ``__cause__`` keeps the library's error
    │   └── DiscoveryError      a discovery plugin failed (mDNS cannot bind, ...)
    ├── HandlerNotFound         ServiceBus.dispatch: no handler for the command anywhere on the mesh
    ├── HandlerFailed           ServiceBus.dispatch: the handler raised (``error_type``, ``message``, ``node``)
    ├── RemoteError             an exception raised in another handler's process, by name (a ``__cause__``)
    └── MessengerError          a Messenger (``gravpy.messenger``) failed
        ├── MessengerClosed             the messenger is closed (by its owner or its backend)
        ├── StreamSubscriptionFailed    a stream or serve subscription could not be made
        ├── PublishFailed               a publish (or a request's send) did not leave
        └── RequestFailed               the server's handler raised; ``reason`` is its text

Names follow Grav where Grav's names are the API (``WaitTimeout``, ``MsgNotWanted``, ``NoReceipt``,
``NoResponders``, ``PodDisconnected``); the rest carry the ``Error`` suffix.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DiscoveryError",
    "FrameError",
    "GravError",
    "HandlerFailed",
    "HandlerNotFound",
    "HandshakeRejectedError",
    "LinkClosedError",
    "MessageDropped",
    "MessageError",
    "MessengerClosed",
    "MessengerError",
    "MsgNotWanted",
    "NoReceipt",
    "NoResponders",
    "NodeUUIDMismatch",
    "PermissionDenied",
    "PodDisconnected",
    "ProtocolError",
    "PublishFailed",
    "RemoteError",
    "RequestFailed",
    "RequestTimeout",
    "StreamSubscriptionFailed",
    "TransportError",
    "UsageError",
    "WaitTimeout",
]


class GravError(Exception):
    """The root of every exception gravpy raises."""


class MsgNotWanted(GravError):
    """Raise from a wait function to say "not this message, keep waiting"."""


class WaitTimeout(GravError, TimeoutError):
    """A wait ended because its timeout elapsed before an accepted message arrived."""


class NoResponders(GravError):
    """A request was sent whose type no pod, local or on any peer, admits.

    Raised by the receipt's wait methods at once instead of after the timeout.
    """

    def __init__(self, msg_type: str, why: str = "") -> None:
        text = f"no pod admits messages of type {msg_type!r}"
        super().__init__(f"{text}: {why}" if why else text)
        self.msg_type = msg_type


class MessageDropped(GravError):
    """Nobody got the message, so no reply will come; the receipt's waits raise this at once.
    ``reason`` says why: ``queue_full``, links wanted it but the send queue of each was full
    (counted on the link; ``Pod.publish`` waits for room instead of dropping), or a NATS bridge
    was to carry it but did not, for the reason it counts under its ``lost``: ``too_large``
    (over the NATS server's ``max_payload``; the request's reply too, where the message says
    so), ``queue_full`` (its queue was full), ``subject_too_long``, ``bad_subject``, ``bad_id``
    or ``disconnected`` (``gravpy.bridge.exporter``); ``msg_type`` is then empty, and the
    message names the type."""

    def __init__(
        self, msg_type: str, uuid: str, *, reason: str = "queue_full", detail: str = ""
    ) -> None:
        super().__init__(
            detail
            or f"message {uuid} of type {msg_type!r} was dropped: the send queue of every link "
            "that wanted it was full"
        )
        self.msg_type = msg_type
        self.uuid = uuid
        self.reason = reason


class NoReceipt(GravError):
    """No receipt could be issued for a message (Grav's ``ErrNoReceipt``)."""


class PodDisconnected(NoReceipt):
    """The pod is disconnected from its bus; ``reason`` tells why.

    Raised by ``Pod.send`` on a closed pod and by ``Pod.wait_closed`` when the bus disconnected the
    pod (for example after too many handler failures); also by the waits a stopping node ends
    (``Grav.wait_for``, and every blocked ``gravpy.sync`` call when its ``SyncGrav`` closes).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"pod disconnected: {reason}")
        self.reason = reason


class UsageError(GravError, ValueError):
    """The caller used the API wrongly (a bad argument, a call in the wrong state)."""


class ConfigError(UsageError):
    """A setting has a bad value. ``setting`` and ``source`` say which one and where it came from."""

    def __init__(self, setting: str, source: str, problem: str) -> None:
        super().__init__(f"invalid {setting} (from {source}): {problem}")
        self.setting = setting
        self.source = source
        self.problem = problem


class MessageError(GravError):
    """Bytes or values that do not make a valid gravpy message."""


class ProtocolError(GravError):
    """The remote side broke the wire protocol. The link it came on is closed."""


class FrameError(ProtocolError):
    """Bytes that are not a valid frame (bad msgpack, wrong shape, too large)."""


class HandshakeRejectedError(GravError):
    """A link was refused during the handshake, by either side.

    ``reason`` is one of the ``proto`` reason codes (``"version"``, ``"mesh"``, ``"proof"``,
    ``"self"``, ``"duplicate"``, ``"uuid_mismatch"``, ``"deadline"``, ...); ``peer`` is the
    endpoint or node uuid the link was to, when known.
    """

    def __init__(self, reason: str, peer: str = "", detail: str = "") -> None:
        text = f"handshake rejected ({reason})"
        if peer:
            text += f" by/for {peer}"
        if detail:
            text += f": {detail}"
        super().__init__(text)
        self.reason = reason
        self.peer = peer
        self.detail = detail


class PermissionDenied(GravError):
    """The identity this app (or node) linked as may not publish that type, or receive any
    type matching that pattern (``gravd --auth-file``). Nothing was sent."""


class NodeUUIDMismatch(HandshakeRejectedError):
    """The node at an endpoint is not the one discovery reported there."""

    def __init__(self, peer: str, expected: str, actual: str) -> None:
        super().__init__("uuid_mismatch", peer, f"expected node {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class LinkClosedError(GravError):
    """The link to a peer closed while a request or a send depended on it.

    The message says who closed the link and why; transports that know also set ``closed_by``
    (``"local"``: this side closed it, ``"peer"``: the other side did, ``"lost"``: the connection
    broke without a close) and ``reason`` (the reason given, or what broke). Both are ``""`` when
    unknown.
    """

    def __init__(self, message: str = "", *, closed_by: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.closed_by = closed_by
        self.reason = reason


class TransportError(GravError):
    """A transport plugin failed to dial or listen; ``__cause__`` holds the library's exception."""


class DiscoveryError(TransportError):
    """A discovery plugin failed (for example mDNS could not bind its interface)."""


class HandlerNotFound(GravError):
    """A command or query was dispatched that no handler anywhere on the mesh handles.

    Raised at once (the mesh knows no node wants its type), not after the timeout.
    """

    def __init__(self, msg_type: str) -> None:
        super().__init__(f"no handler for {msg_type!r} anywhere on the mesh")
        self.msg_type = msg_type


class RemoteError(GravError):
    """An exception a handler raised in its own process, known here by type name and message."""

    def __init__(self, error_type: str, message: str, node: str) -> None:
        super().__init__(f"{error_type}: {message} (on node {node})")
        self.error_type = error_type
        self.message = message
        self.node = node


class HandlerFailed(GravError):
    """The handler of a dispatched command or query raised, or could not take it.

    ``error_type`` is the exception's class name (``"ValueError"``; a payload that does not decode
    gives msgspec's ``"ValidationError"`` or ``"DecodeError"``), ``message`` its text, ``node`` the
    node the handler ran on; ``__cause__`` is a ``RemoteError`` carrying the same.
    """

    def __init__(self, msg_type: str, error_type: str, message: str, node: str) -> None:
        super().__init__(
            f"the handler of {msg_type!r} on node {node} failed: {error_type}: {message}"
        )
        self.msg_type = msg_type
        self.error_type = error_type
        self.message = message
        self.node = node


class RequestTimeout(WaitTimeout):
    """A ``Messenger.request`` got no reply within its timeout (also a ``WaitTimeout``)."""

    def __init__(self, subject: str, timeout: float) -> None:
        super().__init__(f"no reply to a request on {subject!r} within {timeout} s")
        self.subject = subject
        self.timeout = timeout


class MessengerError(GravError):
    """The root of the errors a ``gravpy.messenger`` backend raises (besides the core's)."""


class MessengerClosed(MessengerError):
    """The messenger is closed: ``close()`` was called, or its backend closed for good."""


class StreamSubscriptionFailed(MessengerError):
    """A ``stream`` or ``serve`` subscription could not be made; ``__cause__`` says why."""


class PublishFailed(MessengerError):
    """A message did not leave (for NATS: disconnected with the reconnect buffer full)."""


class RequestFailed(MessengerError):
    """The server's handler raised; ``reason`` is the text of its exception."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"the server of {subject!r} failed: {reason}")
        self.subject = subject
        self.reason = reason
