import pytest

from cryptolake.common.s3 import s3a_spark_conf
from cryptolake.stack.binaries import installed_binary
from cryptolake.stack.jars import ToolingMissing
from cryptolake.stack.kafka import free_port
from cryptolake.stack.minio import (
    MinioServer,
    MinioServerConfig,
    build_server_args,
    build_server_env,
    ensure_bucket,
    s3_client,
)


def test_s3a_spark_conf_reaches_a_loopback_endpoint_path_style_with_static_keys():
    conf = s3a_spark_conf("http://127.0.0.1:9000", "key", "secret")
    assert conf["spark.hadoop.fs.s3a.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert (
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"]
        == "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    )
    assert conf["spark.hadoop.fs.s3a.access.key"] == "key"
    assert conf["spark.hadoop.fs.s3a.secret.key"] == "secret"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "us-east-1"


def test_s3a_spark_conf_uses_tls_for_an_https_endpoint():
    conf = s3a_spark_conf("https://s3.example.test", "key", "secret")
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"


def test_server_binds_loopback_without_console_or_update_check(tmp_path):
    config = MinioServerConfig(data_dir=tmp_path, port=19000)
    env = build_server_env(config, {"PATH": "/bin", "MINIO_REGION": "elsewhere"})
    assert build_server_args(config) == [
        "server",
        "--address",
        "127.0.0.1:19000",
        str(tmp_path / "data"),
    ]
    assert env["MINIO_UPDATE"] == "off"
    assert env["MINIO_BROWSER"] == "off"
    assert "MINIO_REGION" not in env
    assert env["PATH"] == "/bin"


def test_missing_binary_says_to_run_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYPTOLAKE_CACHE", str(tmp_path))
    with pytest.raises(ToolingMissing, match=r"minio binary missing .*run `make setup`"):
        installed_binary("minio")


def test_object_round_trips_through_a_fresh_bucket(s3_bucket):
    client = s3_client(s3_bucket.endpoint, s3_bucket.access_key, s3_bucket.secret_key)
    client.put_object(Bucket=s3_bucket.name, Key="bronze/trades/part-0.json", Body=b'{"a": 1}')
    listed = client.list_objects_v2(Bucket=s3_bucket.name, Prefix="bronze/")
    assert [item["Key"] for item in listed["Contents"]] == ["bronze/trades/part-0.json"]
    body = client.get_object(Bucket=s3_bucket.name, Key="bronze/trades/part-0.json")["Body"]
    assert body.read() == b'{"a": 1}'
    assert s3_bucket.s3a_root == f"s3a://{s3_bucket.name}/"


def test_ensure_bucket_is_idempotent(minio_server):
    args = (minio_server.endpoint, minio_server.access_key, minio_server.secret_key)
    ensure_bucket(*args, "lakehouse-idempotent")
    ensure_bucket(*args, "lakehouse-idempotent")
    buckets = s3_client(*args).list_buckets()["Buckets"]
    assert [b["Name"] for b in buckets].count("lakehouse-idempotent") == 1


@pytest.mark.integration  # starts its own server, so no service fixture marks it
def test_restart_keeps_objects_and_stops_cleanly(tmp_path):
    config = MinioServerConfig(data_dir=tmp_path, port=free_port())
    with MinioServer(config) as server:
        args = (server.endpoint, server.access_key, server.secret_key)
        ensure_bucket(*args, "kept")
        s3_client(*args).put_object(Bucket="kept", Key="k", Body=b"v")
        process = server.process
    assert process is not None and process.returncode == 0
    with MinioServer(config) as server:
        client = s3_client(server.endpoint, server.access_key, server.secret_key)
        assert client.get_object(Bucket="kept", Key="k")["Body"].read() == b"v"
