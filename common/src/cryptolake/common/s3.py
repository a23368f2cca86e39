"""S3 settings shared by the jobs (Spark S3A) and the tooling (MinIO, boto3)."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

# An explicit region, so the AWS SDKs never probe EC2 instance metadata for one.
REGION: Final = "us-east-1"


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
