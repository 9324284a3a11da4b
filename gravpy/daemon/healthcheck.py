"""``python -m gravpy.daemon.healthcheck``: exit 0 if *this container's* gravd answers /healthz 200.

The container's ``HEALTHCHECK`` runs it (the slim image has no curl). It reads the configuration
the way gravd does (flags > ``GRAVD_*`` > the TOML file > defaults, through the same loader), so a
monitor address given as a flag to ``docker run ... gravd --monitor ...`` or in a config file is
the one asked, not a default where another gravd may answer:

- with gravd flags (``--monitor``, ``--config``, ...), it uses them and its own environment;
- with none, it reads gravd's command line and environment from ``/proc/PID`` (``--pid``, default
  1: the container's entry point), when that process is a gravd;
- a URL as the only argument is asked as it is.

A wildcard monitor host is asked on loopback. When the configuration came from a gravd process,
the answer must come from that process (``/healthz`` carries the node's pid), so another gravd on
the same address is reported, not taken for this one. It exits 1 with one line saying why when
the node is draining, down, another node, or the monitor is off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GravdProcess", "gravd_process", "main", "monitor_url"]

TIMEOUT = 3.0
_GRAVD_MODULE = "gravpy.daemon.main"


@dataclass(frozen=True)
class GravdProcess:
    """A running gravd's flags and environment, read from /proc."""

    pid: int
    flags: list[str]
    environ: dict[str, str]


def gravd_process(pid: int, proc: Path = Path("/proc")) -> GravdProcess | None:
    """The gravd running as ``pid`` (its flags after the program name), or None if it is not."""
    try:
        argv = [a.decode() for a in (proc / str(pid) / "cmdline").read_bytes().split(b"\0")[:-1]]
        raw_env = (proc / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for i, arg in enumerate(argv):
        if Path(arg).name == "gravd" or (arg == _GRAVD_MODULE and i and argv[i - 1] == "-m"):
            env = dict(e.decode().partition("=")[::2] for e in raw_env if b"=" in e)
            return GravdProcess(pid, argv[i + 1 :], env)
    return None


def monitor_url(environ: Mapping[str, str] | None = None, flags: Sequence[str] = ()) -> str | None:
    """The /healthz URL of the gravd these flags and environment describe; None if it is off.

    Raises ``ConfigError`` (a ``UsageError``) if that configuration is invalid.
    """
    from gravpy.daemon.config import load_config
    from gravpy.daemon.settings import add_flags

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config")
    add_flags(parser)  # gravd's own flags: a switch takes no value, and has its --no- form
    known, _ = parser.parse_known_args(list(flags))
    config = load_config(vars(known), os.environ if environ is None else environ)
    if config.monitor is None:
        return None
    host = config.monitor.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{config.monitor.port}/healthz"


def _target(args: list[str]) -> tuple[str | None, int | None]:
    """The URL to ask and the pid that must answer (None: any)."""
    if len(args) == 1 and "://" in args[0]:
        return args[0], None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--pid", type=int)
    known, flags = parser.parse_known_args(args)
    if not flags:
        process = gravd_process(known.pid if known.pid is not None else 1)
        if process is not None:
            return monitor_url(process.environ, process.flags), process.pid
    return monitor_url(None, flags), None


def main(argv: Sequence[str] | None = None) -> int:
    from gravpy.errors import UsageError

    try:
        url, pid = _target(sys.argv[1:] if argv is None else list(argv))
    except UsageError as exc:
        return _unhealthy(f"gravd's configuration is invalid: {exc}")
    if url is None:
        return _unhealthy("the monitor is off (monitor setting), nothing to ask")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, b""
    except (urllib.error.URLError, OSError) as exc:
        return _unhealthy(f"cannot reach {url}: {exc}")
    if status != 200:
        return _unhealthy(f"{url} answered {status}")
    answered = _pid(body)
    if pid is not None and answered != pid:
        return _unhealthy(f"{url} is answered by another gravd (pid {answered}, not {pid})")
    return 0


def _pid(body: bytes) -> int | None:
    try:
        value = json.loads(body).get("pid")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _unhealthy(why: str) -> int:
    print(f"gravd unhealthy: {why}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
