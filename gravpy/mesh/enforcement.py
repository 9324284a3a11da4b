"""Per-type permissions enforced by the hub: what a link may publish here, and receive from here.

Theory of operation
-------------------
A link admitted under an auth file carries its ``Identity`` (``gravpy.mesh.permissions``). The
node an app is attached to checks everything that app sends (``admits``): a message whose type
its ``publish`` rules forbid is dropped here, reaches no one, and is counted (in all, and on the
link as ``permission_denied``, ``gravpy.mesh.link_stats``); the link stays up,
and the violation is logged once per burst (the first, then at most once every ``LOG_EVERY``
seconds with how many came in between). What crosses from another node is checked the same way
against that node's identity, so a node is trusted only for what its identity allows.

On the way out, ``receivers`` leaves out the links whose ``subscribe`` rules forbid the type, so a
pod asking for more than it may receive gets only what is allowed. A reply to a request this node
knows (``Router.knows_asker``) is allowed both ways, whatever its type, if the request was sent
to the link that answers (``PeerLink.answers``: a link whose identity restricts its publishing
remembers what was sent to it, the last ``ANSWERABLE // 2`` at least): it travels only back to
the link its request came from, so it reaches no one else. An answer to a message the link was
not sent (or no longer remembers) is checked against its publish rules like any message, so
ids, which are predictable, give no way to reach a process with a forbidden type. A message that
only claims to be a reply (its ``reply_to`` names no request or process known here) is routed by
type like any other, so it is checked like any other: a forged reply is no way around the rules.

The attached app is told its own rules at once (a ``GRANT_TYPE`` message, sent before the node's
first INTERESTS): its hub then refuses a forbidden publish at the sender with ``PermissionDenied``
and a wholly forbidden ``on_type`` pattern, without a round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final, Protocol, TypeVar

from gravpy import _log as logs
from gravpy.errors import PermissionDenied
from gravpy.mesh.link_stats import LinkDrops
from gravpy.mesh.permissions import Identity
from gravpy.message import Message

__all__ = ["LOG_EVERY", "PermissionGate", "check_publish", "check_subscribe", "receivers"]

LOG_EVERY: Final = 10.0  # seconds between two log lines about one link's violations
_log = logs.get_logger("gravpy.mesh.enforcement")


class Governed(Protocol):
    """A link as the gate sees it: its remote's uuid, the identity it was admitted as and its
    drop counters."""

    @property
    def uuid(self) -> str: ...

    identity: Identity | None
    drops: LinkDrops


class PermissionGate:
    """Counts and logs what the rules of each link stop."""

    def __init__(self) -> None:
        self.denied_publish = 0
        self._bursts: dict[str, tuple[float, int]] = {}  # link uuid -> (last logged, since)

    def admits(self, link: Governed, msg: Message, answers_known: bool) -> bool:
        """True if ``link``'s identity may publish ``msg`` here (``answers_known``: ``msg``
        answers a request known here that was sent to ``link``, which always may)."""
        identity = link.identity
        if identity is None or answers_known or identity.publish.allows(msg.type):
            return True
        self.denied_publish += 1
        link.drops.permission_denied += 1
        self._log_burst(link, identity, msg.type)
        return False

    def _log_burst(self, link: Governed, identity: Identity, msg_type: str) -> None:
        now = time.monotonic()
        last, since = self._bursts.get(link.uuid, (-LOG_EVERY, 0))
        if now - last < LOG_EVERY:
            self._bursts[link.uuid] = (last, since + 1)
            return
        self._bursts[link.uuid] = (now, 0)
        _log.warning(
            "publish_denied",
            peer=link.uuid,
            identity=identity.name,
            type=msg_type,
            suppressed=since,
        )

    def forget(self, link: Governed) -> None:
        """The link ended: drop its burst state."""
        self._bursts.pop(link.uuid, None)


L = TypeVar("L", bound=Governed)


def receivers(msg: Message, links: Iterable[L]) -> tuple[L, ...]:
    """The links among ``links`` whose identity may receive ``msg`` (not for a reply routed back
    to its asker: that one may always pass)."""
    return tuple(
        link for link in links if link.identity is None or link.identity.subscribe.allows(msg.type)
    )


def check_publish(grant: Identity | None, msg: Message) -> None:
    """Raise ``PermissionDenied`` if ``grant`` forbids publishing ``msg`` (the app's side)."""
    if grant is not None and not msg.reply_to and not grant.publish.allows(msg.type):
        raise PermissionDenied(
            f"identity {grant.name!r} may not publish {msg.type!r} "
            f"(publish allow {list(grant.publish.allow)}, deny {list(grant.publish.deny)})"
        )


def check_subscribe(grant: Identity | None, pattern: str) -> None:
    """Raise ``PermissionDenied`` if ``grant`` forbids every type ``pattern`` matches."""
    if grant is not None and grant.subscribe.forbids_all_of(pattern):
        raise PermissionDenied(
            f"identity {grant.name!r} may receive no type matching {pattern!r} "
            f"(subscribe allow {list(grant.subscribe.allow)}, deny {list(grant.subscribe.deny)})"
        )
