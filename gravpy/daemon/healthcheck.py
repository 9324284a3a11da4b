"""``python -m gravpy.daemon.healthcheck``: exit 0 if the local gravd answers /healthz with 200.

The container's ``HEALTHCHECK`` runs it (the slim image has no curl). It asks the monitoring address
from ``GRAVD_MONITOR`` (default 127.0.0.1:8222; a wildcard host is asked on loopback), or the URL
given as the first argument, and exits 1 with one line saying why when the node is draining, down,
or the monitor is off.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

__all__ = ["main", "monitor_url"]

TIMEOUT = 3.0


def monitor_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The /healthz URL of the gravd that ``GRAVD_MONITOR`` describes; None if it is off."""
    env = os.environ if environ is None else environ
    address = env.get("GRAVD_MONITOR", "127.0.0.1:8222").strip()
    if address.lower() in ("", "off", "none", "false", "no"):
        return None
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/healthz"


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    url = args[0] if args else monitor_url()
    if url is None:
        print(
            "gravd unhealthy: the monitor is off (GRAVD_MONITOR), nothing to ask", file=sys.stderr
        )
        return 1
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print(f"gravd unhealthy: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"gravd unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
