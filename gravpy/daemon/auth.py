"""gravd's credentials: its own identity key and the auth file of identities it accepts.

Theory of operation
-------------------
``--identity PATH`` is the node's key pair (``gravctl keygen PATH``): gravd signs every handshake
with it, so nodes whose auth files list its public key admit it. ``--auth-file auth.toml`` lists
what this node accepts (``gravpy.mesh.permissions.parse_authority``); without one every link that
passes the mesh checks is accepted, as before. ``AuthReloader`` re-reads the auth file on SIGHUP:
the new rules apply to new links at once, and open links whose identity is no longer admitted
are closed (``Hub.set_authority``); a file that no longer parses is reported and the old rules
stay in force, so a typo never opens or closes the node.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gravpy.errors import ConfigError, UsageError
from gravpy.grav import Grav
from gravpy.mesh.permissions import Authority, parse_authority

__all__ = ["AuthReloader", "read_auth_file"]


def read_auth_file(path: Path, source: str = "auth_file") -> Authority:
    """The auth file at ``path`` parsed; ``ConfigError`` naming what is wrong."""
    try:
        doc = tomllib.loads(path.read_text())
        return parse_authority(doc)
    except OSError as exc:
        raise ConfigError("auth_file", source, f"cannot read {path}: {exc}") from exc
    except UnicodeDecodeError as exc:  # (TOML is UTF-8)
        raise ConfigError("auth_file", source, f"{path} is not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("auth_file", source, f"{path} is not valid TOML: {exc}") from exc
    except ConfigError:
        raise
    except UsageError as exc:
        raise ConfigError("auth_file", source, f"{path}: {exc}") from exc


class AuthReloader:
    """Re-reads the auth file on SIGHUP and installs it in the running node."""

    def __init__(self, grav: Grav, path: Path, log: Any) -> None:
        self._grav = grav
        self._path = path
        self._log = log

    def reload(self) -> None:
        """Read the file again; install it, or keep the old rules and log why."""
        try:
            authority = read_auth_file(self._path, "SIGHUP")
        except ConfigError as exc:
            self._log.error("auth_reload_failed", path=str(self._path), error=str(exc))
            return
        if self._grav.hub is None:
            return
        closed = self._grav.hub.set_authority(authority)
        self._log.info(
            "auth_reloaded",
            path=str(self._path),
            identities=len(authority.identities),
            links_closed=closed,
        )
