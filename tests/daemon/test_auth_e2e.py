"""gravd with --auth-file and --identity: who may attach, refusals in /metrics, SIGHUP reload."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import gravpy
from gravpy.errors import HandshakeRejectedError
from gravpy.grav import Grav
from gravpy.identity import keygen
from gravpy.testing.gravd import gravctl, running_gravd


def auth_toml(*keys: tuple[str, str]) -> str:
    """An auth file listing each ``(name, public key line)``, allowed everything."""
    return "".join(
        f'[[identities]]\nname = "{name}"\npublic_key = "{line}"\n'
        'publish = { allow = [">"], deny = [] }\nsubscribe = { allow = [">"], deny = [] }\n\n'
        for name, line in keys
    )


async def until_unlinked(app: Grav) -> None:
    """Wait until ``app`` has no open link."""
    assert app.hub is not None
    while any(p.state == "open" for p in app.peers()):
        await app.hub.wait_changed()


async def test_gravd_admits_listed_keys_refuses_others_and_counts_why(tmp_path: Path) -> None:
    """A listed app attaches; an unlisted key is told unknown_key and /metrics counts it."""
    app_key = tmp_path / "app.key"
    auth = tmp_path / "auth.toml"
    auth.write_text(auth_toml(("app", keygen(app_key))))
    keygen(tmp_path / "stranger.key")
    async with running_gravd("--auth-file", str(auth)) as node:
        async with gravpy.connect(node.endpoint, identity_file=app_key) as app:
            assert [p.state for p in app.peers()] == ["open"]
        with pytest.raises(HandshakeRejectedError) as caught:
            async with gravpy.connect(node.endpoint, identity_file=tmp_path / "stranger.key"):
                pass
        assert caught.value.reason == "unknown_key"
        assert caught.value.detail == "this node does not list the public key presented"
        status, text = await node.get("/metrics")
        assert status == 200
        samples = {
            (s.name, s.labels.get("reason", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("gravd_handshakes_rejected_total", "unknown_key")] == 1
        assert samples[("gravd_publish_denied_total", "")] == 0


async def test_sighup_rereads_the_auth_file_keeping_links_still_allowed(tmp_path: Path) -> None:
    """After SIGHUP, a removed identity's link is closed and it cannot attach again; a link
    that is still allowed stays up (the same link)."""
    kept_key, gone_key = tmp_path / "kept.key", tmp_path / "gone.key"
    kept_line, gone_line = keygen(kept_key), keygen(gone_key)
    auth = tmp_path / "auth.toml"
    auth.write_text(auth_toml(("kept", kept_line), ("gone", gone_line)))
    async with running_gravd("--auth-file", str(auth)) as node:
        async with (
            gravpy.connect(node.endpoint, identity_file=kept_key) as kept,
            gravpy.connect(node.endpoint, identity_file=gone_key) as gone,
        ):
            auth.write_text(auth_toml(("kept", kept_line)))
            node.process.signal(signal.SIGHUP)
            async with asyncio.timeout(10):
                await until_unlinked(gone)
            assert [p.state for p in kept.peers()] == ["open"]
            assert kept.hub is not None
            assert kept.hub.statistics().links_opened == 1
        with pytest.raises(HandshakeRejectedError) as caught:
            async with gravpy.connect(node.endpoint, identity_file=gone_key):
                pass
        assert caught.value.reason == "unknown_key"


async def test_sighup_without_an_auth_file_is_logged_and_changes_nothing() -> None:
    """`kill -HUP` on a gravd with no auth file (as the docs suggest for reloading) leaves it
    serving, says why nothing was re-read, and it still stops cleanly."""
    async with running_gravd() as node:
        node.process.signal(signal.SIGHUP)
        async with asyncio.timeout(10):
            await node.process.wait_event("sighup_ignored", reason="no auth file to re-read")
        status, _ = await node.get("/healthz")
        assert status == 200
        assert (await node.stop()).code == 0


async def test_a_node_identity_signs_for_gravd_to_gravd_links(tmp_path: Path) -> None:
    """gravd --identity presents its key to a gravd whose auth file lists it; both link."""
    a_key, b_key = tmp_path / "a.key", tmp_path / "b.key"
    auth = tmp_path / "auth.toml"
    auth.write_text(auth_toml(("a", keygen(a_key)), ("b", keygen(b_key))))
    common = ("--auth-file", str(auth))
    async with running_gravd(*common, "--identity", str(a_key)) as a:
        peer = ("--identity", str(b_key), "--peer", a.endpoint)
        async with running_gravd(*common, *peer) as b, asyncio.timeout(10):
            await b.wait_peers(1)
            await a.wait_peers(1)


async def test_gravctl_keygen_then_identity_attaches_where_anonymous_is_refused(
    tmp_path: Path,
) -> None:
    """gravctl keygen makes a key; gravctl --identity with it publishes; without it, gravctl
    says the node refused it and why."""
    made = await gravctl("keygen", str(tmp_path / "ctl.key"))
    assert made.code == 0
    auth = tmp_path / "auth.toml"
    auth.write_text(auth_toml(("ctl", made.stdout.strip())))
    async with running_gravd("--auth-file", str(auth)) as node:
        url = ("--url", node.endpoint)
        ok = await gravctl(*url, "--identity", str(tmp_path / "ctl.key"), "pub", "a.b", "x")
        # attached and published; nobody on the mesh wants a.b, which gravctl reports as exit 3
        assert ok.code == 3, ok.stderr
        assert "no pod on the mesh wants" in ok.stderr
        refused = await gravctl(*url, "pub", "a.b", "x")
        assert refused.code != 0
        assert "give gravctl --identity KEY" in refused.stderr  # what to do, and gravd's words:
        assert refused.stderr.rstrip().endswith("this node accepts only listed identities")
