"""S3 settings shared by the jobs (Spark S3A) and the tooling (MinIO, boto3)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import certifi

# An explicit region, so the AWS SDKs never probe EC2 instance metadata for one.
REGION: Final = "us-east-1"
# The password of Java trust stores (``CRYPTOLAKE_S3_TRUSTSTORE``): the JDK's own convention.
# It only guards the integrity of public certificates; the Kubernetes API client in Spark
# (fabric8) opens the JVM's trust store with exactly this password when none is set.
TRUSTSTORE_PASSWORD: Final = "changeit"


def s3a_spark_conf(endpoint: str, access_key: str, secret_key: str) -> dict[str, str]:
    """Spark settings for Hadoop's S3A (``s3a://bucket/path``) against ``endpoint``, for
    ``SparkSession.builder.config(map=...)``. Needs the spark-jars set (hadoop-aws) on the
    classpath."""
    s3a = "spark.hadoop.fs.s3a."
    return {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        # Streaming checkpoints go through the FileContext API, which looks this one up.
        "spark.hadoop.fs.AbstractFileSystem.s3a.impl": "org.apache.hadoop.fs.s3a.S3A",
        s3a + "endpoint": endpoint,
        # An explicit region, so the AWS SDK never probes EC2 instance metadata for one.
        s3a + "endpoint.region": REGION,
        s3a + "path.style.access": "true",
        s3a + "connection.ssl.enabled": str(urlsplit(endpoint).scheme == "https").lower(),
        # Only these keys: the default chain would also ask the EC2 instance metadata service.
        s3a + "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        s3a + "access.key": access_key,
        s3a + "secret.key": secret_key,
    }


def java_trust_options(truststore: str) -> str:
    """JVM options that make ``truststore`` (PKCS#12, TRUSTSTORE_PASSWORD) the trust of every
    TLS client in the JVM that has no trust of its own: S3A's AWS SDK, which has no setting
    for a private CA. Kafka's client keeps its own PEM trust (``ssl.truststore.*``)."""
    return (
        f"-Djavax.net.ssl.trustStore={truststore} -Djavax.net.ssl.trustStoreType=PKCS12 "
        f"-Djavax.net.ssl.trustStorePassword={TRUSTSTORE_PASSWORD}"
    )


def trust_ca_file(ca_file: Path, folder: Path | None = None) -> Path:
    """Make delta-rs (rustls with native roots) and Python's ``ssl`` trust ``ca_file`` (a
    private CA: the operator's TLS MinIO) besides the public CAs. Both read ``SSL_CERT_FILE``,
    which *replaces* the default roots, so it names a bundle of the roots in use (the image's
    ``SSL_CERT_FILE``, else certifi's) plus this CA: the CA alone would break TLS to the
    exchanges and to a collector. Returns the bundle; a second call changes nothing."""
    folder = folder or Path(tempfile.gettempdir())
    bundle = folder / f"cryptolake-ca-bundle-{os.getpid()}.pem"
    current = os.environ.get("SSL_CERT_FILE")
    if current == str(bundle):
        return bundle
    roots = Path(current) if current and Path(current).is_file() else Path(certifi.where())
    try:
        extra = ca_file.read_text()
    except OSError as error:
        raise OSError(f"cannot read the S3 CA file {ca_file}: {error.strerror}") from error
    if "-----BEGIN CERTIFICATE-----" not in extra:
        raise ValueError(f"{ca_file} holds no PEM certificate (CRYPTOLAKE_S3_CA_FILE)")
    bundle.write_text(roots.read_text().rstrip("\n") + "\n" + extra)
    os.environ["SSL_CERT_FILE"] = str(bundle)
    return bundle
