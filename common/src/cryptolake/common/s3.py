"""S3 settings shared by the jobs (Spark S3A) and the tooling (MinIO, boto3)."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

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
