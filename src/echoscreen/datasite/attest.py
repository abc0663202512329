"""Key release: the seam that decides whether a workload may receive decrypted data.

The server decrypts an object only after two checks pass for the request: the
peer's certificate identity holds a grant for the dataset (:mod:`.access`), and
the site's :class:`AttestationVerifier` accepts the workload. The development
default, :class:`CertificateOnly`, accepts any authenticated, unrevoked identity.

Plugging in confidential computing
----------------------------------
A workload in a confidential VM or enclave (AMD SEV-SNP, Intel TDX, NVIDIA H100 CC)
obtains an *attestation token* from an attestation service (e.g. Microsoft Azure
Attestation, Intel Trust Authority, NVIDIA NRAS): a JWT signed by the service that
states the measured launch digest, TCB level and debug state of the workload. A
verifier for it would:

1. read the token from a request header (``X-Attestation-Token``);
2. verify its signature against the service's published JWKS (cached, refreshed on
   an unknown ``kid``), its ``iss``, ``aud`` (this site), ``exp``/``nbf``;
3. check the claims against the site's policy: allowed measurements (image digests
   of approved training containers), ``debug == false``, minimum TCB/SVN;
4. bind the token to the TLS identity: require a ``nonce``/``report_data`` claim
   equal to the SHA-256 of the client certificate (``PeerIdentity.fingerprint``), so
   a token cannot be replayed by another client;
5. return ``Decision(False, reason)`` on any failure (the server answers 403 and
   audits the reason), ``Decision(True)`` otherwise.

Pass it to :func:`echoscreen.datasite.app.create_app` (``verifier=``); nothing else
changes, because the server already calls ``verify`` on every request before it
touches a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class PeerIdentity:
    """The authenticated peer of a request.

    Attributes:
        tenant: the certificate's common name (a tenant name).
        serial: certificate serial number, lower-case hex.
        fingerprint: SHA-256 of the certificate DER, hex.
        client: peer address ``host:port``.
    """

    tenant: str
    serial: str
    fingerprint: str
    client: str | None = None


@dataclass(frozen=True)
class RequestInfo:
    """The parts of a request a verifier may look at (headers lower-cased)."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """A verifier's answer; ``reason`` is audited and sent back when refused."""

    allowed: bool
    reason: str = ""


class AttestationVerifier(Protocol):
    """Decides whether the workload behind ``identity`` may receive decrypted data."""

    def verify(self, identity: PeerIdentity, request: RequestInfo) -> Decision:
        """Return the decision for one request (called before any decryption)."""
        ...


class CertificateOnly:
    """Development default: the mutually authenticated certificate identity suffices."""

    def verify(self, identity: PeerIdentity, request: RequestInfo) -> Decision:
        """Allow every authenticated, unrevoked identity."""
        return Decision(True, "certificate identity")
