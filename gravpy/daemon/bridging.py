"""gravd's bridges: the ``NatsBridge`` that ``--nats`` asks for, built from ``DaemonConfig``.

nats-py is an optional dependency (the ``nats`` extra); it is imported only when ``--nats`` is
set, and its absence is a configuration error the operator can act on. So is a setting the
bridge refuses (``NatsBridgeConfig``: a URL with no host or a port that is not one): gravd
says so at once, with exit status 2, instead of a bridge that retries it forever.
"""

from __future__ import annotations

from gravpy.bridge.config import NatsBridgeConfig
from gravpy.bridge.port import BridgePort
from gravpy.daemon.config import DaemonConfig
from gravpy.errors import ConfigError, UsageError

__all__ = ["bridges_for", "check_bridges"]


def check_bridges(config: DaemonConfig) -> None:
    """Raise ``ConfigError`` if ``config`` asks for a bridge this install cannot run, or one
    with a setting the bridge refuses."""
    if config.nats:
        _importable()
        _bridge_config(config)


def bridges_for(config: DaemonConfig) -> list[BridgePort]:
    """The bridges ``config`` asks for (none without ``nats``); ``ConfigError`` as
    ``check_bridges``."""
    if not config.nats:
        return []
    _importable()
    from gravpy.bridge.nats import NatsBridge

    return [NatsBridge(_bridge_config(config))]


def _importable() -> None:
    try:
        import gravpy.bridge.nats  # noqa: F401 - only whether it imports
    except ImportError as exc:
        raise ConfigError(
            "nats", "value", f"nats-py is not installed (pip install 'gravpy[nats]'): {exc}"
        ) from None


def _bridge_config(config: DaemonConfig) -> NatsBridgeConfig:
    """The bridge's config from gravd's; ``ConfigError`` for what it refuses (the URLs, the
    prefix and the export patterns were checked as they were read, naming where they came from;
    this is the net under them)."""
    try:
        return NatsBridgeConfig(
            servers=config.nats,
            prefix=config.nats_prefix,
            export=config.nats_export,
            creds=config.nats_creds,
            token_file=config.nats_token_file,
            ca=config.nats_ca,
            shadow_limit=config.nats_shadow,
        )
    except UsageError as exc:
        raise ConfigError("nats", "value", str(exc)) from None
