"""TLS for every transport: which context listens, which dials, and checked certificate files.

Theory of operation
-------------------

A node needs up to two ``ssl.SSLContext``: a **server** context to listen with (``wss://``,
``https://``, ``tls://`` endpoints) and a **client** context to dial with (which CA it trusts,
and the certificate it presents when the other side asks, for mTLS). :class:`TlsContexts` holds
the pair. With ``require_client_cert`` (mTLS) the server context asks for a client certificate
(``CERT_OPTIONAL``) and the transport refuses a client that shows none in its own protocol (HTTP
403, a TCP close frame), because asyncio drops a connection whose TLS handshake fails without
sending the TLS alert, so the client could not tell why. Everywhere gravpy takes ``ssl=`` (each transport, ``Grav``, ``gravpy.connect``,
``gravpy.sync.connect``) it takes either a :class:`TlsContexts` or one ``SSLContext``, placed by
its protocol (:func:`as_tls`): ``PROTOCOL_TLS_SERVER`` (``ssl.create_default_context(
ssl.Purpose.CLIENT_AUTH)``) listens, ``PROTOCOL_TLS_CLIENT`` (``ssl.create_default_context()``)
dials, any other context does both. A transport dialling a TLS URL with no client context uses
the system's default trust store.

The scheme of a URL decides whether a link is encrypted: a transport listening with a server
context advertises TLS endpoints only, so a TLS mesh stays TLS as endpoints are passed on.

:func:`node_tls` builds the pair gravd uses from files (``--tls-cert``, ``--tls-key``,
``--tls-ca``, ``--tls-verify-clients``); :func:`check_tls_files` reads and checks those files first
and raises :class:`TlsFileError` naming the file at fault (unreadable, not PEM, expired or not yet
valid, a key that does not match the certificate). Expiry is read with ``cryptography``'s X.509
parser, since the standard library cannot parse a certificate file.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from gravpy.errors import UsageError

__all__ = [
    "CLIENT_CERT_REQUIRED",
    "SslOption",
    "TlsContexts",
    "TlsFileError",
    "TlsUser",
    "apply_tls",
    "as_tls",
    "check_tls_files",
    "client_context",
    "node_tls",
    "server_context",
]


@dataclass(frozen=True, slots=True)
class TlsContexts:
    """The context a transport listens with (``server``) and the one it dials with (``client``)."""

    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None
    require_client_cert: bool = False
    """mTLS with a reason: refuse, in the transport's own protocol, a client with no certificate."""

    def __post_init__(self) -> None:
        for side, ctx in (("server", self.server), ("client", self.client)):
            if ctx is not None and not isinstance(ctx, ssl.SSLContext):
                raise UsageError(f"TlsContexts.{side} must be an ssl.SSLContext, got {ctx!r}")
        if self.server is not None and self.server.protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise UsageError("TlsContexts.server is a client context (PROTOCOL_TLS_CLIENT)")
        if self.client is not None and self.client.protocol == ssl.PROTOCOL_TLS_SERVER:
            raise UsageError("TlsContexts.client is a server context (PROTOCOL_TLS_SERVER)")
        if self.require_client_cert and (
            self.server is None or self.server.verify_mode == ssl.CERT_NONE
        ):
            raise UsageError(
                "require_client_cert needs a server context that verifies client certificates "
                "(a CA loaded and verify_mode CERT_OPTIONAL)"
            )

    def refusal(self, peercert: object) -> str | None:
        """Why a connection that showed ``peercert`` (``get_extra_info("peercert")``) is refused."""
        if self.require_client_cert and not peercert:
            return CLIENT_CERT_REQUIRED
        return None

    def merged(self, other: TlsContexts) -> TlsContexts:
        """These contexts, with ``other``'s where these have none."""
        if self.server is not None:
            return TlsContexts(self.server, self.client or other.client, self.require_client_cert)
        return TlsContexts(other.server, self.client or other.client, other.require_client_cert)


CLIENT_CERT_REQUIRED = "a client certificate is required (mTLS) and none was presented"


SslOption = ssl.SSLContext | TlsContexts | None
"""What ``ssl=`` takes everywhere: one context (placed by its protocol), a pair, or nothing."""


def as_tls(option: SslOption) -> TlsContexts:
    """``option`` as a pair: a server-protocol context listens, a client one dials, others both."""
    if option is None:
        return TlsContexts()
    if isinstance(option, TlsContexts):
        return option
    if not isinstance(option, ssl.SSLContext):
        raise UsageError(f"ssl must be an ssl.SSLContext or a TlsContexts, got {option!r}")
    if option.protocol == ssl.PROTOCOL_TLS_SERVER:
        return TlsContexts(server=option)
    if option.protocol == ssl.PROTOCOL_TLS_CLIENT:
        return TlsContexts(client=option)
    return TlsContexts(server=option, client=option)


@runtime_checkable
class TlsUser(Protocol):
    """A transport that can be given TLS after construction (``Grav(ssl=...)`` uses this)."""

    def use_tls(self, tls: TlsContexts) -> None: ...


def apply_tls(transport: object, option: SslOption) -> None:
    """Give ``transport`` the contexts of ``option`` it has none of; UsageError if it cannot take them."""
    tls = as_tls(option)
    if tls.server is None and tls.client is None:
        return
    if not isinstance(transport, TlsUser):
        raise UsageError(f"transport {transport!r} takes no TLS contexts (it has no use_tls)")
    transport.use_tls(tls)


def server_context(
    cert: str | Path, key: str | Path, *, ca: str | Path | None = None, verify_clients: bool = False
) -> ssl.SSLContext:
    """A context to listen with ``cert``; with ``verify_clients``, clients must show a cert ``ca`` signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(ctx, cert, key)
    if verify_clients:
        if ca is None:
            raise UsageError("verify_clients needs a CA to verify client certificates with")
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> ssl.SSLContext:
    """A context to dial with: trusting ``ca`` (else the system store), presenting ``cert`` if given."""
    ctx = ssl.create_default_context(cafile=None if ca is None else str(ca))
    if cert is not None:
        _load_chain(ctx, cert, key)
    return ctx


def node_tls(
    cert: Path | None, key: Path | None, ca: Path | None, *, verify_clients: bool = False
) -> TlsContexts:
    """What a node (gravd) listens and dials with; both contexts present ``cert`` when given."""
    server = None
    if cert is not None and key is not None:
        server = server_context(cert, key, ca=ca, verify_clients=verify_clients)
        if verify_clients:
            server.verify_mode = ssl.CERT_OPTIONAL  # checked by the transports, with a reason
    client = None if cert is None and ca is None else client_context(ca, cert, key)
    return TlsContexts(server, client, require_client_cert=verify_clients and server is not None)


class TlsFileError(UsageError):
    """A TLS file cannot be used; ``setting`` is ``tls_cert``, ``tls_key`` or ``tls_ca``."""

    def __init__(self, setting: str, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.setting = setting
        self.path = path
        self.problem = problem


def check_tls_files(
    cert: Path | None, key: Path | None, ca: Path | None, *, now: dt.datetime | None = None
) -> None:
    """Read and check the files; raises TlsFileError naming the first one at fault."""
    moment = now or dt.datetime.now(dt.UTC)
    for setting, path in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)):
        if path is not None:
            _readable(setting, path)
    if cert is not None:
        _check_dates("tls_cert", cert, moment, first_only=True)
        if key is not None:
            _check_pair(cert, key)
    if ca is not None:
        _check_dates("tls_ca", ca, moment, first_only=False)
        try:
            ssl.create_default_context(cafile=str(ca))
        except ssl.SSLError as exc:
            raise TlsFileError("tls_ca", ca, f"not usable as a CA bundle: {exc}") from None


def _readable(setting: str, path: Path) -> None:
    try:
        path.read_bytes()
    except OSError as exc:
        raise TlsFileError(setting, path, f"cannot read it: {exc.strerror or exc}") from None


def _check_dates(setting: str, path: Path, now: dt.datetime, *, first_only: bool) -> None:
    from cryptography import x509  # only gravd's config check needs it

    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError:
        raise TlsFileError(setting, path, "holds no PEM certificate") from None
    for cert in certs[:1] if first_only else certs:
        subject = cert.subject.rfc4514_string() or "the certificate"
        if cert.not_valid_after_utc < now:
            raise TlsFileError(
                setting, path, f"{subject} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
        if cert.not_valid_before_utc > now:
            raise TlsFileError(
                setting,
                path,
                f"{subject} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            )


class _EncryptedKey(Exception):
    """The private key asks for a passphrase (``_load_chain``)."""


def _no_passphrase() -> str:
    raise _EncryptedKey


_ENCRYPTED_HINT: Final = (
    "the private key is encrypted (it asks for a passphrase, and gravpy never prompts): give "
    "an unencrypted one (openssl pkey -in KEY -out PLAIN), readable by this user only"
)


def _load_chain(ctx: ssl.SSLContext, cert: str | Path, key: str | Path | None) -> None:
    """``ctx.load_cert_chain``, but a passphrase-protected key is a ``UsageError`` instead of
    OpenSSL prompting on the terminal (a daemon has none: it then failed with a bare OSError)."""
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except _EncryptedKey:
        raise UsageError(f"{key or cert}: {_ENCRYPTED_HINT}") from None


def _check_pair(cert: Path, key: Path) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except _EncryptedKey:
        raise TlsFileError("tls_key", key, _ENCRYPTED_HINT) from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
            raise TlsFileError(
                "tls_key", key, f"the key does not match the certificate {cert}"
            ) from None
        raise TlsFileError("tls_key", key, f"not a usable private key for {cert}: {exc}") from None
