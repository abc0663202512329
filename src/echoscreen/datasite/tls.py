"""Mutual TLS for the data server: the server context, and the peer certificate in the scope.

The server context requires TLS 1.3 and a client certificate that chains to the
site CA, and trusts nothing else (no system roots).

uvicorn does not pass the client certificate to the application, so
:class:`PeerCertH11Protocol` (uvicorn's h11 protocol, selected with ``http=``)
reads it from the connection's ``ssl_object`` once the handshake is done and adds
it to every request's scope under the ASGI TLS extension::

    scope["extensions"]["tls"] = {"client_cert_der": bytes | None,
                                  "client_cert_chain": [PEM str], "tls_version": str}

A handshake the TLS layer refuses (no certificate, a certificate from another CA,
not TLS at all) never reaches HTTP. :func:`server_context` therefore installs an
``SSLObject`` subclass (``SSLContext.sslobject_class``, a documented hook) whose
``do_handshake`` reports the refusal reason to a callback, which the server
writes to the audit log as ``who="unauthenticated"``. The peer address is not
known at that layer and is not recorded.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from echoscreen.datasite.pki import PkiPaths

#: called with the reason of a refused handshake
OnRefused = Callable[[str], None]


def _auditing_sslobject(on_refused: OnRefused) -> type[ssl.SSLObject]:
    class AuditingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                on_refused(f"TLS handshake refused: {exc.reason or exc}")
                raise

    return AuditingSSLObject


def server_context(paths: PkiPaths, on_refused: OnRefused | None = None) -> ssl.SSLContext:
    """TLS 1.3 server context that requires a client certificate from the site CA.

    Args:
        paths: the site's PKI.
        on_refused: called (in the event loop) with the reason of each refused handshake.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(paths.ca_cert))
    ctx.load_cert_chain(str(paths.server_cert), str(paths.server_key))
    ctx.options |= ssl.OP_NO_TICKET  # no resumption: every connection shows its certificate
    if on_refused is not None:
        ctx.sslobject_class = _auditing_sslobject(on_refused)
    return ctx


def client_context(ca_cert: str, cert: str, key: str) -> ssl.SSLContext:
    """TLS 1.3 client context presenting ``cert``/``key`` and trusting only ``ca_cert``."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any]:
    """The ASGI TLS extension for a connection (certificate ``None`` when not TLS)."""
    sslobj = transport.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    return {
        "client_cert_der": der,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "tls_version": sslobj.version() if sslobj is not None else None,
    }


class PeerCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus ``scope["extensions"]["tls"]`` with the peer certificate."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Read the peer certificate once per connection and wrap the app to expose it."""
        super().connection_made(transport)
        tls = tls_extension(transport)
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
            await inner(scope, receive, send)

        self.app = app
