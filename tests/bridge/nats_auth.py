"""Credentials for the bridge's auth tests, made here: a token, NKEY users, an operator-mode JWT
chain (operator -> account -> user, as ``nsc`` would write it), and a TLS CA (``trustme``).

Each ``AuthCase`` gives the ``nats-server`` configuration block, the gravd arguments that should
link, arguments that should be refused, and the nats-py options of a plain client that links.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys
import trustme

__all__ = ["AuthCase", "auth_case"]


@dataclass
class AuthCase:
    name: str
    server_config: str
    scheme: str = "nats"
    good: tuple[str, ...] = ()
    bad: tuple[str, ...] = ()
    client: dict[str, Any] = field(default_factory=dict)


def _keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _jwt(claims: dict[str, Any], subject: nkeys.KeyPair, signer: nkeys.KeyPair) -> str:
    """A NATS JWT (``ed25519-nkey``) for ``subject``'s public key, signed by ``signer``."""
    body = {
        "iat": int(time.time()),
        "iss": signer.public_key.decode(),
        "sub": subject.public_key.decode(),
        **claims,
    }
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body).encode()).digest()).decode()
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = signer.sign(f"{head}.{payload}".encode())
    return f"{head}.{payload}.{_b64(signature)}"


def _creds(user_jwt: str, seed: bytes) -> str:
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
    )


def _operator_case(tmp: Path) -> AuthCase:
    operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    limits = {"subs": -1, "conn": -1, "leaf": -1, "imports": -1, "exports": -1, "data": -1}
    limits |= {"payload": -1, "wildcards": True}
    op_jwt = _jwt({"name": "op", "nats": {"type": "operator", "version": 2}}, operator, operator)
    acc_claims = {"name": "acc", "nats": {"type": "account", "version": 2, "limits": limits}}
    acc_jwt = _jwt(acc_claims, account, operator)
    user_claims = {"subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}
    files = {}
    for who, signer in (("good", account), ("bad", _keypair(nkeys.PREFIX_BYTE_ACCOUNT))):
        user = _keypair(nkeys.PREFIX_BYTE_USER)
        user_jwt = _jwt({"name": who, "nats": user_claims}, user, signer)
        files[who] = tmp / f"{who}.creds"
        files[who].write_text(_creds(user_jwt, user.seed))
    config = f'operator: "{op_jwt}"\nresolver: MEMORY\nresolver_preload: {{\n'
    config += f'  {account.public_key.decode()}: "{acc_jwt}"\n}}\n'
    return AuthCase(
        "creds",
        config,
        good=("--nats-creds", str(files["good"])),
        bad=("--nats-creds", str(files["bad"])),
        client={"user_credentials": str(files["good"])},
    )


def _nkey_case(tmp: Path) -> AuthCase:
    user, stranger = _keypair(nkeys.PREFIX_BYTE_USER), _keypair(nkeys.PREFIX_BYTE_USER)
    for who, key in (("good", user), ("bad", stranger)):
        (tmp / f"{who}.nk").write_bytes(key.seed + b"\n")
    config = f'authorization {{ users = [ {{ nkey: "{user.public_key.decode()}" }} ] }}\n'
    return AuthCase(
        "nkey",
        config,
        good=("--nats-creds", str(tmp / "good.nk")),
        bad=("--nats-creds", str(tmp / "bad.nk")),
        client={"nkeys_seed": str(tmp / "good.nk")},
    )


def _token_case(tmp: Path) -> AuthCase:
    token = base64.b32encode(os.urandom(20)).decode()
    (tmp / "good.token").write_text(token + "\n")
    (tmp / "bad.token").write_text("not-the-token\n")
    return AuthCase(
        "token",
        f'authorization {{ token: "{token}" }}\n',
        good=("--nats-token-file", str(tmp / "good.token")),
        bad=("--nats-token-file", str(tmp / "bad.token")),
        client={"token": token},
    )


def _tls_case(tmp: Path) -> AuthCase:
    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    other.cert_pem.write_to_path(str(tmp / "other-ca.pem"))
    config = (
        f'tls {{\n  cert_file: "{tmp / "server.pem"}"\n  key_file: "{tmp / "server.key"}"\n}}\n'
    )
    return AuthCase(
        "tls",
        config,
        scheme="tls",
        good=("--nats-ca", str(tmp / "ca.pem")),
        bad=("--nats-ca", str(tmp / "other-ca.pem")),
        client={"tls": ssl.create_default_context(cafile=str(tmp / "ca.pem"))},
    )


def auth_case(name: str, tmp: Path) -> AuthCase:
    """The case called ``name`` (token, nkey, creds, tls), its files written under ``tmp``."""
    makers = {"token": _token_case, "nkey": _nkey_case, "creds": _operator_case, "tls": _tls_case}
    return makers[name](tmp)
