"""The pipeline CA and the brokers' certificate, checked the way a TLS client checks them
(cryptography's X.509 path validation): the Service name and each pod's name verify against
the CA, another CA's certificate does not, and the CA may sign leaves only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from cryptolake.operator.pki import KeyPair, issue, make_ca

HOSTS = ["lake-broker", "lake-broker.markets.svc", "*.lake-broker-headless.markets.svc"]


def _verify(ca: KeyPair, server: KeyPair, host: str) -> None:
    certs = x509.load_pem_x509_certificates(server.certificate.encode())
    store = Store([x509.load_pem_x509_certificate(ca.certificate.encode())])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(host))
    verifier.verify(certs[0], certs[1:])


@pytest.mark.parametrize("host", ["lake-broker.markets.svc",
                                  "lake-broker-2.lake-broker-headless.markets.svc"])  # fmt: skip
def test_the_broker_certificate_verifies_for_the_service_and_each_pod(host: str) -> None:
    ca = make_ca("lake CA")
    _verify(ca, issue(ca, "lake-broker", HOSTS), host)


def test_another_name_or_another_ca_does_not_verify() -> None:
    ca, other = make_ca("lake CA"), make_ca("someone else")
    server = issue(ca, "lake-broker", HOSTS)
    with pytest.raises(VerificationError):
        _verify(ca, server, "minio.markets.svc")
    with pytest.raises(VerificationError):
        _verify(other, server, "lake-broker.markets.svc")


def test_the_ca_signs_leaves_only_and_no_leaf_outlives_it() -> None:
    now = datetime.now(UTC)
    ca = make_ca("lake CA", now=now, days=30)
    cert = x509.load_pem_x509_certificate(ca.certificate.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    leaf = issue(ca, "lake-broker", HOSTS, now=now)
    assert leaf.not_after <= ca.not_after < now + timedelta(days=31)
    assert "PRIVATE KEY" in leaf.key and "ENCRYPTED" not in leaf.key  # PKCS#8, as Kafka reads
