"""The container: what the Dockerfile promises (no Docker engine here), and its health check."""

from __future__ import annotations

import re
import socket
import sys
import tomllib
from pathlib import Path

from gravpy.daemon.healthcheck import monitor_url
from gravpy.testing.gravd import ROOT, run, running_gravd

DOCKERFILE = (ROOT / "Dockerfile").read_text()
HEALTHCHECK = (sys.executable, "-m", "gravpy.daemon.healthcheck")


def _instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.M)]


def test_image_is_slim_non_root_and_runs_gravd() -> None:
    """A slim Python base, a numeric non-root user, gravd as entry point, a /healthz check."""
    assert re.fullmatch(r"python:3\.1\d-slim", _instructions("FROM")[0])
    user = _instructions("USER")[-1]
    assert re.fullmatch(r"\d+:\d+", user)
    assert not user.startswith("0:")
    assert _instructions("ENTRYPOINT") == ['["gravd"]']
    assert '["python", "-m", "gravpy.daemon.healthcheck"]' in _instructions("HEALTHCHECK")[0]


def test_image_copies_every_package_it_installs() -> None:
    """Each package pyproject installs is copied into the image, and .dockerignore keeps it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = " ".join(_instructions("COPY"))
    ignored = (ROOT / ".dockerignore").read_text().split()
    for package in packages:
        assert f"COPY {package} ./{package}" in DOCKERFILE, package
        assert package not in ignored
    assert "README.md" in copied  # pyproject's readme, needed to build the package
    assert {".git", ".venv", "tests"} <= set(ignored)


def test_monitor_url_follows_gravd_monitor() -> None:
    """The health check asks the address in GRAVD_MONITOR, on loopback for a wildcard host."""
    assert monitor_url({}) == "http://127.0.0.1:8222/healthz"
    assert monitor_url({"GRAVD_MONITOR": "0.0.0.0:9000"}) == "http://127.0.0.1:9000/healthz"
    assert monitor_url({"GRAVD_MONITOR": "10.0.0.1:8222"}) == "http://10.0.0.1:8222/healthz"
    assert monitor_url({"GRAVD_MONITOR": "off"}) is None


async def test_healthcheck_passes_on_a_serving_gravd_and_fails_without_one() -> None:
    """The health check exits 0 against a serving gravd and 1, saying why, when nothing answers."""
    async with running_gravd() as node:
        healthy = await run([*HEALTHCHECK], env={"GRAVD_MONITOR": node.listening["monitor"]})
        assert healthy.code == 0, healthy.stderr
        assert (await node.stop()).code == 0
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        down = await run([*HEALTHCHECK, f"http://127.0.0.1:{closed.getsockname()[1]}/healthz"])
    assert down.code == 1
    assert "gravd unhealthy: cannot reach" in down.stderr
    off = await run([*HEALTHCHECK], env={"GRAVD_MONITOR": "off"})
    assert off.code == 1
    assert "the monitor is off" in off.stderr


def test_health_check_reads_flags_and_config_file_like_gravd(tmp_path: Path) -> None:
    """The health check takes the monitor from gravd's flags, else the file, else the default."""
    config = tmp_path / "gravd.toml"
    config.write_text('[gravd]\nmonitor = "0.0.0.0:9100"\n')
    assert monitor_url({}, ["--config", str(config)]) == "http://127.0.0.1:9100/healthz"
    env = {"GRAVD_CONFIG": str(config)}
    assert monitor_url(env, ["--monitor", "10.1.1.1:9200"]) == "http://10.1.1.1:9200/healthz"
    assert monitor_url(env) == "http://127.0.0.1:9100/healthz"


async def test_health_check_follows_the_gravd_process_it_belongs_to(tmp_path: Path) -> None:
    """With --pid, the check reads that gravd's command line and config, and refuses an answer
    from another gravd on the address that configuration names."""
    mine, other = tmp_path / "mine.toml", tmp_path / "other.toml"
    for path in (mine, other):
        path.write_text('monitor = "127.0.0.1:0"\n')
    async with (
        running_gravd("--listen", "127.0.0.1:0", "--config", str(mine), local=False) as node,
        running_gravd("--listen", "127.0.0.1:0", "--config", str(other), local=False) as stranger,
    ):
        pid = str(node.process.proc.pid)
        mine.write_text(f'monitor = "{node.listening["monitor"]}"\n')  # the port it bound
        healthy = await run([*HEALTHCHECK, "--pid", pid])
        mine.write_text(f'monitor = "{stranger.listening["monitor"]}"\n')
        fooled = await run([*HEALTHCHECK, "--pid", pid])
    assert healthy.code == 0, healthy.stderr
    assert fooled.code == 1
    assert "is answered by another gravd" in fooled.stderr
