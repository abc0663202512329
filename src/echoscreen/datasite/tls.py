"""Mutual TLS for the data server: the server and client contexts, and the peer certificate.

The server context requires TLS 1.3 and a client certificate that chains to the
site CA, and trusts nothing else (no system roots). Session tickets are off, so
every connection presents its certificate again.

The server (:mod:`.httpd`) does each handshake itself, on a blocking socket in the
connection's own thread: a handshake the TLS layer refuses (no certificate, a
certificate from another CA, not TLS at all) never reaches HTTP, and its reason goes
to the audit log as ``who="unauthenticated"``. Once it succeeds, every request's
scope carries the peer certificate under the ASGI TLS extension
(:func:`tls_extension`)::

    scope["extensions"]["tls"] = {"client_cert_der": bytes | None,
                                  "client_cert_chain": [PEM str], "tls_version": str}
"""

from __future__ import annotations

import ssl
from typing import Any

from echoscreen.datasite.pki import PkiPaths


def server_context(paths: PkiPaths) -> ssl.SSLContext:
    """TLS 1.3 server context that requires a client certificate from the site CA.

    Args:
        paths: the site's PKI.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(paths.ca_cert))
    ctx.load_cert_chain(str(paths.server_cert), str(paths.server_key))
    ctx.options |= ssl.OP_NO_TICKET  # no resumption: every connection shows its certificate
    return ctx


def client_context(ca_cert: str, cert: str, key: str) -> ssl.SSLContext:
    """TLS 1.3 client context presenting ``cert``/``key`` and trusting only ``ca_cert``."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def tls_extension(sock: ssl.SSLSocket | ssl.SSLObject | None) -> dict[str, Any]:
    """The ASGI TLS extension of a connection (certificate ``None`` when not TLS)."""
    der = sock.getpeercert(binary_form=True) if sock is not None else None
    return {
        "client_cert_der": der,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "tls_version": sock.version() if sock is not None else None,
    }
