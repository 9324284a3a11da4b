"""Ed25519 identities: key files on disk, and the credentials a link presents in its handshake.

Theory of operation
-------------------
``keygen(path)`` writes a private key to ``path`` (PKCS#8 PEM, file mode 0600) and its public
key to ``path.pub`` as one line, ``ed25519:<base64 of the 32 raw bytes>``: that line is what an
auth file lists (``public_key = "ed25519:..."``). ``load_credentials(path)`` reads the private key
back into ``Credentials`` (the public key and a signer); the handshake signs a transcript that
holds the other side's fresh nonce with it (``gravpy.proto.handshake``), so the key never leaves
the process and a captured handshake cannot be replayed. Keys are made and used by the
``cryptography`` package (already a dependency), not by hand.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gravpy.errors import UsageError
from gravpy.proto.frames import PUBLIC_KEY_LENGTH
from gravpy.proto.handshake import Credentials

__all__ = ["PUBLIC_PREFIX", "keygen", "load_credentials", "parse_public_key", "public_key_text"]

PUBLIC_PREFIX: Final = "ed25519:"


def public_key_text(raw: bytes) -> str:
    """The one-line form of a public key: ``ed25519:<base64>``."""
    return PUBLIC_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of a public key line; ``UsageError`` saying what is wrong otherwise."""
    line = text.strip()
    if not line.startswith(PUBLIC_PREFIX):
        raise UsageError(f"a public key starts with {PUBLIC_PREFIX!r}, not {line[:16]!r}")
    try:
        raw = base64.b64decode(line[len(PUBLIC_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError(f"a public key is base64 after {PUBLIC_PREFIX!r}: {exc}") from exc
    if len(raw) != PUBLIC_KEY_LENGTH:
        raise UsageError(f"an Ed25519 public key is {PUBLIC_KEY_LENGTH} bytes, not {len(raw)}")
    return raw


def keygen(path: str | os.PathLike[str]) -> str:
    """Write a new key pair: the private key to ``path`` (mode 0600) and the public key line to
    ``path.pub``; return that line. Neither file is ever overwritten: ``UsageError`` if either
    exists, and nothing is written then."""
    target = Path(path)
    public = Path(f"{target}.pub")
    if public.exists() and not target.exists():  # (if the key exists too, its error is below)
        raise UsageError(
            f"{public} exists; refusing to overwrite a public key (another key's line: move it "
            "away, or give another path)"
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = _create(target, 0o600, "key")
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    line = public_key_text(raw)
    try:  # (made by another process since the check above: the new key is removed again)
        fd = _create(public, 0o644, "public key")
    except UsageError:
        target.unlink()
        raise
    with os.fdopen(fd, "w") as out:
        out.write(line + "\n")
    return line


def _create(path: Path, mode: int, what: str) -> int:
    """A new file at ``path`` open for writing; ``UsageError`` if it exists or cannot be made."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        if path.is_dir():
            raise UsageError(f"{path} is a directory: give the key file's path") from exc
        raise UsageError(f"{path} exists; refusing to overwrite a {what}") from exc
    except OSError as exc:  # no such directory, no permission
        raise UsageError(f"cannot write the {what} {path}: {exc.strerror or exc}") from exc


def load_credentials(path: str | os.PathLike[str], token: str = "") -> Credentials:
    """The credentials in the private key file at ``path`` (``~`` expanded, as gravd and gravctl
    expand the paths they are given; ``UsageError`` if unreadable)."""
    try:
        pem = Path(path).expanduser().read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot read the identity key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 private key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Credentials(public_key=raw, sign=key.sign, token=token)
