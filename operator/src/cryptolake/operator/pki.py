"""A pipeline's certificate authority and the certificates it signs, as PEM (``cryptography``):
the operator keeps the CA in a Secret and issues the broker's and MinIO's server certificates
from it; clients trust the CA's certificate alone (JVMs through ``java_truststore``). EC P-256
keys in PKCS#8, which Kafka's PEM key stores, MinIO and OpenSSL-based clients all read."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cryptolake.common.s3 import TRUSTSTORE_PASSWORD

CA_DAYS = 3650
LEAF_DAYS = 397  # what browsers accept for a server certificate; rotation renews it
# A clock a little behind the issuer's must not see certificates from the future.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    certificate: str  # PEM
    key: str  # PEM, PKCS#8, unencrypted

    @property
    def not_after(self) -> datetime:
        cert = x509.load_pem_x509_certificate(self.certificate.encode())
        return cert.not_valid_after_utc


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
    key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
    decipher_only=False,
)  # fmt: skip
_SERVER_AND_CLIENT = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CryptoLake"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])  # fmt: skip


def make_ca(common_name: str, *, now: datetime | None = None, days: int = CA_DAYS) -> KeyPair:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    now = now or datetime.now(UTC)
    key = _key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def issue(
    ca: KeyPair,
    common_name: str,
    hosts: list[str],
    *,
    now: datetime | None = None,
    days: int = LEAF_DAYS,
) -> KeyPair:
    """A server certificate for ``hosts`` (DNS names or IP addresses), signed by ``ca``; the
    chain (leaf, then CA) is in ``certificate``, as servers present it."""
    now = now or datetime.now(UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.certificate.encode())
    ca_key = serialization.load_pem_private_key(ca.key.encode(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(_SERVER_AND_CLIENT, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM).decode() + ca.certificate
    return KeyPair(chain, _key_pem(key))


def java_truststore(ca: KeyPair) -> bytes:
    """The CA's certificate as a Java PKCS#12 trust store (password TRUSTSTORE_PASSWORD): JVMs
    read no PEM trust, and S3A's AWS SDK has no trust setting but the JVM's."""
    certificate = x509.load_pem_x509_certificate(ca.certificate.encode())
    return pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(certificate, b"cryptolake-ca")],
        serialization.BestAvailableEncryption(TRUSTSTORE_PASSWORD.encode()),
    )
