"""gravd's TLS, TCP and loop settings: validation, file checks, and real gravd processes over TLS."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

import gravpy
from gravpy.daemon import loop as event_loop
from gravpy.daemon.config import ConfigError, DaemonConfig, load_config
from gravpy.daemon.main import build_transports
from gravpy.errors import UsageError
from gravpy.testing.gravd import (
    GRAVCTL,
    GRAVD,
    Gravd,
    Process,
    clean_env,
    gravctl,
    run,
    running_gravd,
)
from gravpy.tls import client_context, server_context
from tests.transports.test_tls_door import tls_probe

HOST = "127.0.0.1"


class Files:
    """PEM files trustme made: a CA, a node cert and key, an expired cert, a client cert."""

    def __init__(self, root: Path) -> None:
        self.ca_authority = trustme.CA()
        self.ca = root / "ca.pem"
        self.ca_authority.cert_pem.write_to_path(str(self.ca))
        self.cert, self.key = self._issue(root, "node")
        now = dt.datetime.now(dt.UTC)
        old = self.ca_authority.issue_cert(
            HOST, not_before=now - dt.timedelta(days=9), not_after=now - dt.timedelta(days=1)
        )
        self.expired = root / "expired.pem"
        old.cert_chain_pems[0].write_to_path(str(self.expired))
        self.app_cert, self.app_key = self._issue(root, "app")
        key = serialization.load_pem_private_key(self.key.read_bytes(), None)
        self.encrypted_key = root / "encrypted.key"  # the node's key, passphrase-protected
        self.encrypted_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            )
        )

    def _issue(self, root: Path, name: str) -> tuple[Path, Path]:
        leaf = self.ca_authority.issue_cert(HOST if name == "node" else "app.example")
        cert, key = root / f"{name}.pem", root / f"{name}.key"
        for i, pem in enumerate(leaf.cert_chain_pems):
            pem.write_to_path(str(cert), append=i > 0)
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    def flags(self, *, verify_clients: bool = False) -> dict[str, object]:
        flags: dict[str, object] = {"tls_cert": str(self.cert), "tls_key": str(self.key)}
        flags["tls_ca"] = str(self.ca)
        if verify_clients:
            flags["tls_verify_clients"] = "true"
        return flags


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("tls"))


def test_tls_settings_load_and_build_tls_listeners(files: Files) -> None:
    """--tls-cert/--tls-key/--tls-ca/--tls-verify-clients make every transport listen with mTLS."""
    config = load_config({**files.flags(verify_clients=True), "listen_tcp": ":0"}, {})
    assert (config.tls_cert, config.tls_ca, config.tls_verify_clients) == (
        files.cert,
        files.ca,
        True,
    )
    built = build_transports(config)
    assert [t.name for t in built] == ["websocket", "tcp"]
    for transport in built:
        tls = transport.tls  # type: ignore[attr-defined]
        assert tls.server is not None
        assert tls.client is not None
        assert tls.require_client_cert


def test_tls_settings_come_from_toml_and_environment(files: Files, tmp_path: Path) -> None:
    """TOML paths are relative to the file; GRAVD_TLS_VERIFY_CLIENTS=1 switches mTLS on."""
    toml = files.cert.parent / "gravd.toml"
    toml.write_text('tls_cert = "node.pem"\ntls_key = "node.key"\ntls_ca = "ca.pem"\n')
    env = {"GRAVD_CONFIG": str(toml), "GRAVD_TLS_VERIFY_CLIENTS": "1"}
    config = load_config({}, env)
    assert (config.tls_cert, config.tls_verify_clients) == (files.cert, True)


@pytest.mark.parametrize(
    ("change", "setting", "problem"),
    [
        ({"tls_cert": "expired"}, "tls_cert", "expired on"),
        ({"tls_key": "app_key"}, "tls_key", "the key does not match the certificate"),
        ({"tls_key": "encrypted_key"}, "tls_key", "the private key is encrypted"),
        ({"tls_ca": "missing"}, "tls_ca", "cannot read it"),
        ({"tls_key": None}, "tls_cert", "tls_key must be given too"),
    ],
)
def test_bad_tls_files_are_named(
    files: Files, change: dict[str, str | None], setting: str, problem: str
) -> None:
    """An expired cert, a key of another cert, a passphrase-protected key (never a prompt), an
    unreadable file, a lone cert: each named."""
    flags = files.flags()
    for name, which in change.items():
        if which is None:
            del flags[name]
        else:
            path = getattr(files, which, files.ca.parent / "no-such-file.pem")
            flags[name] = str(path)
    with pytest.raises(ConfigError, match=problem) as info:
        load_config(flags, {})
    assert (info.value.setting, info.value.source) == (
        setting,
        f"flag --{setting.replace('_', '-')}",
    )


def test_a_passphrase_protected_key_is_a_usage_error_in_the_library_too(files: Files) -> None:
    """``server_context``/``client_context`` refuse a passphrase-protected key with a
    UsageError saying so, instead of OpenSSL prompting on the terminal."""
    with pytest.raises(UsageError, match="the private key is encrypted"):
        server_context(files.cert, files.encrypted_key)
    with pytest.raises(UsageError, match="the private key is encrypted"):
        client_context(files.ca, files.cert, files.encrypted_key)


def test_verifying_clients_needs_a_ca(files: Files) -> None:
    """--tls-verify-clients without --tls-ca is refused before anything starts."""
    flags = {**files.flags(verify_clients=True), "tls_ca": None}
    with pytest.raises(ConfigError, match="needs tls_ca"):
        load_config(flags, {})


def test_a_tcp_peer_needs_listen_tcp_on_its_own_port() -> None:
    """A tcp:// peer without --listen-tcp, or --listen-tcp on the WebSocket port, is refused."""
    with pytest.raises(ConfigError, match="listen_tcp is off"):
        DaemonConfig(peers=("tcp://10.0.0.2:8082",))
    with pytest.raises(ConfigError, match="which listen already binds"):
        load_config({"listen": "0.0.0.0:8080", "listen_tcp": "127.0.0.1:8080"}, {})
    assert DaemonConfig().listen_tcp is None  # a node built in code listens with what it is given


def test_asking_for_a_missing_uvloop_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """--loop uvloop without uvloop installed says how to install it; auto falls back to asyncio."""
    monkeypatch.setattr(event_loop, "_have_uvloop", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'gravpy\[speed\]'"):
        load_config({"loop": "uvloop"}, {})
    assert event_loop.loop_name(load_config({}, {}).loop) == "asyncio"


async def test_check_config_names_the_expired_certificate(files: Files) -> None:
    """gravd --check-config with an expired certificate exits 2 and names the file and the date."""
    argv = [*GRAVD, "--check-config", "--tls-cert", str(files.expired), "--tls-key", str(files.key)]
    result = await run(argv, env=clean_env())
    assert result.code == 2
    assert "invalid tls_cert (from flag --tls-cert)" in result.stderr
    assert f"{files.expired}: " in result.stderr
    assert "expired on" in result.stderr


async def test_two_gravd_mesh_over_tls_tcp_and_gravctl_attaches_with_mtls(files: Files) -> None:
    """Two gravd with mTLS link over tls://; gravctl with a client cert gets a reply across them."""
    tls = ["--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca)]
    tls += ["--tls-verify-clients", "--listen-tcp", "127.0.0.1:0", "--loop", "asyncio"]
    async with running_gravd(*tls) as a:
        assert a.listening["loop"] == "asyncio"
        a_tcp = [ep for ep in a.listening["endpoints"] if ep.startswith("tls://")]
        assert len(a_tcp) == 1
        assert a.endpoint.startswith("wss://")
        async with running_gravd(*tls, "--peer", a_tcp[0]) as b:
            await a.wait_peers(1)
            client = ["--tls-ca", str(files.ca), "--tls-cert", str(files.app_cert)]
            client += ["--tls-key", str(files.app_key)]
            async with _replying(a, client):
                reply = await gravctl("--url", b.endpoint, *client, "req", "svc.hi", "x")
            assert (reply.code, reply.stdout.strip()) == (0, "hello over tls")
            refused = await gravctl("--url", b.endpoint, "--tls-ca", str(files.ca), "pub", "t", "x")
            assert refused.code == 4
            assert "a client certificate is required (mTLS)" in refused.stderr
            assert (await b.stop()).code == 0
        assert (await a.stop()).code == 0


@asynccontextmanager
async def _replying(node: Gravd, client: list[str]) -> AsyncIterator[None]:
    """A gravctl attached to ``node`` over wss with a client cert, answering svc.hi once."""
    argv = [*GRAVCTL, "--url", node.endpoint, *client, "reply", "svc.hi", "hello over tls"]
    process = await Process.start([*argv, "--count", "1"])
    try:
        await process.wait_line(lambda line: "Listening on" in line)
        await node.wait_interest("svc.hi")
        yield
    finally:
        await process.close()


async def test_gravd_runs_on_uvloop_when_asked(files: Files) -> None:
    """gravd --loop uvloop runs on uvloop (the listening event says so) and serves tls:// links."""
    pytest.importorskip("uvloop")
    tls = ["--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca)]
    tls += ["--loop", "uvloop", "--listen-tcp", "127.0.0.1:0"]
    async with running_gravd(*tls) as a:
        assert a.listening["loop"] == "uvloop"
        assert a.listening["listen_tcp"] != "off"
        tls_endpoint = next(ep for ep in a.listening["endpoints"] if ep.startswith("tls://"))
        async with running_gravd(*tls, "--peer", tls_endpoint) as b:
            await a.wait_peers(1)
            assert (await b.stop()).code == 0
        assert (await a.stop()).code == 0


async def test_gravd_over_its_cap_resets_a_tls_socket_before_the_handshake(files: Files) -> None:
    """gravd with TLS and --max-connections 1: a ClientHello gets a ServerHello while the slot is
    free; with an app attached the next one is reset unanswered and counted in /metrics."""
    tls = ["--tls-cert", str(files.cert), "--tls-key", str(files.key), "--max-connections", "1"]
    client = ssl.create_default_context(cafile=str(files.ca))
    async with running_gravd(*tls) as node:
        port = int(node.endpoint.rsplit(":", 1)[1].split("/")[0])
        assert (await tls_probe(port, client))[:1] == b"\x16"  # a TLS handshake record
        async with gravpy.connect(node.endpoint, ssl=client):
            assert await tls_probe(port, client) == b""
            _, metrics = await node.get("/metrics")
        assert "gravd_connections_refused_total 1.0" in metrics.splitlines()
