"""The site's small PKI: a certificate authority, the server certificate, tenant identities.

Layout (all keys ``0600``, the folder ``0700``)::

    SITE/pki/
      ca.crt  ca.key           the site CA (EC P-256, 10 years); trusts nothing else
      server.crt  server.key   the data server (SAN localhost, 127.0.0.1, ::1, --san ...)

A tenant identity (``pki issue``) is a folder with ``client.crt`` (CN = tenant name,
client-auth only), ``client.key`` (``0600``) and ``ca.crt`` (to authenticate the
server). Every issued certificate's serial is recorded in the catalog
(:class:`~echoscreen.datasite.schema.IssuedCert`); ``pki revoke`` marks the tenant's
certificates revoked there, and the server looks the serial up on every request,
so a revocation takes effect at once without a CRL to distribute.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select

from echoscreen.datasite.audit import AuditLog, Event
from echoscreen.datasite.schema import IssuedCert, Tenant, ensure_tables
from echoscreen.errors import DatasiteError
from echoscreen.store.keys import write_secret_file
from echoscreen.store.objects import atomic_write
from echoscreen.store.site import Site

TENANT_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 365


@dataclass(frozen=True)
class PkiPaths:
    """Files of a site's PKI."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """PEM certificate of the site CA."""
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """PEM private key of the site CA (0600)."""
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        """PEM certificate of the data server."""
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        """PEM private key of the data server (0600)."""
        return self.root / "server.key"


@dataclass(frozen=True)
class Identity:
    """What :func:`issue` made: where the bundle is and which certificate it holds."""

    tenant: str
    serial: str
    folder: Path
    not_after: datetime


def pki_paths(site_path: Path) -> PkiPaths:
    """The PKI files of the site at ``site_path``."""
    return PkiPaths(Path(site_path).absolute() / "pki")


def check_tenant(name: str) -> str:
    """Return ``name`` if it is a valid tenant name, else raise.

    Raises:
        DatasiteError: not 1-64 characters of ``a-z 0-9 _ -``.
    """
    if not isinstance(name, str) or not TENANT_RE.match(name):
        raise DatasiteError(
            f"invalid tenant name {str(name)[:80]!r}: use 1-64 characters of a-z, 0-9, '-' and '_'"
        )
    return name


def require_pki(site_path: Path) -> PkiPaths:
    """The PKI of a site, checked to exist.

    Raises:
        DatasiteError: ``pki init`` was not run for this site.
    """
    paths = pki_paths(site_path)
    missing = [p for p in (paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key)
               if not p.is_file()]  # fmt: skip
    if missing:
        raise DatasiteError(
            f"the site has no PKI ({missing[0]} is missing): run "
            f"`echoscreen pki init --site {Path(site_path)}` first"
        )
    return paths


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "echoscreen data site"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])  # fmt: skip


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             days: int) -> x509.CertificateBuilder:  # fmt: skip
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
    )


def _load_ca(paths: PkiPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DatasiteError(f"{paths.ca_key} is not an EC key: re-create the PKI")
    return cert, key


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def init_pki(site_path: Path, extra_sans: list[str] | None = None) -> PkiPaths:
    """Create the site CA and the server certificate under ``SITE/pki``.

    Args:
        site_path: an existing site (``site init``).
        extra_sans: host names or IP addresses the server is reached by, besides
            ``localhost``, ``127.0.0.1`` and ``::1``.

    Raises:
        DatasiteError: the site already has a PKI (it is never overwritten).
        StoreError: ``site_path`` is not a site.
    """
    Site.open(site_path).close()  # refuse a folder that is not a site
    paths = pki_paths(site_path)
    if paths.ca_key.exists():
        raise DatasiteError(f"{paths.root} already holds a CA; it is never overwritten")
    paths.root.mkdir(mode=0o700, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"echoscreen site CA {Path(site_path).absolute().name}")
    ca = (
        _builder(ca_name, ca_name, ca_key, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    write_secret_file(paths.ca_key, _pem_key(ca_key))
    atomic_write(paths.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    srv_key = ec.generate_private_key(ec.SECP256R1())
    sans = list(dict.fromkeys([*DEFAULT_SANS, *(extra_sans or [])]))
    srv = (
        _builder(_name("echoscreen data server"), ca.subject, srv_key, SERVER_DAYS)
        .add_extension(_san(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_secret_file(paths.server_key, _pem_key(srv_key))
    atomic_write(paths.server_cert, srv.public_bytes(serialization.Encoding.PEM))
    return paths


def cert_serial(cert: x509.Certificate) -> str:
    """The serial number as lower-case hex (how the catalog stores it)."""
    return format(cert.serial_number, "x")


def issue(site: Site, tenant: str, out: Path) -> Identity:
    """Issue a client identity for ``tenant`` into folder ``out``.

    Writes ``out/client.crt``, ``out/client.key`` (0600) and ``out/ca.crt``, records
    the certificate in the catalog and creates the tenant if it is new, in one catalog
    transaction: if a file cannot be written, nothing is recorded and the files already
    written are removed (no certificate is on record that nobody holds).

    Raises:
        DatasiteError: bad tenant name, no PKI, or ``out`` already holds an identity.
    """
    check_tenant(tenant)
    paths = require_pki(site.path)
    out = Path(out).absolute()
    if (out / "client.key").exists() or (out / "client.crt").exists():
        raise DatasiteError(f"{out} already holds an identity: choose another --out folder")
    ca, ca_key = _load_ca(paths)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, tenant)]), ca.subject, key,
                 CLIENT_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    ensure_tables(site.catalog)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []
    try:  # the bundle is written inside the catalog transaction: both or neither
        with site.catalog.session() as s:
            if s.get(Tenant, tenant) is None:
                s.add(Tenant(name=tenant))
                s.flush()
            s.add(IssuedCert(serial=cert_serial(cert), tenant=tenant,
                             fingerprint=hashlib.sha256(der).hexdigest(),
                             not_after=cert.not_valid_after_utc))  # fmt: skip
            s.flush()
            write_secret_file(out / "client.key", _pem_key(key))
            written.append(out / "client.key")
            atomic_write(out / "client.crt", cert.public_bytes(serialization.Encoding.PEM))
            written.append(out / "client.crt")
            atomic_write(out / "ca.crt", paths.ca_cert.read_bytes())
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    AuditLog(site).append(Event("site-admin", "pki-issue", True, serial=cert_serial(cert),
                                target=tenant))  # fmt: skip
    return Identity(tenant, cert_serial(cert), out, cert.not_valid_after_utc)


def revoke(site: Site, tenant: str) -> list[str]:
    """Revoke every unrevoked certificate of ``tenant``.

    Returns:
        the serials revoked now (empty when there were none left).

    Raises:
        DatasiteError: bad tenant name or no such tenant.
    """
    check_tenant(tenant)
    ensure_tables(site.catalog)
    now = datetime.now(UTC)
    with site.catalog.session() as s:
        if s.get(Tenant, tenant) is None:
            raise DatasiteError(f"no tenant {tenant!r}: `pki issue` creates tenants")
        certs = s.scalars(
            select(IssuedCert).where(IssuedCert.tenant == tenant, IssuedCert.revoked_at.is_(None))
        ).all()
        for c in certs:
            c.revoked_at = now
        serials = [c.serial for c in certs]
    AuditLog(site).append(Event("site-admin", "pki-revoke", True, target=tenant,
                                detail="serials " + (", ".join(serials) or "none left")))
    return serials
