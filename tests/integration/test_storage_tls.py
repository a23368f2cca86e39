"""MinIO over TLS with a certificate of the pipeline's CA, as the operator runs it, and every
S3 client of the project trusting that CA the way the operator configures it: the Spark jobs
(S3A, through the Java trust store the operator derives from the CA), the API and the
producer's kline checks (delta-rs, through CRYPTOLAKE_S3_CA_FILE) and the operator itself
(boto3, the CA as a file). Each one is also refused without the CA, so the trust comes from
the pipeline's CA and nothing else."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from deltalake import DeltaTable

from cryptolake.api.app import create_app
from cryptolake.api.settings import ApiSettings
from cryptolake.common.candles import reference_bars
from cryptolake.jobs import tables
from cryptolake.operator.pki import issue, java_truststore, make_ca
from cryptolake.operator.services import ServiceUnreachable, ensure_bucket
from cryptolake.producer.replay import read_dump
from cryptolake.stack.kafka import free_port
from cryptolake.stack.minio import MinioServer, MinioServerConfig

pytestmark = pytest.mark.integration

DUMP = Path(__file__).parents[2] / "jobs/tests/fixtures/binance/BTCUSDT-trades-2025-01-01.csv"
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trades")


@dataclass(frozen=True)
class TlsMinio:
    server: MinioServer
    ca_file: Path
    truststore: Path


@pytest.fixture(scope="module")
def tls_minio(tmp_path_factory) -> TlsMinio:
    folder = tmp_path_factory.mktemp("minio-tls")
    ca = make_ca("test pipeline CA")
    server = issue(ca, "minio", ["127.0.0.1", "localhost"])
    certs = folder / "certs"
    certs.mkdir()
    (certs / "public.crt").write_text(server.certificate)
    (certs / "private.key").write_text(server.key)
    ca_file, truststore = folder / "ca.crt", folder / "truststore.p12"
    ca_file.write_text(ca.certificate)
    truststore.write_bytes(java_truststore(ca))
    minio = MinioServer(
        MinioServerConfig(data_dir=folder / "data", port=free_port(), certs_dir=certs)
    )
    minio.start()
    yield TlsMinio(minio, ca_file, truststore)
    minio.stop()


def _backfill(minio: TlsMinio, root: str, truststore: Path | None) -> subprocess.CompletedProcess:
    """``python -m cryptolake.jobs backfill`` in its own JVM: the trust store is a JVM option,
    fixed when the JVM starts."""
    env = {
        **os.environ,
        "CRYPTOLAKE_TABLE_ROOT": root,
        "CRYPTOLAKE_S3_ENDPOINT": minio.server.endpoint,
        "CRYPTOLAKE_S3_ACCESS_KEY": minio.server.access_key,
        "CRYPTOLAKE_S3_SECRET_KEY": minio.server.secret_key,
        "CRYPTOLAKE_METRICS_PORT": "0",
    }
    env.pop("CRYPTOLAKE_S3_TRUSTSTORE", None)
    if truststore:
        env["CRYPTOLAKE_S3_TRUSTSTORE"] = str(truststore)
    else:
        # Refused handshakes are retried for minutes by default: fail at the first one.
        retries = {"fs.s3a.attempts.maximum": 1, "fs.s3a.retry.limit": 0}
        env["PYSPARK_SUBMIT_ARGS"] = (
            " ".join(f"--conf spark.hadoop.{key}={value}" for key, value in retries.items())
            + " pyspark-shell"
        )
    return subprocess.run(
        [sys.executable, "-m", "cryptolake.jobs", "backfill", str(DUMP)],
        check=False, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_operator_makes_the_bucket_only_when_it_trusts_the_pipeline_ca(tls_minio) -> None:
    server = tls_minio.server
    keys = (server.endpoint, server.access_key, server.secret_key)
    with pytest.raises(ServiceUnreachable, match=r"(?i)certificate"):
        ensure_bucket(*keys, "untrusted")
    assert ensure_bucket(*keys, "lake", ca_file=str(tls_minio.ca_file))
    assert not ensure_bucket(*keys, "lake", ca_file=str(tls_minio.ca_file))  # idempotent


def test_jobs_write_and_the_api_reads_gold_over_tls_exactly(tls_minio, monkeypatch) -> None:
    server = tls_minio.server
    ensure_bucket(server.endpoint, server.access_key, server.secret_key, "lake",
                  ca_file=str(tls_minio.ca_file))  # fmt: skip
    refused = _backfill(tls_minio, "s3a://lake/untrusted", truststore=None)
    assert refused.returncode != 0
    assert "PKIX path building failed" in refused.stdout + refused.stderr
    done = _backfill(tls_minio, "s3a://lake/trusted", tls_minio.truststore)
    assert done.returncode == 0, done.stderr[-3000:]

    api = ApiSettings(table_root="s3a://lake/trusted", s3_endpoint=server.endpoint,
                      s3_access_key=server.access_key, s3_secret_key=server.secret_key)  # fmt: skip
    uri, options = api.table_uri(tables.GOLD_CANDLES_1M), api.storage_options()
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(OSError, match=r"(?i)certificate"):
        DeltaTable(uri, storage_options=options)
    # What the operator sets: the app adds the CA to the public ones (SSL_CERT_FILE's bundle).
    create_app(api.model_copy(update={"s3_ca_file": tls_minio.ca_file}))
    rows = DeltaTable(uri, storage_options=options).to_pyarrow_table().to_pylist()
    # The public CAs stay trusted: the producer's feeds and an OTLP collector need them.
    assert ssl.create_default_context().cert_store_stats()["x509_ca"] > 100

    trades = [item.trade for item in read_dump(DUMP) if item.trade is not None]
    expected = reference_bars(
        {"symbol": t.symbol, "trade_id": t.trade_id, "price": t.price, "qty": t.qty,
         "event_time": t.event_time, "side": t.side} for t in trades
    )  # fmt: skip
    actual = {
        (row["symbol"], int(row["minute"].timestamp()) // 60): {f: row[f] for f in FIELDS}
        for row in rows
    }
    assert len(actual) >= 5
    assert actual == {key: {f: bar[f] for f in FIELDS} for key, bar in expected.items()}
