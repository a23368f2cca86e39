"""The Spark settings the jobs run with (pure: no session started)."""

from __future__ import annotations

from cryptolake.jobs.session import build_spark_conf
from cryptolake.jobs.settings import JobSettings


def test_local_mode_puts_the_jars_on_the_class_path_instead_of_copying_them(tmp_path) -> None:
    jars = [tmp_path / "delta.jar", tmp_path / "kafka.jar"]
    local = build_spark_conf(JobSettings(spark_master="local[2]"), jars)
    assert local["spark.driver.extraClassPath"] == f"{jars[0]}:{jars[1]}"
    assert "spark.jars" not in local
    cluster = build_spark_conf(JobSettings(spark_master="k8s://https://kubernetes:443"), jars)
    assert cluster["spark.jars"] == f"{jars[0]},{jars[1]}"


def test_an_s3_trust_store_reaches_the_driver_and_the_executors_jvms(tmp_path) -> None:
    store = tmp_path / "truststore.p12"
    conf = build_spark_conf(JobSettings(s3_truststore=store), [])
    for side in ("driver", "executor"):
        options = conf[f"spark.{side}.extraJavaOptions"].split()
        assert "-XX:-DontCompileHugeMethods" in options  # kept
        assert f"-Djavax.net.ssl.trustStore={store}" in options
        assert "-Djavax.net.ssl.trustStorePassword=changeit" in options
    plain = build_spark_conf(JobSettings(), [])
    assert "trustStore" not in plain["spark.driver.extraJavaOptions"]
