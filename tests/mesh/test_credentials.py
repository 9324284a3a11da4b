"""Per-app and per-node credentials: key files, the signed handshake, refusals by reason."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gravpy
from gravpy.errors import HandshakeRejectedError, UsageError
from gravpy.identity import keygen, load_credentials, parse_public_key
from gravpy.mesh.permissions import parse_authority
from gravpy.proto.handshake import Credentials
from gravpy.testing import capture_logs

from .conftest import FAST, NodeFactory, linked_to


def auth_for(**identities: str) -> dict[str, object]:
    """An auth file document listing ``name=public key line`` (or ``name="token:..."``)."""
    listed = []
    for name, credential in identities.items():
        if credential.startswith("token:"):
            listed.append({"name": name, "token": credential[len("token:") :]})
        else:
            listed.append({"name": name, "public_key": credential})
    return {"identities": listed}


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_public_line(
    tmp_path: Path,
) -> None:
    """keygen writes PATH (mode 0600) and PATH.pub, and never overwrites a key."""
    path = tmp_path / "app.key"
    line = keygen(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "app.key.pub").read_text().strip() == line
    assert load_credentials(path).public_key == parse_public_key(line)
    with pytest.raises(UsageError, match="exists"):
        keygen(path)
    with pytest.raises(UsageError, match="is a directory: give the key file's path"):
        keygen(tmp_path)
    with pytest.raises(UsageError, match=r"cannot write the key .*No such file or directory"):
        keygen(tmp_path / "absent" / "app.key")


def test_keygen_never_overwrites_a_public_key_line(tmp_path: Path) -> None:
    """A PATH.pub already there (here another key's line) is kept, and no key is written beside
    it: overwriting it would lose the line an auth file may list."""
    other = keygen(tmp_path / "other.key")
    public = tmp_path / "app.key.pub"
    public.write_text(other + "\n")
    with pytest.raises(UsageError, match=r"app\.key\.pub exists; refusing to overwrite a public"):
        keygen(tmp_path / "app.key")
    assert public.read_text() == other + "\n"
    assert not (tmp_path / "app.key").exists()
    public.unlink()
    line = keygen(tmp_path / "app.key")  # with the way clear, the pair is written
    assert load_credentials(tmp_path / "app.key").public_key == parse_public_key(line)
    assert public.read_text() == line + "\n"


def test_an_identity_file_under_home_is_read_with_its_tilde_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_credentials("~/app.key") reads the key in the home directory, as gravd would."""
    monkeypatch.setenv("HOME", str(tmp_path))
    line = keygen(tmp_path / "app.key")
    assert load_credentials("~/app.key").public_key == parse_public_key(line)


async def test_a_listed_key_links_and_is_known_by_name(node: NodeFactory, tmp_path: Path) -> None:
    """An app presenting a listed key attaches; the node knows it by the auth file's name."""
    line = keygen(tmp_path / "sensors.key")
    a = await node(authority=parse_authority(auth_for(sensors=line)))
    async with gravpy.connect(
        a.endpoints()[0], hub_config=FAST, identity_file=tmp_path / "sensors.key"
    ) as app:
        await a.wait_for(linked_to(app), timeout=5)
        assert a.hub is not None
        link = a.hub.link_for(app.node_uuid)
        assert link is not None
        assert link.identity is not None
        assert link.identity.name == "sensors"


async def test_refusals_say_why_and_are_counted_by_reason(
    node: NodeFactory, tmp_path: Path
) -> None:
    """Unknown key, no credential, a wrong token: each refused with its reason, counted."""
    listed = keygen(tmp_path / "listed.key")
    keygen(tmp_path / "stranger.key")
    doc = auth_for(sensors=listed, script="token:s3cret-token")
    a = await node(authority=parse_authority(doc))
    url = a.endpoints()[0]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"identity_file": tmp_path / "stranger.key"}, "unknown_key"),
        ({}, "not_allowed"),
        ({"token": "wrong"}, "unknown_key"),
    ]
    for options, reason in cases:
        with pytest.raises(HandshakeRejectedError) as caught:
            async with gravpy.connect(url, hub_config=FAST, **options):
                pass
        assert caught.value.reason == reason
    async with gravpy.connect(url, hub_config=FAST, token="s3cret-token") as app:
        await a.wait_for(linked_to(app), timeout=5)
    assert a.hub is not None
    counted = a.hub.statistics().handshakes_rejected
    assert counted.get("unknown_key") == 2
    assert counted.get("not_allowed") == 1


async def test_a_key_presented_without_its_private_half_is_refused_bad_signature(
    node: NodeFactory, tmp_path: Path
) -> None:
    """Presenting a listed public key but signing with another key is refused: bad_signature."""
    line = keygen(tmp_path / "sensors.key")
    a = await node(authority=parse_authority(auth_for(sensors=line)))
    forger = Ed25519PrivateKey.generate()
    stolen = Credentials(public_key=parse_public_key(line), sign=forger.sign)
    impostor = gravpy.connect(a.endpoints()[0], hub_config=FAST)
    assert impostor.hub is not None
    impostor.hub.credentials = stolen
    with pytest.raises(HandshakeRejectedError) as caught:
        async with impostor:
            pass
    assert caught.value.reason == "bad_signature"
    assert a.hub is not None
    assert a.hub.statistics().handshakes_rejected.get("bad_signature") == 1


async def test_a_link_proving_the_same_key_replaces_the_open_one_and_is_logged(
    node: NodeFactory, tmp_path: Path
) -> None:
    """A second link with the uuid *and* the proven key of an open link replaces it (logged)."""
    key = tmp_path / "app.key"
    keygen(key)
    a = await node()
    url = a.endpoints()[0]
    async with gravpy.connect(url, hub_config=FAST, identity_file=key) as first:
        await a.wait_for(linked_to(first), timeout=5)
        assert a.hub is not None
        old = a.hub.link_for(first.node_uuid)
        with capture_logs() as logs:
            async with gravpy.connect(
                url, hub_config=FAST, identity_file=key, node_uuid=first.node_uuid
            ):
                async with asyncio.timeout(5):
                    while a.hub.link_for(first.node_uuid) is old:
                        await a.hub.wait_changed()
        assert any(e.get("event") == "link_replaced" for e in logs)
