"""The ServiceBus: typed events, commands and queries (Grafana's bus) across the mesh.

``from gravpy.service import ServiceBus, HandlerNotFound, HandlerFailed``; see
``gravpy.service.bus`` for how it works and ``gravpy.service.payloads`` for payload classes.
"""

from gravpy.errors import HandlerFailed, HandlerNotFound, RemoteError, UsageError, WaitTimeout
from gravpy.service.bus import ServiceBus, ServiceStatistics
from gravpy.service.payloads import Context

__all__ = [
    "Context",
    "HandlerFailed",
    "HandlerNotFound",
    "RemoteError",
    "ServiceBus",
    "ServiceStatistics",
    "UsageError",
    "WaitTimeout",
]
