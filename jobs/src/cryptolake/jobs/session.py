"""The SparkSession every job uses: Delta, the Kafka source and S3A from local jars (nothing is
downloaded at run time), UTC, small shuffles, loopback networking in local mode."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from cryptolake.common.s3 import java_trust_options, s3a_spark_conf
from cryptolake.jobs.settings import JobSettings

log = logging.getLogger(__name__)


class SparkSetupError(RuntimeError):
    """Spark cannot be configured as asked; the message says what to fix."""


def spark_jars(settings: JobSettings) -> list[Path]:
    """The extra jars: from CRYPTOLAKE_SPARK_JARS_DIR, else the cache `make setup` fills."""
    folder = settings.spark_jars_dir
    if folder is None:
        try:
            from cryptolake.stack.jars import ToolingMissing, resolved_jars_dir  # noqa: PLC0415
        except ImportError as exc:  # a cluster image ships jars but not the dev tooling
            raise SparkSetupError(
                "set CRYPTOLAKE_SPARK_JARS_DIR to the folder holding the Delta/Kafka/S3A jars"
            ) from exc
        try:
            folder = resolved_jars_dir("spark-jars")
        except ToolingMissing as exc:
            raise SparkSetupError(str(exc)) from exc
    jars = sorted(folder.glob("*.jar"))
    if not jars:
        raise SparkSetupError(f"no jars in {folder}: run `make setup`")
    return jars


def build_spark_conf(settings: JobSettings, jars: list[Path]) -> dict[str, str]:
    """Pure: every Spark setting the jobs run with."""
    conf = {
        "spark.master": settings.spark_master,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.driver.memory": settings.driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Dedup state in RocksDB keeps the driver heap flat as keys accumulate.
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        # Each state commit writes a small changelog, not a RocksDB snapshot per batch.
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # Delta rebuilds a table's state in this many tasks after each new commit it reads
        # (default 50): with 1 s triggers on a few cores, task overhead dominated the batches.
        "spark.databricks.delta.snapshotPartitions": str(settings.shuffle_partitions),
        # VACUUM lists a table's files in this many tasks (default 10,000): 86 s for a table of
        # two files on 2 cores, a stall of the writing query it runs in.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(
            settings.shuffle_partitions
        ),
        # Exact decimals: fail instead of silently rounding an overflowing value to null.
        "spark.sql.ansi.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Gold MERGEs read the candles table right after writing it.
        "spark.databricks.delta.stalenessLimit": "0",
        # Silver's rules compile to generated methods over HotSpot's 8,000-byte limit for JIT
        # compilation: without this they run interpreted (measured: silver 2x slower).
        "spark.driver.extraJavaOptions": "-XX:-DontCompileHugeMethods",
        "spark.executor.extraJavaOptions": "-XX:-DontCompileHugeMethods",
    }
    if settings.s3_truststore:
        for side in ("driver", "executor"):
            key = f"spark.{side}.extraJavaOptions"
            conf[key] += " " + java_trust_options(str(settings.s3_truststore))
    if settings.spark_master.startswith("local"):
        # Tasks run in the driver's JVM, so its class path is enough. `spark.jars` would copy
        # the 640 MB of jars into a /tmp/spark-* folder per session, which a killed JVM leaves.
        conf["spark.driver.extraClassPath"] = ":".join(str(jar) for jar in jars)
    else:
        conf["spark.jars"] = ",".join(str(jar) for jar in jars)
    if settings.spark_master.startswith("local"):
        # Bind to loopback: the machine's other interfaces are not ours to use.
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        conf["spark.driver.host"] = "127.0.0.1"
    if settings.table_root.startswith("s3a://") or settings.checkpoints.startswith("s3a://"):
        if not (settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key):
            raise SparkSetupError(
                "s3a:// paths need CRYPTOLAKE_S3_ENDPOINT, CRYPTOLAKE_S3_ACCESS_KEY and "
                "CRYPTOLAKE_S3_SECRET_KEY"
            )
        conf |= s3a_spark_conf(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key)
    return conf


def build_session(settings: JobSettings, app_name: str) -> SparkSession:
    # Python UDF workers (Gold's exact vwap) import cryptolake: run them on this interpreter,
    # not on whatever python3 is first on PATH. Images set PYSPARK_PYTHON to their venv.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in build_spark_conf(settings, spark_jars(settings)).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark %s session %s on %s", spark.version, app_name, settings.spark_master)
    return spark
