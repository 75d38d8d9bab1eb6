"""The site's certificate authority and the certificates it issues to machines.

One site (HQ and its stores) has one private CA. Every machine running a
nats-server gets a certificate from it whose subject alternative names are the
addresses its peers dial (an IP address, a DNS name, or both), because Go's TLS,
like every TLS client, checks the name in the URL against those SANs. nats-server
dials routes and leaf remotes with the same ``tls {}`` certificate it serves, so a
machine certificate is valid for both server and client authentication; a
client-only certificate exists for clients that present one (route mTLS, leaf
remotes, client-port mTLS).

Key type: ECDSA P-256. Ed25519 was measured to work as well against nats-server
2.15.1 (routes, leaf links and nats-py clients, TLS 1.3 and 1.2), but P-256 is the
type every TLS stack accepts (browsers refuse Ed25519 certificates, and older
OpenSSL, Java and hardware key stores lack it), so the same CA can later serve
the till's HTTPS page and whatever tools store IT points at a port.

Private keys and certificates are written with `write_private` (0600 from the
first byte). Certificates are not secret, but one rule for every file of a
bundle is simpler to check than two.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.errors import CredentialsError, IdentityError
from broker.files import write_private
from broker.subjects import validate_name

__all__ = [
    "CA_DAYS",
    "LEAF_DAYS",
    "IssuedCert",
    "SiteCA",
    "TlsFiles",
    "client_ssl_context",
    "load_cert",
    "load_key",
    "write_tls_files",
]

CA_DAYS = 3650  # a site CA outlives the tills; rotating it means re-issuing everything
LEAF_DAYS = 825  # the longest validity TLS clients commonly still accept for a leaf cert
# Clocks of tills that were offline drift; a certificate "not yet valid" for a few
# minutes would keep a till out of its own store.
_BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class TlsFiles:
    """Where one machine's TLS material lives: what a ``tls {}`` block names.

    ``cert_file``/``key_file`` may be None for a party that only has to trust the
    CA (a client of a port that does not ask for a client certificate).
    """

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # nats-server cannot read encrypted keys
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key, as issued by a `SiteCA`."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"IssuedCert({self.cert.subject.rfc4514_string()!r}, key=***)"

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def save(self, cert_path: Path, key_path: Path) -> None:
        write_private(cert_path, self.cert_pem)
        write_private(key_path, self.key_pem)


@dataclass(frozen=True)
class SiteCA:
    """The site's certificate authority: a self-signed CA certificate and its key.

    The key stays where the site is initialised; machines receive only the CA
    certificate plus their own certificate and key.
    """

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"SiteCA({self.cert.subject.rfc4514_string()!r}, key=***)"

    @classmethod
    def generate(cls, name: str, *, days: int = CA_DAYS) -> SiteCA:
        """A new CA named ``<name> site CA``, valid for ``days``."""
        validate_name(name, "site name")
        key = _new_key()
        subject = _name(f"{name} site CA")
        cert = (
            _builder(subject, subject, key.public_key(), days)
            # path_length=0: the CA signs machine certificates, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    def issue_server(
        self,
        name: str,
        *,
        ips: Iterable[str] = (),
        dns: Iterable[str] = (),
        days: int = LEAF_DAYS,
    ) -> IssuedCert:
        """A machine certificate for a nats-server reachable at ``ips`` / ``dns``.

        Valid for server *and* client authentication: the same certificate is
        served on the route/leaf listeners and presented when dialling them.
        """
        sans = _sans(ips, dns)
        if not sans:
            raise IdentityError("sans", f"server certificate {name!r} names no IP or DNS name")
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        return self._issue(name, usages, days, sans)

    def issue_client(self, name: str, *, days: int = LEAF_DAYS) -> IssuedCert:
        """A certificate that can only authenticate a client (no server use)."""
        return self._issue(name, [ExtendedKeyUsageOID.CLIENT_AUTH], days, [])

    def _issue(
        self,
        name: str,
        usages: list[x509.ObjectIdentifier],
        days: int,
        sans: list[x509.GeneralName],
    ) -> IssuedCert:
        validate_name(name, "certificate name")
        key = _new_key()
        builder = (
            _builder(_name(name), self.cert.subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return IssuedCert(builder.sign(self.key, hashes.SHA256()), key)

    def save(self, cert_path: Path, key_path: Path) -> None:
        write_private(cert_path, self.cert_pem)
        write_private(key_path, _key_pem(self.key))

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> SiteCA:
        cert = load_cert(cert_path)
        key = load_key(key_path)
        if cert.public_key() != key.public_key():
            raise CredentialsError(key_path, f"key does not match the certificate {cert_path}")
        return cls(cert, key)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    if days <= 0:
        raise IdentityError("days", "validity must be positive")
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,  # ECDHE handshakes sign with the leaf key
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,  # no RSA key transport with EC keys
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def _sans(ips: Iterable[str], dns: Iterable[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for ip in ips:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise IdentityError("ips", f"{ip!r} is not an IP address") from None
    for host in dns:
        if not host or any(ch.isspace() for ch in host):
            raise IdentityError("dns", f"{host!r} is not a DNS name")
        sans.append(x509.DNSName(host))
    return sans


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        raise CredentialsError(path, f"not a PEM certificate: {e}") from e


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise CredentialsError(path, f"not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CredentialsError(path, f"expected an EC key, found {type(key).__name__}")
    return key


def write_tls_files(
    directory: Path,
    ca_cert: x509.Certificate,
    issued: IssuedCert | None = None,
    stem: str = "",
    ca_name: str = "ca.pem",
) -> TlsFiles:
    """Write a machine's TLS material into ``directory``: the CA's certificate
    (``ca_name``) and, if ``issued``, ``<stem>.pem`` / ``<stem>.key`` (stem defaults to
    the certificate's common name). Returns absolute paths, because nats-server resolves
    relative ``tls {}`` paths against its working directory, not against the conf file."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / ca_name
    write_private(ca_file, _cert_pem(ca_cert))
    if issued is None:
        return TlsFiles(ca_file)
    stem = stem or _common_name(issued.cert)
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    issued.save(cert_file, key_file)
    return TlsFiles(ca_file, cert_file, key_file)


def _common_name(cert: x509.Certificate) -> str:
    (attr,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attr.value
    return validate_name(value if isinstance(value, str) else value.decode(), "certificate name")


def client_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """An SSL context for a client of a site server: trusts the site CA only (not the
    system's CAs), checks the server's name against its SANs, and presents a client
    certificate if ``files`` has one."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(files.ca_file))
    except (OSError, ssl.SSLError) as e:
        raise CredentialsError(files.ca_file, str(e)) from e
    if files.cert_file is not None:
        key = None if files.key_file is None else str(files.key_file)
        try:
            ctx.load_cert_chain(str(files.cert_file), key)
        except (OSError, ssl.SSLError) as e:
            raise CredentialsError(files.cert_file, str(e)) from e
    return ctx
