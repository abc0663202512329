"""What went wrong when the compute side cannot talk to the data server, in one line.

A connection that fails (refused, silent, a host that does not resolve, TLS refused on
either side) is turned into one :class:`~echoscreen.errors.DatasiteError` that names the
server, the cause and what to do, from the innermost error under httpx's or the batch
pool's (:func:`cannot_talk`).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx

from echoscreen.errors import DatasiteError


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error under ``exc`` (httpx wraps httpcore, which wraps the OSError)."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _expiry(identity: Path) -> str:
    """`` on YYYY-MM-DD``, the expiry of the identity's certificate ("" if unreadable)."""
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate((identity / "client.crt").read_bytes())
        return f" on {cert.not_valid_after_utc:%Y-%m-%d}"
    except (OSError, ValueError):
        return ""


#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH, and
#: X509_V_ERR_CERT_HAS_EXPIRED
_HOST_MISMATCH, _EXPIRED = (62, 64), 10
#: the TLS alerts of a server that refuses the client's certificate
_REFUSED_CERT = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "CERTIFICATE_REQUIRED",
                 "ALERT_CERTIFICATE_UNKNOWN", "ALERT_UNSUPPORTED_CERTIFICATE",
                 "ALERT_CERTIFICATE_REVOKED", "ALERT_ACCESS_DENIED", "ALERT_DECRYPT_ERROR")


def cannot_talk(url: str, identity: Path, timeout_s: float, exc: BaseException) -> DatasiteError:
    """The one-line error of a connection to the data server that failed, by its cause:
    nothing listening, no answer in time, a host that does not resolve, a server
    certificate the identity's CA does not vouch for, or a client certificate the server
    refused (expired, or not of this site)."""
    root = _root_cause(exc)
    text = str(root) or root.__class__.__name__
    ident = f"the identity in {identity}"
    if isinstance(root, ConnectionRefusedError):
        why = (f"nothing is listening at {url} (connection refused): the data server is "
               "not running there; start it (`echoscreen datasite serve`) or check the URL")
    elif isinstance(root, (TimeoutError, httpx.TimeoutException)):
        why = (f"the data server at {url} did not answer within {timeout_s:g} s: check that "
               "it is running and not overloaded, and that the network lets the port through")
    elif isinstance(root, socket.gaierror):
        why = f"the host of {url} is not known ({text}): check the URL"
    elif isinstance(root, ssl.SSLCertVerificationError) and root.verify_code in _HOST_MISMATCH:
        why = (f"the certificate of the data server at {url} is not issued for the host name "
               f"in the URL ({root.verify_message}): use a host name it names (localhost, "
               "127.0.0.1, ::1 and the --san names given to `echoscreen pki init`)")
    elif isinstance(root, ssl.SSLCertVerificationError) and root.verify_code == _EXPIRED:
        why = (f"the certificate of the data server at {url} expired: the data site must "
               "renew its server certificate")
    elif isinstance(root, ssl.SSLCertVerificationError):
        why = (f"the server at {url} is not one {ident} trusts ({root.verify_message}): the "
               "identity is from another site, or the URL names another server; use the "
               "folder this site's `echoscreen pki issue` wrote")
    elif "ALERT_CERTIFICATE_EXPIRED" in text:
        why = (f"the data server at {url} refused {ident}: its certificate expired"
               f"{_expiry(identity)}; ask the data site for a new one "
               "(`echoscreen pki issue TENANT --out DIR`)")
    elif isinstance(root, ssl.SSLError) and "ALERT_PROTOCOL_VERSION" in text:
        why = (f"the server at {url} does not speak TLS 1.3 ({text}): it is not an echoscreen "
               "data server; check the URL")
    elif isinstance(root, ssl.SSLError) and any(w in text for w in _REFUSED_CERT):
        why = (f"the data server at {url} refused the certificate of {ident} ({text}): it "
               "is not one this site issued; use the folder its `echoscreen pki issue` wrote")
    else:
        why = (f"cannot talk to the data server at {url} ({root.__class__.__name__}: {text}); "
               f"check the URL, that the server is running, and that {ident} is issued by "
               "this site")
    return DatasiteError(why)
