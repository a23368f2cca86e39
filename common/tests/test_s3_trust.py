"""trust_ca_file: a private CA added to the roots in use, never replacing them."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import certifi
import pytest

from cryptolake.common.s3 import trust_ca_file

# Any PEM certificate serves as "the pipeline's CA" here: certifi's first root.
FIRST_ROOT = (
    certifi.contents().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
)


def test_the_bundle_is_the_roots_in_use_plus_the_ca(tmp_path: Path, monkeypatch) -> None:
    roots = tmp_path / "image-roots.pem"
    roots.write_text(certifi.contents())
    monkeypatch.setenv("SSL_CERT_FILE", str(roots))
    ca = tmp_path / "ca.crt"
    ca.write_text(FIRST_ROOT.replace("\n", "\r\n"))
    bundle = trust_ca_file(ca, tmp_path)
    assert bundle.read_text() == certifi.contents().rstrip("\n") + "\n" + ca.read_text()
    assert str(bundle) == os.environ["SSL_CERT_FILE"]
    assert trust_ca_file(ca, tmp_path) == bundle  # a second call appends nothing
    assert bundle.read_text().count("BEGIN CERTIFICATE") == certifi.contents().count(
        "BEGIN CERTIFICATE") + 1  # fmt: skip
    stats = ssl.create_default_context().cert_store_stats()
    assert stats["x509_ca"] > 100


def test_without_an_image_bundle_certifi_is_the_base(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    ca = tmp_path / "ca.crt"
    ca.write_text(FIRST_ROOT)
    assert trust_ca_file(ca, tmp_path).read_text().startswith(certifi.contents().rstrip("\n"))


def test_an_unreadable_or_empty_ca_file_says_which(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(OSError, match=r"cannot read the S3 CA file .*missing\.crt"):
        trust_ca_file(tmp_path / "missing.crt", tmp_path)
    (tmp_path / "empty.crt").write_text("not a certificate")
    with pytest.raises(ValueError, match=r"empty\.crt holds no PEM certificate"):
        trust_ca_file(tmp_path / "empty.crt", tmp_path)
    assert "SSL_CERT_FILE" not in os.environ
