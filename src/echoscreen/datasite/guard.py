"""ASGI middleware in front of every route: authenticate, attest, and audit each request.

For each HTTP request it

1. reads the client certificate from ``scope["extensions"]["tls"]``
   (:mod:`.tls`), looks its serial up in the catalog (unknown or revoked: 403),
   checks it has not expired since the connection's handshake (403), and checks the
   common name matches the tenant it was issued to;
2. asks the :class:`~.attest.AttestationVerifier` (refused: 403);
3. passes the request on with ``scope["state"]["identity"]`` set, counting the
   response status and body bytes;
4. appends one audit record: who, action (method and path), target and reason the
   route left in ``scope["state"]``, status, bytes, allowed (status < 400). It is
   committed *before* the last body chunk is sent, so no response completes
   unaudited (if the log cannot be written, the response is cut short).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from echoscreen.datasite.access import cert_status
from echoscreen.datasite.attest import AttestationVerifier, PeerIdentity, RequestInfo
from echoscreen.datasite.audit import AuditLog, Event
from echoscreen.datasite.httpd import run_blocking
from echoscreen.datasite.schema import connect
from echoscreen.store.catalog import Catalog

ASGIApp = Any
_CACHE_MAX = 256


class Denied(Exception):
    """Refuse a request before it reaches a route."""

    def __init__(self, status: int, reason: str, serial: str | None = None,
                 who: str = "unauthenticated") -> None:  # fmt: skip
        super().__init__(reason)
        self.status, self.reason, self.serial, self.who = status, reason, serial, who


def _client(scope: dict[str, Any]) -> str | None:
    c = scope.get("client")
    return f"{c[0]}:{c[1]}" if c else None


class GuardMiddleware:
    """Authentication, key-release decision and audit around an ASGI app.

    Args:
        app: the routes.
        catalog: where issued certificates are looked up.
        verifier: the attestation seam.
        audit: the site's audit log.
    """

    def __init__(self, app: ASGIApp, catalog: Catalog, verifier: AttestationVerifier,
                 audit: AuditLog) -> None:  # fmt: skip
        self.app, self.catalog, self.verifier, self.audit = app, catalog, verifier, audit
        self._parsed: dict[bytes, tuple[str, str, str, datetime]] = {}

    def _parse(self, der: bytes) -> tuple[str, str, str, datetime]:
        """``(common name, serial hex, sha256 hex, not after)`` of a DER certificate
        (cached)."""
        hit = self._parsed.get(der)
        if hit is None:
            cert = x509.load_der_x509_certificate(der)
            cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            cn = str(cns[0].value) if cns else ""
            hit = (cn, format(cert.serial_number, "x"), hashlib.sha256(der).hexdigest(),
                   cert.not_valid_after_utc)  # fmt: skip
            if len(self._parsed) >= _CACHE_MAX:
                self._parsed.clear()
            self._parsed[der] = hit
        return hit

    def _authenticate(self, scope: dict[str, Any]) -> PeerIdentity:
        tls = (scope.get("extensions") or {}).get("tls") or {}
        der = tls.get("client_cert_der")
        if not der:
            raise Denied(403, "no client certificate (connect with an identity from `pki issue`)")
        cn, serial, fingerprint, not_after = self._parse(der)
        with connect(self.catalog) as conn:  # every request: a revocation applies at once
            st = cert_status(conn, serial)
        if not st.known:
            raise Denied(403, "certificate is not among those this site issued", serial,
                         f"unknown certificate cn={cn[:40]}")
        if st.revoked:
            raise Denied(403, "certificate revoked", serial, str(st.tenant))
        if datetime.now(UTC) > not_after:  # TLS checked it at the handshake only
            raise Denied(403, f"certificate expired on {not_after:%Y-%m-%d %H:%M:%S} UTC",
                         serial, str(st.tenant))  # fmt: skip
        if st.tenant != cn:
            raise Denied(403, "certificate name does not match its tenant", serial,
                         f"unknown certificate cn={cn[:40]}")
        ident = PeerIdentity(cn, serial, fingerprint, _client(scope))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}  # fmt: skip
        decision = self.verifier.verify(ident, RequestInfo(scope["method"], scope["path"], headers))
        if not decision.allowed:
            raise Denied(403, f"attestation refused: {decision.reason}", serial, cn)
        return ident

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Guard one ASGI call (non-HTTP scopes pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        action = f"{scope['method']} {scope['path']}"[:200]
        state = scope.setdefault("state", {})
        try:
            ident = await run_blocking(scope, self._authenticate, scope)
        except Denied as d:
            body = json.dumps({"detail": d.reason}).encode()
            await run_blocking(scope, self.audit.append, Event(
                d.who, action, False, d.status, d.serial, _client(scope), detail=d.reason,
                nbytes=len(body)))  # fmt: skip
            await _send_json(send, d.status, body)
            return
        state["identity"] = ident
        sent = {"status": 0, "bytes": 0, "audited": False}

        async def record() -> None:
            sent["audited"] = True
            status = state.get("audit_status") or sent["status"] or 500  # an aborted answer
            await run_blocking(scope, self.audit.append, Event(
                ident.tenant, action, status < 400, status, ident.serial, ident.client,
                target=state.get("audit_target"), nbytes=sent["bytes"],
                detail=state.get("audit_detail")))  # fmt: skip

        async def audited_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = int(message["status"])
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    await record()  # the record is committed before the response completes
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except BaseException:  # an answer that failed after it began is not a success
            if sent["status"] and not sent["audited"]:
                state.setdefault("audit_status", 500)
            raise
        finally:
            if not sent["audited"]:
                await record()


async def _send_json(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
